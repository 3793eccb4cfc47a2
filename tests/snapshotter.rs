//! `unionfs snapshotter` over its socket, the way containerd calls it: every RPC with its
//! results and error codes, the mounts it returns mounted the way containerd mounts them
//! (`mount.fuse3 … -t /path/unionfs`), restart and crash cleanup, one server per root.

use crate::common::*;
use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tonic::Code;
use unionfs::snapshotter::proto::snapshots as pb;
use unionfs::snapshotter::proto::snapshots::snapshots_client::SnapshotsClient;

type Client = SnapshotsClient<tonic::transport::Channel>;

/// A snapshotter process with its root and socket in a scratch directory.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
}

impl Server {
    pub fn start(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::Builder::new().prefix("unionfs-snap-").tempdir().unwrap();
        let mut s = Server { dir, child: None };
        s.restart(env);
        s
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("snap.sock")
    }

    /// Starts the process (again) and waits until it answers.
    pub fn restart(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("log")).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("--root").arg(self.root()).arg("snapshotter").arg("--address").arg(self.sock());
        cmd.envs(env.iter().copied()).stdout(Stdio::null()).stderr(log);
        let mut child = cmd.spawn().unwrap();
        wait_for("the snapshotter to listen", || {
            assert!(child.try_wait().unwrap().is_none(), "the snapshotter exited: {}", self.log());
            std::os::unix::net::UnixStream::connect(self.sock()).is_ok()
        });
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The snapshot directories that exist, sorted.
    pub fn dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root().join("snapshots"))
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        unmount_below(self.dir.path());
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

pub async fn client(sock: &Path) -> Client {
    let ch =
        tonic::transport::Endpoint::from_shared(format!("unix://{}", sock.display())).unwrap().connect().await.unwrap();
    SnapshotsClient::new(ch)
}

fn labels(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn prepare(
    c: &mut Client,
    key: &str,
    parent: &str,
) -> Result<Vec<unionfs::snapshotter::proto::types::Mount>, tonic::Status> {
    let r = pb::PrepareSnapshotRequest {
        snapshotter: "unionfs".into(),
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    };
    c.prepare(r).await.map(|r| r.into_inner().mounts)
}

async fn commit(c: &mut Client, name: &str, key: &str) -> Result<(), tonic::Status> {
    let r = pb::CommitSnapshotRequest {
        snapshotter: "unionfs".into(),
        name: name.into(),
        key: key.into(),
        labels: HashMap::new(),
    };
    c.commit(r).await.map(|_| ())
}

pub async fn names(c: &mut Client, filters: &[&str]) -> Result<(usize, Vec<String>), tonic::Status> {
    let r = pb::ListSnapshotsRequest {
        snapshotter: "unionfs".into(),
        filters: filters.iter().map(|s| s.to_string()).collect(),
    };
    let mut stream = c.list(r).await?.into_inner();
    let (mut messages, mut out) = (0, Vec::new());
    while let Some(m) = stream.message().await? {
        messages += 1;
        out.extend(m.info.into_iter().map(|i| i.name));
    }
    Ok((messages, out))
}

fn code<T>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[test]
fn every_rpc_answers_with_containerd_semantics_and_error_codes() {
    let s = Server::start(&[]);
    runtime().block_on(async {
        let mut c = client(&s.sock()).await;
        // Prepare / Commit / View.
        let m = prepare(&mut c, "extract-1", "").await.unwrap();
        assert_eq!((m[0].r#type.as_str(), m[0].options.clone()), ("bind", vec!["rw".to_string(), "rbind".to_string()]));
        std::fs::write(Path::new(&m[0].source).join("f"), "base").unwrap();
        commit(&mut c, "layer1", "extract-1").await.unwrap();
        assert_eq!(code(prepare(&mut c, "layer1", "").await), Code::AlreadyExists);
        assert_eq!(code(prepare(&mut c, "x", "missing").await), Code::NotFound);
        assert_eq!(code(prepare(&mut c, "", "").await), Code::InvalidArgument);
        let m = prepare(&mut c, "active", "layer1").await.unwrap();
        assert_eq!(m[0].r#type, format!("fuse3.{}", std::fs::canonicalize(bin()).unwrap().display()));
        assert_eq!(code(prepare(&mut c, "x", "active").await), Code::InvalidArgument, "parent not committed");
        let v = pb::ViewSnapshotRequest {
            snapshotter: String::new(),
            key: "view".into(),
            parent: "layer1".into(),
            labels: HashMap::new(),
        };
        let vm = c.view(v.clone()).await.unwrap().into_inner().mounts;
        assert_eq!(
            (vm[0].r#type.as_str(), vm[0].options.clone()),
            ("bind", vec!["ro".to_string(), "rbind".to_string()])
        );
        assert_eq!(code(c.view(v).await), Code::AlreadyExists);
        // Mounts.
        let mr = |k: &str| pb::MountsRequest { snapshotter: String::new(), key: k.into() };
        assert_eq!(c.mounts(mr("active")).await.unwrap().into_inner().mounts, m);
        assert_eq!(code(c.mounts(mr("missing")).await), Code::NotFound);
        assert_eq!(code(c.mounts(mr("layer1")).await), Code::FailedPrecondition);
        // Commit errors.
        assert_eq!(code(commit(&mut c, "n", "missing").await), Code::NotFound);
        assert_eq!(code(commit(&mut c, "n", "view").await), Code::FailedPrecondition);
        assert_eq!(code(commit(&mut c, "layer1", "active").await), Code::AlreadyExists);
        // Stat.
        let st = |k: &str| pb::StatSnapshotRequest { snapshotter: String::new(), key: k.into() };
        let info = c.stat(st("active")).await.unwrap().into_inner().info.unwrap();
        assert_eq!((info.name.as_str(), info.parent.as_str(), info.kind()), ("active", "layer1", pb::Kind::Active));
        assert!(info.created_at.unwrap().seconds > 1_700_000_000);
        assert_eq!(code(c.stat(st("missing")).await), Code::NotFound);
        // Update.
        let up = |name: &str, l: &[(&str, &str)], paths: &[&str]| pb::UpdateSnapshotRequest {
            snapshotter: String::new(),
            info: Some(pb::Info { name: name.into(), labels: labels(l), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() }),
        };
        let u = c.update(up("active", &[("a", "1"), ("b", "2")], &[])).await.unwrap().into_inner().info.unwrap();
        assert_eq!(u.labels, labels(&[("a", "1"), ("b", "2")]));
        let u =
            c.update(up("active", &[("b", "3")], &["labels.b", "labels.a"])).await.unwrap().into_inner().info.unwrap();
        assert_eq!(u.labels, labels(&[("b", "3")]));
        assert_eq!(code(c.update(up("active", &[], &["parent"])).await), Code::InvalidArgument);
        assert_eq!(code(c.update(up("missing", &[], &[])).await), Code::NotFound);
        // Usage.
        let us = |k: &str| pb::UsageRequest { snapshotter: String::new(), key: k.into() };
        let u = c.usage(us("layer1")).await.unwrap().into_inner();
        assert_eq!(u.inodes, 2);
        assert!(u.size > 0);
        assert_eq!(code(c.usage(us("missing")).await), Code::NotFound);
        // List: batches of 100, filters, a bad filter.
        for i in 0..150 {
            prepare(&mut c, &format!("many-{i:03}"), "layer1").await.unwrap();
        }
        let (messages, all) = names(&mut c, &[]).await.unwrap();
        assert_eq!((messages, all.len()), (2, 153));
        assert_eq!(names(&mut c, &["kind==committed"]).await.unwrap().1, ["layer1"]);
        assert_eq!(names(&mut c, &["kind==view", "labels.b==3"]).await.unwrap().1, ["active", "view"]);
        assert_eq!(code(names(&mut c, &["kind=="]).await), Code::InvalidArgument);
        // Remove.
        let rm = |k: &str| pb::RemoveSnapshotRequest { snapshotter: String::new(), key: k.into() };
        assert_eq!(code(c.remove(rm("layer1")).await), Code::FailedPrecondition, "it has children");
        assert_eq!(code(c.remove(rm("missing")).await), Code::NotFound);
        for i in 0..150 {
            c.remove(rm(&format!("many-{i:03}"))).await.unwrap();
        }
        for k in ["active", "view", "layer1"] {
            c.remove(rm(k)).await.unwrap();
        }
        assert!(names(&mut c, &[]).await.unwrap().1.is_empty());
        assert!(s.dirs().is_empty(), "{:?}", s.dirs());
        // Cleanup: a directory no record names goes.
        std::fs::create_dir_all(s.root().join("snapshots/77/fs/deep")).unwrap();
        c.cleanup(pb::CleanupRequest { snapshotter: String::new() }).await.unwrap();
        assert!(s.dirs().is_empty());
    });
}

/// Mounts `m` at `target` as containerd does for a `fuse3.` type: `mount.fuse3 SOURCE TARGET
/// -o OPT… -t PROGRAM`.
fn mount_like_containerd(m: &unionfs::snapshotter::proto::types::Mount, target: &Path) {
    let prog = m.r#type.strip_prefix("fuse3.").unwrap();
    let helper = ["/sbin/mount.fuse3", "/usr/sbin/mount.fuse3"].into_iter().find(|p| Path::new(p).exists()).unwrap();
    let mut cmd = Command::new(helper);
    cmd.arg(&m.source).arg(target);
    for o in &m.options {
        cmd.arg("-o").arg(o);
    }
    // mount.fuse3 runs the program through `sh -c` with a cleared PATH: the absolute path is
    // what makes it this unionfs and not Debian's unionfs-fuse.
    let out = cmd.arg("-t").arg(prog).env_clear().output().unwrap();
    assert!(out.status.success(), "mount.fuse3: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn its_mounts_work_through_mount_fuse3_and_match_kernel_overlayfs() {
    need_root!();
    if !Path::new("/sbin/mount.fuse3").exists() && !Path::new("/usr/sbin/mount.fuse3").exists() {
        skip("mount.fuse3 is not installed");
        return;
    }
    let s = Server::start(&[]);
    let mnt = s.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    runtime().block_on(async {
        let mut c = client(&s.sock()).await;
        let m = prepare(&mut c, "e1", "").await.unwrap();
        let base = PathBuf::from(&m[0].source);
        std::fs::create_dir(base.join("d")).unwrap();
        std::fs::write(base.join("d/a"), "a").unwrap();
        std::fs::write(base.join("gone"), "g").unwrap();
        commit(&mut c, "l1", "e1").await.unwrap();
        // A second layer applied through the union, as containerd's unpacker does.
        let m = prepare(&mut c, "e2", "l1").await.unwrap();
        mount_like_containerd(&m[0], &mnt);
        assert_eq!(read(mnt.join("d/a")), "a");
        std::fs::remove_file(mnt.join("gone")).unwrap();
        std::fs::write(mnt.join("d/b"), "b").unwrap();
        assert!(is_mounted(&mnt));
        crate::common::unmount_for_good(&mnt);
        commit(&mut c, "l2", "e2").await.unwrap();
        let upper2 = s.root().join("snapshots/2/fs");
        assert!(
            std::fs::symlink_metadata(upper2.join("gone")).unwrap().file_type().is_char_device(),
            "a kernel whiteout"
        );
        // A container's snapshot: writes land in its own upper.
        let m = prepare(&mut c, "ctr", "l2").await.unwrap();
        mount_like_containerd(&m[0], &mnt);
        std::fs::write(mnt.join("new"), "n").unwrap();
        let seen = tree_no_owners(&mnt);
        crate::common::unmount_for_good(&mnt);
        assert_eq!(read(s.root().join("snapshots/3/fs/new")), "n");
        // Kernel overlayfs over the same directories shows the same tree.
        let work = s.dir.path().join("kwork");
        std::fs::create_dir(&work).unwrap();
        let lowers = format!("{}:{}", upper2.display(), s.root().join("snapshots/1/fs").display());
        let k = crate::common::oracle::kernel_mount(&lowers, &s.root().join("snapshots/3/fs"), &work, &mnt, "");
        assert_eq!(tree_no_owners(&mnt), seen);
        drop(k);
        // A view of two layers: read-only, no upper.
        let v = pb::ViewSnapshotRequest {
            snapshotter: String::new(),
            key: "v".into(),
            parent: "l2".into(),
            labels: HashMap::new(),
        };
        let vm = c.view(v).await.unwrap().into_inner().mounts;
        assert!(!vm[0].options.iter().any(|o| o.starts_with("upperdir=")));
        mount_like_containerd(&vm[0], &mnt);
        assert_eq!(read(mnt.join("d/b")), "b");
        assert_eq!(errno(std::fs::write(mnt.join("x"), "x")), libc::EROFS);
        Command::new("umount").arg(&mnt).status().unwrap();
    });
}

#[test]
fn one_server_per_root_stale_sockets_replaced_sigterm_removes_the_socket() {
    let mut s = Server::start(&[]);
    // A second one on the same root is refused in one line.
    let out = Command::new(bin())
        .arg("--root")
        .arg(s.root())
        .args(["snapshotter", "--address"])
        .arg(s.dir.path().join("other.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("another snapshotter is using"), "{err}");
    // Nor on a socket another serves.
    let out = Command::new(bin())
        .arg("--root")
        .arg(s.dir.path().join("r2"))
        .args(["snapshotter", "--address"])
        .arg(s.sock())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another process serves"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(s.sock()).unwrap().permissions().mode() & 0o777, 0o600, "only its owner may connect");
    // SIGTERM: exits 0 and takes its socket.
    let mut child = s.child.take().unwrap();
    signal(child.id(), rustix::process::Signal::TERM).unwrap();
    assert!(child.wait().unwrap().success(), "{}", s.log());
    assert!(!s.sock().exists());
    // A socket left by a killed server is replaced.
    s.restart(&[]);
    let mut child = s.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(s.sock().exists());
    s.restart(&[]);
    // A file that is not a socket is never removed.
    let f = s.dir.path().join("plain");
    std::fs::write(&f, "keep").unwrap();
    let out = Command::new(bin())
        .arg("--root")
        .arg(s.dir.path().join("r3"))
        .args(["snapshotter", "--address"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a socket"));
    assert_eq!(read(&f), "keep");
}

#[test]
fn a_kill_mid_prepare_or_mid_remove_leaves_no_orphan_after_restart() {
    need_hooks!();
    for point in ["prepare", "remove"] {
        let kill = format!("{point}:2");
        let mut s = Server::start(&[(unionfs::hooks::SNAPSHOTTER_KILL, &kill)]);
        let rt = runtime();
        rt.block_on(async {
            let mut c = client(&s.sock()).await;
            prepare(&mut c, "a", "").await.unwrap();
            let r = pb::RemoveSnapshotRequest { snapshotter: String::new(), key: "a".into() };
            if point == "remove" {
                prepare(&mut c, "b", "").await.unwrap();
                c.remove(r.clone()).await.unwrap();
                assert!(c.remove(pb::RemoveSnapshotRequest { key: "b".into(), ..r }).await.is_err(), "killed mid-call");
            } else {
                assert!(prepare(&mut c, "b", "").await.is_err(), "killed mid-call");
            }
        });
        let status = s.child.take().unwrap().wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{point}");
        // The crash left a directory no record names.
        let left = s.dirs();
        s.restart(&[]);
        let after = s.dirs();
        rt.block_on(async {
            let mut c = client(&s.sock()).await;
            let (_, keys) = names(&mut c, &[]).await.unwrap();
            let want: &[&str] = if point == "prepare" { &["a"] } else { &[] };
            assert_eq!(keys, want, "{point}: the call that died did not happen");
            assert_eq!(after.len(), keys.len(), "{point}: before restart {left:?}, after {after:?}");
            assert_eq!(left.len(), after.len() + 1, "{point}: the crash left one orphan: {left:?}");
            prepare(&mut c, "c", "").await.unwrap();
        });
    }
}

#[test]
fn a_normal_user_runs_it_with_its_own_defaults_and_mounts_what_it_says() {
    need_root!();
    let (uid, gid) = ensure_test_user();
    let home = user_tempdir(uid, gid);
    let (data, run, mnt) = (home.path().join("data"), home.path().join("run"), home.path().join("mnt"));
    for d in [&data, &run, &mnt] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap();
    }
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(home.path().join("log")).unwrap();
    // No --root, no --address: the user's XDG directories.
    let mut child = Command::new(bin())
        .arg("snapshotter")
        .uid(uid)
        .gid(gid)
        .env("XDG_DATA_HOME", &data)
        .env("XDG_RUNTIME_DIR", &run)
        .stderr(log)
        .spawn()
        .unwrap();
    struct Stop<'a>(&'a mut Child, &'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            unmount_below(self.1);
        }
    }
    let sock = run.join("unionfs/snapshotter.sock");
    let root = data.join("unionfs/snapshotter");
    let stop = Stop(&mut child, home.path());
    wait_for("the user's snapshotter to listen", || std::os::unix::net::UnixStream::connect(&sock).is_ok());
    runtime().block_on(async {
        let mut c = client(&sock).await;
        let m = prepare(&mut c, "e1", "").await.unwrap();
        std::fs::write(Path::new(&m[0].source).join("f"), "from the layer").unwrap();
        commit(&mut c, "l1", "e1").await.unwrap();
        let m = prepare(&mut c, "ctr", "l1").await.unwrap();
        // Mounted by the user, as a rootless containerd would: through fusermount3.
        let helper =
            ["/sbin/mount.fuse3", "/usr/sbin/mount.fuse3"].into_iter().find(|p| Path::new(p).exists()).unwrap();
        let mut cmd = Command::new(helper);
        cmd.arg(&m[0].source).arg(&mnt).uid(uid).gid(gid);
        for o in &m[0].options {
            cmd.arg("-o").arg(o);
        }
        let out = cmd.arg("-t").arg(m[0].r#type.strip_prefix("fuse3.").unwrap()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // (A mount a normal user makes is the user's: root may not look in without allow_other.)
        let script = format!("cat {0}/f && echo mine > {0}/new", mnt.display());
        let w = Command::new("sh").arg("-c").arg(script).uid(uid).gid(gid).output().unwrap();
        assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
        assert_eq!(String::from_utf8_lossy(&w.stdout), "from the layer");
        let u = Command::new("fusermount3").arg("-u").arg(&mnt).uid(uid).gid(gid).status().unwrap();
        assert!(u.success());
    });
    use std::os::unix::fs::MetadataExt;
    let upper = root.join("snapshots/2/fs");
    assert_eq!(read(upper.join("new")), "mine\n");
    assert_eq!(std::fs::metadata(upper.join("new")).unwrap().uid(), uid);
    assert_eq!(std::fs::metadata(root.join("metadata.redb")).unwrap().uid(), uid, "its state is the user's");
    assert_eq!(std::fs::metadata(&sock).unwrap().uid(), uid);
    drop(stop);
}

#[test]
fn remove_refuses_a_snapshot_with_a_mount_inside_and_touches_nothing_of_it() {
    need_root!();
    let s = Server::start(&[]);
    runtime().block_on(async {
        let mut c = client(&s.sock()).await;
        let m = prepare(&mut c, "a", "").await.unwrap();
        let inside = Path::new(&m[0].source).join("sub");
        let fs = mount_tmpfs(&inside, "");
        write(inside.join("keep"), "x");
        let rm = pb::RemoveSnapshotRequest { snapshotter: String::new(), key: "a".into() };
        let e = c.remove(rm.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("is mounted inside it"), "{}", e.message());
        assert_eq!(read(inside.join("keep")), "x", "nothing of the mounted filesystem was removed");
        assert_eq!(names(&mut c, &[]).await.unwrap().1, ["a"], "the record stays");
        drop(fs);
        c.remove(rm).await.unwrap();
        assert!(s.dirs().is_empty());
    });
}

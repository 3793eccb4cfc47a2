//! containerd takes unionfs's archives: `ctr images import` of `unionfs save` output (OCI
//! archive and docker-archive), then `ctr run` of the image. A containerd of the test's
//! own (its root, state and socket in a scratch directory) is started and stopped here.
//!
//! And containerd on unionfs: `unionfs snapshotter` as its proxy snapshot plugin, unpacking
//! a multi-layer image, running containers, diffs equal to the built-in overlayfs
//! snapshotter's, usage, cleanup that leaves nothing, and a snapshotter killed mid-unpack.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    fn start() -> Option<Containerd> {
        Containerd::start_with("")
    }

    /// [`Containerd::start_with`] without the CRI plugin disabled.
    fn start_with_cri(extra: &str) -> Option<Containerd> {
        Containerd::start_config(extra, false)
    }

    /// A containerd with `extra` added to its config, in a mount namespace of its own (its
    /// mounts, and those of the shims it starts, are not the host's).
    fn start_with(extra: &str) -> Option<Containerd> {
        Containerd::start_config(extra, true)
    }

    fn start_config(extra: &str, no_cri: bool) -> Option<Containerd> {
        if Command::new("containerd").arg("--version").output().is_err() {
            crate::common::skip("containerd is not installed");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("unionfs-ctd-").tempdir().unwrap();
        let d = dir.path();
        let conf = d.join("config.toml");
        std::fs::write(
            &conf,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n{1}\
                 [grpc]\naddress = \"{0}/sock\"\n[ttrpc]\naddress = \"{0}/ttrpc.sock\"\n{extra}",
                d.display(),
                if no_cri { "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n" } else { "" }
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("log")).unwrap();
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "containerd", "--config"])
            .arg(&conf)
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd { dir, child };
        wait_for("containerd to answer", || c.ctr(&["version"]).status.success());
        Some(c)
    }

    /// The mount table of containerd's own namespace.
    fn mounts(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.child.id())).unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr").arg("--address").arg(self.dir.path().join("sock")).args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "ctr {args:?}: {}\ncontainerd's log:\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims a failed test left (they name the daemon's address in their arguments).
        let _ = Command::new("pkill").arg("-9").arg("-f").arg(self.dir.path()).status();
        unmount_below(self.dir.path());
    }
}

/// A unionfs store in `dir` with a busybox image whose command prints a file and a variable
/// set in its config.
fn busybox_store(dir: &Path) -> PathBuf {
    let root = dir.join("ufs");
    let img = dir.join("img");
    std::fs::create_dir_all(img.join("bin")).unwrap();
    std::fs::create_dir_all(img.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", img.join("bin/busybox")).unwrap();
    for a in ["sh", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", img.join("bin").join(a)).unwrap();
    }
    std::fs::write(img.join("etc/motd"), "from a unionfs archive\n").unwrap();
    let u = |args: &[&str]| {
        let o = Command::new(bin()).arg("--root").arg(&root).args(args).output().unwrap();
        assert!(o.status.success(), "unionfs {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    u(&["image", "import", "localhost/bb:1", img.to_str().unwrap()]);
    root
}

#[test]
fn containerd_imports_and_runs_unionfs_archives() {
    need_root!();
    let Some(c) = Containerd::start() else { return };
    if !Path::new("/bin/busybox").exists() {
        crate::common::skip("busybox-static is not installed");
        return;
    }
    let root = busybox_store(c.dir.path());
    for (i, format) in ["oci-archive", "docker-archive"].iter().enumerate() {
        let out = c.dir.path().join(format!("{format}.tar"));
        let o = Command::new(bin())
            .arg("--root")
            .arg(&root)
            .args(["save", "--format", format, "-o"])
            .arg(&out)
            .arg("localhost/bb:1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        c.ok(&["images", "import", out.to_str().unwrap()]);
        assert!(c.ok(&["images", "ls", "-q"]).lines().any(|l| l == "localhost/bb:1"), "{format}");
        let name = format!("t{i}");
        let ran = c.ok(&["run", "--rm", "localhost/bb:1", &name, "cat", "/etc/motd"]);
        assert_eq!(ran, "from a unionfs archive\n", "{format}");
        c.ok(&["images", "rm", "localhost/bb:1"]);
    }
}

/// The proxy plugin's config for a snapshotter serving `sock`.
fn proxy(sock: &Path) -> String {
    format!("[proxy_plugins.unionfs]\ntype = \"snapshot\"\naddress = \"{}\"\n", sock.display())
}

/// A docker-archive of a two-layer image made with the unionfs manager: a busybox base with
/// `/etc/motd`, `/etc/gone`, `/d1/{a,b}`; a second layer that changes `/etc/motd`, deletes
/// `/etc/gone`, makes `/d1` opaque with only `c` in it, and adds `/new/dir/f`.
fn layered_image(dir: &Path) -> PathBuf {
    let root = busybox_store(dir);
    let mgr = |args: &[&str]| {
        let o = Command::new(bin()).arg("--root").arg(&root).args(args).output().unwrap();
        assert!(o.status.success(), "unionfs {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let m = PathBuf::from(mgr(&["run", "--name", "b", "localhost/bb:1"]).trim());
    write(m.join("etc/gone"), "gone\n");
    std::fs::create_dir(m.join("d1")).unwrap();
    write(m.join("d1/a"), "a\n");
    write(m.join("d1/b"), "b\n");
    mgr(&["stop", "b"]);
    mgr(&["commit", "b", "localhost/base:1"]);
    let m = PathBuf::from(mgr(&["run", "--name", "c", "localhost/base:1"]).trim());
    write(m.join("etc/motd"), "changed\n");
    std::fs::remove_file(m.join("etc/gone")).unwrap();
    std::fs::remove_dir_all(m.join("d1")).unwrap();
    std::fs::create_dir(m.join("d1")).unwrap();
    write(m.join("d1/c"), "c\n");
    std::fs::create_dir_all(m.join("new/dir")).unwrap();
    write(m.join("new/dir/f"), "f\n");
    mgr(&["stop", "c"]);
    mgr(&["commit", "c", "localhost/multi:1"]);
    let out = dir.join("multi.tar");
    mgr(&["save", "--format", "docker-archive", "-o", out.to_str().unwrap(), "localhost/multi:1"]);
    for n in ["b", "c"] {
        mgr(&["rm", n]);
    }
    out
}

/// What a container does on the image: read, see deletes and the opaque directory, write,
/// rename, delete a lower file and directory.
const STEPS: &str = "set -e; cat /etc/motd; test ! -e /etc/gone; ls /d1; cat /new/dir/f; \
                     echo w > /w; mv /w /w2; rm /etc/motd; rm -r /new; mkdir /d1/x; echo q > /d1/x/q; echo done";

/// A diff tarball's entries: path, type, mode, size, link, content (times left out).
fn entries(tar_gz: &[u8]) -> Vec<String> {
    let gz = flate2::read::MultiGzDecoder::new(tar_gz);
    let mut a = tar::Archive::new(gz);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let path = e.path().unwrap().display().to_string();
        let link = e.link_name().unwrap().map(|l| l.display().to_string()).unwrap_or_default();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.push(format!(
            "{path} {:?} {:o} {} {link} {}",
            h.entry_type(),
            h.mode().unwrap(),
            h.size().unwrap(),
            String::from_utf8_lossy(&data)
        ));
    }
    out.sort();
    out
}

/// The unionfs mounts and daemons anything of this test still has.
fn leftovers(c: &Containerd, root: &Path) -> Vec<String> {
    let mut out: Vec<String> = c
        .mounts()
        .lines()
        .chain(read("/proc/self/mountinfo").lines().map(|l| l as &str).collect::<Vec<_>>())
        .filter(|l| {
            l.contains("fuse.unionfs") && l.contains(&*root.to_string_lossy())
                || l.contains(" - fuse.unionfs ") && l.contains("unionfs-ctd-")
        })
        .map(String::from)
        .collect();
    let ps = Command::new("pgrep").arg("-af").arg(root.join("snapshots")).output().unwrap();
    out.extend(String::from_utf8_lossy(&ps.stdout).lines().map(String::from));
    out
}

#[test]
fn containerd_runs_images_on_the_unionfs_snapshotter() {
    need_root!();
    let snap = crate::snapshotter::Server::start(&[]);
    let Some(c) = Containerd::start_with(&proxy(&snap.sock())) else { return };
    let image = layered_image(c.dir.path());
    let img = "localhost/multi:1";
    // Every layer is unpacked through unionfs mounts.
    c.ok(&["images", "import", "--snapshotter", "unionfs", image.to_str().unwrap()]);
    assert_eq!(snap.dirs(), ["1", "2", "3"], "one directory per layer");
    let top = snap.root().join("snapshots/3/fs");
    for gone in ["etc/gone", "d1/a", "d1/b"] {
        let st = std::fs::symlink_metadata(top.join(gone)).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&st.file_type()), "{gone} is a kernel whiteout");
        assert_eq!(std::os::unix::fs::MetadataExt::rdev(&st), 0);
    }
    // A container runs on it.
    let ran = c.ok(&["run", "--rm", "--snapshotter", "unionfs", img, "r1", "sh", "-c", STEPS]);
    assert_eq!(ran, "changed\nc\nf\ndone\n");
    // The same steps on the built-in overlayfs snapshotter give the same diff.
    let mut diffs = Vec::new();
    for (sn, id) in [("unionfs", "k1"), ("overlayfs", "k2")] {
        c.ok(&["run", "--snapshotter", sn, img, id, "sh", "-c", STEPS]);
        let o = c.ctr(&["snapshots", "--snapshotter", sn, "diff", id]);
        assert!(o.status.success(), "{sn}: {}", String::from_utf8_lossy(&o.stderr));
        diffs.push(entries(&o.stdout));
    }
    assert!(diffs[0].iter().any(|e| e.starts_with(".wh.new ")), "{:?}", diffs[0]);
    assert_eq!(diffs[0], diffs[1], "unionfs's diff against overlayfs's");
    // Two containers share the layers and not their writes.
    c.ok(&["run", "--snapshotter", "unionfs", img, "c1", "sh", "-c", "echo 1 > /mine-c1"]);
    let seen = c.ok(&["run", "--snapshotter", "unionfs", img, "c2", "sh", "-c", "echo 2 > /mine-c2; ls /"]);
    assert!(seen.contains("mine-c2") && !seen.contains("mine-c1"), "{seen}");
    assert_eq!(snap.dirs().len(), 3 + 3, "three layers (one copy each), k1, c1, c2");
    let rt = crate::snapshotter::runtime();
    rt.block_on(async {
        let mut cl = crate::snapshotter::client(&snap.sock()).await;
        let (_, keys) = crate::snapshotter::names(&mut cl, &[]).await.unwrap();
        let key = |id: &str| keys.iter().find(|k| k.ends_with(&format!("/{id}"))).unwrap().clone();
        let mounts =
            |k: String| unionfs::snapshotter::proto::snapshots::MountsRequest { snapshotter: String::new(), key: k };
        let m1 = cl.mounts(mounts(key("c1"))).await.unwrap().into_inner().mounts.remove(0);
        let m2 = cl.mounts(mounts(key("c2"))).await.unwrap().into_inner().mounts.remove(0);
        let opt = |m: &unionfs::snapshotter::proto::types::Mount, k: &str| {
            m.options.iter().find_map(|o| o.strip_prefix(k)).unwrap().to_string()
        };
        assert_eq!(opt(&m1, "lowerdir="), opt(&m2, "lowerdir="), "the same layer directories");
        let (u1, u2) = (PathBuf::from(opt(&m1, "upperdir=")), PathBuf::from(opt(&m2, "upperdir=")));
        assert!(u1.join("mine-c1").exists() && !u1.join("mine-c2").exists());
        assert!(u2.join("mine-c2").exists() && !u2.join("mine-c1").exists());
        // Usage is the upper's, as du counts it.
        let u = cl
            .usage(unionfs::snapshotter::proto::snapshots::UsageRequest { snapshotter: String::new(), key: key("k1") })
            .await
            .unwrap()
            .into_inner();
        let k1 = cl.mounts(mounts(key("k1"))).await.unwrap().into_inner().mounts.remove(0);
        let du = Command::new("du").args(["-s", "-B1"]).arg(opt(&k1, "upperdir=")).output().unwrap();
        let du: i64 = String::from_utf8_lossy(&du.stdout).split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(u.size, du);
    });
    // Removing containers and the image (a synchronous collection) leaves nothing.
    c.ok(&["containers", "rm", "k1", "k2", "c1", "c2"]);
    c.ok(&["images", "rm", "--sync", img]);
    rt.block_on(async {
        let mut cl = crate::snapshotter::client(&snap.sock()).await;
        assert_eq!(crate::snapshotter::names(&mut cl, &[]).await.unwrap().1, Vec::<String>::new());
    });
    assert_eq!(snap.dirs(), Vec::<String>::new());
    assert_eq!(leftovers(&c, &snap.root()), Vec::<String>::new());
}

#[test]
fn containerd_recovers_from_a_snapshotter_killed_mid_unpack() {
    need_root!();
    need_hooks!();
    // Killed (SIGKILL) in the second Prepare of the unpack: the second layer's directory is
    // made and named, its record not committed.
    let mut snap = crate::snapshotter::Server::start(&[(unionfs::hooks::SNAPSHOTTER_KILL, "prepare:2")]);
    let Some(c) = Containerd::start_with(&proxy(&snap.sock())) else { return };
    let image = layered_image(c.dir.path());
    let img = "localhost/multi:1";
    let o = c.ctr(&["images", "import", "--snapshotter", "unionfs", image.to_str().unwrap()]);
    assert!(!o.status.success(), "the unpack cannot succeed with its snapshotter dead");
    let status = snap.child.take().unwrap().wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    assert_eq!(snap.dirs().len(), 2, "the first layer and the orphan: {:?}", snap.dirs());
    snap.restart(&[]);
    assert_eq!(snap.dirs(), ["1"], "the orphan is gone, the committed layer kept");
    // containerd reconnects; a bounded retry covers its reconnect back-off.
    wait_for("an import after the restart", || {
        c.ctr(&["images", "import", "--snapshotter", "unionfs", image.to_str().unwrap()]).status.success()
    });
    assert_eq!(
        c.ok(&["run", "--rm", "--snapshotter", "unionfs", img, "r", "sh", "-c", STEPS]),
        "changed\nc\nf\ndone\n"
    );
    c.ok(&["images", "rm", "--sync", img]);
    assert_eq!(snap.dirs(), Vec::<String>::new());
    assert_eq!(leftovers(&c, &snap.root()), Vec::<String>::new());
}

/// The containerd config block of docs/kubernetes.md (without its `version` line), with the
/// snapshotter's socket put in.
fn documented_config(sock: &Path) -> String {
    let doc = read(repo().join("docs/kubernetes.md"));
    let at = doc.find("<!-- tested: node-config ").expect("docs/kubernetes.md has the tested node config");
    let rest = &doc[at..];
    let start = rest.find("```toml\n").unwrap() + 8;
    let end = rest[start..].find("```").unwrap() + start;
    let block = &rest[start..end];
    assert!(block.contains("/run/unionfs/snapshotter.sock"));
    block
        .lines()
        .filter(|l| !l.starts_with("version"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("/run/unionfs/snapshotter.sock", &sock.to_string_lossy())
}

/// Whether `ctr plugins ls` says plugin `id` of type `kind` loaded.
fn plugin_ok(c: &Containerd, kind: &str, id: &str) -> bool {
    c.ok(&["plugins", "ls"]).lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 4 && f[0] == kind && f[1] == id && f[f.len() - 1] == "ok"
    })
}

#[test]
fn the_documented_node_config_starts_cri_on_unionfs() {
    need_root!();
    let snap = crate::snapshotter::Server::start(&[]);
    let conf = documented_config(&snap.sock());
    {
        let Some(c) = Containerd::start_with_cri(&conf) else { return };
        assert!(plugin_ok(&c, "io.containerd.snapshotter.v1", "unionfs"), "{}", c.log());
        assert!(plugin_ok(&c, "io.containerd.grpc.v1", "cri"), "the CRI plugin takes unionfs: {}", c.log());
    }
    // The check means something: CRI refuses a snapshotter that does not exist.
    let Some(c) =
        Containerd::start_with_cri(&conf.replace("snapshotter = \"unionfs\"", "snapshotter = \"nonexistent\""))
    else {
        return;
    };
    assert!(!plugin_ok(&c, "io.containerd.grpc.v1", "cri"));
}

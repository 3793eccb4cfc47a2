//! The container manager, through the real binary: images and layers, containers with one
//! mount each, Docker's size/diff/commit, volumes, robustness.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) struct Mgr {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) root: PathBuf,
}

impl Mgr {
    pub(crate) fn new() -> Mgr {
        let dir = tempfile::Builder::new().prefix("unionfs-mgr-").tempdir().unwrap();
        let root = dir.path().join("root");
        Mgr { dir, root }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        Command::new(bin()).arg("--root").arg(&self.root).args(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "unionfs {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs and expects a one-line failure mentioning `needle`; returns it.
    pub(crate) fn fails(&self, args: &[&str], needle: &str) -> String {
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "unionfs {args:?} should fail");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} should mention {needle:?}");
        err
    }

    /// Imports the demo image as `springpetclinic:1.0`.
    pub(crate) fn demo_image(&self) {
        let fx = self.dir.path().join("fx");
        unionfs::fixture::build(&repo().join("layers-fixtures/springpetclinic"), &fx).unwrap();
        let l = |n: &str| fx.join(n).display().to_string();
        self.ok(&["image", "import", "springpetclinic:1.0", &l("l3-base"), &l("l2-runtime"), &l("l1-app")]);
    }

    pub(crate) fn mount_path(&self, name: &str) -> PathBuf {
        PathBuf::from(self.ok(&["mount-path", name]).trim())
    }

    /// Sizes of the image's layers as stored.
    pub(crate) fn image_bytes(&self, r: &str) -> u64 {
        let tag = std::fs::read_to_string(self.root.join("images").join(r)).unwrap();
        let id = tag.lines().find_map(|l| l.strip_prefix("image: sha256:")).unwrap();
        let img = std::fs::read_to_string(self.root.join("imagedb").join(id).join("meta")).unwrap();
        img.lines()
            .filter_map(|l| l.strip_prefix("layer: sha256:"))
            .map(|id| {
                let m = std::fs::read_to_string(self.root.join("layers").join(id).join("meta")).unwrap();
                m.lines().find_map(|l| l.strip_prefix("size: ")).unwrap().parse::<u64>().unwrap()
            })
            .sum()
    }
}

impl Drop for Mgr {
    fn drop(&mut self) {
        // Unmount whatever a failing test left mounted.
        unmount_below(self.dir.path());
    }
}

#[test]
fn two_containers_from_one_image_are_isolated() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    let p1 = PathBuf::from(m.ok(&["run", "--name", "cont1", "springpetclinic:1.0"]).trim());
    let p2 = PathBuf::from(m.ok(&["run", "--name", "cont2", "springpetclinic:1.0"]).trim());
    assert_eq!(m.mount_path("cont1"), p1, "run prints the mount path");
    assert_eq!(read(p1.join("etc/motd")), "Spring PetClinic demo container\n");
    write(p1.join("etc/motd"), "changed in cont1\n");
    write(p1.join("tmp/only-in-1"), "x");
    assert_eq!(read(p2.join("etc/motd")), "Spring PetClinic demo container\n", "cont2 does not see cont1's write");
    assert!(!p2.join("tmp/only-in-1").exists());
    let ps = m.ok(&["ps"]);
    assert!(ps.contains("cont1") && ps.contains("cont2") && ps.contains("Up"));
    // rm deletes only that container's writable layer.
    m.fails(&["rm", "cont1"], "is running");
    m.ok(&["rm", "-f", "cont1"]);
    assert!(!m.root.join("containers/cont1").exists());
    assert!(!is_mounted(&p1));
    assert_eq!(read(p2.join("etc/motd")), "Spring PetClinic demo container\n");
    assert_eq!(m.ok(&["images"]).lines().count(), 2, "the image stays");
    m.ok(&["rm", "-f", "cont2"]);
}

#[test]
fn ps_size_is_the_writable_layer_and_virtual_adds_the_image() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    let p = PathBuf::from(m.ok(&["run", "--name", "sized", "springpetclinic:1.0"]).trim());
    let image = m.image_bytes("springpetclinic:1.0");
    let ps = m.ok(&["ps", "-s"]);
    assert!(ps.contains(&format!("0B (virtual {})", unionfs::manager::units::human_size(image))), "{ps}");
    std::fs::write(p.join("tmp/two"), "hi").unwrap();
    let ps = m.ok(&["ps", "-s"]);
    assert!(ps.contains(&format!("2B (virtual {})", unionfs::manager::units::human_size(image + 2))), "{ps}");
    std::fs::write(p.join("tmp/more"), vec![b'x'; 12_340]).unwrap();
    let ps = m.ok(&["ps", "-s"]);
    assert!(ps.contains("12.3kB (virtual"), "{ps}");
    m.ok(&["rm", "-f", "sized"]);
}

#[test]
fn size_and_inode_limits_per_container() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    // A usage error: clap's whole message (the cause, then where to read more), exit 2.
    let o = m.run(&["run", "--name", "bad", "--size-limit", "lots", "springpetclinic:1.0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("'lots' is not a size"));
    let p = PathBuf::from(
        m.ok(&["run", "--name", "small", "--size-limit", "1M", "--inode-limit", "100", "springpetclinic:1.0"]).trim(),
    );
    let big = std::fs::write(p.join("tmp/big"), vec![7u8; 2 << 20]);
    assert_eq!(errno(big), libc::EDQUOT, "2 MiB into a 1 MiB writable layer");
    let ps = m.ok(&["ps", "-s"]);
    let line = ps.lines().find(|l| l.contains("small")).unwrap();
    assert!(line.contains("(limit 1.05MB)") && line.contains("(limit 100 inodes)"), "{ps}");
    // The limits come back with the container.
    m.ok(&["stop", "small"]);
    m.ok(&["start", "small"]);
    assert_eq!(errno(std::fs::write(p.join("tmp/big2"), vec![7u8; 2 << 20])), libc::EDQUOT);
    // What the failed writes left takes the space; removing it makes room.
    std::fs::remove_file(p.join("tmp/big")).unwrap();
    std::fs::remove_file(p.join("tmp/big2")).unwrap();
    std::fs::write(p.join("tmp/fits"), "fits").unwrap();
    m.ok(&["rm", "-f", "small"]);
}

#[test]
fn a_renamed_image_directory_survives_commit() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    let p = PathBuf::from(m.ok(&["run", "--name", "mover", "springpetclinic:1.0"]).trim());
    // Containers keep redirects off (their layer is read directly by diff and commit): a
    // lower directory does not rename in place, and mv falls back to copying it.
    assert_eq!(errno(std::fs::rename(p.join("etc"), p.join("etc2"))), libc::EXDEV);
    assert!(Command::new("mv").arg(p.join("etc")).arg(p.join("etc2")).status().unwrap().success());
    assert_eq!(read(p.join("etc2/motd")), "Spring PetClinic demo container\n");
    m.ok(&["commit", "mover", "moved:1"]);
    let q = PathBuf::from(m.ok(&["run", "--name", "after", "moved:1"]).trim());
    assert_eq!(read(q.join("etc2/motd")), "Spring PetClinic demo container\n");
    assert!(!q.join("etc").exists());
    m.ok(&["rm", "-f", "mover", "after"]);
}

#[test]
fn diff_lists_adds_changes_deletes_and_opaque_directories() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    let p = PathBuf::from(m.ok(&["run", "--name", "d", "springpetclinic:1.0"]).trim());
    write(p.join("tmp/new"), "n");
    write(p.join("etc/motd"), "changed");
    std::fs::remove_file(p.join("etc/os-release")).unwrap();
    std::fs::remove_dir_all(p.join("opt/java/lib")).unwrap();
    std::fs::remove_dir_all(p.join("app/config")).unwrap();
    std::fs::create_dir(p.join("app/config")).unwrap();
    write(p.join("app/config/new.properties"), "x=1");
    std::fs::create_dir(p.join("srv")).unwrap();
    write(p.join("srv/index.html"), "hi");
    let diff = m.ok(&["diff", "d"]);
    let expected = "\
C /app
C /app/config
A /app/config/new.properties
D /app/config/application.properties
C /etc
C /etc/motd
D /etc/os-release
C /opt
C /opt/java
D /opt/java/lib
A /srv
A /srv/index.html
C /tmp
A /tmp/new
";
    let mut got: Vec<&str> = diff.lines().collect();
    let mut want: Vec<&str> = expected.lines().collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "diff was:\n{diff}");
    m.ok(&["rm", "-f", "d"]);
}

#[test]
fn commit_then_run_from_the_new_image() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    let p = PathBuf::from(m.ok(&["run", "--name", "c", "springpetclinic:1.0"]).trim());
    write(p.join("app/VERSION"), "2.0\n");
    std::fs::remove_file(p.join("etc/motd")).unwrap();
    std::fs::remove_dir_all(p.join("tmp")).unwrap();
    std::fs::create_dir(p.join("tmp")).unwrap();
    m.ok(&["commit", "c", "pet:2.0"]);
    let images = m.ok(&["images"]);
    assert!(images.contains("pet") && images.contains("2.0"), "{images}");
    let q = PathBuf::from(m.ok(&["run", "--name", "c2", "pet:2.0"]).trim());
    assert_eq!(read(q.join("app/VERSION")), "2.0\n");
    assert!(!q.join("etc/motd").exists(), "the deletion is committed");
    assert!(q.join("app/spring-petclinic.jar").exists(), "the old layers are shared");
    assert!(m.ok(&["diff", "c2"]).is_empty(), "a fresh container of the new image has no changes");
    // The image's layers are stored once: three of the old image plus one.
    assert_eq!(std::fs::read_dir(m.root.join("layers")).unwrap().count(), 4);
    m.fails(&["image", "rm", "springpetclinic:1.0"], "used by");
    m.ok(&["rm", "-f", "c", "c2"]);
    m.ok(&["image", "rm", "pet:2.0", "springpetclinic:1.0"]);
    assert_eq!(std::fs::read_dir(m.root.join("layers")).unwrap().count(), 0, "unused layers are deleted");
}

fn tarball(entries: &[(&str, Option<&[u8]>)], link: Option<(&str, &str)>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                h.set_mode(0o644);
                // set_path refuses '..' and absolute paths; write the raw name for hostile tests.
                let raw = path.as_bytes();
                h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
                h.set_cksum();
                b.append(&h, *d).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                h.set_path(path).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
        }
    }
    if let Some((name, target)) = link {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_path(name).unwrap();
        h.set_link_name(target).unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn import_tarballs_with_oci_whiteouts_in_every_compression() {
    need_fuse!();
    let m = Mgr::new();
    let d = m.dir.path();
    let base = tarball(
        &[
            ("etc/", None),
            ("etc/keep", Some(b"k")),
            ("etc/gone", Some(b"g")),
            ("cache/", None),
            ("cache/old", Some(b"o")),
        ],
        None,
    );
    let top =
        tarball(&[("etc/.wh.gone", Some(b"")), ("cache/.wh..wh..opq", Some(b"")), ("cache/new", Some(b"n"))], None);
    std::fs::write(d.join("base.tar"), &base).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &top).unwrap();
    std::fs::write(d.join("top.tar.gz"), gz.finish().unwrap()).unwrap();
    let zst = ruzstd::encoding::compress_to_vec(&top[..], ruzstd::encoding::CompressionLevel::Fastest);
    std::fs::write(d.join("top.tar.zst"), zst).unwrap();
    m.ok(&["image", "import", "oci:gz", d.join("base.tar").to_str().unwrap(), d.join("top.tar.gz").to_str().unwrap()]);
    m.ok(&[
        "image",
        "import",
        "oci:zst",
        d.join("base.tar").to_str().unwrap(),
        d.join("top.tar.zst").to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_dir(m.root.join("layers")).unwrap().count(), 2, "the same layer content is stored once");
    for img in ["oci:gz", "oci:zst"] {
        let p = PathBuf::from(m.ok(&["run", img]).trim());
        assert_eq!(ls(p.join("etc")), ["keep"], "{img}: .wh.gone hides gone");
        assert_eq!(ls(p.join("cache")), ["new"], "{img}: .wh..wh..opq makes cache opaque");
    }
    let mut names: Vec<String> =
        m.ok(&["ps"]).lines().skip(1).map(|l| l.split_whitespace().last().unwrap().to_string()).collect();
    names.sort();
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    m.ok(&args);
}

#[test]
fn bad_tarballs_change_nothing() {
    let m = Mgr::new();
    let d = m.dir.path();
    let good = tarball(&[("a/", None), ("a/b", Some(b"data"))], None);
    let mut truncated = good.clone();
    truncated.truncate(700);
    std::fs::write(d.join("trunc.tar"), &truncated).unwrap();
    std::fs::write(d.join("garbage.tar.gz"), b"\x1f\x8bnot really gzip at all").unwrap();
    std::fs::write(d.join("dotdot.tar"), tarball(&[("../escape", Some(b"x"))], None)).unwrap();
    std::fs::write(d.join("abs.tar"), tarball(&[("/etc/escape", Some(b"x"))], None)).unwrap();
    let mut sym = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_path("link").unwrap();
    h.set_link_name(d.display().to_string()).unwrap();
    h.set_cksum();
    sym.append(&h, &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1);
    h.set_path("link/escaped").unwrap();
    h.set_cksum();
    sym.append(&h, &b"x"[..]).unwrap();
    std::fs::write(d.join("symlink.tar"), sym.into_inner().unwrap()).unwrap();
    m.fails(&["image", "import", "t:1", d.join("trunc.tar").to_str().unwrap()], "truncated");
    m.fails(&["image", "import", "t:2", d.join("garbage.tar.gz").to_str().unwrap()], "cannot import");
    m.fails(&["image", "import", "t:3", d.join("dotdot.tar").to_str().unwrap()], "outside the layer");
    m.fails(&["image", "import", "t:4", d.join("abs.tar").to_str().unwrap()], "absolute");
    m.fails(&["image", "import", "t:5", d.join("symlink.tar").to_str().unwrap()], "symlink");
    m.fails(&["image", "import", "t:6", d.join("missing.tar").to_str().unwrap()], "does not exist");
    m.fails(&["image", "import", "BAD NAME", d.join("trunc.tar").to_str().unwrap()], "invalid image reference");
    assert!(!d.join("escaped").exists() && !Path::new("/etc/escape").exists());
    assert!(m.ok(&["images"]).lines().count() == 1, "no image was made");
    assert_eq!(std::fs::read_dir(m.root.join("layers")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(m.root.join("tmp")).unwrap().count(), 0, "no leftovers");
}

#[test]
fn bad_container_input_changes_nothing() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    m.fails(&["run", "--name", "x", "nosuch:1"], "no such image");
    m.fails(&["start", "nobody"], "no such container");
    m.fails(&["run", "--name", "bad/name", "springpetclinic:1.0"], "invalid container name");
    m.ok(&["run", "--name", "one", "springpetclinic:1.0"]);
    m.fails(&["run", "--name", "one", "springpetclinic:1.0"], "already in use");
    // Starting a running container changes nothing (as docker start).
    assert_eq!(m.ok(&["start", "one"]).trim(), m.mount_path("one").display().to_string());
    m.fails(&["run", "-v", "relative:path", "springpetclinic:1.0"], "VOLUME:/path");
    assert_eq!(std::fs::read_dir(m.root.join("containers")).unwrap().count(), 1);
    m.ok(&["rm", "-f", "one"]);
}

#[test]
fn kill_9_of_one_daemon_then_start() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    let p1 = PathBuf::from(m.ok(&["run", "--name", "victim", "springpetclinic:1.0"]).trim());
    let p2 = PathBuf::from(m.ok(&["run", "--name", "bystander", "springpetclinic:1.0"]).trim());
    write(p1.join("tmp/precious"), "kept across the crash");
    let e = unionfs::mounts::at(&p1).unwrap();
    let pid = unionfs::daemon::daemon_pid(e.major, e.minor).unwrap();
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), rustix::process::Signal::KILL)
        .unwrap();
    wait_for("the killed daemon's end", || !unionfs::sys::proc::process_alive(pid));
    let ps = m.ok(&["ps"]);
    let line = ps.lines().find(|l| l.contains("victim")).unwrap();
    assert!(line.contains("Dead"), "{ps}");
    // ENOTCONN once the connection is gone (ECONNABORTED for a request caught in flight on
    // /dev/fuse; over io_uring, whose rings the kernel tears down after the process is gone,
    // ECANCELED for one queued to a ring being cancelled).
    let e = errno(std::fs::metadata(&p1));
    assert!([libc::ENOTCONN, libc::ECONNABORTED, libc::ECANCELED].contains(&e), "errno {e}");
    assert_eq!(read(p2.join("etc/motd")), "Spring PetClinic demo container\n", "the other container is fine");
    m.ok(&["start", "victim"]);
    assert_eq!(read(p1.join("tmp/precious")), "kept across the crash");
    m.ok(&["rm", "-f", "victim", "bystander"]);
}

#[test]
fn parallel_manager_commands_never_corrupt_state() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    let root = m.root.clone();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let root = root.clone();
            std::thread::spawn(move || {
                let name = format!("par{i}");
                let o = Command::new(bin())
                    .arg("--root")
                    .arg(&root)
                    .args(["run", "--name", &name, "springpetclinic:1.0"])
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                let o = Command::new(bin()).arg("--root").arg(&root).args(["ps", "-a", "-s"]).output().unwrap();
                assert!(o.status.success());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let ps = m.ok(&["ps", "-a"]);
    assert_eq!(ps.lines().count(), 1 + 8, "{ps}");
    let names: Vec<String> = (0..8).map(|i| format!("par{i}")).collect();
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    m.ok(&args);
}

#[test]
fn volumes_outlive_containers() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    let p =
        PathBuf::from(m.ok(&["run", "--name", "db", "-v", "pgdata:/var/lib/postgresql", "springpetclinic:1.0"]).trim());
    write(p.join("var/lib/postgresql/table"), "rows");
    assert!(m.ok(&["diff", "db"]).lines().all(|l| !l.contains("table")), "volume writes are not in the writable layer");
    m.fails(&["volume", "rm", "pgdata"], "used by");
    m.ok(&["rm", "-f", "db"]);
    assert!(m.ok(&["volume", "ls"]).contains("pgdata"));
    let q = PathBuf::from(m.ok(&["run", "--name", "db2", "-v", "pgdata:/data", "springpetclinic:1.0"]).trim());
    assert_eq!(read(q.join("data/table")), "rows");
    m.ok(&["rm", "-f", "db2"]);
    m.ok(&["volume", "rm", "pgdata"]);
}

#[test]
fn export_layer_is_deterministic_oci() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    let p = PathBuf::from(m.ok(&["run", "--name", "e", "springpetclinic:1.0"]).trim());
    write(p.join("tmp/b"), "b");
    write(p.join("tmp/a"), "a");
    std::fs::hard_link(p.join("tmp/a"), p.join("tmp/a-link")).unwrap();
    setxattr(&p.join("tmp/b"), "user.k", b"v").unwrap();
    std::fs::remove_file(p.join("etc/motd")).unwrap();
    std::fs::remove_dir_all(p.join("app/config")).unwrap();
    std::fs::create_dir(p.join("app/config")).unwrap();
    let (t1, t2) = (m.dir.path().join("1.tar"), m.dir.path().join("2.tar"));
    m.ok(&["export-layer", "e", "-o", t1.to_str().unwrap()]);
    m.ok(&["export-layer", "e", "-o", t2.to_str().unwrap()]);
    assert_eq!(std::fs::read(&t1).unwrap(), std::fs::read(&t2).unwrap(), "same changes, same bytes");
    let mut ar = tar::Archive::new(std::fs::File::open(&t1).unwrap());
    let mut names = Vec::new();
    let mut link = None;
    let mut xattr = false;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let n = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if e.header().entry_type() == tar::EntryType::Link {
            link = Some((n.clone(), e.link_name().unwrap().unwrap().display().to_string()));
        }
        if let Some(Ok(mut x)) = e.pax_extensions().transpose() {
            xattr |= x.any(|r| r.is_ok_and(|r| r.key() == Ok("SCHILY.xattr.user.k")));
        }
        names.push(n);
    }
    assert!(names.contains(&"etc/.wh.motd".to_string()), "{names:?}");
    assert!(names.contains(&"app/config/.wh..wh..opq".to_string()), "{names:?}");
    assert_eq!(link, Some(("tmp/a-link".into(), "tmp/a".into())));
    assert!(xattr, "xattrs travel as PAX records");
    assert!(!names.iter().any(|n| n.contains("overlay")));
    m.ok(&["rm", "-f", "e"]);
}

#[test]
fn info_and_df() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    m.ok(&["run", "--name", "i1", "springpetclinic:1.0"]);
    m.ok(&["create", "--name", "i2", "springpetclinic:1.0"]);
    let info = m.ok(&["info"]);
    for want in [
        "Storage Driver: unionfs",
        "Root Dir:",
        "Backing Filesystem:",
        "Supports d_type: true",
        "Kernel overlayfs:",
        "FUSE passthrough:",
        "Images: 1",
        "Layers: 3",
        "Containers: 2",
        " Running: 1",
        " Stopped: 1",
    ] {
        assert!(info.contains(want), "info lacks {want:?}:\n{info}");
    }
    let df = m.ok(&["df"]);
    assert!(df.starts_with("TYPE"), "{df}");
    assert!(df.lines().any(|l| l.starts_with("Images") && l.contains("   1   ")), "{df}");
    assert!(df.lines().any(|l| l.starts_with("Containers") && l.split_whitespace().nth(1) == Some("2")), "{df}");
    let v = m.ok(&["df", "-v"]);
    assert!(v.contains("SHARED SIZE") && v.contains("UNIQUE SIZE") && v.contains("i1") && v.contains("i2"));
    m.ok(&["rm", "-f", "i1", "i2"]);
}

#[test]
fn sigkill_during_commit_leaves_the_store_consistent() {
    need_fuse!();
    let mg = Mgr::new();
    mg.demo_image();
    mg.ok(&["run", "--name", "c1", "springpetclinic:1.0"]);
    let mp = mg.mount_path("c1");
    // Enough changes that a commit takes a while.
    std::fs::create_dir(mp.join("bulk")).unwrap();
    for i in 0..600 {
        std::fs::write(mp.join(format!("bulk/f{i}")), vec![b'x'; 8 << 10]).unwrap();
    }
    std::fs::write(mp.join("marker"), "committed\n").unwrap();
    for (round, delay_ms) in [5u64, 20, 40, 80, 150].into_iter().enumerate() {
        let tag = format!("snap:{round}");
        let mut child = Command::new(bin()).arg("--root").arg(&mg.root).args(["commit", "c1", &tag]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // The store still answers, and an image is there whole or not at all.
        let images = mg.ok(&["images"]);
        let committed = images.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 1 && cols[0] == "snap" && cols[1] == round.to_string()
        });
        for layer in std::fs::read_dir(mg.root.join("layers")).unwrap() {
            let layer = layer.unwrap().path();
            let meta = layer.join("meta");
            assert!(meta.exists(), "round {round}: a layer without its record: {layer:?}");
        }
        if !committed {
            // A commit after the kill succeeds.
            mg.ok(&["commit", "c1", &tag]);
        }
        let name = format!("from{round}");
        mg.ok(&["run", "--name", &name, &tag]);
        let p = mg.mount_path(&name);
        assert_eq!(read(p.join("marker")), "committed\n", "round {round}");
        assert_eq!(std::fs::read_dir(p.join("bulk")).unwrap().count(), 600, "round {round}");
        mg.ok(&["rm", "-f", &name]);
    }
    mg.ok(&["rm", "-f", "c1"]);
}

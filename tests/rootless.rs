//! A normal user (no root, through fusermount3) runs the same scenario; the upper it writes
//! uses the `user.overlay.*` dialect, and kernel overlayfs mounted with `userxattr` over it
//! shows the same tree.

use crate::common::scenario::{apply, scenario};
use crate::common::*;
use std::path::PathBuf;
use std::process::Command;

const DIR_ENV: &str = "UNIONFS_ROOTLESS_DIR";

/// The unprivileged half, started by `rootless_upper_reads_the_same_in_kernel_overlayfs`.
#[test]
#[ignore = "the unprivileged half of rootless_upper_reads_the_same_in_kernel_overlayfs, which runs it as the test user"]
fn rootless_inner() {
    let dir = std::env::var_os(DIR_ENV).map(PathBuf::from).expect("started as the test user by its outer test");
    assert!(!is_root(), "must run as the unprivileged test user");
    let lowers = unionfs::fixture::build(&repo().join("layers-fixtures/oracle"), &dir.join("layers")).unwrap();
    let lower_arg = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let args: Vec<String> = vec![
        "mount".into(),
        "--lower".into(),
        lower_arg,
        "--upper".into(),
        dir.join("upper").display().to_string(),
        // Kernel overlayfs refuses redirects with `userxattr`, so the comparison below needs
        // directory renames to fail with EXDEV here too (tests/redirect.rs covers them).
        "-o".into(),
        "redirect_dir=off".into(),
        mnt.display().to_string(),
    ];
    let m = Mount::new(&args, &mnt);
    let mut errnos = Vec::new();
    for op in scenario() {
        errnos.push(format!("{op:?} {}", apply(&m.path, &op)));
    }
    std::fs::write(dir.join("errnos"), errnos.join("\n")).unwrap();
    std::fs::write(dir.join("unionfs.tree"), tree(&m.path)).unwrap();
    m.unmount();
}

#[test]
fn rootless_upper_reads_the_same_in_kernel_overlayfs() {
    need_fuse!();
    need_root!();
    let (uid, gid) = ensure_test_user();
    let d = user_tempdir(uid, gid);
    let out = run_test_as_user(test_name!("rootless_inner"), uid, gid, &[(DIR_ENV, d.path())]);
    assert!(
        out.status.success() && d.path().join("unionfs.tree").exists(),
        "the unprivileged run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = std::fs::read_to_string(d.path().join("unionfs.tree")).unwrap();
    let upper = d.path().join("upper");
    // The rootless markers are in the user.* dialect, never trusted.*.
    assert_eq!(
        getxattr(&upper.join("dir/pop"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..]),
        "mkdir over whiteout"
    );
    assert_eq!(getxattr(&upper.join("dir/pop"), "trusted.overlay.opaque"), None);
    // Kernel overlayfs with userxattr over the same lowers and this upper.
    let layers: Vec<String> =
        ["l1", "l2", "l3"].iter().map(|l| d.path().join("layers").join(l).display().to_string()).collect();
    let (kwork, kmnt) = (d.path().join("kwork"), d.path().join("kmnt"));
    std::fs::create_dir_all(&kwork).unwrap();
    std::fs::create_dir_all(&kmnt).unwrap();
    let opts =
        format!("lowerdir={},upperdir={},workdir={},userxattr", layers.join(":"), upper.display(), kwork.display());
    let st = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&kmnt).status().unwrap();
    assert!(st.success());
    let kernel = tree(&kmnt);
    rustix::mount::unmount(&kmnt, rustix::mount::UnmountFlags::empty()).unwrap();
    assert!(!kernel.contains(".wh.") && !kernel.contains(" c "), "no marker shows:\n{kernel}");
    assert_eq!(kernel, ours, "kernel overlayfs (userxattr) reads the rootless upper differently");
}

/// As the test user: lowers carrying `.wh.` whiteouts are read, and what only root may do
/// fails with EPERM (not EIO) and copies nothing up.
#[test]
#[ignore = "the unprivileged half of rootless_permissions, which runs it as the test user"]
fn rootless_permissions_inner() {
    let dir = std::env::var_os(DIR_ENV).map(PathBuf::from).expect("started as the test user by its outer test");
    assert!(!is_root());
    let lowers = unionfs::fixture::build(&repo().join("layers-fixtures/basic"), &dir.join("layers")).unwrap();
    let lower_arg = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let up = dir.join("upper");
    let args: Vec<String> = vec![
        "mount".into(),
        "--lower".into(),
        lower_arg,
        "--upper".into(),
        up.display().to_string(),
        mnt.display().to_string(),
    ];
    let m = Mount::new(&args, &mnt);
    let p = &m.path;
    // Every whiteout and opaque dialect a rootless engine produces is read.
    assert_eq!(ls(p.join("etc")), ["keep"]);
    assert_eq!(ls(p.join("var/log")), ["new"], ".wh..wh..opq");
    assert_eq!(ls(p.join("var/lib")), ["new"], "user.overlay.opaque");
    // Mount, write, copy-up, delete, mkdir over a whiteout, rename, xattrs.
    write(p.join("foo"), "rootless write");
    assert_eq!(read(up.join("foo")), "rootless write");
    std::fs::remove_file(p.join("bar")).unwrap();
    std::fs::remove_dir_all(p.join("tree")).unwrap();
    std::fs::create_dir(p.join("tree")).unwrap();
    assert_eq!(getxattr(&up.join("tree"), "user.overlay.opaque").as_deref(), Some(&b"y"[..]));
    std::fs::rename(p.join("top"), p.join("top2")).unwrap();
    setxattr(&p.join("top2"), "user.k", b"v").unwrap();
    assert_eq!(getxattr(&p.join("top2"), "user.k").as_deref(), Some(&b"v"[..]));
    // A merged lower directory renames too, with the redirect in the user.* dialect.
    let before = ls(p.join("dir/pop"));
    std::fs::rename(p.join("dir"), p.join("dir-renamed")).unwrap();
    assert_eq!(getxattr(&up.join("dir-renamed"), "user.overlay.redirect").as_deref(), Some(&b"dir"[..]));
    assert_eq!(getxattr(&up.join("dir-renamed"), "trusted.overlay.redirect"), None);
    assert_eq!(ls(p.join("dir-renamed/pop")), before);
    std::fs::rename(p.join("dir-renamed"), p.join("dir")).unwrap();
    // Only root may: EPERM, and nothing is copied up.
    assert_eq!(errno(std::os::unix::fs::chown(p.join("dir/pop/b"), Some(0), None)), libc::EPERM);
    assert!(!up.join("dir/pop/b").exists(), "a refused chown copies nothing up");
    let dev = rustix::fs::makedev(1, 3);
    assert_eq!(
        errno(
            rustix::fs::mknodat(
                rustix::fs::CWD,
                p.join("null"),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from(0o666),
                dev
            )
            .map_err(std::io::Error::from)
        ),
        libc::EPERM
    );
    assert_eq!(errno(setxattr(&p.join("top2"), "trusted.k", b"v")), libc::EPERM);
    assert!(work_dir_empties(&dir.join(".upper.work")), "temporaries left in the work dir");
    m.unmount();
}

#[test]
fn rootless_permissions() {
    need_fuse!();
    need_root!();
    let (uid, gid) = ensure_test_user();
    let d = user_tempdir(uid, gid);
    let out = run_test_as_user(test_name!("rootless_permissions_inner"), uid, gid, &[(DIR_ENV, d.path())]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

const LAYER_ENV: &str = "UNIONFS_ROOTLESS_LAYER";

/// As the test user, over a lower layer root prepared: a user's mount gives them no more
/// than they had on the layers.
#[test]
#[ignore = "the unprivileged half of rootless_mount_gives_no_more_than_the_layers, which runs it as the test user"]
fn rootless_no_more_than_the_layers_inner() {
    let dir = std::env::var_os(DIR_ENV).map(PathBuf::from).expect("started as the test user by its outer test");
    let lower = PathBuf::from(std::env::var_os(LAYER_ENV).unwrap());
    assert!(!is_root());
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let args: Vec<String> = vec![
        "mount".into(),
        "--lower".into(),
        lower.display().to_string(),
        "--upper".into(),
        dir.join("upper").display().to_string(),
        mnt.display().to_string(),
    ];
    let m = Mount::new(&args, &mnt);
    let p = &m.path;
    // A root-only file stays unreadable, and cannot be copied up to get around that.
    assert_eq!(errno(std::fs::read(p.join("secret"))), libc::EACCES);
    assert_eq!(errno(std::fs::OpenOptions::new().append(true).open(p.join("secret"))), libc::EACCES);
    assert_eq!(errno(std::fs::read_dir(p.join("private"))), libc::EACCES);
    // Device nodes do not open (a user's FUSE mount is nodev), set-id bits do nothing (nosuid).
    assert_eq!(errno(std::fs::File::open(p.join("nulldev"))), libc::EACCES);
    let sv = rustix::fs::statvfs(p).unwrap();
    assert!(sv.f_flag.contains(rustix::fs::StatVfsMountFlags::NOSUID), "nosuid");
    assert!(sv.f_flag.contains(rustix::fs::StatVfsMountFlags::NODEV), "nodev");
    // A root-owned directory cannot be written into, even though the daemon could copy it up.
    assert_eq!(errno(std::fs::write(p.join("rootdir/mine"), "x")), libc::EACCES);
    m.unmount();
}

#[test]
fn rootless_mount_gives_no_more_than_the_layers() {
    need_fuse!();
    need_root!();
    let (uid, gid) = ensure_test_user();
    let d = user_tempdir(uid, gid);
    let layer = tempfile::Builder::new().prefix("unionfs-layer-").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(layer.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(layer.path().join("secret"), "root only\n").unwrap();
    std::fs::set_permissions(layer.path().join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(layer.path().join("private")).unwrap();
    std::fs::set_permissions(layer.path().join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(layer.path().join("rootdir")).unwrap();
    let st = Command::new("mknod").arg(layer.path().join("nulldev")).args(["c", "1", "3"]).status().unwrap();
    assert!(st.success());
    std::fs::set_permissions(layer.path().join("nulldev"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = run_test_as_user(
        test_name!("rootless_no_more_than_the_layers_inner"),
        uid,
        gid,
        &[(DIR_ENV, d.path()), (LAYER_ENV, layer.path())],
    );
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(layer.path().join("secret")).unwrap(), "root only\n");
}

/// As the test user: the upper unionfs wrote, mounted by kernel overlayfs inside a user
/// namespace (`unshare -Urm`, `userxattr`), shows the same tree.
#[test]
#[ignore = "the unprivileged half of rootless_kernel_userns, which runs it as the test user"]
fn rootless_kernel_userns_inner() {
    let dir = std::env::var_os(DIR_ENV).map(PathBuf::from).expect("started as the test user by its outer test");
    if std::env::var_os("UNIONFS_IN_USERNS").is_some() {
        // Inside `unshare -Urm`: mount kernel overlayfs and dump the tree.
        let l = ["l1", "l2", "l3"].iter().map(|x| dir.join("layers").join(x).display().to_string()).collect::<Vec<_>>();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},userxattr",
            l.join(":"),
            dir.join("upper").display(),
            dir.join("kwork").display()
        );
        std::fs::create_dir_all(dir.join("kwork")).unwrap();
        std::fs::create_dir_all(dir.join("kmnt")).unwrap();
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(dir.join("kmnt"))
            .status()
            .unwrap();
        assert!(st.success(), "kernel overlayfs mount in a user namespace failed");
        std::fs::write(dir.join("kernel.tree"), tree_no_owners(&dir.join("kmnt"))).unwrap();
        return;
    }
    let lowers = unionfs::fixture::build(&repo().join("layers-fixtures/oracle"), &dir.join("layers")).unwrap();
    let lower_arg = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let args: Vec<String> = vec![
        "mount".into(),
        "--lower".into(),
        lower_arg,
        "--upper".into(),
        dir.join("upper").display().to_string(),
        // Kernel overlayfs will not follow redirects with `userxattr` (see rootless_inner).
        "-o".into(),
        "redirect_dir=off".into(),
        mnt.display().to_string(),
    ];
    let m = Mount::new(&args, &mnt);
    for op in scenario() {
        apply(&m.path, &op);
    }
    let ours = tree_no_owners(&m.path);
    m.unmount();
    let out = Command::new("unshare")
        .args(["-Urm", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(one_test(test_name!("rootless_kernel_userns_inner")))
        .env("UNIONFS_IN_USERNS", "1")
        .output()
        .unwrap();
    let out = ran_one(test_name!("rootless_kernel_userns_inner"), out);
    assert!(out.status.success(), "unshare: {}", String::from_utf8_lossy(&out.stderr));
    let kernel = std::fs::read_to_string(dir.join("kernel.tree")).unwrap();
    assert_eq!(kernel, ours, "kernel overlayfs in a user namespace reads the rootless upper differently");
}

#[test]
fn rootless_kernel_userns() {
    need_fuse!();
    need_root!();
    let (uid, gid) = ensure_test_user();
    let d = user_tempdir(uid, gid);
    let out = run_test_as_user(test_name!("rootless_kernel_userns_inner"), uid, gid, &[(DIR_ENV, d.path())]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// As the test user: the manager with its default state root, ~/.local/share/unionfs.
#[test]
#[ignore = "the unprivileged half of rootless_manager, which runs it as the test user"]
fn rootless_manager_inner() {
    let dir = std::env::var_os(DIR_ENV).map(PathBuf::from).expect("started as the test user by its outer test");
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    let fx = unionfs::fixture::build(&repo().join("layers-fixtures/springpetclinic"), &dir.join("fx")).unwrap();
    let u = |args: &[&str]| {
        let o = Command::new(bin())
            .args(args)
            .env("HOME", &home)
            .env_remove("XDG_DATA_HOME")
            .env_remove("UNIONFS_ROOT")
            .output()
            .unwrap();
        assert!(o.status.success(), "unionfs {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let (base, rt, app) = (fx[2].display().to_string(), fx[1].display().to_string(), fx[0].display().to_string());
    u(&["image", "import", "pet:1", &base, &rt, &app]);
    let p = PathBuf::from(u(&["run", "--name", "r1", "-v", "data:/data", "pet:1"]).trim());
    assert!(p.starts_with(home.join(".local/share/unionfs")), "default root for a normal user: {p:?}");
    write(p.join("tmp/f"), "rootless");
    write(p.join("data/v"), "volume");
    assert!(u(&["diff", "r1"]).contains("A /tmp/f"));
    assert!(u(&["ps", "-s"]).contains("r1"));
    assert!(u(&["info"]).contains("user.overlay.*"), "rootless markers use the user.* namespace");
    u(&["commit", "r1", "pet:2"]);
    u(&["rm", "-f", "r1"]);
    assert_eq!(read(home.join(".local/share/unionfs/volumes/data/_data/v")), "volume");
}

#[test]
fn rootless_manager() {
    need_fuse!();
    need_root!();
    let (uid, gid) = ensure_test_user();
    let d = user_tempdir(uid, gid);
    let out = run_test_as_user(test_name!("rootless_manager_inner"), uid, gid, &[(DIR_ENV, d.path())]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

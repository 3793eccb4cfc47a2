//! fuse-overlayfs's command line and options, as container engines, mount.fuse3 and
//! containerd pass them, through the real binary.

use crate::common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

fn opts(s: &Stack) -> String {
    format!("lowerdir={},upperdir={},workdir={}", s.lower_arg(), s.upper.display(), s.work.display())
}

fn compat_mount(args: &[&str], mnt: &Path) -> (Mount, String) {
    let o = Command::new(bin()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{args:?}: {err}");
    let path = std::fs::canonicalize(mnt).unwrap();
    assert!(is_mounted(&path), "exit 0 means the mount is live");
    // Hand the mount to the guard (it unmounts on drop).
    (Mount::adopt(&path), err)
}

#[test]
fn podman_form_with_a_real_engine_option_string() {
    need_fuse!();
    let s = Stack::fixture("basic");
    // As podman 4.3 passes them: lower paths, an empty field, volatile.
    let o = format!("{},,volatile", opts(&s));
    let (m, err) = compat_mount(&["-o", &o, s.mnt.to_str().unwrap()], &s.mnt);
    assert!(err.is_empty(), "no output for known options: {err}");
    assert_eq!(read(s.m("foo")), "foo from l2\n");
    write(s.m("new"), "x");
    assert_eq!(read(s.u("new")), "x");
    m.unmount();
}

#[test]
fn unknown_options_warn_once_then_mount() {
    need_fuse!();
    let s = Stack::fixture("basic");
    // index=off is the default, said: nothing to warn about; index=on and metacopy=on are
    // ignored in this form (see src/compat.rs), xino is the kernel's alone.
    let o = format!("{},metacopy=on,xino=auto,index=off,index=on", opts(&s));
    let (m, err) = compat_mount(&["-o", &o, s.mnt.to_str().unwrap()], &s.mnt);
    assert_eq!(err.trim_end().lines().count(), 1, "one warning line: {err}");
    assert!(err.contains("metacopy=on") && err.contains("xino=auto") && err.contains("index=on"), "{err}");
    assert!(!err.contains("index=off"), "{err}");
    m.unmount();
}

#[test]
fn mount_fuse3_and_containerd_forms() {
    need_fuse!();
    let s = Stack::fixture("basic");
    // mount.fuse3: SOURCE MOUNTPOINT -o rw,...,dev,suid
    let o = format!("rw,{},dev,suid", opts(&s));
    let (m, _) = compat_mount(&["none", s.mnt.to_str().unwrap(), "-o", &o], &s.mnt);
    assert!(std::fs::metadata(s.m("foo")).is_ok());
    m.unmount();
    // containerd's fuse-overlayfs snapshotter: several -o.
    let lo = format!("lowerdir={}", s.lower_arg());
    let up = format!("upperdir={}", s.upper.display());
    let wo = format!("workdir={}", s.work.display());
    let (m, _) = compat_mount(&["overlay", s.mnt.to_str().unwrap(), "-o", &lo, "-o", &up, "-o", &wo], &s.mnt);
    assert!(std::fs::metadata(s.m("foo")).is_ok());
    m.unmount();
    // Glued -oOPTS.
    let glued = format!("-o{}", opts(&s));
    let (m, _) = compat_mount(&[&glued, s.mnt.to_str().unwrap()], &s.mnt);
    m.unmount();
}

/// A SIGTERM as soon as the mount shows (a caller that mounts and stops at once): the daemon
/// unmounts and exits 0 every time; it never dies of the signal and leaves a dead mount.
#[test]
fn a_sigterm_right_after_the_mount_unmounts_cleanly() {
    need_fuse!();
    let s = Stack::empty(1);
    let mnt = std::fs::canonicalize(&s.mnt).unwrap();
    for round in 0..20 {
        let mut child =
            Command::new(bin()).args(["-f", "-o", &opts(&s)]).arg(&s.mnt).stderr(Stdio::null()).spawn().unwrap();
        wait_for(&format!("round {round}: the mount"), || is_mounted(&mnt));
        rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM).unwrap();
        let status = child.wait().unwrap();
        let left = is_mounted(&mnt);
        if left {
            let _ = Command::new("fusermount3").args(["-u", "-z"]).arg(&mnt).status();
        }
        assert!(status.success(), "round {round}: the daemon ended with {status}");
        assert!(!left, "round {round}: the mount was left behind");
    }
}

#[test]
fn foreground_and_debug() {
    need_fuse!();
    let s = Stack::empty(1);
    let mut child =
        Command::new(bin()).args(["-f", "-o", &opts(&s)]).arg(&s.mnt).stderr(Stdio::null()).spawn().unwrap();
    let mnt = std::fs::canonicalize(&s.mnt).unwrap();
    wait_for("the foreground mount", || is_mounted(&mnt));
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM).unwrap();
    assert!(child.wait().unwrap().success());
    let child = Command::new(bin()).args(["-d", "-o", &opts(&s)]).arg(&s.mnt).stderr(Stdio::piped()).spawn().unwrap();
    while !is_mounted(&mnt) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = std::fs::metadata(mnt.join("x"));
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DEBUG"), "-d logs requests");
    assert!(!err.contains('\u{1b}'), "no colour codes when stderr is not a terminal: {err:?}");
}

#[test]
fn bad_compat_input_is_one_line() {
    let s = Stack::empty(1);
    for (args, needle) in [
        (vec!["-o".to_string(), opts(&s)], "no mount point"),
        (
            vec!["-o".into(), format!("{},uidmapping=1:2", opts(&s)), s.mnt.display().to_string()],
            "invalid mount option",
        ),
        (vec!["-o".into(), "upperdir=/tmp".into(), s.mnt.display().to_string()], "no lower layer"),
        (vec!["-x".into(), "-o".into(), opts(&s), s.mnt.display().to_string()], "unknown argument"),
    ] {
        let o = Command::new(bin()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn uid_and_gid_mapping_both_ways() {
    need_fuse!();
    need_root!();
    let s = Stack::empty(1);
    let l = s.lower(0);
    // The layers keep the container's ids (0, 5, 70000); the mount shows the host's.
    write(l.join("root-owned"), "r");
    write(l.join("user-owned"), "u");
    std::os::unix::fs::chown(l.join("root-owned"), Some(0), Some(0)).unwrap();
    std::os::unix::fs::chown(l.join("user-owned"), Some(5), Some(5)).unwrap();
    write(l.join("unmapped"), "x");
    std::os::unix::fs::chown(l.join("unmapped"), Some(70_000), Some(70_000)).unwrap();
    // As rootless podman passes it: container 0 is host 1000, container 1.. host 100000...
    let o = format!("{},uidmapping=:0:1000:1:1:100000:65536,gidmapping=:0:1000:1:1:100000:65536", opts(&s));
    let (m, _) = compat_mount(&["-o", &o, s.mnt.to_str().unwrap()], &s.mnt);
    let st = |p: &str| {
        let m = std::fs::metadata(s.m(p)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(st("root-owned"), (1000, 1000), "stored 0 shows as 1000");
    assert_eq!(st("user-owned"), (100_004, 100_004), "stored 5 shows as 100004");
    assert_eq!(st("unmapped"), (65534, 65534), "unmapped ids show as overflow");
    std::os::unix::fs::chown(s.m("root-owned"), Some(100_006), Some(100_007)).unwrap();
    assert_eq!(st("root-owned"), (100_006, 100_007));
    let up = std::fs::metadata(s.u("root-owned")).unwrap();
    assert_eq!((up.uid(), up.gid()), (7, 8), "shown 100006/100007 stored as 7/8");
    // The host's root has no id in the container: what it makes (rootless podman's own root
    // makes `/etc/mtab` so) is stored as the overflow id, as fuse-overlayfs stores it (and
    // shown through the mapping); it cannot give anything its own id.
    std::fs::write(s.m("created-by-root"), "c").unwrap();
    let up = std::fs::metadata(s.u("created-by-root")).unwrap();
    assert_eq!((up.uid(), up.gid()), (65534, 65534), "made by an unmapped caller: stored as the overflow id");
    assert_eq!(st("created-by-root"), (165_533, 165_533));
    assert_eq!(errno(std::os::unix::fs::chown(s.m("user-owned"), Some(0), None)), libc::EINVAL);
    m.unmount();
}

#[test]
fn squash_options() {
    need_fuse!();
    need_root!();
    let s = Stack::empty(1);
    write(s.lower(0).join("f"), "x");
    std::os::unix::fs::chown(s.lower(0).join("f"), Some(1234), Some(5678)).unwrap();
    let (m, _) = compat_mount(&["-o", &format!("{},squash_to_root", opts(&s)), s.mnt.to_str().unwrap()], &s.mnt);
    let f = std::fs::metadata(s.m("f")).unwrap();
    assert_eq!((f.uid(), f.gid()), (0, 0));
    m.unmount();
    let (m, _) = compat_mount(
        &["-o", &format!("{},squash_to_root,squash_to_uid=42,squash_to_gid=43", opts(&s)), s.mnt.to_str().unwrap()],
        &s.mnt,
    );
    let f = std::fs::metadata(s.m("f")).unwrap();
    assert_eq!((f.uid(), f.gid()), (42, 43), "squash_to_uid/gid win over squash_to_root");
    m.unmount();
}

#[test]
fn xattr_permissions_keep_owner_and_mode_in_an_xattr() {
    need_fuse!();
    let s = Stack::empty(1);
    write(s.lower(0).join("f"), "x");
    write(s.lower(0).join("g"), "y");
    let (m, _) = compat_mount(&["-o", &format!("{},xattr_permissions=2", opts(&s)), s.mnt.to_str().unwrap()], &s.mnt);
    let real_owner = std::fs::metadata(s.lower(0).join("f")).unwrap().uid();
    let me = rustix::process::geteuid().as_raw();
    let target = if me == 0 { 321 } else { me };
    std::os::unix::fs::chown(s.m("f"), Some(target), Some(target)).unwrap();
    std::fs::set_permissions(s.m("f"), std::os::unix::fs::PermissionsExt::from_mode(0o751)).unwrap();
    let f = std::fs::metadata(s.m("f")).unwrap();
    assert_eq!((f.uid(), f.mode() & 0o7777), (target, 0o751), "the mount shows the override");
    let up = std::fs::metadata(s.u("f")).unwrap();
    assert_eq!(up.uid(), real_owner, "the real owner is untouched");
    assert_eq!(
        getxattr(&s.u("f"), "user.containers.override_stat").as_deref(),
        Some(format!("{target}:{target}:0751").as_bytes())
    );
    assert!(!listxattr(&s.m("f")).iter().any(|n| n.contains("override_stat")), "the override is not shown");
    std::fs::create_dir(s.m("d")).unwrap();
    assert!(getxattr(&s.u("d"), "user.containers.override_stat").is_some(), "new objects get one too");
    // A removed file still open shows its override through the descriptor, as before: one
    // copied up, and one removed from the lower layer (whose override an engine wrote).
    setxattr(&s.lower(0).join("g"), "user.containers.override_stat", format!("{target}:{target}:0640").as_bytes())
        .unwrap();
    // (The lower file shows its own link count, 1, as through kernel overlayfs.)
    for (name, mode, nlink) in [("f", 0o751, 0), ("g", 0o640, 1)] {
        let open = std::fs::File::open(s.m(name)).unwrap();
        assert_eq!(open.metadata().unwrap().mode() & 0o7777, mode, "{name} before");
        std::fs::remove_file(s.m(name)).unwrap();
        let st = open.metadata().unwrap();
        assert_eq!((st.uid(), st.mode() & 0o7777, st.nlink()), (target, mode, nlink), "fstat of the removed {name}");
    }
    m.unmount();
}

#[test]
fn noxattrs_turns_xattrs_off() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let (m, _) = compat_mount(&["-o", &format!("{},noxattrs=1,fsync=0", opts(&s)), s.mnt.to_str().unwrap()], &s.mnt);
    assert_eq!(
        errno(
            rustix::fs::lgetxattr(s.m("usr/bin/tool"), "user.note", &mut [0u8; 64][..]).map_err(std::io::Error::from)
        ),
        libc::EOPNOTSUPP
    );
    assert_eq!(errno(setxattr(&s.m("foo"), "user.x", b"1")), libc::EOPNOTSUPP);
    let f = std::fs::File::options().write(true).open(s.m("foo")).unwrap();
    f.sync_all().unwrap();
    drop(f);
    m.unmount();
}

#[test]
fn mount_t_fuse_unionfs_when_installed() {
    need_fuse!();
    need_root!();
    // The first `unionfs` on the search path is what mount.fuse3 runs: it must be this
    // project's (Debian's unionfs-fuse package installs another program under that name).
    let installed = ["/usr/local/sbin/unionfs", "/usr/local/bin/unionfs", "/usr/sbin/unionfs", "/usr/bin/unionfs"]
        .iter()
        .find(|p| Path::new(p).exists())
        .filter(|p| {
            Command::new(p).arg("--version").output().is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout).starts_with(&format!("unionfs {}", env!("CARGO_PKG_VERSION")))
            })
        });
    if installed.is_none() || !Path::new("/sbin/mount.fuse3").exists() {
        skip!("unionfs is not installed in a system bin directory (scripts/install.sh)");
    }
    let s = Stack::fixture("basic");
    let st = Command::new("mount")
        .args(["-t", "fuse.unionfs", "none"])
        .arg(&s.mnt)
        .args(["-o", &opts(&s)])
        .status()
        .unwrap();
    assert!(st.success());
    let m = Mount::adopt(&std::fs::canonicalize(&s.mnt).unwrap());
    let line = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find(|l| l.contains(s.mnt.to_str().unwrap()))
        .unwrap()
        .to_string();
    assert!(line.contains("allow_other") && line.contains("default_permissions"), "root mounts let others in: {line}");
    assert_eq!(read(s.m("foo")), "foo from l2\n");
    m.unmount();
    // An fstab line.
    let fstab = s.dir.path().join("fstab");
    std::fs::write(&fstab, format!("none {} fuse.unionfs {},noauto 0 0\n", s.mnt.display(), opts(&s))).unwrap();
    let st = Command::new("mount").arg("-T").arg(&fstab).arg(&s.mnt).status().unwrap();
    assert!(st.success());
    Mount::adopt(&std::fs::canonicalize(&s.mnt).unwrap()).unmount();
}

/// An engine switching from fuse-overlayfs finds layers it wrote: its opacity marker
/// (`user.fuseoverlayfs.opaque=y`) hides the lower directory, and its private namespace is
/// never shown or written through the mount, as fuse-overlayfs's own tests/xattr.sh checks.
#[test]
fn fuse_overlayfs_opaque_directories_and_private_names() {
    need_fuse!();
    let s = Stack::empty(1);
    std::fs::create_dir(s.lower(0).join("d")).unwrap();
    write(s.lower(0).join("d/old"), "o");
    std::fs::create_dir(s.u("d")).unwrap();
    write(s.u("d/new"), "n");
    setxattr(&s.u("d"), "user.fuseoverlayfs.opaque", b"y").unwrap();
    write(s.u("f"), "f");
    setxattr(&s.u("f"), "user.fuseoverlayfs.origin", b"xyz").unwrap();
    setxattr(&s.u("f"), "user.note", b"1").unwrap();
    let m = s.mount();
    assert_eq!(ls(s.m("d")), ["new"], "the fuse-overlayfs opaque directory hides the lower one");
    assert_eq!(listxattr(&s.m("f")), ["user.note"]);
    assert_eq!(listxattr(&s.m("d")), Vec::<String>::new());
    assert_eq!(getxattr(&s.m("f"), "user.fuseoverlayfs.origin"), None);
    assert_eq!(errno(setxattr(&s.m("f"), "user.fuseoverlayfs.opaque", b"y")), libc::EPERM);
    m.unmount();
}

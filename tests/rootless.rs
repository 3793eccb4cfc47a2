//! A normal user (no root, through fusermount3) runs the same scenario; the upper it writes
//! uses the `user.overlay.*` dialect, and kernel overlayfs mounted with `userxattr` over it
//! shows the same tree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::scenario::{apply, scenario};
use common::*;
use std::path::PathBuf;
use std::process::Command;

const DIR_ENV: &str = "UNIONFS_ROOTLESS_DIR";

/// The unprivileged half, started by `rootless_upper_reads_the_same_in_kernel_overlayfs`.
#[test]
fn rootless_inner() {
    let Some(dir) = std::env::var_os(DIR_ENV).map(PathBuf::from) else {
        return; // Only meaningful when started as the test user by the test below.
    };
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
    let out = run_test_as_user("rootless_inner", uid, gid, &[(DIR_ENV, d.path())]);
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

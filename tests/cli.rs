//! The command line: help, bad input (one clear line, non-zero exit, nothing changed),
//! signals and unmounting.

use crate::common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn unionfs(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// Expects failure with exactly one stderr line containing `needle`.
fn fails_with(out: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line of error, got: {err}");
    assert!(err.contains(needle), "error should mention {needle:?}: {err}");
}

fn p(x: &Path) -> &str {
    x.to_str().unwrap()
}

#[test]
fn help_explains_layer_order_and_options() {
    let out = unionfs(&["mount", "--help"]);
    assert!(out.status.success());
    let h = String::from_utf8_lossy(&out.stdout);
    assert!(h.contains("LEFTMOST") && h.contains("TOPMOST"), "{h}");
    for opt in ["--lower", "--upper", "--work", "--foreground", "-o", "--log"] {
        assert!(h.contains(opt), "help mentions {opt}");
    }
    let top = unionfs(&["--help"]);
    let t = String::from_utf8_lossy(&top.stdout);
    for sub in ["mount", "umount"] {
        assert!(t.contains(sub));
    }
    assert!(unionfs(&["umount", "--help"]).status.success());
}

#[test]
fn bad_layers_are_refused_without_changes() {
    let s = Stack::empty(1);
    let fresh_upper = s.dir.path().join("not-yet");
    let missing = s.dir.path().join("missing");
    let file = s.dir.path().join("afile");
    std::fs::write(&file, "x").unwrap();
    let mnt = p(&s.mnt);
    fails_with(&unionfs(&["mount", "--lower", p(&missing), "--upper", p(&fresh_upper), mnt]), "does not exist");
    fails_with(&unionfs(&["mount", "--lower", p(&file), "--upper", p(&fresh_upper), mnt]), "is not a directory");
    fails_with(&unionfs(&["mount", "--lower", "", "--upper", p(&fresh_upper), mnt]), "empty");
    let l = format!("{}::{}", p(s.lower(0)), p(s.lower(0)));
    fails_with(&unionfs(&["mount", "--lower", &l, "--upper", p(&fresh_upper), mnt]), "empty entry");
    let inside = s.lower(0).join("up");
    fails_with(&unionfs(&["mount", "--lower", p(s.lower(0)), "--upper", p(&inside), mnt]), "inside lower layer");
    let in_mnt = s.mnt.join("up");
    fails_with(&unionfs(&["mount", "--lower", p(s.lower(0)), "--upper", p(&in_mnt), mnt]), "inside the mount point");
    let work_in_mnt = s.mnt.join("w");
    fails_with(
        &unionfs(&["mount", "--lower", p(s.lower(0)), "--upper", p(&s.upper), "--work", p(&work_in_mnt), mnt]),
        "inside the mount point",
    );
    let work_in_upper = s.upper.join("w");
    fails_with(
        &unionfs(&["mount", "--lower", p(s.lower(0)), "--upper", p(&s.upper), "--work", p(&work_in_upper), mnt]),
        "must not be inside",
    );
    fails_with(&unionfs(&["mount", "--lower", p(s.lower(0)), "--upper", p(&s.upper), p(&missing)]), "mount point");
    fails_with(&unionfs(&["mount", "--lower", p(s.lower(0)), "--upper", p(&s.upper), p(&file)]), "not a directory");
    // Nothing was created, nothing mounted.
    assert!(!fresh_upper.exists() && !inside.exists() && !in_mnt.exists());
    assert!(!is_mounted(&std::fs::canonicalize(&s.mnt).unwrap()));
}

#[test]
fn upper_and_work_on_different_filesystems() {
    let s = Stack::empty(1);
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() || std::fs::metadata(shm).unwrap().dev() == std::fs::metadata(&s.upper).unwrap().dev() {
        skip!("no second filesystem (/dev/shm) to put the work directory on");
    }
    let work = tempfile::tempdir_in(shm).unwrap();
    fails_with(
        &unionfs(&["mount", "--lower", p(s.lower(0)), "--upper", p(&s.upper), "--work", p(work.path()), p(&s.mnt)]),
        "different filesystems",
    );
}

#[test]
fn a_work_dir_in_use_and_a_mounted_point_are_refused() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    let other = s.dir.path().join("mnt2");
    std::fs::create_dir(&other).unwrap();
    let other_upper = s.dir.path().join("up2");
    fails_with(
        &unionfs(&["mount", "--lower", &s.lower_arg(), "--upper", p(&other_upper), "--work", p(&s.work), p(&other)]),
        "in use",
    );
    fails_with(
        &unionfs(&["mount", "--lower", &s.lower_arg(), "--upper", p(&other_upper), p(&s.mnt)]),
        "already a union mount",
    );
}

#[test]
fn upper_and_default_work_are_created() {
    need_fuse!();
    let s = Stack::empty(1);
    let up = s.dir.path().join("cont1");
    let out = unionfs(&["mount", "--lower", p(s.lower(0)), "--upper", p(&up), p(&s.mnt)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    write(s.m("x"), "x");
    let out = unionfs(&["umount", p(&s.mnt)]);
    assert!(out.status.success());
    assert_eq!(read(up.join("x")), "x");
    assert!(s.dir.path().join(".cont1.work/work").is_dir(), "work dir beside the upper");
    assert_eq!(std::fs::metadata(&up).unwrap().mode() & 0o777, 0o755);
}

#[test]
fn leftovers_in_the_work_dir_are_cleaned_at_mount() {
    need_fuse!();
    let s = Stack::empty(1);
    std::fs::create_dir_all(s.work.join("work/#crash-dir/sub")).unwrap();
    write(s.work.join("work/#crash-file"), "partial");
    let _m = s.mount();
    assert!(ls(s.work.join("work")).is_empty());
}

#[test]
fn sigterm_unmounts_and_exits_zero() {
    need_fuse!();
    let s = Stack::empty(1);
    let mut child = Command::new(bin())
        .args(["mount", "-f", "--lower", p(s.lower(0)), "--upper", p(&s.upper), p(&s.mnt)])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mnt = std::fs::canonicalize(&s.mnt).unwrap();
    wait_for("the foreground mount", || is_mounted(&mnt));
    write(s.m("f"), "x");
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "daemon exit status {status}");
    assert!(!is_mounted(&mnt));
    assert_eq!(read(s.upper.join("f")), "x");
}

#[test]
fn busy_mount_is_reported_not_hung_on() {
    need_fuse!();
    need_root!();
    let s = Stack::fixture("basic");
    let m = s.mount();
    let f = std::fs::File::open(s.m("foo")).unwrap();
    let t = Instant::now();
    let out = unionfs(&["umount", p(&s.mnt)]);
    // A minute: the bound of a hung unmount, not a measure.
    assert!(t.elapsed() < Duration::from_secs(60), "umount of a busy mount hung");
    fails_with(&out, "busy");
    // It names what holds the mount: this test, with the file open.
    fails_with(&out, &format!("(pid {})", std::process::id()));
    assert!(is_mounted(&m.path), "still mounted");
    drop(f);
    m.unmount();
}

#[test]
fn umount_of_something_else_is_refused() {
    let s = Stack::empty(1);
    fails_with(&unionfs(&["umount", p(&s.mnt)]), "not a unionfs mount");
}

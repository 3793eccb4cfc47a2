//! `unionfs check`: reports without changing anything, repairs with `--repair`, and the
//! repaired upper is one kernel overlayfs reads as intended.

use crate::common::*;
use std::path::Path;
use std::process::Command;

fn whiteout(p: &Path) {
    let st = Command::new("mknod").arg(p).args(["c", "0", "0"]).status().unwrap();
    assert!(st.success());
}

fn check(upper: &Path, work: &Path, lower: &Path, repair: bool) -> (i32, String) {
    let mut c = Command::new(bin());
    c.arg("check").arg(upper).arg("--work").arg(work).arg("--lower").arg(lower);
    if repair {
        c.arg("--repair");
    }
    let out = c.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn check_reports_then_repairs_what_crashes_and_foreign_tools_leave() {
    need_root!();
    let d = tempfile::tempdir().unwrap();
    let (lower, upper, work) = (d.path().join("lower"), d.path().join("upper"), d.path().join("work"));
    for p in [&lower, &upper, &work.join("work")] {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(lower.join("shown"), "lower\n").unwrap();
    std::fs::write(lower.join("hidden"), "lower\n").unwrap();
    std::fs::write(lower.join("oci-hidden"), "lower\n").unwrap();
    std::fs::create_dir(lower.join("dir")).unwrap();
    std::fs::write(lower.join("dir/inner"), "lower\n").unwrap();
    std::fs::create_dir(lower.join("opq")).unwrap();
    std::fs::write(lower.join("opq/old"), "lower\n").unwrap();
    // A temporary from an interrupted copy-up.
    std::fs::write(work.join("work/#u1-2"), "half a copy").unwrap();
    // A whiteout that hides something (fine) and one that hides nothing.
    whiteout(&upper.join("hidden"));
    whiteout(&upper.join("never-existed"));
    // An opaque directory (OCI form) with a redundant whiteout inside.
    std::fs::create_dir(upper.join("opq")).unwrap();
    std::fs::write(upper.join("opq/.wh..wh..opq"), "").unwrap();
    whiteout(&upper.join("opq/old"));
    std::fs::write(upper.join("opq/new"), "upper\n").unwrap();
    // An OCI whiteout file, an xattr opaque marker in the user namespace.
    std::fs::write(upper.join(".wh.oci-hidden"), "").unwrap();
    std::fs::create_dir(upper.join("dir")).unwrap();
    setxattr(&upper.join("dir"), "user.overlay.opaque", b"y").unwrap();
    // Broken metadata.
    std::fs::write(upper.join("shown"), "upper\n").unwrap();
    setxattr(&upper.join("shown"), "trusted.overlay.origin", b"junk").unwrap();
    std::fs::write(upper.join("owned"), "x").unwrap();
    setxattr(&upper.join("owned"), "user.containers.override_stat", b"not:a:mode:x").unwrap();

    let before = tree(&upper);
    let (code, out) = check(&upper, &work, &lower, false);
    assert_eq!(code, 1, "{out}");
    for want in [
        "work-leftover",
        "whiteout-hides-nothing",
        "whiteout-in-opaque",
        "broken-origin",
        "broken-ownership",
        "OCI opaque marker",
        "OCI whiteout file",
        "user.overlay.opaque instead of trusted.overlay.opaque",
    ] {
        assert!(out.contains(want), "{want} reported:\n{out}");
    }
    assert!(!out.contains(" hidden:"), "a whiteout that hides a lower file is fine:\n{out}");
    assert_eq!(tree(&upper), before, "a report changes nothing");
    assert!(work.join("work/#u1-2").exists());

    let (code, out) = check(&upper, &work, &lower, true);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("fixed"), "{out}");
    let (code, out) = check(&upper, &work, &lower, false);
    assert_eq!(code, 0, "clean after repair:\n{out}");
    assert!(out.contains("clean"), "{out}");

    // Kernel overlayfs reads the repaired upper as intended.
    let (kmnt, kwork) = (d.path().join("kmnt"), d.path().join("kwork"));
    std::fs::create_dir_all(&kmnt).unwrap();
    std::fs::create_dir_all(&kwork).unwrap();
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), kwork.display()))
        .arg(&kmnt)
        .status()
        .unwrap();
    assert!(st.success());
    let names = ls(&kmnt);
    let _ = Command::new("umount").arg(&kmnt).status();
    assert!(!names.contains(&"hidden".to_string()) && !names.contains(&"oci-hidden".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with(".wh.")), "{names:?}");
    assert!(names.contains(&"shown".to_string()) && names.contains(&"owned".to_string()), "{names:?}");
    // The converted opaque markers: the lower contents stay hidden.
    assert!(!upper.join("opq/.wh..wh..opq").exists());
    assert_eq!(getxattr(&upper.join("opq"), "trusted.overlay.opaque").unwrap(), b"y");
    assert_eq!(getxattr(&upper.join("dir"), "trusted.overlay.opaque").unwrap(), b"y");
    assert!(getxattr(&upper.join("dir"), "user.overlay.opaque").is_none());
}

#[test]
fn check_refuses_an_upper_in_use() {
    need_fuse!();
    let s = Stack::empty(1);
    let m = s.mount();
    let out = Command::new(bin()).arg("check").arg(&s.upper).arg("--work").arg(&s.work).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by a live unionfs mount"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    m.unmount();
    let out = Command::new(bin()).arg("check").arg(&s.upper).arg("--work").arg(&s.work).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

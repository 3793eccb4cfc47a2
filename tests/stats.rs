//! `unionfs stats MOUNTPOINT` reads a live mount's counters: requests by type with latency
//! percentiles, copy-ups and bytes copied, whiteouts, cache hits; the reserved attribute
//! cannot be changed and is not listed.

use crate::common::*;
use std::process::Command;

#[test]
fn stats_count_what_the_mount_did() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let m = s.mount();
    let before = stats_raw(&m.path);
    // One copy-up of a known size, one whiteout, some lookups and reads.
    let size = std::fs::metadata(m.path.join("foo")).unwrap().len();
    std::fs::OpenOptions::new().append(true).open(m.path.join("foo")).unwrap();
    std::fs::remove_file(m.path.join("bar")).unwrap();
    for _ in 0..3 {
        let _ = read(m.path.join("foo"));
    }
    let after = stats_raw(&m.path);
    let d = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    assert_eq!(d("copy_ups"), 1);
    assert_eq!(d("copy_up_bytes"), size);
    assert_eq!(d("whiteouts"), 1);
    assert!(d("op.lookup") >= 1 && d("op.unlink") == 1 && after["op.getxattr"] >= 1, "{after:?}");
    assert!(after["nodes"] >= 2, "the root and foo at least: {after:?}");

    // The human form has both tables.
    let out = Command::new(bin()).arg("stats").arg(&m.path).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("COUNTER") && text.contains("REQUEST") && text.contains("P99"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("unlink ")), "{text}");

    // Reserved: read-only, not listed.
    assert_eq!(errno(setxattr(&m.path, "user.unionfs.stats", b"x")), libc::EPERM);
    assert!(!listxattr(&m.path).iter().any(|n| n == "user.unionfs.stats"));
    m.unmount();

    // Not a union mount: one clear line, non-zero exit.
    let out = Command::new(bin()).arg("stats").arg(s.dir.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a unionfs mount") && err.lines().count() == 1, "{err}");
}

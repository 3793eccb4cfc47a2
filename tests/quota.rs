//! `--size-limit` and `--inode-limit`: writes, new objects and copy-ups past a limit fail
//! with EDQUOT (a copy-up leaves the lower version whole), `df` shows the limits, freeing
//! space makes room again, and a remount counts what the upper already holds.

use crate::common::*;
use std::io::Write;

fn fill(p: &std::path::Path) -> i32 {
    let mut f = std::fs::File::create(p).unwrap();
    let chunk = vec![1u8; 64 << 10];
    for _ in 0..1000 {
        if let Err(e) = f.write_all(&chunk).and_then(|_| f.sync_all()) {
            return e.raw_os_error().unwrap_or(0);
        }
    }
    0
}

#[test]
fn size_and_inode_limits() {
    need_fuse!();
    let s = Stack::empty(1);
    let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(s.lower(0).join("big"), &big).unwrap();
    std::fs::write(s.lower(0).join("small"), "small\n").unwrap();
    let m = s.mount_with(&["--size-limit", "2M", "--inode-limit", "50"]);
    let p = m.path.clone();

    // df shows the limit.
    let vfs = rustix::fs::statvfs(&p).unwrap();
    assert!(vfs.f_blocks * vfs.f_frsize <= 2 << 20, "df size {}", vfs.f_blocks * vfs.f_frsize);
    assert!(vfs.f_files <= 50);

    // A copy-up that does not fit: EDQUOT, the lower version stays, nothing left behind.
    let e = std::fs::OpenOptions::new().append(true).open(p.join("big")).and_then(|mut f| f.write_all(b"x"));
    assert_eq!(errno(e), libc::EDQUOT);
    assert_eq!(std::fs::read(p.join("big")).unwrap(), big);
    assert!(!s.upper.join("big").exists());
    assert_eq!(std::fs::read_dir(s.work.join("work")).unwrap().count(), 0);

    // Writing until the limit: EDQUOT, after no more than the limit.
    assert_eq!(fill(&p.join("filler")), libc::EDQUOT);
    let used = std::fs::metadata(s.upper.join("filler")).unwrap().len();
    assert!((1 << 20..=2 << 20).contains(&used), "filler reached {used} bytes");
    std::fs::remove_file(p.join("filler")).unwrap();
    std::fs::OpenOptions::new().append(true).open(p.join("small")).unwrap().write_all(b"more\n").unwrap();
    assert_eq!(read(p.join("small")), "small\nmore\n");

    // The inode limit: objects (whiteouts included) up to 50.
    let mut made = 0;
    let err = loop {
        match std::fs::write(p.join(format!("f{made}")), "") {
            Ok(()) => made += 1,
            Err(e) => break e.raw_os_error().unwrap_or(0),
        }
        assert!(made <= 50, "more objects than the limit");
    };
    assert_eq!(err, libc::EDQUOT);
    assert_eq!(errno(std::fs::create_dir(p.join("d"))), libc::EDQUOT);
    assert!(made >= 45, "only {made} files fit");
    m.unmount();

    // A remount counts what is there: still full.
    let m = s.mount_with(&["--size-limit", "2M", "--inode-limit", "50"]);
    assert_eq!(errno(std::fs::write(m.path.join("one-more"), "")), libc::EDQUOT);
    std::fs::remove_file(m.path.join("f0")).unwrap();
    std::fs::write(m.path.join("one-more"), "").unwrap();
    m.unmount();
}

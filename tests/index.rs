//! `-o index=on`: lower hard links stay one inode after one of their names is copied up
//! (kernel overlayfs's `index=on` format: the copy is kept in `WORK/index` under its origin
//! handle and linked to every name). Compared with kernel overlayfs mounted with `index=on`
//! after every step (contents and link counts of all names), after a unionfs remount, and
//! with the kernel mounting unionfs's upper.

use crate::common::scenario::Op::{self, *};
use crate::common::*;
use std::os::unix::fs::MetadataExt;

fn check(name: &str, ops: &[Op]) {
    if let Err(e) =
        crate::common::oracle::compare(ops, "index=on,redirect_dir=on", &["-o", "index=on"], true, |_, _, _| false)
    {
        panic!("{name}: {e}");
    }
}

#[test]
fn lower_hard_links_stay_one_inode_like_kernel_index() {
    need_fuse!();
    need_root!();
    check("write through one name", &[Append("hard/a", "+\n"), Stat("hard/b"), Append("hard/b", "b\n")]);
    check("chmod through the other", &[Chmod("hard/b", 0o600), Stat("hard/a")]);
    check("truncate by name", &[Append("hard/a", "+\n"), Trunc("hard/b"), Append("hard/a", "x\n")]);
    check("unlink and link", &[Append("hard/a", "+\n"), Unlink("hard/b"), Link("hard/a", "hard/c"), Unlink("hard/a")]);
    check("rename after copy-up", &[Append("hard/a", "+\n"), Rename("hard/a", "moved"), Append("hard/b", "b\n")]);
    check("xattrs", &[SetXattr("hard/a", "user.p", "v"), Stat("hard/b")]);
}

#[test]
fn one_inode_number_and_link_count_for_every_name() {
    need_fuse!();
    let s = Stack::empty(1);
    std::fs::write(s.lower(0).join("a"), "data\n").unwrap();
    for n in ["b", "c"] {
        std::fs::hard_link(s.lower(0).join("a"), s.lower(0).join(n)).unwrap();
    }
    let m = s.mount_with(&["-o", "index=on"]);
    let ino = std::fs::metadata(m.path.join("b")).unwrap().ino();
    std::fs::write(m.path.join("a"), "new\n").unwrap();
    for n in ["a", "b", "c"] {
        let md = std::fs::metadata(m.path.join(n)).unwrap();
        assert_eq!((md.ino(), md.nlink()), (ino, 3), "{n}");
        assert_eq!(read(m.path.join(n)), "new\n", "{n}");
    }
    m.unmount();
    let m = s.mount_with(&["-o", "index=on"]);
    std::fs::remove_file(m.path.join("c")).unwrap();
    for n in ["a", "b"] {
        let md = std::fs::metadata(m.path.join(n)).unwrap();
        assert_eq!((md.ino(), md.nlink()), (ino, 2), "{n} after remount and unlink");
        assert_eq!(read(m.path.join(n)), "new\n");
    }
    m.unmount();
    assert_eq!(read(s.lower(0).join("b")), "data\n", "the lower layer is untouched");
}

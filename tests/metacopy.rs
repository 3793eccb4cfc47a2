//! `-o metacopy=on`: changing only the metadata of a lower file (mode, owner, times,
//! xattrs) copies it up without its data, in kernel overlayfs's `metacopy` format; the data
//! is read from the lower file until the file is opened for writing, then copied. Compared
//! with kernel overlayfs mounted with `metacopy=on`, step by step, after a remount, and
//! with the kernel reading unionfs's upper.

use crate::common::scenario::Op::{self, *};
use crate::common::*;
use std::io::Write;
use std::os::unix::fs::MetadataExt;

fn check(name: &str, ops: &[Op]) {
    let kernel = "redirect_dir=on,metacopy=on";
    if let Err(e) = crate::common::oracle::compare(ops, kernel, &["-o", "metacopy=on"], true, |_, _, _| false) {
        panic!("{name}: {e}");
    }
}

#[test]
fn metadata_changes_match_kernel_metacopy() {
    need_fuse!();
    need_root!();
    check("chmod then read", &[Chmod("foo", 0o600), Stat("foo"), Chmod("tree/t1", 0o755)]);
    check(
        "chown, xattrs",
        &[Chown("bar", 1000, 1000), SetXattr("top", "user.x", "1"), RemoveXattr("usr/bin/tool", "user.note")],
    );
    check("then write", &[Chmod("foo", 0o600), Append("foo", "more\n"), Chmod("foo", 0o644)]);
    check("then truncate", &[Chown("dir/a", 1000, 1000), Truncate("dir/a", 2), Trunc("top"), Chmod("top", 0o600)]);
    check(
        "then rename and link",
        &[Chmod("foo", 0o600), Rename("foo", "dir/moved"), Chmod("bar", 0o600), Link("bar", "bar2")],
    );
    check("then delete", &[Chmod("foo", 0o600), Unlink("foo"), Chmod("tree/t1", 0o600), RmRf("tree")]);
}

#[test]
fn no_data_is_copied_until_a_write() {
    need_fuse!();
    let s = Stack::empty(1);
    let data: Vec<u8> = (0..32 << 20).map(|i| (i % 241) as u8).collect();
    std::fs::write(s.lower(0).join("big"), &data).unwrap();
    let args = ["-o", "metacopy=on"];
    let m = s.mount_with(&args);
    let p = m.path.join("big");
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let before = std::fs::metadata(s.upper.join("big")).unwrap();
    assert_eq!(before.len(), data.len() as u64, "the copy has the size");
    assert!(before.blocks() < 64, "but no data: {} blocks", before.blocks());
    assert_eq!(std::fs::read(&p).unwrap(), data, "reads come from the lower file");
    assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    m.unmount();

    // Still a metadata-only copy after a remount; then a write copies the data.
    let m = s.mount_with(&args);
    let p = m.path.join("big");
    assert_eq!(std::fs::read(&p).unwrap(), data);
    let reader = std::fs::File::open(&p).unwrap();
    std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"tail").unwrap();
    let mut want = data.clone();
    want.extend_from_slice(b"tail");
    assert_eq!(std::fs::read(&p).unwrap(), want);
    drop(reader);
    assert!(std::fs::metadata(s.upper.join("big")).unwrap().blocks() >= (32 << 20) / 512);
    assert!(getxattr(&s.upper.join("big"), "trusted.overlay.metacopy").is_none(), "the marker goes");
    m.unmount();
    assert_eq!(std::fs::read(s.lower(0).join("big")).unwrap(), data, "the lower file is untouched");
    let m = s.mount_with(&args);
    assert_eq!(std::fs::read(m.path.join("big")).unwrap(), want);
    m.unmount();
}

//! Rename: files across layers, RENAME_NOREPLACE, RENAME_EXCHANGE, and the EXDEV rule for
//! directories that exist in a lower layer.

use crate::common::*;
use rustix::fs::{CWD, RenameFlags, renameat_with};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

fn rename2(a: &std::path::Path, b: &std::path::Path, f: RenameFlags) -> i32 {
    errno(renameat_with(CWD, a, CWD, b, f).map_err(std::io::Error::from))
}

#[test]
fn rename_lower_file_copies_up_and_whites_out() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    let ino = std::fs::metadata(s.m("foo")).unwrap().ino();
    std::fs::rename(s.m("foo"), s.m("dir/foo-moved")).unwrap();
    assert_eq!(read(s.m("dir/foo-moved")), "foo from l2\n");
    assert_eq!(errno(std::fs::metadata(s.m("foo"))), libc::ENOENT);
    let wh = std::fs::symlink_metadata(s.u("foo")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(std::fs::metadata(s.m("dir/foo-moved")).unwrap().ino(), ino, "st_ino survives the rename");
}

#[test]
fn rename_over_existing_file() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    std::fs::rename(s.m("top"), s.m("foo")).unwrap();
    assert_eq!(read(s.m("foo")), "top only\n");
    assert!(!listed(&s.mnt, "top"));
}

#[test]
fn noreplace_and_exchange() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    assert_eq!(rename2(&s.m("foo"), &s.m("bar"), RenameFlags::NOREPLACE), libc::EEXIST);
    assert_eq!(rename2(&s.m("foo"), &s.m("newname"), RenameFlags::NOREPLACE), 0);
    assert_eq!(rename2(&s.m("newname"), &s.m("bar"), RenameFlags::EXCHANGE), 0);
    assert_eq!(read(s.m("bar")), "foo from l2\n");
    assert_eq!(read(s.m("newname")), "bar from l1\n");
    assert_eq!(rename2(&s.m("bar"), &s.m("nothing"), RenameFlags::EXCHANGE), libc::ENOENT);
    assert_eq!(rename2(&s.m("bar"), &s.m("x"), RenameFlags::WHITEOUT), libc::EINVAL);
    // A name freed by a whiteout can be taken with NOREPLACE.
    std::fs::remove_file(s.m("dirorfile")).unwrap();
    assert_eq!(rename2(&s.m("bar"), &s.m("dirorfile"), RenameFlags::NOREPLACE), 0);
}

#[test]
fn lower_directories_rename_or_are_exdev_with_redirect_dir_off() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let m = s.mount_with(&["-o", "redirect_dir=off"]);
    assert_eq!(errno(std::fs::rename(s.m("tree"), s.m("tree2"))), libc::EXDEV);
    assert_eq!(errno(std::fs::rename(s.m("dir"), s.m("dir2"))), libc::EXDEV, "merged dir too");
    assert!(listed(&s.mnt, "tree"));
    m.unmount();
    // By default they rename, keeping their contents (tests/redirect.rs has the details).
    let m = s.mount();
    let before = tree(&s.m("tree"));
    std::fs::rename(s.m("tree"), s.m("tree2")).unwrap();
    assert_eq!(tree(&s.m("tree2")), before);
    assert!(!listed(&s.mnt, "tree"));
    m.unmount();
}

#[test]
fn upper_directories_rename_and_hide_lowers() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    std::fs::create_dir(s.m("mine")).unwrap();
    write(s.m("mine/f"), "f");
    std::fs::rename(s.m("mine"), s.m("mine2")).unwrap();
    assert_eq!(read(s.m("mine2/f")), "f");
    // Over a whiteout of a lower directory: the lower contents must stay hidden.
    std::fs::remove_dir_all(s.m("tree")).unwrap();
    std::fs::rename(s.m("mine2"), s.m("tree")).unwrap();
    assert_eq!(ls(s.m("tree")), ["f"]);
    // Into a merged directory.
    std::fs::create_dir(s.m("mine3")).unwrap();
    std::fs::rename(s.m("mine3"), s.m("dir/mine3")).unwrap();
    assert!(ls(s.m("dir/mine3")).is_empty());
}

#[test]
fn rename_dir_over_empty_merged_dir() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    std::fs::remove_file(s.m("dir/pop/b")).unwrap();
    std::fs::create_dir(s.m("fresh")).unwrap();
    write(s.m("fresh/x"), "x");
    std::fs::rename(s.m("fresh"), s.m("dir/pop")).unwrap();
    assert_eq!(ls(s.m("dir/pop")), ["x"], "nothing of the old lower dir reappears");
    std::fs::create_dir(s.m("other")).unwrap();
    assert_eq!(errno(std::fs::rename(s.m("other"), s.m("dir"))), libc::ENOTEMPTY);
}

#[test]
fn rename_same_file_is_a_no_op() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    std::fs::rename(s.m("hard/a"), s.m("hard/b")).unwrap();
    assert!(listed(&s.m("hard"), "a") && listed(&s.m("hard"), "b"));
}

//! Renaming directories that have lower parts (kernel overlayfs's `redirect_dir=on`): the
//! directory alone is copied up and records where its lower parts are; the old name gets a
//! whiteout. Each sequence runs on kernel overlayfs with `redirect_dir=on` and on unionfs,
//! which must agree on every errno and on the tree after every step, after a remount, and
//! when kernel overlayfs mounts unionfs's upper.

use crate::common::scenario::Op::{self, *};
use rustix::fs::RenameFlags;

fn check(name: &str, ops: &[Op]) {
    if let Err(e) = crate::common::oracle::compare(ops, "redirect_dir=on", &[], true, |_, _, _| false) {
        panic!("{name}: {e}");
    }
}

#[test]
fn a_lower_directory_renames_in_place_and_across_directories() {
    need_fuse!();
    need_root!();
    check("same parent", &[Rename("tree", "tree2"), Stat("tree"), Stat("tree2/sub/s")]);
    check("into another directory", &[Rename("tree", "dir/moved"), Stat("dir/moved/t1")]);
    check("a nested merged directory out to the root", &[Rename("dir/pop", "pop"), Write("pop/b", "new b\n")]);
    check("onto an existing empty directory", &[Mkdir("empty2"), Rename("tree", "empty2")]);
    check("onto a non-empty directory", &[Rename("tree", "dir")]);
    check(
        "noreplace",
        &[Rename2("tree", "dir", RenameFlags::NOREPLACE), Rename2("tree", "t9", RenameFlags::NOREPLACE)],
    );
    check("exchange two merged directories", &[Rename2("tree", "dir", RenameFlags::EXCHANGE), Stat("tree/pop")]);
}

#[test]
fn renamed_directories_rename_again() {
    need_fuse!();
    need_root!();
    check("twice in one directory", &[Rename("tree", "t2"), Rename("t2", "t3"), Stat("t3/t1")]);
    check("away and back", &[Rename("tree", "t2"), Rename("t2", "tree"), Stat("tree/sub/s")]);
    check("across, then across again", &[Rename("tree", "dir/t2"), Rename("dir/t2", "var/t3"), Rename("var/t3", "t4")]);
    check("a parent after its child", &[Rename("tree/sub", "tree/sub2"), Rename("tree", "dir/tree")]);
    check("a child of a renamed parent", &[Rename("tree", "t2"), Rename("t2/sub", "sub"), Stat("t2/sub")]);
    check(
        "old name made again",
        &[Rename("tree", "t2"), Mkdir("tree"), Write("tree/x", "x\n"), Rename("t2", "tree/in")],
    );
}

#[test]
fn renames_into_opaque_directories() {
    need_fuse!();
    need_root!();
    check("into a directory made over a whiteout", &[RmRf("dir"), Mkdir("dir"), Rename("tree", "dir/tree")]);
    check("a merged directory into a new directory", &[Mkdir("new"), Rename("var/cache", "new/cache")]);
    check("replacing a whited-out name", &[Unlink("foo"), Rename("tree", "foo"), Stat("foo/t1")]);
}

#[test]
fn changes_and_deletes_after_a_rename() {
    need_fuse!();
    need_root!();
    check(
        "copy-up, create, delete inside",
        &[
            Rename("tree", "t2"),
            Append("t2/t1", "+\n"),
            Write("t2/sub/new", "n\n"),
            Unlink("t2/sub/s"),
            Stat("t2/sub/s"),
        ],
    );
    check("rm -rf of a renamed directory", &[Rename("tree", "t2"), RmRf("t2"), Stat("tree"), Mkdir("t2")]);
    check("rmdir of a renamed, emptied directory", &[Rename("dir/pop", "p"), Unlink("p/b"), Unlink("p/c"), Rmdir("p")]);
    check("metadata and xattrs", &[Rename("tree", "t2"), Chmod("t2", 0o700), SetXattr("t2", "user.p", "v")]);
}

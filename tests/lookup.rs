//! Lookup through the layer stack: shadowing, every whiteout and opaque dialect, type
//! changes between layers, symlinks, and markers never visible.

use crate::common::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

#[test]
fn topmost_layer_wins() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    assert_eq!(read(s.m("foo")), "foo from l2\n", "l2 shadows l3");
    assert_eq!(read(s.m("bar")), "bar from l1\n", "l1 shadows l3");
    assert_eq!(read(s.m("dir/a")), "a from l1\n");
    assert_eq!(read(s.m("dir/pop/b")), "b\n", "merged dir shows bottom entries");
    assert_eq!(read(s.m("top")), "top only\n");
}

#[test]
fn every_whiteout_dialect_hides() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    for gone in ["etc/gone", "etc/oci-gone", "dir/pop/c"] {
        assert_eq!(errno(std::fs::symlink_metadata(s.m(gone))), libc::ENOENT, "{gone} is whited out");
    }
    if is_root() {
        // xattr whiteouts use trusted.* when the fixture is built by root.
        assert_eq!(errno(std::fs::symlink_metadata(s.m("etc/xattr-gone"))), libc::ENOENT);
    }
    assert_eq!(read(s.m("etc/keep")), "keep\n");
    assert_eq!(ls(s.m("etc")), ["keep"]);
}

#[test]
fn every_opaque_dialect_hides_lower_entries() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let m = s.mount();
    // `var/cache` carries the mount's own marker (trusted as root), `var/log` the OCI one,
    // `var/lib` `user.overlay.opaque`: a marker to a rootless mount only, as in kernel
    // overlayfs, whose root mounts read it as a user's attribute.
    let merged = |d: &str| ls(s.m(d)) == ["new", "old"];
    for d in ["var/cache", "var/log"] {
        assert_eq!(ls(s.m(d)), ["new"], "{d} is opaque");
        assert_eq!(errno(std::fs::metadata(s.m(&format!("{d}/old")))), libc::ENOENT);
    }
    assert_eq!(merged("var/lib"), is_root(), "var/lib: {:?}", ls(s.m("var/lib")));
    m.unmount();
    if is_root() {
        // `-o userxattr` (kernel overlayfs's option: root reading what a rootless mount
        // wrote) reads `user.overlay.*` markers, and only those.
        let _m = s.mount_with(&["-o", "userxattr"]);
        assert_eq!(ls(s.m("var/lib")), ["new"], "var/lib is opaque with userxattr");
        assert_eq!(ls(s.m("var/log")), ["new"]);
        assert!(merged("var/cache"), "var/cache: {:?}", ls(s.m("var/cache")));
    }
}

#[test]
fn markers_never_appear() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    for p in ["etc/.wh.oci-gone", "var/log/.wh..wh..opq", ".wh.anything"] {
        assert_eq!(errno(std::fs::symlink_metadata(s.m(p))), libc::ENOENT, "{p}");
    }
    let t = tree(&s.mnt);
    assert!(!t.contains(".wh."), "no marker in the merged tree:\n{t}");
    assert!(!t.contains(" c "), "no whiteout device in the merged tree:\n{t}");
}

#[test]
fn type_changes_between_layers() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    let m = std::fs::symlink_metadata(s.m("fileordir")).unwrap();
    assert!(m.is_dir(), "a directory above hides the file below");
    assert_eq!(ls(s.m("fileordir")), ["y"]);
    let m = std::fs::symlink_metadata(s.m("dirorfile")).unwrap();
    assert!(m.is_file(), "a file above hides the directory below");
    assert_eq!(read(s.m("dirorfile")), "now a file\n");
}

#[test]
fn symlinks_resolve_inside_the_mount() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    assert_eq!(std::fs::read_link(s.m("direct_sym")).unwrap().to_str(), Some("foo"));
    assert_eq!(read(s.m("indirect_sym")), "foo from l2\n");
    assert_eq!(read(s.m("dir/up_sym")), "foo from l2\n");
    assert!(std::fs::symlink_metadata(s.m("direct_sym")).unwrap().file_type().is_symlink());
}

#[test]
fn special_files_and_modes_show_through() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    assert!(std::fs::symlink_metadata(s.m("pipe")).unwrap().file_type().is_fifo());
    assert_eq!(std::fs::metadata(s.m("bin/run")).unwrap().mode() & 0o7777, 0o4755);
    assert!(std::fs::metadata(s.m("empty")).unwrap().is_dir());
    assert!(ls(s.m("empty")).is_empty());
}

#[test]
fn one_st_dev_and_hard_links_share_an_inode() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    let root = std::fs::metadata(&s.mnt).unwrap();
    for p in ["foo", "bar", "dir/pop/b", "top", "var/cache/new"] {
        assert_eq!(std::fs::symlink_metadata(s.m(p)).unwrap().dev(), root.dev(), "{p} on the mount's st_dev");
    }
    let a = std::fs::metadata(s.m("hard/a")).unwrap();
    let b = std::fs::metadata(s.m("hard/b")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
}

#[test]
fn names_too_long_and_missing() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    let long = "x".repeat(256);
    assert_eq!(errno(std::fs::metadata(s.m(&long))), libc::ENAMETOOLONG);
    assert_eq!(errno(std::fs::metadata(s.m(&"y".repeat(255)))), libc::ENOENT);
    assert_eq!(errno(std::fs::metadata(s.m("foo/bar"))), libc::ENOTDIR);
    // Repeated misses are answered (and cached) as plain ENOENT.
    for _ in 0..5 {
        assert_eq!(errno(std::fs::metadata(s.m("nope"))), libc::ENOENT);
    }
}

#[test]
fn read_only_mount_refuses_writes() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount_ro();
    assert_eq!(read(s.m("foo")), "foo from l2\n");
    assert_eq!(errno(std::fs::write(s.m("new"), "x")), libc::EROFS);
    assert_eq!(errno(std::fs::OpenOptions::new().append(true).open(s.m("foo"))), libc::EROFS);
    assert_eq!(errno(std::fs::remove_file(s.m("foo"))), libc::EROFS);
    assert_eq!(errno(std::fs::create_dir(s.m("nd"))), libc::EROFS);
}

#[test]
fn merged_directories_report_one_link_as_the_kernel_does() {
    need_fuse!();
    // Kernel overlayfs reports one link for a "merge" directory (parts in the upper and a
    // lower, or in several lowers) and the real count for a directory from one layer only.
    let s = Stack::empty(2);
    for d in ["both/x", "both/y", "top_only/x", "bottom_only/x", "bottom_only/y"] {
        let l = if d.starts_with("top") { 0 } else { 1 };
        std::fs::create_dir_all(s.lower(l).join(d)).unwrap();
    }
    std::fs::create_dir_all(s.lower(0).join("both/z")).unwrap();
    let m = s.mount();
    let nlink = |p: &str| std::fs::symlink_metadata(m.path.join(p)).unwrap().nlink();
    assert_eq!(nlink("both"), 1, "in two lowers");
    assert_eq!(nlink("top_only"), 3, "in one lower: . + .. + x");
    assert_eq!(nlink("bottom_only"), 4);
    std::fs::create_dir(m.path.join("bottom_only/new")).unwrap();
    assert_eq!(nlink("bottom_only"), 1, "now in the upper and a lower");
    drop(m);
    if is_root() {
        let k = s.dir.path().join("k");
        for sub in ["upper", "work", "mnt"] {
            std::fs::create_dir_all(k.join(sub)).unwrap();
        }
        let km = oracle::kernel_mount(&s.lower_arg(), &k.join("upper"), &k.join("work"), &k.join("mnt"), "");
        let kn = |p: &str| std::fs::symlink_metadata(km.0.join(p)).unwrap().nlink();
        assert_eq!((kn("both"), kn("top_only"), kn("bottom_only")), (1, 3, 4), "the kernel's counts");
    }
}

/// The OCI dialect's opaque marker file in a directory of a middle layer hides the layers
/// below it whichever way the directory is reached: looked up first, or listed after its
/// parent was (the listing built ahead probes without looking inside directories; the
/// lookup still looks where a layer below could merge).
#[test]
fn an_opaque_marker_file_hides_the_layers_below_however_the_directory_is_reached() {
    need_fuse!();
    let s = Stack::empty(3);
    for i in 0..3 {
        std::fs::create_dir_all(s.lower(i).join("a/b/c")).unwrap();
        write(s.lower(i).join(format!("a/b/c/from{i}")), "x");
    }
    write(s.lower(1).join("a/b/c/.wh..wh..opq"), "");
    for first in ["lookup", "listing"] {
        let m = s.mount();
        if first == "listing" {
            assert_eq!(ls(s.m("a")), ["b"]);
            assert_eq!(ls(s.m("a/b")), ["c"]);
        }
        assert_eq!(errno(std::fs::symlink_metadata(s.m("a/b/c/from2"))), libc::ENOENT, "{first}");
        assert_eq!(ls(s.m("a/b/c")), ["from0", "from1"], "{first}");
        drop(m);
    }
}

/// Looking up a lower directory that no layer below could merge with does not read it: on
/// a cold disk that was one read per directory more than kernel overlayfs makes (which
/// reads only the opaque xattr), and a lookup beside a copy-up waited twice as long for a
/// busy disk. Counted as the daemon's storage reads on a layer on its own ext4 image,
/// mounted afresh.
#[test]
fn looking_up_directories_that_merge_with_nothing_below_reads_none_of_them() {
    need_fuse!();
    need_root!();
    let d = tempfile::tempdir().unwrap();
    let image = Ext4Image::new(d.path(), "disk", 64);
    let disk = image.at.clone();
    const OPTS: &str = "inode_readahead_blks=0";
    let fs = image.mount(OPTS);
    const DIRS: usize = 200;
    for i in 0..DIRS {
        let dir = disk.join(format!("top/only/d{i:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        write(dir.join("f"), "x");
    }
    // A second layer below, which has the root but not `only`.
    std::fs::create_dir(disk.join("bottom")).unwrap();
    write(disk.join("bottom/elsewhere"), "x");
    let _fs = image.remount_cold(fs, OPTS);
    let up = tempfile::tempdir().unwrap();
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let lower = format!("{}:{}", disk.join("top").display(), disk.join("bottom").display());
    let args: Vec<String> = ["mount", "-o", "noprefetch", "--lower", &lower, "--upper"]
        .into_iter()
        .map(String::from)
        .chain([up.path().join("u").display().to_string(), "--work".into(), up.path().join("w").display().to_string()])
        .chain([mnt.display().to_string()])
        .collect();
    let m = Mount::new(&args, &mnt);
    let pid = daemon_pid(&mnt).expect("the daemon");
    let read_bytes = || proc_number(pid, "io", "read_bytes");
    let before = read_bytes();
    for i in 0..DIRS {
        assert!(std::fs::symlink_metadata(mnt.join(format!("only/d{i:03}"))).unwrap().is_dir());
    }
    let read = read_bytes() - before;
    m.unmount();
    // The directories' inodes are read (16 to a block) and `only` itself: 105 KiB here;
    // reading each directory too took 305 KiB (ext4 lays small directories out together).
    assert!(read < (DIRS as u64 * 4096) / 4, "looking up {DIRS} directories read {read} bytes");
}

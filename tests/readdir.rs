//! Merged directory listings: each name once, no markers, stable offsets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::ffi::CStr;

#[test]
fn merged_listing_lists_each_name_once() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    let root = ls(&s.mnt);
    let expected = [
        "bar",
        "bin",
        "dir",
        "direct_sym",
        "dirorfile",
        "empty",
        "empty_top",
        "etc",
        "fileordir",
        "foo",
        "hard",
        "indirect_sym",
        "pipe",
        "top",
        "tree",
        "usr",
        "var",
    ];
    assert_eq!(root, expected);
    assert_eq!(ls(s.m("dir")), ["a", "emptysub", "pop", "up_sym"]);
    assert_eq!(ls(s.m("dir/pop")), ["b"], "c is whited out in l1");
}

#[test]
fn changes_show_in_listings() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    write(s.m("dir/new"), "n");
    std::fs::remove_file(s.m("dir/a")).unwrap();
    std::fs::create_dir(s.m("dir/nd")).unwrap();
    assert_eq!(ls(s.m("dir")), ["emptysub", "nd", "new", "pop", "up_sym"]);
}

fn read_names(dir: *mut libc::DIR) -> Vec<(String, libc::c_long)> {
    let mut v = Vec::new();
    loop {
        // SAFETY: test code; `dir` is a valid open stream.
        let pos = unsafe { libc::telldir(dir) };
        let e = unsafe { libc::readdir(dir) };
        if e.is_null() {
            break;
        }
        let name = unsafe { CStr::from_ptr((*e).d_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        v.push((name, pos));
    }
    v
}

#[test]
fn seekdir_and_rewinddir_are_stable() {
    need_fuse!();
    let s = Stack::fixture("empty-dirs");
    // Many entries across layers so the listing spans several kernel reads; 1000 names are
    // in both layers.
    for i in 0..2000 {
        write(s.lower(0).join(format!("big/f{i:04}")), "1");
        write(s.lower(1).join(format!("big/f{:04}", i + 1000)), "2");
    }
    let _m = s.mount();
    let big = s.m("big");
    let path = cpath(&big);
    // SAFETY: test code, valid C string.
    let dir = unsafe { libc::opendir(path.as_ptr()) };
    assert!(!dir.is_null());
    let first = read_names(dir);
    let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "no name twice");
    assert_eq!(names.len(), 2 + 3000, ". .. and 3000 files");
    // Go back to the middle and read the rest again: same entries in the same order.
    let mid = first.len() / 2;
    unsafe { libc::seekdir(dir, first[mid].1) };
    let again = read_names(dir);
    assert_eq!(
        again.iter().map(|x| &x.0).collect::<Vec<_>>(),
        first[mid..].iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    unsafe { libc::rewinddir(dir) };
    let third = read_names(dir);
    assert_eq!(third.len(), first.len());
    unsafe { libc::closedir(dir) };
}

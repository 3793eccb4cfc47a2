//! Merged directory listings: each name once, no markers, stable offsets.

use crate::common::*;
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

/// A libc directory stream (std has no seekdir/telldir).
struct Stream(*mut libc::DIR);

impl Stream {
    fn open(p: &std::path::Path) -> Stream {
        let c = cpath(p);
        // SAFETY: `c` is a valid NUL-terminated path.
        let d = unsafe { libc::opendir(c.as_ptr()) };
        assert!(!d.is_null(), "opendir {p:?}");
        Stream(d)
    }

    /// Every remaining entry with the position telldir gave before reading it.
    fn read_rest(&mut self) -> Vec<(String, libc::c_long)> {
        let mut v = Vec::new();
        loop {
            // SAFETY: self.0 is an open stream until drop.
            let pos = unsafe { libc::telldir(self.0) };
            // SAFETY: as above.
            let e = unsafe { libc::readdir(self.0) };
            if e.is_null() {
                break;
            }
            // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated.
            let name = unsafe { CStr::from_ptr((*e).d_name.as_ptr()) }.to_string_lossy().into_owned();
            v.push((name, pos));
        }
        v
    }

    fn seek(&mut self, pos: libc::c_long) {
        // SAFETY: self.0 is open; pos came from telldir on this stream.
        unsafe { libc::seekdir(self.0, pos) };
    }

    fn rewind(&mut self) {
        // SAFETY: self.0 is open.
        unsafe { libc::rewinddir(self.0) };
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: self.0 is open and closed exactly once, here.
        unsafe { libc::closedir(self.0) };
    }
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
    let mut dir = Stream::open(&s.m("big"));
    let first = dir.read_rest();
    let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "no name twice");
    assert_eq!(names.len(), 2 + 3000, ". .. and 3000 files");
    // Go back to the middle and read the rest again: same entries in the same order.
    let mid = first.len() / 2;
    dir.seek(first[mid].1);
    let again = dir.read_rest();
    assert_eq!(again.iter().map(|x| &x.0).collect::<Vec<_>>(), first[mid..].iter().map(|x| &x.0).collect::<Vec<_>>());
    dir.rewind();
    let third = dir.read_rest();
    assert_eq!(third.len(), first.len());
}

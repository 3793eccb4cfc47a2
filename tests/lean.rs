//! Listings without the attributes walks do not use (`src/union/lean.rs`): a walk that needs
//! only names and types (`find`) makes the daemon look up no file, and shows the same names,
//! types and inode numbers as a stat of each; a walk that stats every entry (`ls -l`) soon
//! gets the attributes with the listing again; `-o readdirplus=full` always sends them.

use crate::common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::Path;

/// `dirs` directories of `files` files each in one lower layer, plus a symlink and a fifo in
/// the first; in the top layer, one file overridden and one whited out per directory.
fn tree(dirs: usize, files: usize) -> Stack {
    let s = Stack::empty(2);
    for d in 0..dirs {
        let dir = s.lower(1).join(format!("d{d:03}"));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for f in 0..files {
            std::fs::write(dir.join(format!("f{f:03}")), format!("{d} {f}\n")).unwrap();
        }
        let top = s.lower(0).join(format!("d{d:03}"));
        std::fs::create_dir_all(&top).unwrap();
        std::fs::write(top.join("f000"), "overridden\n").unwrap();
        std::fs::write(top.join(".wh.f001"), "").unwrap();
    }
    std::os::unix::fs::symlink("f002", s.lower(1).join("d000/link")).unwrap();
    let fifo = s.lower(1).join("d000/fifo");
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o644), 0)
        .unwrap();
    s
}

/// What a name-only walk (`find`'s) sees: path → (type, `d_ino`), from the listings alone.
fn names_and_types(root: &Path) -> BTreeMap<String, (char, u64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let kind = kind_letter(e.file_type().unwrap());
            if kind == 'd' {
                todo.push(e.path());
            }
            out.insert(e.path().strip_prefix(root).unwrap().display().to_string(), (kind, e.ino()));
        }
    }
    out
}

/// What `ls -lR` does: list a directory, stat each entry, then go down. Returns the entries.
fn stat_walk(root: &Path) -> usize {
    let (mut n, mut todo) = (0, vec![root.to_path_buf()]);
    while let Some(d) = todo.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p);
            }
            n += 1;
        }
    }
    n
}

#[test]
fn a_name_only_walk_looks_up_no_file_and_shows_what_a_stat_shows() {
    need_fuse!();
    let s = tree(12, 20);
    let m = s.mount();
    let seen = names_and_types(&m.path);
    let c = stats_raw(&m.path);
    // The root, 12 directories and their `sub`s: no node, no lookup for any file.
    assert!(c["nodes"] <= 1 + 24, "a name-only walk made a node per file: {c:?}");
    assert_eq!(c.get("op.lookup").copied().unwrap_or(0), 0, "{c:?}");
    // Each directory, its `sub`, its 20 files but the one whited out; the link and the fifo.
    assert_eq!(seen.len(), 12 * (1 + 1 + 19) + 2, "{seen:?}");
    assert_eq!(seen["d000/link"].0, 'l');
    assert_eq!(seen["d000/fifo"].0, 'p');
    assert_eq!(seen["d003/sub"].0, 'd');
    assert!(!seen.contains_key("d005/f001") && !seen.contains_key("d005/.wh.f001"), "{seen:?}");
    // Each entry's type and inode number are what a stat of it says.
    for (path, (kind, ino)) in &seen {
        let st = std::fs::symlink_metadata(m.path.join(path)).unwrap();
        let want = kind_letter(st.file_type());
        assert_eq!((*kind, *ino), (want, st.ino()), "{path}");
    }
    assert_eq!(read(m.path.join("d007/f000")), "overridden\n");
    m.unmount();

    // With every attribute sent, the same names, types and numbers, and a node per entry.
    let m = s.mount_with(&["-o", "readdirplus=full"]);
    let full = names_and_types(&m.path);
    let c = stats_raw(&m.path);
    m.unmount();
    assert_eq!(full, seen);
    assert!(c["nodes"] as usize > seen.len(), "readdirplus=full left attributes out: {c:?}");
}

#[test]
fn a_walk_that_stats_every_entry_soon_gets_the_attributes_with_the_listings() {
    need_fuse!();
    let (dirs, files) = (64, 20);
    let s = tree(dirs, files);
    let m = s.mount();
    let n = stat_walk(&m.path);
    let c = stats_raw(&m.path);
    m.unmount();
    let lookups = c.get("op.lookup").copied().unwrap_or(0) as usize;
    // The first directory goes out lean and each probe costs one directory's lookups; a
    // daemon that kept sending plain entries would be looked up for every file.
    assert!(n > dirs * files);
    assert!(lookups > 0, "the walk began with a lean listing: {c:?}");
    assert!(lookups * 10 <= n, "{lookups} lookups for a stat walk of {n} entries: {c:?}");
}

#[test]
fn a_name_only_walk_after_a_stat_walk_goes_lean_again() {
    need_fuse!();
    let s = tree(40, 10);
    let m = s.mount();
    // ls -l of the first directories: the daemon turns to full listings.
    for d in 0..3 {
        for e in std::fs::read_dir(m.path.join(format!("d{d:03}"))).unwrap() {
            let _ = std::fs::symlink_metadata(e.unwrap().path()).unwrap();
        }
    }
    let before = stats_raw(&m.path)["nodes"];
    // find of the rest: after at most one interval of full listings, lean ones again.
    let _ = names_and_types(&m.path);
    let after = stats_raw(&m.path)["nodes"];
    m.unmount();
    let made = (after - before) as usize;
    assert!(made < 37 * 10 / 2, "{made} nodes made by a name-only walk of 37 directories of 10 files");
}

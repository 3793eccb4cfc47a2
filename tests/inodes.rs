//! Inode numbers: one `st_dev` for the whole mount, numbers unique across layers even when
//! the layers live on different filesystems (two tmpfs instances number their inodes alike),
//! and the same number for an object across copy-up, rename (files and directories) and
//! remount cycles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

struct Tmpfs(std::path::PathBuf);
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn tmpfs(at: &Path) -> Tmpfs {
    std::fs::create_dir_all(at).unwrap();
    assert!(Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(at).status().unwrap().success());
    Tmpfs(at.to_path_buf())
}

/// Path → (dev, ino) of every object under `root`.
fn inodes(root: &Path) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        out.insert(p.strip_prefix(root).unwrap().display().to_string(), (m.dev(), m.ino()));
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

fn mount(lowers: &[&Path], upper: &Path, work: &Path, mnt: &Path) -> Mount {
    std::fs::create_dir_all(mnt).unwrap();
    let lower = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    let args: Vec<String> = ["mount", "--lower", &lower, "--upper"]
        .iter()
        .map(|s| s.to_string())
        .chain([upper.display().to_string(), "--work".into(), work.display().to_string(), mnt.display().to_string()])
        .collect();
    Mount::new(&args, mnt)
}

fn assert_unique(map: &BTreeMap<String, (u64, u64)>) {
    let devs: std::collections::BTreeSet<u64> = map.values().map(|v| v.0).collect();
    assert_eq!(devs.len(), 1, "one st_dev for the mount: {devs:?}");
    let mut seen: HashMap<u64, &str> = HashMap::new();
    for (p, (_, ino)) in map {
        if let Some(other) = seen.insert(*ino, p) {
            panic!("{p} and {other} share inode number {ino}");
        }
    }
}

#[test]
fn inode_numbers_are_unique_across_filesystems_and_stable_across_changes_and_remounts() {
    need_fuse!();
    need_root!();
    let d = tempfile::tempdir().unwrap();
    let (a, b, u) = (d.path().join("fs-a"), d.path().join("fs-b"), d.path().join("fs-u"));
    let (_ta, _tb, _tu) = (tmpfs(&a), tmpfs(&b), tmpfs(&u));
    // Two lowers on two tmpfs instances and an upper on a third: their inode numbers overlap.
    for (root, tag) in [(&a, "a"), (&b, "b")] {
        for i in 0..20 {
            let dir = root.join(format!("d{}", i % 4));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{tag}{i}")), format!("{tag}{i}\n")).unwrap();
        }
    }
    let (upper, work) = (u.join("upper"), u.join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let mnt = d.path().join("mnt");
    let m = mount(&[&a, &b], &upper, &work, &mnt);
    let before = inodes(&m.path);
    assert_unique(&before);

    // Copy-ups (data and metadata), file and directory renames, new objects.
    std::fs::OpenOptions::new().append(true).open(m.path.join("d0/a0")).unwrap();
    std::fs::write(m.path.join("d0/a4"), "changed\n").unwrap();
    Command::new("chmod").arg("600").arg(m.path.join("d1/b1")).status().unwrap();
    std::fs::rename(m.path.join("d2/a2"), m.path.join("d3/moved")).unwrap();
    std::fs::rename(m.path.join("d1"), m.path.join("d1-renamed")).unwrap();
    std::fs::rename(m.path.join("d3"), m.path.join("d0/d3-inside")).unwrap();
    std::fs::write(m.path.join("new"), "new\n").unwrap();
    std::fs::create_dir(m.path.join("newdir")).unwrap();
    let after = inodes(&m.path);
    assert_unique(&after);
    let renamed = |p: &str| -> String {
        p.replacen("d2/a2", "d0/d3-inside/moved", 1).replacen("d1", "d1-renamed", 1).replacen("d3", "d0/d3-inside", 1)
    };
    for (p, v) in &before {
        if p == "d2/a2" {
            assert_eq!(after.get("d0/d3-inside/moved"), Some(v), "{p} after its rename");
        } else {
            assert_eq!(after.get(&renamed(p)), Some(v), "{p} keeps its inode number");
        }
    }
    m.unmount();

    // Three remount cycles: every number stays.
    for cycle in 0..3 {
        let m = mount(&[&a, &b], &upper, &work, &mnt);
        let again = inodes(&m.path);
        assert_eq!(again, after, "remount {cycle}");
        m.unmount();
    }
}

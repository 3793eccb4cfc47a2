//! Inode numbers: one `st_dev` for the whole mount, numbers unique across layers even when
//! the layers live on different filesystems (two tmpfs instances number their inodes alike),
//! and the same number for an object across copy-up, rename (files and directories) and
//! remount cycles.

use crate::common::*;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

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
    let (_ta, _tb, _tu) = (mount_tmpfs(&a, ""), mount_tmpfs(&b, ""), mount_tmpfs(&u, ""));
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

    // Three remount cycles: every number stays (st_dev is the new mount's own).
    let inos = |m: &BTreeMap<String, (u64, u64)>| m.iter().map(|(p, v)| (p.clone(), v.1)).collect::<BTreeMap<_, _>>();
    for cycle in 0..3 {
        let m = mount(&[&a, &b], &upper, &work, &mnt);
        let again = inodes(&m.path);
        assert_unique(&again);
        assert_eq!(inos(&again), inos(&after), "remount {cycle}");
        m.unmount();
    }
}

/// The same steps on kernel overlayfs (`index=on,redirect_dir=on`) and on unionfs
/// (`-o index=on`): which objects keep their inode number (across copy-up, file and
/// directory rename, hard-link copy-up, remount) and which names share one must agree.
#[test]
fn inode_stability_matches_kernel_overlayfs() {
    need_fuse!();
    need_root!();
    use crate::common::oracle::kernel_mount;
    // (name at the start, name after the steps)
    let tracked = [
        ("foo", "foo"),
        ("bar", "bar2"),
        ("tree", "tree2"),
        ("tree/t1", "tree2/t1"),
        ("tree/sub/s", "tree2/sub/s"),
        ("hard/a", "hard/a"),
        ("hard/b", "hard/b"),
        ("dir", "dir"),
        ("usr/bin/tool", "usr/bin/tool"),
    ];
    let steps = |m: &Path| {
        std::fs::OpenOptions::new().append(true).open(m.join("foo")).unwrap().write_all(b"+").unwrap();
        std::fs::rename(m.join("bar"), m.join("bar2")).unwrap();
        std::fs::rename(m.join("tree"), m.join("tree2")).unwrap();
        std::fs::OpenOptions::new().append(true).open(m.join("tree2/t1")).unwrap().write_all(b"+").unwrap();
        std::fs::OpenOptions::new().append(true).open(m.join("hard/a")).unwrap().write_all(b"+").unwrap();
        Command::new("chmod").arg("600").arg(m.join("usr/bin/tool")).status().unwrap();
    };
    let sig = |m: &Path, before: &[u64]| -> Vec<String> {
        let now: Vec<u64> = tracked.iter().map(|(_, p)| std::fs::symlink_metadata(m.join(p)).unwrap().ino()).collect();
        let mut out: Vec<String> =
            tracked.iter().zip(now.iter().zip(before)).map(|((o, _), (n, b))| format!("{o} kept={}", n == b)).collect();
        for i in 0..now.len() {
            for j in i + 1..now.len() {
                if now[i] == now[j] {
                    out.push(format!("{} shares with {}", tracked[i].1, tracked[j].1));
                }
            }
        }
        out
    };
    let start = |m: &Path| -> Vec<u64> {
        tracked.iter().map(|(o, _)| std::fs::symlink_metadata(m.join(o)).unwrap().ino()).collect()
    };
    let opts = "index=on,redirect_dir=on";
    // Kernel overlayfs.
    let s = Stack::fixture("oracle");
    let d = s.dir.path();
    let (ku, kw, km) = (d.join("k-upper"), d.join("k-work"), d.join("k-mnt"));
    let k = kernel_mount(&s.lower_arg(), &ku, &kw, &km, opts);
    let kb = start(&k.0);
    steps(&k.0);
    let kernel_live = sig(&k.0, &kb);
    drop(k);
    let k = kernel_mount(&s.lower_arg(), &ku, &kw, &km, opts);
    let kernel_remount = sig(&k.0, &kb);
    drop(k);
    // unionfs.
    let m = s.mount_with(&["-o", "index=on"]);
    let ub = start(&m.path);
    steps(&m.path);
    let ours_live = sig(&m.path, &ub);
    m.unmount();
    let m = s.mount_with(&["-o", "index=on"]);
    let ours_remount = sig(&m.path, &ub);
    m.unmount();
    assert_eq!(ours_live, kernel_live, "while mounted");
    assert_eq!(ours_remount, kernel_remount, "after a remount");
    assert!(ours_remount.iter().filter(|l| l.ends_with("kept=true")).count() == tracked.len(), "{ours_remount:?}");
}

/// `d_ino` and `st_ino` agree for every entry of a big directory read in full before any
/// entry is looked at (so most of it comes through plain `READDIR`, not `READDIRPLUS`), after
/// copied-up files were renamed — to new names, and over other lower files' names — and
/// directories too (with redirects), and the union was mounted again: the listing numbers a
/// copy by its origin and a moved directory by the lower one its redirect leads to, as lookup
/// does (it gave both their upper inode's number). Kernel overlayfs agrees.
#[test]
fn directory_entry_numbers_of_renamed_copies_are_their_inode_numbers() {
    need_fuse!();
    need_root!();
    use crate::common::oracle::kernel_mount;
    let s = Stack::empty(1);
    for i in 0..600 {
        write(s.lowers[0].join(format!("f{i}")), &i.to_string());
    }
    for i in 0..150 {
        std::fs::create_dir(s.lowers[0].join(format!("d{i}"))).unwrap();
        write(s.lowers[0].join(format!("d{i}/x")), "x");
    }
    let steps = |m: &Path| {
        // Directories move with a redirect to their lower one, whose number they keep.
        for i in 0..150 {
            std::fs::rename(m.join(format!("d{i}")), m.join(format!("e{i}"))).unwrap();
        }
        for i in 0..200 {
            std::fs::OpenOptions::new().append(true).open(m.join(format!("f{i}"))).unwrap().write_all(b"+").unwrap();
            std::fs::rename(m.join(format!("f{i}")), m.join(format!("g{i}"))).unwrap();
        }
        // Over a lower file of the target name: that one is not the copy's origin.
        for i in 200..210 {
            std::fs::OpenOptions::new().append(true).open(m.join(format!("f{i}"))).unwrap().write_all(b"+").unwrap();
            std::fs::rename(m.join(format!("f{i}")), m.join(format!("f{}", i + 200))).unwrap();
        }
    };
    // Names whose d_ino differs from st_ino, over two full listings.
    let mismatches = |m: &Path| -> Vec<String> {
        let mut bad = Vec::new();
        for _ in 0..2 {
            let listed: Vec<(String, u64)> = std::fs::read_dir(m)
                .unwrap()
                .map(|e| e.unwrap())
                .map(|e| (e.file_name().to_string_lossy().into_owned(), std::os::unix::fs::DirEntryExt::ino(&e)))
                .collect();
            assert_eq!(listed.len(), 740, "the merged listing");
            for (name, d_ino) in listed {
                let st_ino = std::fs::symlink_metadata(m.join(&name)).unwrap().ino();
                if d_ino != st_ino {
                    bad.push(format!("{name}: d_ino {d_ino}, st_ino {st_ino}"));
                }
            }
        }
        bad
    };
    let d = s.dir.path();
    let (ku, kw, km) = (d.join("k-upper"), d.join("k-work"), d.join("k-mnt"));
    let k = kernel_mount(&s.lower_arg(), &ku, &kw, &km, "redirect_dir=on");
    steps(&k.0);
    drop(k);
    let k = kernel_mount(&s.lower_arg(), &ku, &kw, &km, "redirect_dir=on");
    let kernel = mismatches(&k.0);
    drop(k);
    assert!(kernel.is_empty(), "kernel overlayfs: {kernel:?}");
    let m = s.mount();
    steps(&m.path);
    m.unmount();
    let m = s.mount();
    let ours = mismatches(&m.path);
    m.unmount();
    assert!(
        ours.is_empty(),
        "{} of 1480 entries listed with another number than stat gives: {:?}",
        ours.len(),
        &ours[..ours.len().min(5)]
    );
}

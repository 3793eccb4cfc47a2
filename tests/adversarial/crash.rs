//! Crash sweeps over every multi-step operation: the daemon dies (an abort, as `kill -9`)
//! right before each upper-layer mutation of one operation in turn; after a remount the
//! merged tree is exactly the one before the operation or the one after it, the work dir
//! is empty, and kernel overlayfs reads the upper the same way. [6] is the rename of a
//! directory over a merged directory whose lower entries were all deleted: removing its
//! whiteouts one by one let a crash bring deleted files back.

use std::io;
use std::path::Path;
use std::process::Command;

use crate::common::{Mount, Stack, daemon_pid, exits_soon_ms, is_mounted, tree};

/// The fault hook of `src/hooks.rs`: abort before upper mutation N.
const FAULT_ENV: &str = unionfs::hooks::FAULT_AFTER;

struct Scenario {
    name: &'static str,
    /// Mount options of unionfs.
    opts: &'static [&'static str],
    /// Options of the kernel overlayfs mount that reads the upper.
    kernel: &'static str,
    /// Builds the lower layer.
    lower: fn(&Path),
    /// Runs through the mount before the operation (not swept).
    prepare: fn(&Path) -> io::Result<()>,
    /// The operation swept.
    op: fn(&Path) -> io::Result<()>,
}

fn files(d: &Path, n: usize) {
    std::fs::create_dir_all(d).unwrap();
    for i in 0..n {
        std::fs::write(d.join(format!("f{i}")), format!("{i}\n")).unwrap();
    }
}

fn empty_out(d: &Path) -> io::Result<()> {
    for e in std::fs::read_dir(d)? {
        std::fs::remove_file(e?.path())?;
    }
    Ok(())
}

fn none(_: &Path) -> io::Result<()> {
    Ok(())
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "rename a directory over a merged directory emptied name by name",
        opts: &[],
        kernel: "redirect_dir=on",
        lower: |l| files(&l.join("dst"), 30),
        prepare: |m| {
            empty_out(&m.join("dst"))?;
            std::fs::create_dir(m.join("src"))?;
            std::fs::write(m.join("src/s"), "s\n")
        },
        op: |m| std::fs::rename(m.join("src"), m.join("dst")),
    },
    Scenario {
        name: "rmdir of a merged directory emptied name by name",
        opts: &[],
        kernel: "redirect_dir=on",
        lower: |l| files(&l.join("d"), 30),
        prepare: |m| empty_out(&m.join("d")),
        op: |m| std::fs::remove_dir(m.join("d")),
    },
    Scenario {
        name: "copy-up of three directories by a create deep inside",
        opts: &[],
        kernel: "redirect_dir=on",
        lower: |l| files(&l.join("a/b/c"), 3),
        prepare: none,
        op: |m| std::fs::File::create(m.join("a/b/c/new")).map(drop),
    },
    Scenario {
        name: "rename of a lower directory (redirect)",
        opts: &[],
        kernel: "redirect_dir=on",
        lower: |l| files(&l.join("dir/sub"), 3),
        prepare: none,
        op: |m| std::fs::rename(m.join("dir"), m.join("moved")),
    },
    Scenario {
        name: "rename of a lower file over another (whiteout at the old name)",
        opts: &[],
        kernel: "redirect_dir=on",
        lower: |l| files(l, 2),
        prepare: none,
        op: |m| std::fs::rename(m.join("f0"), m.join("f1")),
    },
    Scenario {
        name: "mkdir over a deleted lower directory (opaque)",
        opts: &[],
        kernel: "redirect_dir=on",
        lower: |l| files(&l.join("d"), 3),
        prepare: |m| std::fs::remove_dir_all(m.join("d")),
        op: |m| std::fs::create_dir(m.join("d")),
    },
    Scenario {
        name: "chmod of a lower hard link with index=on",
        opts: &["-o", "index=on"],
        kernel: "redirect_dir=on,index=on",
        lower: |l| {
            files(l, 1);
            std::fs::hard_link(l.join("f0"), l.join("link")).unwrap();
        },
        prepare: none,
        op: |m| std::fs::set_permissions(m.join("f0"), std::os::unix::fs::PermissionsExt::from_mode(0o600)),
    },
    Scenario {
        name: "data copy-up of a metadata-only copy (metacopy=on)",
        opts: &["-o", "metacopy=on"],
        kernel: "redirect_dir=on,metacopy=on",
        lower: |l| std::fs::write(l.join("big"), vec![7u8; 1 << 20]).unwrap(),
        prepare: |m| std::fs::set_permissions(m.join("big"), std::os::unix::fs::PermissionsExt::from_mode(0o600)),
        op: |m| std::fs::OpenOptions::new().write(true).open(m.join("big")).map(drop),
    },
];

fn fresh(s: &Stack) {
    for d in [&s.upper, &s.work] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir(d).unwrap();
    }
}

/// Unmounts a mount whose daemon died.
fn detach(m: &Path) {
    let _ = Command::new(crate::common::bin()).args(["umount", "--lazy"]).arg(m).output();
    if is_mounted(m) {
        let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
    }
}

/// The merged tree kernel overlayfs shows for the upper (with unionfs's work dir, whose
/// `index` the kernel reads as its own).
fn kernel_tree(s: &Stack, opts: &str) -> String {
    let kmnt = s.dir.path().join("kmnt");
    std::fs::create_dir_all(&kmnt).unwrap();
    let o = format!("lowerdir={},upperdir={},workdir={},{opts}", s.lower_arg(), s.upper.display(), s.work.display());
    let ok = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &o]).arg(&kmnt).status().unwrap();
    assert!(ok.success(), "kernel overlayfs refused the upper ({o})");
    let t = tree(&kmnt);
    let _ = Command::new("umount").arg(&kmnt).status();
    t
}

fn sweep(sc: &Scenario) -> usize {
    let s = Stack::empty(1);
    (sc.lower)(s.lower(0));
    // The two trees an interrupted operation may leave.
    fresh(&s);
    let m = s.mount_with(sc.opts);
    (sc.prepare)(&m.path).unwrap();
    let before = tree(&m.path);
    (sc.op)(&m.path).unwrap();
    let after = tree(&m.path);
    m.unmount();
    let mut n = 1;
    loop {
        assert!(n < 300, "{}: the operation never completed", sc.name);
        fresh(&s);
        let m = s.mount_with(sc.opts);
        (sc.prepare)(&m.path).unwrap();
        m.unmount();
        let label = format!("{}: fault before mutation {n}", sc.name);
        let mut cmd = Command::new(crate::common::bin());
        cmd.args(["mount", "--lower", &s.lower_arg(), "--upper"]).arg(&s.upper).arg("--work").arg(&s.work);
        let out = cmd.args(sc.opts).arg(&s.mnt).env(FAULT_ENV, n.to_string()).output().unwrap();
        assert!(out.status.success(), "{label}: {}", String::from_utf8_lossy(&out.stderr));
        let mnt = std::fs::canonicalize(&s.mnt).unwrap();
        let guard = Mount::adopt(&mnt);
        let pid = daemon_pid(&mnt).expect("daemon");
        let r = (sc.op)(&mnt);
        let survived = !exits_soon_ms(pid, 0) && r.is_ok();
        if survived {
            guard.unmount();
        } else {
            drop(guard);
            detach(&mnt);
        }
        let m = s.mount_with(sc.opts);
        let got = tree(&m.path);
        assert!(
            got == before || got == after,
            "{label}: a tree that is neither before nor after:\n{got}\n--- before:\n{before}\n--- after:\n{after}"
        );
        let left: Vec<_> = std::fs::read_dir(s.work.join("work")).unwrap().collect();
        assert!(left.is_empty(), "{label}: the work dir was not emptied: {left:?}");
        m.unmount();
        let (code, out) = super::check::check(&s, false);
        assert_eq!(code, 0, "{label}: unionfs check finds problems in the upper:\n{out}");
        assert_eq!(kernel_tree(&s, sc.kernel), got, "{label}: kernel overlayfs reads the upper differently");
        if survived {
            return n;
        }
        n += 1;
    }
}

#[test]
fn a_crash_at_any_step_of_a_multi_step_operation_leaves_the_tree_before_or_after_it() {
    need_fuse!();
    need_root!();
    need_hooks!();
    for sc in SCENARIOS {
        let n = sweep(sc);
        eprintln!("{}: {} fault points, each remount before or after", sc.name, n - 1);
        assert!(n > 1, "{}: no upper mutation to stop at", sc.name);
    }
}

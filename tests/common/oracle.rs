//! Kernel overlayfs as the oracle for short operation sequences: the same steps on a kernel
//! overlay mount and on a unionfs mount over the `oracle` fixture must give the same errno
//! and the same merged tree; the tree must survive a unionfs remount; and kernel overlayfs
//! must read unionfs's upper the same way.

use super::scenario::{Op, apply};
use super::{Stack, tree};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A kernel overlay mount, detached on drop.
pub struct KernelMount(pub PathBuf);

impl Drop for KernelMount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Mounts kernel overlayfs with `extra` options (comma-separated, may be empty).
pub fn kernel_mount(lowers: &str, upper: &Path, work: &Path, mnt: &Path, extra: &str) -> KernelMount {
    for p in [upper, work, mnt] {
        std::fs::create_dir_all(p).unwrap();
    }
    let mut opts = format!("lowerdir={lowers},upperdir={},workdir={}", upper.display(), work.display());
    if !extra.is_empty() {
        opts.push(',');
        opts.push_str(extra);
    }
    let st = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(mnt).status().unwrap();
    assert!(st.success(), "kernel overlay mount -o {opts} failed");
    KernelMount(mnt.to_path_buf())
}

/// Lines of `a` missing from `b` (`-`) and of `b` missing from `a` (`+`).
pub fn tree_diff(a: &str, b: &str) -> String {
    let minus = a.lines().filter(|l| !b.lines().any(|x| x == *l)).map(|l| format!("- {l}"));
    let plus = b.lines().filter(|l| !a.lines().any(|x| x == *l)).map(|l| format!("+ {l}"));
    minus.chain(plus).collect::<Vec<_>>().join("\n")
}

/// Runs `ops` on both; `Err` describes the first difference. `skip` names steps to leave
/// out on both sides (known, documented deviations); `every_step` compares the trees after
/// each step rather than only at the end.
pub fn compare(
    ops: &[Op],
    kernel_opts: &str,
    union_args: &[&str],
    every_step: bool,
    skip: impl Fn(&Path, &Path, &Op) -> bool,
) -> Result<(), String> {
    compare_observed(ops, kernel_opts, union_args, every_step, skip, |_| {})
}

/// [`compare`], and `observe` sees the unionfs mount after the last step, before it is
/// unmounted (to read its counters).
pub fn compare_observed(
    ops: &[Op],
    kernel_opts: &str,
    union_args: &[&str],
    every_step: bool,
    skip: impl Fn(&Path, &Path, &Op) -> bool,
    observe: impl FnOnce(&Path),
) -> Result<(), String> {
    let s = Stack::fixture("oracle");
    let d = s.dir.path();
    let k = kernel_mount(&s.lower_arg(), &d.join("k-upper"), &d.join("k-work"), &d.join("k-mnt"), kernel_opts);
    let u = s.mount_with(union_args);
    for (i, op) in ops.iter().enumerate() {
        if skip(&k.0, &u.path, op) {
            continue;
        }
        let (ke, ue) = (apply(&k.0, op), apply(&u.path, op));
        if ke != ue {
            return Err(format!("step {i} {op:?}: kernel errno {ke}, unionfs errno {ue}"));
        }
        if every_step {
            let (kt, ut) = (tree(&k.0), tree(&u.path));
            if kt != ut {
                return Err(format!("step {i} {op:?}: trees differ (- kernel, + unionfs):\n{}", tree_diff(&kt, &ut)));
            }
        }
    }
    let (kt, ut) = (tree(&k.0), tree(&u.path));
    if kt != ut {
        return Err(format!("trees differ after {} steps (- kernel, + unionfs):\n{}", ops.len(), tree_diff(&kt, &ut)));
    }
    observe(&u.path);
    drop(k);
    u.unmount();
    // unionfs reads its own upper back the same way.
    let u2 = s.mount_with(union_args);
    let again = tree(&u2.path);
    u2.unmount();
    if again != ut {
        return Err(format!("after a remount unionfs shows (- before, + after):\n{}", tree_diff(&ut, &again)));
    }
    // And kernel overlayfs reads unionfs's upper the same way.
    let k2 = kernel_mount(&s.lower_arg(), &s.upper, &s.work, &d.join("k2-mnt"), kernel_opts);
    let k2t = tree(&k2.0);
    if k2t != ut {
        return Err(format!(
            "kernel overlayfs reads unionfs's upper differently (- kernel, + unionfs):\n{}",
            tree_diff(&k2t, &ut)
        ));
    }
    Ok(())
}

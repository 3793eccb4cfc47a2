//! Kernel overlayfs is the oracle: the same scripted scenario runs on a kernel overlay mount
//! and on a unionfs mount over the same lower layers, and after every step the errno and the
//! whole merged tree (names, types, modes, owners, sizes, contents, link targets, user
//! xattrs) must be the same. Then kernel overlayfs mounts unionfs's upper and must show the
//! same tree, with no stray marker.

use crate::common::oracle::{kernel_mount, tree_diff};
use crate::common::scenario::{apply, scenario};
use crate::common::*;

/// unionfs renames directories with redirects by default; the kernel does with this.
const KERNEL_OPTS: &str = "redirect_dir=on";

#[test]
fn unionfs_matches_kernel_overlayfs_step_by_step() {
    need_fuse!();
    need_root!();
    let s = Stack::fixture("oracle");
    let d = s.dir.path();
    let k = kernel_mount(&s.lower_arg(), &d.join("k-upper"), &d.join("k-work"), &d.join("k-mnt"), KERNEL_OPTS);
    let u = s.mount();
    assert_eq!(tree(&k.0), tree(&u.path), "initial merged trees differ");
    for (i, op) in scenario().iter().enumerate() {
        let ke = apply(&k.0, op);
        let ue = apply(&u.path, op);
        assert_eq!(ue, ke, "step {i} {op:?}: unionfs errno {ue}, kernel errno {ke}");
        let (kt, ut) = (tree(&k.0), tree(&u.path));
        if kt != ut {
            panic!("step {i} {op:?}: merged trees differ (- kernel, + unionfs):\n{}", tree_diff(&kt, &ut));
        }
    }
    let final_tree = tree(&u.path);
    drop(k);
    u.unmount();

    // Kernel overlayfs over unionfs's upper shows the same tree.
    let k2 = kernel_mount(&s.lower_arg(), &s.upper, &s.work, &d.join("k2-mnt"), KERNEL_OPTS);
    let kt = tree(&k2.0);
    assert!(!kt.contains(".wh.") && !kt.contains(" c "), "no marker shows:\n{kt}");
    assert_eq!(kt, final_tree, "kernel overlayfs reads unionfs's upper differently");
}

#[test]
fn kernel_upper_is_read_the_same_by_unionfs() {
    need_fuse!();
    need_root!();
    // The other direction: changes made by kernel overlayfs, read back by unionfs.
    let s = Stack::fixture("oracle");
    let d = s.dir.path();
    let k = kernel_mount(&s.lower_arg(), &s.upper, &s.work, &d.join("k-mnt"), KERNEL_OPTS);
    for op in scenario() {
        apply(&k.0, &op);
    }
    let kt = tree(&k.0);
    drop(k);
    let _u = s.mount();
    assert_eq!(tree(&s.mnt), kt);
}

//! Kernel overlayfs is the oracle: the same scripted scenario runs on a kernel overlay mount
//! and on a unionfs mount over the same lower layers, and after every step the errno and the
//! whole merged tree (names, types, modes, owners, sizes, contents, link targets, user
//! xattrs) must be the same. Then kernel overlayfs mounts unionfs's upper and must show the
//! same tree, with no stray marker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::scenario::{apply, scenario};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

struct KernelMount(PathBuf);
impl Drop for KernelMount {
    fn drop(&mut self) {
        let _ignored = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

fn kernel_mount(lowers: &str, upper: &Path, work: &Path, mnt: &Path) -> KernelMount {
    std::fs::create_dir_all(upper).unwrap();
    std::fs::create_dir_all(work).unwrap();
    std::fs::create_dir_all(mnt).unwrap();
    // unionfs renames directories with redirects by default; the kernel does with this.
    let opts = format!("lowerdir={lowers},upperdir={},workdir={},redirect_dir=on", upper.display(), work.display());
    let st = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(mnt).status().unwrap();
    assert!(st.success(), "kernel overlay mount failed");
    KernelMount(mnt.to_path_buf())
}

#[test]
fn unionfs_matches_kernel_overlayfs_step_by_step() {
    need_fuse!();
    need_root!();
    let s = Stack::fixture("oracle");
    let d = s.dir.path();
    let k = kernel_mount(&s.lower_arg(), &d.join("k-upper"), &d.join("k-work"), &d.join("k-mnt"));
    let u = s.mount();
    assert_eq!(tree(&k.0), tree(&u.path), "initial merged trees differ");
    for (i, op) in scenario().iter().enumerate() {
        let ke = apply(&k.0, op);
        let ue = apply(&u.path, op);
        assert_eq!(ue, ke, "step {i} {op:?}: unionfs errno {ue}, kernel errno {ke}");
        let (kt, ut) = (tree(&k.0), tree(&u.path));
        if kt != ut {
            let diff: Vec<String> = kt
                .lines()
                .filter(|l| !ut.lines().any(|x| x == *l))
                .map(|l| format!("- {l}"))
                .chain(ut.lines().filter(|l| !kt.lines().any(|x| x == *l)).map(|l| format!("+ {l}")))
                .collect();
            panic!("step {i} {op:?}: merged trees differ (- kernel, + unionfs):\n{}", diff.join("\n"));
        }
    }
    let final_tree = tree(&u.path);
    drop(k);
    u.unmount();

    // Kernel overlayfs over unionfs's upper shows the same tree.
    let k2 = kernel_mount(&s.lower_arg(), &s.upper, &s.work, &d.join("k2-mnt"));
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
    let k = kernel_mount(&s.lower_arg(), &s.upper, &s.work, &d.join("k-mnt"));
    for op in scenario() {
        apply(&k.0, &op);
    }
    let kt = tree(&k.0);
    drop(k);
    let _u = s.mount();
    assert_eq!(tree(&s.mnt), kt);
}

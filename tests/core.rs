//! The union's core without FUSE (tests/common/core.rs): the differential scenario driven by
//! direct calls into the `UnionFs` a mount would serve, step by step against kernel overlayfs
//! (the same errno, the same merged tree), then kernel overlayfs over the core's upper. No
//! `/dev/fuse` is opened; root is needed only for the kernel's side.

use crate::common::core::Core;
use crate::common::oracle::{kernel_mount, tree_diff};
use crate::common::scenario::{apply, scenario};
use crate::common::*;

/// The option pairs (the core's, the kernel's) the scenario runs with: unionfs renames
/// directories with redirects by default, the kernel does with `redirect_dir=on`.
const PAIRS: &[(&str, &str)] = &[
    ("", "redirect_dir=on"),
    ("redirect_dir=off", "redirect_dir=off"),
    ("metacopy=on", "redirect_dir=on,metacopy=on"),
    ("index=on", "redirect_dir=on,index=on"),
];

#[test]
fn the_scenario_through_the_core_matches_kernel_overlayfs() {
    need_root!();
    for (core_opts, kernel_opts) in PAIRS {
        scenario_matches(core_opts, kernel_opts);
    }
}

/// The scenario through a core with `core_opts` and on kernel overlayfs with `kernel_opts`:
/// the same errno and merged tree after every step, and the kernel reads the core's upper the
/// same way.
fn scenario_matches(core_opts: &str, kernel_opts: &str) {
    let s = Stack::fixture("oracle");
    let d = s.dir.path();
    let k = kernel_mount(&s.lower_arg(), &d.join("k-upper"), &d.join("k-work"), &d.join("k-mnt"), kernel_opts);
    std::fs::create_dir_all(&s.mnt).unwrap();
    let core = Core::new(&s.lower_arg(), &s.upper, &s.work, &s.mnt, core_opts);
    let pair = format!("-o {core_opts:?} against kernel -o {kernel_opts}");
    assert_eq!(core.tree(), tree(&k.0), "{pair}: initial merged trees differ");
    for (i, op) in scenario().iter().enumerate() {
        let ke = apply(&k.0, op);
        let ue = core.apply(op);
        assert_eq!(ue, ke, "{pair}: step {i} {op:?}: the core's errno {ue}, kernel errno {ke}");
        let (kt, ut) = (tree(&k.0), core.tree());
        if kt != ut {
            panic!("{pair}: step {i} {op:?}: merged trees differ (- kernel, + core):\n{}", tree_diff(&kt, &ut));
        }
    }
    let final_tree = core.tree();
    drop(core);
    drop(k);
    // Kernel overlayfs over the core's upper shows the same tree.
    let k2 = kernel_mount(&s.lower_arg(), &s.upper, &s.work, &d.join("k2-mnt"), kernel_opts);
    let kt = tree(&k2.0);
    assert!(
        kt == final_tree,
        "{pair}: kernel overlayfs over the core's upper (- kernel, + core):\n{}",
        tree_diff(&kt, &final_tree)
    );
}

/// Which opens a passthrough mount serves from its page cache instead: a small lower file
/// closed within `page_cache_idle`, not a larger one, not an upper file, not with `=0`.
#[test]
fn a_small_lower_file_closed_lately_is_better_served_from_the_page_cache() {
    let s = Stack::empty(1);
    std::fs::write(s.lower(0).join("small"), vec![7u8; 256 * 1024]).unwrap();
    std::fs::write(s.lower(0).join("large"), vec![7u8; 256 * 1024 + 1]).unwrap();
    std::fs::write(s.lower(0).join("written"), b"x").unwrap();
    std::fs::create_dir_all(&s.mnt).unwrap();
    let chosen = |opts: &str| {
        let core = Core::new(&s.lower_arg(), &s.upper, &s.work, &s.mnt, opts);
        // As a mount does once the kernel accepted passthrough.
        core.fs.track_reopens();
        let mut out = Vec::new();
        for (name, flags) in [("small", libc::O_RDONLY), ("large", libc::O_RDONLY), ("written", libc::O_RDWR)] {
            let ino = core.fs.lookup(1, &std::ffi::CString::new(name).unwrap()).unwrap().ino;
            let picks: Vec<bool> = (0..2)
                .map(|_| {
                    let o = core.fs.open(ino, flags, None).unwrap();
                    let cached = core.fs.reopened_soon(o.fh);
                    core.fs.release(o.fh);
                    cached
                })
                .collect();
            out.push((name, picks));
        }
        out
    };
    let want = |small: bool| {
        vec![("small", vec![false, small]), ("large", vec![false, false]), ("written", vec![false, false])]
    };
    assert_eq!(chosen("page_cache_idle=3600"), want(true));
    assert_eq!(chosen("page_cache_idle=0"), want(false));
}

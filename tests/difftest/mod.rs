//! Our own judge against kernel overlayfs: seeded random operation sequences (paths and
//! descriptors: copy-up under open files, unlinked-but-open objects, `O_TMPFILE`, mmap
//! writes, fallocate modes, hard links, setgid directories, renames of every kind) over
//! random one- to three-layer stacks (whiteouts and opaque directories in the upper layers,
//! lower hard links, set-id files, xattrs), run on kernel overlayfs and on unionfs side by
//! side, comparing each step's answer and then the whole merged tree (see `snap.rs`). At
//! the end of each sequence each side mounts the other's upper, then each upper becomes the
//! top lower of a new mount, and the trees are compared again. A failing sequence is shrunk
//! to a short one that still fails and printed as a reproduction.
//!
//! One test per option pair. `UNIONFS_DIFF_SEEDS` (default 40: the budget the test command
//! runs), `UNIONFS_DIFF_OPS` (default 250) and `UNIONFS_DIFF_FIRST_SEED` (default 1) set it; `scripts/difftest.sh`
//! runs as many as asked.

mod ops;
mod seq;
mod snap;

use crate::common::sides::Sides;
use ops::{Fds, Op};
use seq::{Entry, Layer, Rng};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An option pair: kernel overlayfs's `-o`, unionfs's arguments.
struct Variant {
    name: &'static str,
    kernel: &'static str,
    union: &'static [&'static str],
    /// unionfs passes files through (a descriptor opened read-only on a lower file keeps
    /// reading it after a copy-up: see the README's semantics section).
    passthrough: bool,
    /// `metacopy=on` (see [`snap::Quirks`]).
    metacopy: bool,
    /// `index=on` (see [`link_up_every_name`]).
    index: bool,
    /// Rootless: both sides run as a second user in a user namespace that maps it to root
    /// (and its subordinate ids to 1…), as rootless engines run them; the layers' markers
    /// are `user.overlay.*` (see [`random_sequences_match_kernel_overlayfs_rootless`]).
    rootless: bool,
}

const DEFAULT: Variant = Variant {
    name: "default",
    kernel: "redirect_dir=on",
    union: &[],
    passthrough: true,
    metacopy: false,
    index: false,
    rootless: false,
};
const REDIRECT_OFF: Variant = Variant {
    name: "redirect-off",
    kernel: "",
    union: &["-o", "redirect_dir=off"],
    passthrough: true,
    metacopy: false,
    index: false,
    rootless: false,
};
const INDEX: Variant = Variant {
    name: "index",
    kernel: "redirect_dir=on,index=on",
    union: &["-o", "index=on"],
    passthrough: true,
    metacopy: false,
    index: true,
    rootless: false,
};
const METACOPY: Variant = Variant {
    name: "metacopy",
    kernel: "redirect_dir=on,metacopy=on",
    union: &["-o", "metacopy=on"],
    passthrough: true,
    metacopy: true,
    index: false,
    rootless: false,
};
/// Kernel overlayfs in a user namespace takes `userxattr`, which makes its `redirect_dir`
/// `nofollow` (renaming a merged directory is `EXDEV`) and refuses `metacopy` and `index`;
/// unionfs there uses `user.overlay.*` by itself and is told `redirect_dir=nofollow`.
const ROOTLESS: Variant = Variant {
    name: "rootless",
    kernel: "userxattr",
    union: &["-o", "redirect_dir=nofollow"],
    // FUSE passthrough needs CAP_SYS_ADMIN in the initial namespace.
    passthrough: false,
    metacopy: false,
    index: false,
    rootless: true,
};
const NOPASSTHROUGH: Variant = Variant {
    name: "nopassthrough",
    kernel: "redirect_dir=on",
    union: &["-o", "nopassthrough"],
    passthrough: false,
    metacopy: false,
    index: false,
    rootless: false,
};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Builds layer `idx` of a stack in `dir`, its markers in the namespace `ns`
/// (`trusted.overlay.` or `user.overlay.`).
fn build(dir: &Path, layer: &Layer, idx: usize, ns: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let c = |p: &str| CString::new(dir.join(p).as_os_str().as_bytes()).unwrap();
    let owner = |p: &str, (u, g): (u32, u32)| {
        rustix::fs::chownat(
            rustix::fs::CWD,
            c(p).as_c_str(),
            Some(rustix::fs::Uid::from_raw(u)),
            Some(rustix::fs::Gid::from_raw(g)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap()
    };
    let mode = |p: &str, m: u32| rustix::fs::chmod(c(p).as_c_str(), rustix::fs::Mode::from_raw_mode(m)).unwrap();
    for (p, e, o) in &layer.entries {
        match e {
            Entry::File { data, mode: m, xattr } => {
                std::fs::write(dir.join(p), data.bytes()).unwrap();
                owner(p, *o);
                mode(p, *m);
                if *xattr {
                    rustix::fs::setxattr(c(p).as_c_str(), "user.l", p.as_bytes(), rustix::fs::XattrFlags::empty())
                        .unwrap();
                }
            }
            Entry::Dir { mode: m, opaque } => {
                std::fs::create_dir(dir.join(p)).unwrap();
                owner(p, *o);
                mode(p, *m);
                if *opaque {
                    rustix::fs::setxattr(c(p).as_c_str(), format!("{ns}opaque"), b"y", rustix::fs::XattrFlags::empty())
                        .unwrap();
                }
            }
            Entry::Symlink(t) => {
                std::os::unix::fs::symlink(t, dir.join(p)).unwrap();
                owner(p, *o);
            }
            Entry::Whiteout => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    c(p).as_c_str(),
                    rustix::fs::FileType::CharacterDevice,
                    0.into(),
                    0,
                )
                .unwrap();
            }
            Entry::XattrWhiteout => {
                std::fs::write(dir.join(p), b"").unwrap();
                let flags = rustix::fs::XattrFlags::empty();
                rustix::fs::setxattr(c(p).as_c_str(), format!("{ns}whiteout"), b"y", flags).unwrap();
                let parent = Path::new(p).parent().unwrap().to_str().unwrap();
                rustix::fs::setxattr(c(parent).as_c_str(), format!("{ns}opaque"), b"x", flags).unwrap();
            }
            Entry::HardLink(src) => std::fs::hard_link(dir.join(src), dir.join(p)).unwrap(),
            Entry::Fifo => {
                rustix::fs::mknodat(rustix::fs::CWD, c(p).as_c_str(), rustix::fs::FileType::Fifo, 0o644.into(), 0)
                    .unwrap();
                owner(p, *o);
            }
        }
    }
    // Times in the past, children before their directories.
    let mut all: Vec<&String> = layer.entries.iter().map(|(p, ..)| p).collect();
    all.push(Box::leak(Box::new(String::from("."))));
    for (i, p) in all.iter().rev().enumerate() {
        let t = 946_684_800 - 86_400 * idx as i64 - i as i64 * 60;
        let at = rustix::fs::Timespec { tv_sec: t, tv_nsec: 0 };
        let ts = rustix::fs::Timestamps { last_access: at, last_modification: at };
        rustix::fs::utimensat(rustix::fs::CWD, c(p).as_c_str(), &ts, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }
}

/// Both mounts over their own copies of one stack (`UNIONFS_DIFF_KEEP`: the directory is
/// left for a look, its path printed).
fn pair(layers: &[Layer], v: &Variant) -> Sides {
    let mut s = Sides::new("unionfs-difftest-", layers.len());
    s.keep = std::env::var_os("UNIONFS_DIFF_KEEP").is_some();
    for side in ["k", "u"] {
        for (i, l) in layers.iter().enumerate() {
            build(&s.p(&format!("{side}-l{i}")), l, i, if v.rootless { "user.overlay." } else { "trusted.overlay." });
        }
    }
    s.mount(v.kernel, v.union);
    s
}

/// What a run let through or did besides its steps.
#[derive(Default)]
struct Tally {
    /// Reads through a descriptor opened read-only before its file was copied up that saw
    /// the data of the moment it was opened (passthrough, see [`Variant::passthrough`]).
    stale_reads: usize,
    /// Changes through a descriptor of a file with several names preceded by link-ups of
    /// every name (see [`link_up_every_name`]).
    linked_first: usize,
    /// Renames between two names of one file, run on unionfs only (see [`posix_rename`]).
    posix_renames: usize,
    /// Sequences ended early where kernel overlayfs split a file into two inodes (see
    /// [`snap::split`]), and the steps they did not run.
    kernel_splits: usize,
    split_steps: usize,
    /// Steps whose answers and trees were compared.
    steps: usize,
}

/// A rename between two names of one file (one object), plain or `RENAME_EXCHANGE`: POSIX
/// says it does nothing and succeeds (Linux's VFS does so for an exchange too), and unionfs
/// does so; kernel overlayfs without `index=on` keeps the names of a lower hard link as
/// distinct inodes and moves the name, and in a user namespace answers `ESTALE` to an
/// exchange of two names of a copied-up file (README, semantics). Run on unionfs only, which
/// must answer `ok` and leave the tree exactly as it was.
fn posix_rename(op: &Op, ks: &snap::Snapshot) -> bool {
    match op {
        Op::Rename(a, b, f) if *f != 4 && a != b => ks.objects.get(a).is_some_and(|i| ks.objects.get(b) == Some(i)),
        _ => false,
    }
}

/// With `index=on`, before a change of status through a descriptor (`fchmod`, `fchown`,
/// `futimens`, `linkat` of it) of a file with several names: links every name of it up on
/// both sides (an open for writing of each, which kernel overlayfs and unionfs link up
/// alike). Kernel overlayfs links up the name the descriptor was opened by; FUSE names only
/// the inode, so unionfs links up the name looked up last, which may be another (README,
/// semantics). With every name linked, the step compares everything else. Only where there
/// is a choice: the file has a name other than the one the descriptor was opened by
/// (`opened`). Returns whether it did.
fn link_up_every_name(
    kr: &Path,
    ur: &Path,
    kfds: &Fds,
    op: &Op,
    ks: &snap::Snapshot,
    opened: &[Option<String>],
) -> bool {
    let slot = match op {
        Op::Fchmod(s, _) | Op::Fchown(s, _) | Op::Futimens(s, _) | Op::Linkat(s, _) => *s,
        _ => return false,
    };
    let Some(fd) = &kfds[slot] else { return false };
    let Ok(st) = rustix::fs::fstat(fd) else { return false };
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return false;
    }
    let names: Vec<&String> = ks.inos.iter().filter(|(_, ino)| **ino == st.st_ino).map(|(n, _)| n).collect();
    if !names.iter().any(|n| Some(*n) != opened[slot].as_ref()) {
        return false;
    }
    for n in &names {
        for root in [kr, ur] {
            let _ = std::fs::OpenOptions::new().write(true).open(root.join(n));
        }
    }
    true
}

/// Runs `ops` over a fresh pair; the first difference (see [`Tally`] for what it counts).
fn run(layers: &[Layer], v: &Variant, ops: &[Op], tally: &mut Tally) -> Result<(), String> {
    let q = snap::Quirks { mtime_quirk: v.metacopy, both_ways: false };
    let mut pair = pair(layers, v);
    let (kr, ur) = pair.roots();
    // The kernel's live mount in a user namespace (see [`snap::take_by_upper`]).
    let k_upper = pair.p("k-upper");
    let k_upper = v.rootless.then_some(k_upper.as_path());
    let first = (snap::take_by_upper(&kr, None, k_upper), snap::take(&ur, None));
    if let Some(d) = snap::diff(&first.0, &first.1, &q) {
        return Err(format!("before any step, the trees differ:\n{d}"));
    }
    let (mut kfds, mut ufds): (Fds, Fds) = ((0..3).map(|_| None).collect(), (0..3).map(|_| None).collect());
    // What a read-only descriptor read when it was opened (unionfs's side).
    let mut at_open: Vec<Option<String>> = vec![None; 3];
    // The name each descriptor was opened by.
    let mut opened: Vec<Option<String>> = vec![None; 3];
    let (mut ks, mut us) = first;
    for (i, op) in ops.iter().enumerate() {
        if posix_rename(op, &ks) {
            let ua = ops::apply(&ur, &mut ufds, op);
            let u2 = snap::take(&ur, Some(&us));
            if ua != "ok" {
                return Err(format!("step {i} {op:?}: a rename between two names of one file answered `{ua}`"));
            }
            if let Some(d) = snap::diff_exact(&us, &u2) {
                return Err(format!("step {i} {op:?}: a rename between two names of one file changed the tree:\n{d}"));
            }
            tally.posix_renames += 1;
            continue;
        }
        if v.index && link_up_every_name(&kr, &ur, &kfds, op, &ks, &opened) {
            tally.linked_first += 1;
        }
        let (ka, ua) = (ops::apply(&kr, &mut kfds, op), ops::apply(&ur, &mut ufds, op));
        match op {
            Op::Open(s, path, k) => {
                let ro = *k == ops::OpenKind::ReadOnly && ua == "ok";
                at_open[*s] = ro.then(|| ops::apply(&ur, &mut ufds, &Op::Read(*s)));
                opened[*s] = (ka == "ok").then(|| path.clone());
            }
            Op::Close(s) => (at_open[*s], opened[*s]) = (None, None),
            _ => {}
        }
        if ka != ua && !(v.metacopy && snap::now_for_then_stat(&ka, &ua)) {
            let stale = matches!(op, Op::Read(s) if v.passthrough && at_open[*s].as_deref() == Some(ua.as_str()));
            if !stale {
                return Err(format!("step {i} {op:?}: kernel answered `{ka}`, unionfs `{ua}`"));
            }
            tally.stale_reads += 1;
        }
        let (k2, u2) = (snap::take_by_upper(&kr, Some(&ks), k_upper), snap::take(&ur, Some(&us)));
        if let Some(d) = snap::diff(&k2, &u2, &q) {
            return Err(format!("after step {i} {op:?}, the trees differ (- kernel, + unionfs):\n{d}"));
        }
        (ks, us) = (k2, u2);
        tally.steps += 1;
        if v.rootless && snap::split(&ks) {
            // Kernel overlayfs now keeps one file as two inodes, each with its own cached
            // attributes: what it answers next through either name is its own accident
            // (README, semantics). The tree so far matched; unionfs's one inode for the two
            // names is checked by kernel_equal's rootless test.
            tally.kernel_splits += 1;
            tally.split_steps += ops.len() - i - 1;
            break;
        }
    }
    drop((kfds, ufds));
    let last = (snap::take_by_upper(&kr, None, k_upper), snap::take(&ur, None));
    interop(&mut pair, v, &q, last)?;
    pair.unmount();
    Ok(())
}

/// The end of a sequence: each side mounts the other's upper, then each upper becomes the
/// top lower of a new mount; `last` is what (kernel, unionfs) showed before.
fn interop(
    pair: &mut Sides,
    v: &Variant,
    q: &snap::Quirks,
    last: (snap::Snapshot, snap::Snapshot),
) -> Result<(), String> {
    let (ks, us) = last;
    pair.cross(v.kernel, v.union);
    let (kr, ur) = pair.roots();
    // Kernel overlayfs over unionfs's upper shows exactly what unionfs showed; unionfs over
    // the kernel's upper what the kernel showed.
    let (kx, ux) = (snap::take(&kr, None), snap::take(&ur, None));
    if let Some(d) = snap::diff_exact(&us, &kx) {
        return Err(format!("kernel overlayfs over unionfs's upper shows another tree (- before, + now):\n{d}"));
    }
    if let Some(d) = snap::diff(&ks, &ux, q) {
        return Err(format!("unionfs over the kernel's upper shows another tree (- before, + now):\n{d}"));
    }
    // Each upper as the top lower layer of a new mount (after the swap above: kernel
    // overlayfs over the upper unionfs wrote, unionfs over the kernel's).
    pair.rotate(v.kernel, v.union);
    let (kr, ur) = pair.roots();
    let (kr2, ur2) = (snap::take(&kr, None), snap::take(&ur, None));
    let q = snap::Quirks { both_ways: true, ..*q };
    if let Some(d) = snap::diff(&kr2, &ur2, &q) {
        return Err(format!(
            "with the uppers as lower layers, the trees differ (- kernel overlayfs over unionfs's upper, + unionfs \
             over the kernel's):\n{d}"
        ));
    }
    Ok(())
}

/// The step a failure names (`step N …` / `after step N …`), if any.
fn failed_step(msg: &str) -> Option<usize> {
    let rest = msg.strip_prefix("after step ").or_else(|| msg.strip_prefix("step "))?;
    rest.split(' ').next()?.parse().ok()
}

/// Shrinks a failing sequence: cut after the failing step, then drop runs of steps while it
/// still fails (at most `budget` runs).
fn shrink(layers: &[Layer], v: &Variant, mut ops: Vec<Op>, mut msg: String, budget: usize) -> (Vec<Op>, String) {
    if let Some(s) = failed_step(&msg) {
        ops.truncate(s + 1);
    }
    let mut tries = 0;
    let mut chunk = ops.len().div_ceil(2);
    while chunk >= 1 && tries < budget {
        let mut i = 0;
        let mut cut = false;
        while i < ops.len() && tries < budget {
            let mut cand = ops.clone();
            cand.drain(i..(i + chunk).min(ops.len()));
            tries += 1;
            match run(layers, v, &cand, &mut Tally::default()) {
                Err(m) => {
                    if let Some(s) = failed_step(&m) {
                        cand.truncate(s + 1);
                    }
                    (ops, msg, cut) = (cand, m, true);
                }
                Ok(()) => i += chunk,
            }
        }
        if !cut {
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2).max(1).min(chunk - 1);
        }
    }
    (ops, msg)
}

fn variant(v: &Variant) {
    let seeds = env("UNIONFS_DIFF_SEEDS", 40);
    let n = env("UNIONFS_DIFF_OPS", 250) as usize;
    let first = env("UNIONFS_DIFF_FIRST_SEED", 1);
    let mut failures = Vec::new();
    let mut tally = Tally::default();
    for seed in first..first + seeds {
        let mut r = Rng::new(seed);
        let layers = seq::layers(&mut r);
        let ops = seq::ops(&mut r, n);
        if let Err(msg) = run(&layers, v, &ops, &mut tally) {
            let (small, msg) = shrink(&layers, v, ops, msg, env("UNIONFS_DIFF_SHRINK", 150) as usize);
            let steps: Vec<String> = small.iter().enumerate().map(|(i, o)| format!("  {i}: {o:?}")).collect();
            failures.push(format!(
                "variant {} seed {seed}: {msg}\nlayers (topmost first): {layers:?}\nshortest failing sequence ({} steps):\n{}",
                v.name,
                small.len(),
                steps.join("\n")
            ));
            if failures.len() >= 3 {
                break;
            }
        }
    }
    println!(
        "difftest {}: {seeds} seeds x {n} ops, {} failed, {} steps compared; {} reads through descriptors opened \
         before a copy-up saw the data of their open (passthrough); {} changes through descriptors of files with \
         several names came after link-ups of every name (index); {} renames between two names of one file did \
         nothing (POSIX); {} sequences ended where kernel overlayfs split a file into two inodes, {} steps not run \
         (rootless)",
        v.name,
        failures.len(),
        tally.steps,
        tally.stale_reads,
        tally.linked_first,
        tally.posix_renames,
        tally.kernel_splits,
        tally.split_steps
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn random_sequences_match_kernel_overlayfs_default() {
    need_fuse!();
    need_root!();
    variant(&DEFAULT);
}

#[test]
fn random_sequences_match_kernel_overlayfs_redirect_off() {
    need_fuse!();
    need_root!();
    variant(&REDIRECT_OFF);
}

#[test]
fn random_sequences_match_kernel_overlayfs_index() {
    need_fuse!();
    need_root!();
    variant(&INDEX);
}

#[test]
fn random_sequences_match_kernel_overlayfs_metacopy() {
    need_fuse!();
    need_root!();
    variant(&METACOPY);
}

#[test]
fn random_sequences_match_kernel_overlayfs_nopassthrough() {
    need_fuse!();
    need_root!();
    variant(&NOPASSTHROUGH);
}

/// Set in the inner run of [`random_sequences_match_kernel_overlayfs_rootless`].
const IN_USERNS: &str = "UNIONFS_DIFF_IN_USERNS";

/// Rootless: as root, re-runs itself as the test user in a user namespace (its own uid
/// mapped to root, its subordinate ids to 1…, a mount namespace of its own), where kernel
/// overlayfs mounts with `userxattr` and unionfs mounts `/dev/fuse` itself, both writing
/// `user.overlay.*`, with the owners the layers give (root and subordinate ids).
#[test]
fn random_sequences_match_kernel_overlayfs_rootless() {
    need_fuse!();
    need_root!();
    if crate::common::in_userns(
        test_name!("random_sequences_match_kernel_overlayfs_rootless"),
        IN_USERNS,
        "difftest rootless:",
    ) {
        variant(&ROOTLESS);
    }
}

//! What a seed makes: lower layers (built twice, identically, one copy per side) and a
//! sequence of operations over a small namespace, so that names collide with what the
//! layers hold and with each other.

use crate::difftest::ops::{Op, OpenKind, XATTR_NAMES};

/// SplitMix64: a small, seedable generator (the sequence must be the same on every machine).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What lower files hold, per layer (so that layers differ).
const LOWER_WORDS: [[&str; 2]; 3] = [["top\n", "T"], ["mid\n", "M"], ["low\n", "L"]];

/// The names every path is made of.
const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// A path of one to three components from [`NAMES`] (short ones more often).
pub fn path(r: &mut Rng) -> String {
    let depth = match r.below(100) {
        0..50 => 1,
        50..85 => 2,
        _ => 3,
    };
    (0..depth).map(|_| *r.pick(&NAMES)).collect::<Vec<_>>().join("/")
}

/// Data written: `word` repeated `n` times (printed that way in reproductions).
#[derive(Clone, Copy)]
pub struct Data {
    pub word: &'static str,
    pub n: usize,
}

impl Data {
    pub fn bytes(&self) -> Vec<u8> {
        self.word.repeat(self.n).into_bytes()
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}x{}", self.word, self.n)
    }
}

/// One object of a lower layer.
#[derive(Debug, Clone)]
pub enum Entry {
    File {
        data: Data,
        mode: u32,
        xattr: bool,
    },
    Dir {
        mode: u32,
        opaque: bool,
    },
    Symlink(String),
    Whiteout,
    /// An xattr whiteout (kernel ≥ 6.7): an empty file with `overlay.whiteout`, its
    /// directory marked `overlay.opaque=x`.
    XattrWhiteout,
    HardLink(String),
    Fifo,
}

/// A lower layer: entries in creation order (parents first), with owners.
#[derive(Debug, Clone)]
pub struct Layer {
    pub entries: Vec<(String, Entry, (u32, u32))>,
}

/// The layers of seed `r` (topmost first): one to three.
pub fn layers(r: &mut Rng) -> Vec<Layer> {
    let n = 1 + r.below(3) as usize;
    let mut out = Vec::new();
    // Built bottom-up: a whiteout is only made where a layer below has the name (what every
    // overlay writer does; kernel overlayfs would list any other in a directory that is not
    // merged, see the README's semantics section).
    let mut below: std::collections::HashSet<String> = std::collections::HashSet::new();
    for i in (0..n).rev() {
        let bottom = i == n - 1;
        let mut entries: Vec<(String, Entry, (u32, u32))> = Vec::new();
        let mut dirs = vec![String::new()];
        let mut files: Vec<String> = Vec::new();
        let mut opaque: std::collections::HashSet<String> = std::collections::HashSet::new();
        for depth in 0..2 {
            for parent in dirs.clone().iter().filter(|d| d.matches('/').count() + usize::from(!d.is_empty()) == depth) {
                for name in NAMES {
                    let p = if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") };
                    let owner = *r.pick(&[(0, 0), (1000, 1000), (0, 1001)]);
                    let e = match r.below(100) {
                        0..45 => continue,
                        45..65 => Entry::File {
                            data: Data { word: LOWER_WORDS[i][r.below(2) as usize], n: 1 + r.below(300) as usize },
                            mode: *r.pick(&[0o644, 0o600, 0o755, 0o4755, 0o2755, 0o640]),
                            xattr: r.chance(20),
                        },
                        65..82 => Entry::Dir {
                            mode: *r.pick(&[0o755, 0o700, 0o2775, 0o1777]),
                            opaque: !bottom && r.chance(15),
                        },
                        82..88 => Entry::Symlink((*r.pick(&NAMES)).to_string()),
                        88..92 if !bottom && below.contains(&p) && !opaque.contains(parent) => Entry::Whiteout,
                        // In a directory of the layer (not at its root).
                        92..94 if !bottom && below.contains(&p) && !opaque.contains(parent) && !parent.is_empty() => {
                            Entry::XattrWhiteout
                        }
                        94..98 if !files.is_empty() => Entry::HardLink(r.pick(&files).clone()),
                        98..100 => Entry::Fifo,
                        _ => continue,
                    };
                    match &e {
                        Entry::Dir { opaque: o, .. } => {
                            if *o {
                                opaque.insert(p.clone());
                            }
                            dirs.push(p.clone())
                        }
                        Entry::File { .. } => files.push(p.clone()),
                        _ => {}
                    }
                    entries.push((p, e, owner));
                }
            }
        }
        below.extend(entries.iter().map(|(p, ..)| p.clone()));
        out.push(Layer { entries });
    }
    out.reverse();
    out
}

/// `n` operations.
pub fn ops(r: &mut Rng, n: usize) -> Vec<Op> {
    (0..n).map(|_| op(r)).collect()
}

fn data(r: &mut Rng) -> Data {
    Data { word: ["x", "hello", "0123456789", "\n"][r.below(4) as usize], n: 1 + r.below(600) as usize }
}

fn time(r: &mut Rng) -> i64 {
    // Fixed instants well in the past, so that both sides set the same ones.
    946_684_800 + r.below(1000) as i64 * 86_400
}

fn op(r: &mut Rng) -> Op {
    let slot = r.below(3) as usize;
    match r.below(100) {
        0..6 => Op::Write(path(r), data(r)),
        6..10 => Op::Append(path(r), data(r)),
        10..12 => Op::CreateExcl(path(r)),
        12..14 => Op::OpenTrunc(path(r)),
        14..16 => Op::Truncate(path(r), r.below(5000)),
        16..22 => Op::Mkdir(path(r), *r.pick(&[0o755, 0o700, 0o2775])),
        22..25 => Op::Rmdir(path(r)),
        25..30 => Op::Unlink(path(r)),
        30..37 => Op::Rename(path(r), path(r), r.below(6) as u32),
        37..39 => Op::Symlink((*r.pick(&NAMES)).to_string(), path(r)),
        39..43 => Op::Link(path(r), path(r)),
        43..46 => Op::Chmod(path(r), *r.pick(&[0o600, 0o755, 0o4755, 0o2755, 0o2775, 0o1777])),
        46..48 => Op::Chown(path(r), *r.pick(&[(1000, 1000), (0, 1001), (u32::MAX, u32::MAX), (u32::MAX, 1000)])),
        48..50 => Op::Utimes(path(r), Some(time(r))),
        50..51 => Op::Utimes(path(r), None),
        51..53 => Op::SetXattr(path(r), XATTR_NAMES[r.below(3) as usize], r.pick(&["0", "1", "y"]).to_string()),
        53..54 => Op::RemoveXattr(path(r), XATTR_NAMES[r.below(3) as usize]),
        54..55 => Op::Mkfifo(path(r)),
        55..60 => Op::Open(slot, path(r), *r.pick(&OpenKind::ALL)),
        60..65 => Op::Read(slot),
        65..69 => Op::PWrite(slot, r.below(8000), data(r)),
        69..71 => Op::WriteAt(slot, data(r)),
        71..75 => Op::Fstat(slot),
        75..77 => Op::Fchmod(slot, *r.pick(&[0o600, 0o755, 0o4755])),
        77..78 => Op::Fchown(slot, *r.pick(&[(1000, 1000), (u32::MAX, u32::MAX)])),
        78..79 => Op::Futimens(slot, time(r)),
        79..81 => Op::Fsetxattr(slot, r.below(3).to_string()),
        81..82 => Op::Fgetxattr(slot),
        82..84 => Op::Ftruncate(slot, r.below(5000)),
        84..86 => Op::Fallocate(slot, *r.pick(&[0, 1, 3, 0x10]), r.below(6000), 1 + r.below(6000)),
        86..88 => Op::MmapWrite(slot, r.below(4000), Data { n: 1 + r.below(40) as usize, ..data(r) }),
        88..90 => Op::Readdir(slot),
        90..92 => Op::Linkat(slot, path(r)),
        92..94 => Op::Fsync(slot),
        94..97 => Op::Close(slot),
        _ => Op::Stat(path(r)),
    }
}

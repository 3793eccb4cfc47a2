//! Which entries of a `READDIRPLUS` reply carry their attributes.
//!
//! An entry with attributes costs the daemon a lookup (a `statx` in each layer that may hold
//! the name, a node) and the kernel an inode and a dentry; an entry without them (node id 0,
//! which the kernel takes as a plain entry) costs neither, and the kernel sends a `LOOKUP`
//! when a program asks for that name. A walk that needs only names and types (`find`, a
//! shell's glob, `rm -r`'s listing) uses none of the attributes; one that stats every entry
//! (`ls -l`, `du`, `tar`, reading every file) uses them all, and then a `LOOKUP` round trip
//! per entry costs more than its share of one `READDIRPLUS`. The kernel asks for
//! `READDIRPLUS` at the start of every directory either way (`FUSE_READDIRPLUS_AUTO`), so the
//! daemon decides.
//!
//! It cannot see which walk it serves, but it sees the `LOOKUP`s that follow a listing sent
//! *lean* (attributes only for subdirectories, which a walk enters anyway, and for what the
//! upper layer shows, see [`keeps_attrs`]). So, per mount:
//! * listings go out lean until a `LOOKUP` finds a non-directory in a directory whose last
//!   listing went out lean — *demand*;
//! * after demand, [`Lean::interval`] listings go out full, then one lean listing probes
//!   again; each demand doubles the interval (up to [`MAX_INTERVAL`]) — also demand that
//!   comes while listings go out full, from a reader behind the walk (`find | xargs cat`) —
//!   except demand after a long lean run ([`RESET_AFTER`] lean listings), which starts over
//!   at [`MIN_INTERVAL`].
//!
//! `ls -lR` so pays one directory's `LOOKUP`s per probe, fewer and fewer; `find` pays none.
//! Plain entries are always correct (the kernel looks them up when asked); only the cost
//! differs. `-o readdirplus=full` sends every entry with attributes.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::sys::stat::FileKind;
use crate::union::UnionFs;
use crate::union::node::flag;
use crate::union::readdir::DirEntry;

/// Full listings between two probes after the first demand.
pub const MIN_INTERVAL: u32 = 16;
/// The most full listings between two probes.
pub const MAX_INTERVAL: u32 = 4096;
/// Lean listings without demand after which demand is taken as a new walk (the interval
/// starts over).
pub const RESET_AFTER: u32 = 256;

/// The per-mount state of the choice.
#[derive(Debug)]
pub struct Lean {
    /// Off with `-o readdirplus=full`.
    enabled: bool,
    /// Listings go out lean now.
    lean: AtomicBool,
    /// Full listings before the next probe.
    full_left: AtomicU32,
    /// Full listings between probes now.
    interval: AtomicU32,
    /// Lean listings sent since the last demand.
    since_demand: AtomicU32,
}

impl Lean {
    /// The state of a fresh mount: lean (a walk that stats shows itself in one directory).
    pub fn new(enabled: bool) -> Lean {
        Lean {
            enabled,
            lean: AtomicBool::new(enabled),
            full_left: AtomicU32::new(0),
            // The first demand doubles it to MIN_INTERVAL.
            interval: AtomicU32::new(MIN_INTERVAL / 2),
            since_demand: AtomicU32::new(0),
        }
    }

    /// Whether the listing about to be sent goes out lean.
    pub fn next_listing(&self) -> bool {
        if !self.enabled {
            return false;
        }
        if self.lean.load(Ordering::Acquire) {
            self.since_demand.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if self.full_left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok() {
            return false;
        }
        // The interval is over: this listing probes.
        self.since_demand.store(1, Ordering::Relaxed);
        self.lean.store(true, Ordering::Release);
        true
    }

    /// A `LOOKUP` found a non-directory in a directory whose last listing went out lean.
    /// Demand while full comes from a reader behind the walk (`find | xargs cat`: the
    /// listings went out lean before the first file was opened); it lengthens the interval
    /// too.
    pub fn demand(&self) {
        let was_lean = self.lean.swap(false, Ordering::AcqRel);
        let interval = if was_lean && self.since_demand.swap(0, Ordering::Relaxed) >= RESET_AFTER {
            MIN_INTERVAL
        } else {
            (self.interval.load(Ordering::Relaxed) * 2).clamp(MIN_INTERVAL, MAX_INTERVAL)
        };
        self.interval.store(interval, Ordering::Relaxed);
        self.full_left.store(interval, Ordering::Release);
    }

    /// Whether listings go out lean now (without counting one).
    pub fn is_lean(&self) -> bool {
        self.enabled && self.lean.load(Ordering::Acquire)
    }

    /// Full listings between probes now.
    pub fn interval(&self) -> u32 {
        self.interval.load(Ordering::Relaxed)
    }
}

/// Whether a listing sent lean still gives entry `e` its attributes: a subdirectory (a walk
/// enters it, and would look it up anyway), and anything the upper layer shows: its inode
/// number may come from an origin the listing does not follow (a file copied up and
/// renamed), and only a lookup finds it, while a lower layer's entry has the number the
/// listing gives.
pub fn keeps_attrs(e: &DirEntry) -> bool {
    e.kind == FileKind::Directory || e.lower.is_none()
}

impl UnionFs {
    /// Whether the `READDIRPLUS` reply about to be built for a directory goes out lean.
    pub fn lean_listing(&self) -> bool {
        self.lean.next_listing()
    }

    /// A reply sent entries of directory `ino` without attributes: a `LOOKUP` of one of them
    /// is demand (set before the reply goes, so no lookup can overtake it).
    pub fn listed_lean(&self, ino: u64) {
        if let Ok(dir) = self.inodes.get(ino) {
            dir.set(flag::LEAN_LISTED);
        }
    }

    /// A `LOOKUP` in `parent` found a non-directory.
    pub(crate) fn looked_up_in(&self, parent: &crate::union::node::Node) {
        if parent.has(flag::LEAN_LISTED) && parent.unset(flag::LEAN_LISTED) {
            self.lean.demand();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Listings until the next lean one (the probe), counting it.
    fn until_lean(l: &Lean) -> u32 {
        (1..=MAX_INTERVAL + 2).find(|_| l.next_listing()).expect("never lean again")
    }

    #[test]
    fn a_fresh_mount_is_lean_until_demand_then_full_for_an_interval_that_doubles() {
        let l = Lean::new(true);
        assert!(l.next_listing() && l.next_listing());
        l.demand();
        assert_eq!(l.interval(), MIN_INTERVAL);
        assert_eq!(until_lean(&l), MIN_INTERVAL + 1);
        // The probe meets demand: twice as long before the next.
        l.demand();
        assert_eq!(until_lean(&l), 2 * MIN_INTERVAL + 1);
        for _ in 0..20 {
            l.demand();
            let _ = until_lean(&l);
        }
        assert_eq!(l.interval(), MAX_INTERVAL);
        l.demand();
        assert_eq!(until_lean(&l), MAX_INTERVAL + 1);
    }

    #[test]
    fn demand_while_full_lengthens_the_interval() {
        let l = Lean::new(true);
        assert!(l.next_listing());
        l.demand();
        assert!(!l.next_listing());
        // Lookups in directories listed lean before the first demand: a reader behind.
        l.demand();
        l.demand();
        assert_eq!(l.interval(), 4 * MIN_INTERVAL);
        assert_eq!(until_lean(&l), 4 * MIN_INTERVAL + 1);
    }

    #[test]
    fn demand_after_a_long_lean_run_starts_over() {
        let l = Lean::new(true);
        l.demand();
        let _ = until_lean(&l);
        l.demand();
        let _ = until_lean(&l);
        assert_eq!(l.interval(), 2 * MIN_INTERVAL);
        for _ in 0..RESET_AFTER {
            assert!(l.next_listing());
        }
        l.demand();
        assert_eq!(l.interval(), MIN_INTERVAL);
    }

    #[test]
    fn readdirplus_full_never_goes_lean() {
        let l = Lean::new(false);
        assert!((0..10_000).all(|_| !l.next_listing()));
    }
}

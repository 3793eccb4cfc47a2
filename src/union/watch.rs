//! Live layers (`--watch`): a change made directly in the upper or a lower directory while
//! mounted (an entry added, removed, renamed, written, or its metadata changed) reaches the
//! mount at once. Every real directory the daemon opens for a node gets an inotify watch
//! (see `UnionFs::dir_fd`); an event for a name in it drops the kernel's cached entry for
//! that name, the directory's cached attributes and listing, and the daemon's listing
//! snapshot, so the next access looks at the layers again. The daemon's own changes raise
//! events too; they cost an extra lookup, never a wrong answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;
use std::os::fd::BorrowedFd;

use crate::error::Res;
use crate::sys::notify::{Change, Inotify};
use crate::union::UnionFs;

/// The watches of one mount.
#[derive(Debug)]
pub struct Watch {
    inotify: Inotify,
    /// Watch descriptor → the node whose real directory it watches.
    nodes: DashMap<i32, u64>,
    /// Set once the kernel refused a watch (limit reached): said once in the log.
    full: AtomicBool,
}

impl Watch {
    /// A new, empty set of watches.
    pub fn new() -> Res<Watch> {
        Ok(Watch { inotify: Inotify::new()?, nodes: DashMap::new(), full: AtomicBool::new(false) })
    }

    /// Watches real directory `dir` on behalf of node `ino`.
    pub fn add(&self, dir: BorrowedFd<'_>, ino: u64) {
        match self.inotify.watch_dir(dir) {
            Ok(wd) => {
                self.nodes.insert(wd, ino);
            }
            Err(e) => {
                if !self.full.swap(true, Ordering::Relaxed) {
                    tracing::warn!("--watch: cannot watch more directories ({e}); changes in others go unseen");
                }
            }
        }
    }

    /// Serves events until the instance fails (for the mount's lifetime).
    pub fn run(&self, fs: &Arc<UnionFs>) {
        let r = self.inotify.read(|wd, change, name| match change {
            Change::Gone => {
                self.nodes.remove(&wd);
            }
            Change::Overflow => {
                tracing::warn!("--watch: events lost; the mount may show old entries until they are looked up again");
                let all: Vec<u64> = self.nodes.iter().map(|e| *e.value()).collect();
                for ino in all {
                    fs.external_change(ino, None);
                }
            }
            Change::Entry | Change::Dir => {
                if let Some(ino) = self.nodes.get(&wd).map(|e| *e.value()) {
                    fs.external_change(ino, name);
                }
            }
        });
        if let Err(e) = r {
            tracing::warn!("--watch stopped: {e}");
        }
    }
}

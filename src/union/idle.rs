//! Letting a mount's own copy of a lower file's pages go once nobody has the file open.
//!
//! Without passthrough (a normal user's mount, or `-o nopassthrough`), what a program reads
//! from a union's file lands twice in memory: in the page cache of the real file the daemon
//! reads, which every mount of the same layers shares, and in the union inode's page cache,
//! which is the mount's own. For a lower file the second copy is the same data in every
//! container of an image: 20 containers reading the same 200 MiB held 4.2 GiB of page cache
//! where kernel overlayfs holds one copy. Kernel overlayfs and passthrough read straight
//! from the real file's cache and have no second copy.
//!
//! So once a lower file has been closed for [`Options::page_cache_idle`] and not opened
//! since, the daemon asks the kernel to drop the mount's pages of it
//! (`FUSE_NOTIFY_INVAL_INODE`). The layer's cache still holds the data, so a later read costs
//! `READ` round trips but no disk. A file read again within the interval keeps its pages (a
//! tree read twice in a row sends no `READ` the second time); a file open or mapped anywhere
//! keeps them (a mapping holds its file open until it is unmapped: a running program's
//! executable and shared libraries stay). Only files whose data is all in a lower layer
//! (never changed through the mount, so none of their pages is dirty) and only handles
//! served from the page cache ([`UnionFs::page_cached`]) count; the pages are dropped from
//! this thread, which serves no request, before the file counts as dropped.
//!
//! With passthrough the kernel reads a file straight from the real file, which costs the
//! mount no memory but costs every open of it a `GETATTR` besides `OPEN` and `RELEASE` (the
//! kernel marks the access time stale at each passthrough read and asks again at the next
//! `stat`). A small lower file opened again within the interval of its last close is
//! therefore served from the union inode's page cache instead ([`UnionFs::reopened_soon`]),
//! which the daemon fills at the first such open ([`UnionFs::prefill_pages`]): later opens
//! need no `READ` and no `GETATTR` (a tree of small files read again: 2.84× kernel
//! overlayfs's time → 1.96×). Its pages then go as above. A file read once stays passthrough
//! and has no second copy.
//!
//! [`Options::page_cache_idle`]: crate::union::Options::page_cache_idle

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::stats::{self, Counter};
use crate::union::UnionFs;

/// Closed files waiting for their pages to go: by node, and in the order they are due.
#[derive(Debug, Default)]
pub(crate) struct Closed {
    due: HashMap<u64, Instant>,
    order: BTreeSet<(Instant, u64)>,
}

impl Closed {
    /// Node `ino` was closed: its pages go at `at`, or later if it is closed again first.
    pub(crate) fn closed(&mut self, ino: u64, at: Instant) {
        if let Some(old) = self.due.insert(ino, at) {
            self.order.remove(&(old, ino));
        }
        self.order.insert((at, ino));
    }

    /// Takes the nodes due by `now`, oldest first; and says when the next one is due.
    pub(crate) fn take_due(&mut self, now: Instant) -> (Vec<u64>, Option<Instant>) {
        let mut out = Vec::new();
        while let Some(&(at, ino)) = self.order.first() {
            if at > now {
                return (out, Some(at));
            }
            self.order.pop_first();
            self.due.remove(&ino);
            out.push(ino);
        }
        (out, None)
    }

    /// Files waiting.
    pub(crate) fn len(&self) -> usize {
        self.due.len()
    }

    /// Forgets the node due first.
    fn forget_oldest(&mut self) {
        if let Some((_, ino)) = self.order.pop_first() {
            self.due.remove(&ino);
        }
    }

    /// When node `ino` is due, if it is waiting.
    pub(crate) fn due(&self, ino: u64) -> Option<Instant> {
        self.due.get(&ino).copied()
    }
}

/// The largest lower file a passthrough mount serves from its page cache when it is opened
/// again soon ([`UnionFs::reopened_soon`]): for a larger file the `GETATTR` an open saves is
/// small beside the copy of its data into a second cache.
pub const REOPEN_CACHED_MAX: u64 = 256 * 1024;

/// Whether handle `h` is on a lower file small enough to be served from the page cache when
/// opened again soon ([`REOPEN_CACHED_MAX`]).
pub(crate) fn small_lower(h: &crate::union::tables::FileHandle) -> bool {
    !h.upper && h.size <= REOPEN_CACHED_MAX
}

/// Lower files closed lately, remembered at most this many (the oldest are forgotten first).
const RECENT_MAX: usize = 65_536;

#[derive(Debug, Default)]
struct Shared {
    closed: Mutex<Closed>,
    /// Small lower files closed within the interval, however they were served (kept only
    /// once [`UnionFs::track_reopens`] asked for it).
    recent: Mutex<Closed>,
    track_recent: std::sync::atomic::AtomicBool,
    wake: Condvar,
    stop: std::sync::atomic::AtomicBool,
}

/// The closed lower files of a mount and the thread that lets their pages go.
#[derive(Debug)]
pub(crate) struct IdlePages {
    after: Option<Duration>,
    shared: Arc<Shared>,
}

impl IdlePages {
    /// Pages go `after` a file's last close (`None`: kept until the kernel reclaims them).
    pub(crate) fn new(after: Option<Duration>) -> IdlePages {
        IdlePages { after, shared: Arc::default() }
    }

    /// Node `ino`'s last open handle served from the page cache was closed.
    pub(crate) fn closed(&self, ino: u64) {
        let Some(after) = self.after else { return };
        let mut c = self.shared.closed.lock();
        let first = c.len() == 0;
        c.closed(ino, Instant::now() + after);
        drop(c);
        if first {
            self.shared.wake.notify_one();
        }
    }

    /// A handle on small lower file `ino` was closed ([`REOPEN_CACHED_MAX`]).
    pub(crate) fn small_closed(&self, ino: u64) {
        let Some(after) = self.after else { return };
        if !self.shared.track_recent.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let mut r = self.shared.recent.lock();
        // Forget what is past its interval, then the oldest while too many are left.
        let _past = r.take_due(now);
        if r.len() >= RECENT_MAX {
            r.forget_oldest();
        }
        r.closed(ino, now + after);
    }

    /// Whether node `ino` was closed within the interval.
    fn closed_lately(&self, ino: u64) -> bool {
        self.shared.recent.lock().due(ino).is_some_and(|at| at > Instant::now())
    }
}

impl Drop for IdlePages {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_all();
    }
}

impl UnionFs {
    /// Handle `fh` is served from the union inode's page cache (not passthrough, not direct
    /// I/O): when it is the last to close a lower file, the file's pages go after the mount's
    /// interval ([`crate::union::idle`]).
    pub fn page_cached(&self, fh: u64) {
        if let Ok(h) = self.handles.get(fh) {
            h.page_cached.store(true, Ordering::Relaxed);
        }
    }

    /// Keeps track of small lower files closed lately, for [`UnionFs::reopened_soon`] (a
    /// passthrough mount asks; without passthrough every file is served from the page cache).
    pub fn track_reopens(&self) {
        self.idle.shared.track_recent.store(true, Ordering::Relaxed);
    }

    /// Whether handle `fh`, just opened, is better served from the union inode's page cache
    /// than by passthrough: a lower file of at most [`REOPEN_CACHED_MAX`] bytes closed within
    /// the mount's interval (see [`crate::union::idle`]).
    pub fn reopened_soon(&self, fh: u64) -> bool {
        let yes = self.handles.get(fh).is_ok_and(|h| small_lower(&h) && self.idle.closed_lately(h.node.ino));
        if yes {
            stats::add(Counter::ReopensCached, 1);
        }
        yes
    }

    /// Fills the union inode's page cache with the whole of handle `fh`'s file, a small lower
    /// file opened from the page cache because it was read lately ([`UnionFs::reopened_soon`]),
    /// unless its pages from a close within the interval are there still: then reading it
    /// sends no `READ`, and so leaves the access time valid (a `READ` marks it stale, and the
    /// next `stat` would ask for it again). Called before the open is answered, while no other
    /// open file of it can hold one of its pages.
    pub fn prefill_pages(&self, fh: u64) {
        let Ok(h) = self.handles.get(fh) else { return };
        if !small_lower(&h) || h.size == 0 {
            return;
        }
        if self.idle.shared.closed.lock().due(h.node.ino).is_some() {
            return;
        }
        let Some(inv) = self.invalidator.get() else { return };
        let Ok(data) = crate::sys::io::pread(&h.fd, 0, h.size as usize) else { return };
        if inv.store_pages_now(h.node.ino, &data) {
            stats::add(Counter::PagesPrefilled, 1);
        }
    }

    /// Starts the thread that lets idle lower files' pages go (none if the mount keeps them).
    pub fn start_idle_pages(self: &Arc<Self>) -> std::io::Result<()> {
        if self.idle.after.is_none() {
            return Ok(());
        }
        let (weak, shared) = (Arc::downgrade(self), self.idle.shared.clone());
        std::thread::Builder::new().name("idle-pages".into()).spawn(move || idle_loop(&weak, &shared))?;
        Ok(())
    }

    /// Asks the kernel to drop the pages of node `ino` if it is still a closed lower file.
    fn drop_pages(&self, ino: u64) {
        let Ok(node) = self.inodes.get(ino) else { return };
        if self.handles.is_open(ino) || node.has_upper() {
            return;
        }
        if let Some(i) = self.invalidator.get()
            && i.inval_pages_now(ino)
        {
            stats::add(Counter::IdlePagesDropped, 1);
        }
    }
}

/// Sleeps until the next closed file is due (or one is added), then drops what is due.
fn idle_loop(weak: &Weak<UnionFs>, shared: &Shared) {
    let mut c = shared.closed.lock();
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let (due, next) = c.take_due(Instant::now());
        if !due.is_empty() {
            drop(c);
            let Some(fs) = weak.upgrade() else { return };
            due.into_iter().for_each(|ino| fs.drop_pages(ino));
            drop(fs);
            c = shared.closed.lock();
            continue;
        }
        match next {
            Some(at) => {
                shared.wake.wait_until(&mut c, at);
            }
            None => shared.wake.wait(&mut c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_due_in_order_and_a_later_close_postpones_one() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = Closed::default();
        c.closed(1, t0 + s);
        c.closed(2, t0 + 2 * s);
        c.closed(3, t0 + 3 * s);
        // Node 1 opened and closed again: due later, once.
        c.closed(1, t0 + 4 * s);
        assert_eq!(c.len(), 3);
        assert_eq!(c.take_due(t0), (vec![], Some(t0 + 2 * s)));
        assert_eq!(c.take_due(t0 + 3 * s), (vec![2, 3], Some(t0 + 4 * s)));
        assert_eq!(c.take_due(t0 + 5 * s), (vec![1], None));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_file_is_remembered_until_due_and_the_oldest_goes_first() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = Closed::default();
        c.closed(7, t0 + 2 * s);
        c.closed(8, t0 + s);
        assert_eq!((c.due(7), c.due(8), c.due(9)), (Some(t0 + 2 * s), Some(t0 + s), None));
        c.forget_oldest();
        assert_eq!((c.due(7), c.due(8), c.len()), (Some(t0 + 2 * s), None, 1));
    }
}

//! FUSE passthrough state: which kernel inode is backed by which real file.
//!
//! The kernel allows one backing file per inode and no other kind of open beside a
//! passthrough one (it fails those with `EIO`): so every open of a regular file is
//! passthrough, sharing the inode's one `BackingId`. When the inode's backing is a different
//! real file (the lower file, still open, after a copy-up), the inode is retired and the open
//! answered `ESTALE`: the kernel then revalidates the name, gets a fresh inode for the upper
//! file and retries. Readers that opened the lower file keep reading it.

use std::sync::Arc;

/// FUSE passthrough state. The kernel allows one backing file per inode and no other kind of
/// open beside a passthrough one (it fails those with `EIO`): so the opens of one inode are
/// either all passthrough, sharing its one `BackingId`, or all through the daemon.
///
/// * When the inode's backing is a different real file (the lower file, still open, after a
///   copy-up), the inode is retired and the open answered `ESTALE`: the kernel then
///   revalidates the name, gets a fresh inode for the upper file and retries. Readers that
///   opened the lower file keep reading it.
/// * Set-user-id and set-group-id files are served through the daemon: a write by someone
///   else must clear those bits, and with passthrough the daemon would never see the write.
/// * So is a small lower file opened again soon after it was closed (the caller's `cached`,
///   see [`crate::union::idle`]): from the page cache, opening it again costs no `GETATTR`.
#[derive(Debug, Default)]
pub(super) struct Passthrough {
    /// Allowed by the mount's options.
    pub(super) wanted: bool,
    /// Negotiated with the kernel and not refused since.
    pub(super) on: std::sync::atomic::AtomicBool,
    /// Inode → how its open files are served.
    by_ino: dashmap::DashMap<u64, InoState>,
    /// Open file handle → what it holds.
    by_fh: dashmap::DashMap<u64, FhState>,
}

/// How the open files of one inode are served.
#[derive(Debug)]
enum InoState {
    /// Passthrough to this backing (while any open holds it), on real file (dev, ino).
    Backed(std::sync::Weak<fuser::BackingId>, (u64, u64)),
    /// Through the daemon, by this many open files.
    Daemon(usize),
}

/// What one open file holds.
#[derive(Debug)]
enum FhState {
    /// A reference to inode `.0`'s backing, dropped at release (the last one closes it).
    Backed(u64, #[allow(dead_code)] Arc<fuser::BackingId>),
    /// Served by the daemon; the inode number.
    Daemon(u64),
}

/// What an open's reply should be.
pub(super) enum OpenMode {
    /// Through the daemon and the page cache.
    Cached,
    /// Through the daemon and the page cache, chosen over passthrough for a small file
    /// read lately (the caller's `cached`): its pages may need filling.
    Reopened,
    /// Passthrough with this backing.
    Backed(Arc<fuser::BackingId>),
    /// Through the daemon without caching.
    Direct,
    /// The kernel inode is pinned to another real file (a passthrough backing on the lower
    /// file, opened before a copy-up): retire it and answer `ESTALE`, on which the kernel
    /// looks the name up again and retries the open on a fresh inode.
    Stale,
}

impl Passthrough {
    /// Passthrough state for a mount that allows it (`wanted`), before negotiation.
    pub(super) fn new(wanted: bool) -> Passthrough {
        Passthrough { wanted, ..Default::default() }
    }

    pub(super) fn is_on(&self) -> bool {
        self.on.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Chooses how to open handle `fh` of inode `ino` on real file `real` (`sxid`: the file
    /// is set-user-id or set-group-id; `cached`: whether the file, opened by nothing else, is
    /// better served from the page cache), registering a backing with `make` when the inode
    /// needs one.
    pub(super) fn mode(
        &self,
        ino: u64,
        fh: u64,
        real: (u64, u64),
        sxid: bool,
        cached: impl FnOnce() -> bool,
        make: impl FnOnce() -> std::io::Result<fuser::BackingId>,
    ) -> OpenMode {
        use dashmap::mapref::entry::Entry;
        if !self.is_on() {
            return OpenMode::Cached;
        }
        // Decided under the inode's entry lock, so two opens never choose differently.
        let mut entry = self.by_ino.entry(ino);
        let backing = match &mut entry {
            Entry::Occupied(e) => match e.get_mut() {
                InoState::Daemon(n) => {
                    *n += 1;
                    drop(entry);
                    self.by_fh.insert(fh, FhState::Daemon(ino));
                    return OpenMode::Cached;
                }
                InoState::Backed(w, r) => match w.upgrade() {
                    Some(b) if *r == real => Some(b),
                    Some(_) => return OpenMode::Stale,
                    None => None,
                },
            },
            Entry::Vacant(_) => None,
        };
        let backing = match backing {
            Some(b) => b,
            None if sxid || cached() => {
                entry.insert(InoState::Daemon(1));
                self.by_fh.insert(fh, FhState::Daemon(ino));
                return if sxid { OpenMode::Cached } else { OpenMode::Reopened };
            }
            None => match make() {
                Ok(b) => {
                    let b = Arc::new(b);
                    entry.insert(InoState::Backed(Arc::downgrade(&b), real));
                    b
                }
                Err(err) => return self.refused(err),
            },
        };
        self.by_fh.insert(fh, FhState::Backed(ino, backing.clone()));
        OpenMode::Backed(backing)
    }

    /// The kernel refused a backing file (EPERM in a user namespace, a stacking limit):
    /// carry on without passthrough for good.
    fn refused(&self, err: std::io::Error) -> OpenMode {
        tracing::info!("FUSE passthrough refused ({err}); serving reads and writes from the daemon");
        self.on.store(false, std::sync::atomic::Ordering::Relaxed);
        OpenMode::Direct
    }

    /// Handle `fh` was closed. An inode's entry goes with its last open file, so the table
    /// holds only inodes open now (the kernel drops an inode's backing with its last open
    /// file too, so the next open may choose afresh).
    pub(super) fn release(&self, fh: u64) {
        match self.by_fh.remove(&fh) {
            Some((_, FhState::Daemon(ino))) => {
                self.by_ino.remove_if_mut(&ino, |_, st| match st {
                    InoState::Daemon(n) => {
                        *n = n.saturating_sub(1);
                        *n == 0
                    }
                    InoState::Backed(..) => false,
                });
            }
            Some((_, FhState::Backed(ino, backing))) => {
                drop(backing);
                self.forget(ino);
            }
            None => {}
        }
    }

    /// The kernel forgot inode `ino`, or closed one of its files: drop its entry if no open
    /// file holds its backing. (Decided under the entry's lock, as opens are.)
    pub(super) fn forget(&self, ino: u64) {
        self.by_ino.remove_if(&ino, |_, st| matches!(st, InoState::Backed(w, _) if w.strong_count() == 0));
    }
}

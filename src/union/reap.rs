//! Removing trees from the work dir, and the thread that removes what removed directories
//! leave there, off the request path.
//!
//! `rmdir` of a directory whose upper part holds whiteouts (a merged directory emptied
//! name by name, as `rm -rf` does) makes the new state of the name visible with one rename,
//! as the kernel does: the old upper directory moves into the work dir. It still holds one
//! whiteout per name deleted in it, often dozens, and removing them was most of the cost of
//! such an `rmdir` (about 200 of 280 µs for a directory of 18 files), though nothing waits
//! for it: the tree is no longer in the merged view. A [`Reaper`] thread removes such trees
//! after the reply instead:
//! * at the lowest priority (nice 19), so it takes only what requests leave of a CPU;
//! * with a bounded queue: when it is full, or no thread runs (the library, unit tests), the
//!   tree is removed in place as before;
//! * the daemon waits for the queue to empty before it exits, so an unmounted upper has an
//!   empty work dir; after a crash the next mount empties the work dir anyway;
//! * not with size or inode limits (`--size-limit`, `--inode-limit`): removing a tree gives
//!   back what it was charged, which must happen before the call returns.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use parking_lot::Mutex;

use crate::error::{Errno, Res};
use crate::sys::dir as sdir;
use crate::sys::fs as sfs;
use crate::sys::open::{self, OFlags};
use crate::sys::stat::{self, FileKind};

/// Trees queued for the thread at most; past that, callers remove their own.
const QUEUE: usize = 1024;

/// One removal of a directory entry (a non-directory, or an empty directory).
type RemoveFn<'a> = &'a dyn Fn(BorrowedFd<'_>, &CStr) -> Res<()>;

/// Removes `name` in `dir` and everything below it, through `unlink` and `rmdir`. Entries
/// the listing's `d_type` says are not directories are unlinked without asking first (the
/// whiteouts a removed merged directory holds, typically).
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &CStr, unlink: RemoveFn<'_>, rmdir: RemoveFn<'_>) -> Res<()> {
    let st = match stat::statat(dir, name) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if st.is_dir() { remove_dir_tree(dir, name, unlink, rmdir) } else { unlink(dir, name) }
}

/// Removes directory `path` and everything below it, by descriptor, never following a
/// symbolic link and never entering another mount: a mount point inside (a bind mount too)
/// fails the removal with `EBUSY` and keeps what is mounted there, and the directories on
/// the way to it.
pub fn remove_dir_here(path: &std::path::Path) -> Res<()> {
    use std::os::unix::ffi::OsStrExt;
    let parent = path.parent().unwrap_or(std::path::Path::new("/"));
    let name = CString::new(path.file_name().ok_or(Errno::EINVAL)?.as_bytes()).map_err(|_| Errno::EINVAL)?;
    let pfd = open::open_dir_path(parent)?;
    let unlink = |d: BorrowedFd<'_>, n: &CStr| sfs::unlinkat(d, n);
    let rmdir = |d: BorrowedFd<'_>, n: &CStr| sfs::rmdirat(d, n);
    remove_dir_tree(pfd.as_fd(), &name, &unlink, &rmdir)
}

/// [`remove_tree`] of a directory; `EBUSY` for a mount point (what is mounted there is not
/// the tree's to remove).
fn remove_dir_tree(dir: BorrowedFd<'_>, name: &CStr, unlink: RemoveFn<'_>, rmdir: RemoveFn<'_>) -> Res<()> {
    let sub = open::openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
    if stat::is_mount_root(&sub)? {
        return Err(Errno::EBUSY);
    }
    for e in sdir::read_all(&sub)? {
        let child = CString::new(e.name).map_err(|_| Errno::EINVAL)?;
        match e.kind {
            Some(FileKind::Directory) => remove_dir_tree(sub.as_fd(), &child, unlink, rmdir)?,
            Some(_) => match unlink(sub.as_fd(), &child) {
                // Replaced by a directory since the listing.
                Err(Errno::EISDIR | Errno::EPERM) => remove_tree(sub.as_fd(), &child, unlink, rmdir)?,
                Err(Errno::ENOENT) => {}
                r => r?,
            },
            None => remove_tree(sub.as_fd(), &child, unlink, rmdir)?,
        }
    }
    rmdir(dir, name)
}

/// The thread that removes trees from the work dir after the request that moved them
/// there was answered.
#[derive(Debug, Default)]
pub struct Reaper {
    /// Where trees are queued; `None` before [`Reaper::start`] and after [`Reaper::finish`].
    tx: Mutex<Option<SyncSender<CString>>>,
    /// The thread, joined by [`Reaper::finish`].
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Reaper {
    /// Starts the thread, which removes the trees it is handed from `work` (its own
    /// descriptor of the work dir). Its removals are not counted as upper mutations: the
    /// trees are outside the upper's namespace, and a crash at any point of their removal
    /// leaves what the next mount removes.
    pub fn start(&self, work: OwnedFd) -> std::io::Result<()> {
        let (tx, rx) = sync_channel::<CString>(QUEUE);
        let delay = crate::hooks::reap_delay();
        let t = std::thread::Builder::new().name("reap".into()).spawn(move || {
            if let Err(e) = crate::sys::proc::lower_priority() {
                tracing::debug!("reap thread keeps its priority: {e}");
            }
            let unlink = |d: BorrowedFd<'_>, n: &CStr| sfs::unlinkat(d, n);
            let rmdir = |d: BorrowedFd<'_>, n: &CStr| sfs::rmdirat(d, n);
            for name in rx {
                if let Some(d) = delay {
                    std::thread::sleep(d);
                }
                match remove_tree(work.as_fd(), &name, &unlink, &rmdir) {
                    Ok(()) => tracing::debug!(op = "reap", ?name),
                    Err(e) => tracing::warn!("cannot remove temporary {name:?} from the work dir: {e}"),
                }
            }
        })?;
        *self.tx.lock() = Some(tx);
        *self.thread.lock() = Some(t);
        Ok(())
    }

    /// Queues `name` (in the work dir) for the thread; gives it back when no thread runs or
    /// the queue is full.
    pub fn hand(&self, name: CString) -> Result<(), CString> {
        match self.tx.lock().as_ref() {
            None => Err(name),
            Some(tx) => tx.try_send(name).map_err(|e| match e {
                TrySendError::Full(n) | TrySendError::Disconnected(n) => n,
            }),
        }
    }

    /// Stops taking trees and waits until the thread has removed every one queued.
    pub fn finish(&self) {
        drop(self.tx.lock().take());
        if let Some(t) = self.thread.lock().take()
            && t.join().is_err()
        {
            tracing::error!("BUG: the reap thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tree(root: &std::path::Path, name: &str) {
        let d = root.join(name);
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        for i in 0..40 {
            std::fs::write(d.join(format!("f{i}")), b"x").unwrap();
        }
        std::fs::write(d.join("sub/deeper/g"), b"y").unwrap();
        std::os::unix::fs::symlink("/nowhere", d.join("sub/link")).unwrap();
    }

    fn work_fd(p: &std::path::Path) -> OwnedFd {
        open::open_dir_path(p).unwrap()
    }

    #[test]
    fn queued_trees_are_gone_once_finished_and_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..20 {
            tree(dir.path(), &format!("#t{i}"));
        }
        std::fs::write(dir.path().join("keep"), b"k").unwrap();
        let r = Reaper::default();
        r.start(work_fd(dir.path())).unwrap();
        for i in 0..20 {
            r.hand(CString::new(format!("#t{i}")).unwrap()).unwrap();
        }
        r.finish();
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("keep")]);
    }

    #[test]
    fn without_a_thread_or_after_finish_the_tree_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let r = Reaper::default();
        assert_eq!(r.hand(c"x".to_owned()), Err(c"x".to_owned()));
        r.start(work_fd(dir.path())).unwrap();
        r.finish();
        assert_eq!(r.hand(c"y".to_owned()), Err(c"y".to_owned()));
    }

    #[test]
    fn remove_tree_never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), b"p").unwrap();
        std::fs::create_dir(dir.path().join("t")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("t/out")).unwrap();
        let fd = work_fd(dir.path());
        remove_tree(fd.as_fd(), c"t", &|d, n| sfs::unlinkat(d, n), &|d, n| sfs::rmdirat(d, n)).unwrap();
        assert!(!dir.path().join("t").exists());
        assert!(outside.path().join("precious").exists());
        // A name already gone is not an error.
        remove_tree(fd.as_fd(), c"t", &|d, n| sfs::unlinkat(d, n), &|d, n| sfs::rmdirat(d, n)).unwrap();
    }
}

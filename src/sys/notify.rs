//! inotify: change notifications for real directories (for `--watch`).

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

use crate::error::Res;

/// What happened to a watched directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// An entry was created, removed, renamed, written or had its metadata changed.
    Entry,
    /// The directory itself changed (metadata) or went away.
    Dir,
    /// The watch was removed (the directory was deleted or the watch dropped).
    Gone,
    /// Events were lost (the kernel's queue overflowed).
    Overflow,
}

/// An inotify instance.
#[derive(Debug)]
pub struct Inotify(OwnedFd);

impl Inotify {
    /// Safe wrapper for `inotify_init1(IN_CLOEXEC)`.
    pub fn new() -> Res<Inotify> {
        Ok(Inotify(inotify::init(CreateFlags::CLOEXEC)?))
    }

    /// Safe wrapper for `inotify_add_watch(2)` on an already open directory (through its
    /// `/proc/self/fd` link, so no path inside a layer is resolved again). Returns the watch
    /// descriptor (the same one for a directory watched twice).
    pub fn watch_dir(&self, dir: BorrowedFd<'_>) -> Res<i32> {
        let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
        let mask = WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::MODIFY
            | WatchFlags::ATTRIB
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        Ok(inotify::add_watch(&self.0, path, mask)?)
    }

    /// Safe wrapper for `inotify_rm_watch(2)`.
    pub fn unwatch(&self, wd: i32) -> Res<()> {
        Ok(inotify::remove_watch(&self.0, wd)?)
    }

    /// Blocks for events and hands each to `f` (watch descriptor, what changed, the entry's
    /// name if any). Returns on a read error.
    pub fn read(&self, mut f: impl FnMut(i32, Change, Option<&CStr>)) -> Res<()> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 16384];
        let mut reader = inotify::Reader::new(self.0.as_fd(), &mut buf);
        loop {
            let ev = reader.next()?;
            let flags = ev.events();
            let change = if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                Change::Overflow
            } else if flags.contains(ReadFlags::IGNORED) {
                Change::Gone
            } else if ev.file_name().is_some_and(|n| !n.is_empty()) {
                Change::Entry
            } else {
                Change::Dir
            };
            f(ev.wd(), change, ev.file_name().filter(|n| !n.is_empty()))
        }
    }
}

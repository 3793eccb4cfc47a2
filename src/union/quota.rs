//! Per-mount quotas (`--size-limit`, `--inode-limit`), without filesystem project quotas:
//! the daemon counts the upper layer's allocated bytes and inodes (scanned once at mount)
//! and refuses with `EDQUOT` what would go past a limit — new objects, writes, `fallocate`,
//! and copy-ups (charged before any data is copied, so the lower version stays). `statfs`
//! reports the limits as the filesystem's size, so `df` in a container shows them.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use crate::error::{Errno, Res};
use crate::sys::open::{self, OFlags};
use crate::sys::stat::{self, FsStat, Stat};

/// Limits and current use of one upper layer.
#[derive(Debug)]
pub struct Quota {
    /// Byte limit (allocated blocks, as `du` counts them).
    pub size: Option<u64>,
    /// Inode limit (every object in the upper, whiteouts included).
    pub inodes: Option<u64>,
    bytes: AtomicI64,
    count: AtomicI64,
}

/// Bytes an object occupies (allocated blocks).
pub fn allocated(st: &Stat) -> i64 {
    i64::try_from(st.blocks.saturating_mul(512)).unwrap_or(i64::MAX)
}

impl Quota {
    /// Limits for the upper whose root is `root`, with its current use counted.
    pub fn new(size: Option<u64>, inodes: Option<u64>, root: BorrowedFd<'_>) -> Res<Quota> {
        let (bytes, count) = usage(root)?;
        Ok(Quota { size, inodes, bytes: AtomicI64::new(bytes), count: AtomicI64::new(count) })
    }

    /// Counts one new object, or `EDQUOT` past the inode limit.
    pub fn take_inode(&self) -> Res<()> {
        let n = self.count.fetch_add(1, Relaxed) + 1;
        if self.inodes.is_some_and(|l| n > i64::try_from(l).unwrap_or(i64::MAX)) {
            self.count.fetch_sub(1, Relaxed);
            return Err(Errno::EDQUOT);
        }
        Ok(())
    }

    /// Forgets one object (removed, or its creation failed).
    pub fn give_inode(&self) {
        self.count.fetch_sub(1, Relaxed);
    }

    /// `EDQUOT` if `more` bytes would go past the size limit.
    pub fn check_bytes(&self, more: u64) -> Res<()> {
        if let Some(l) = self.size {
            let after = self.bytes.load(Relaxed).saturating_add(i64::try_from(more).unwrap_or(i64::MAX));
            if after > i64::try_from(l).unwrap_or(i64::MAX) {
                return Err(Errno::EDQUOT);
            }
        }
        Ok(())
    }

    /// Records a change in allocated bytes.
    pub fn add_bytes(&self, delta: i64) {
        self.bytes.fetch_add(delta, Relaxed);
    }

    /// (bytes, inodes) in use.
    pub fn used(&self) -> (u64, u64) {
        (self.bytes.load(Relaxed).max(0) as u64, self.count.load(Relaxed).max(0) as u64)
    }

    /// `statfs` of the upper's filesystem, shrunk to the limits.
    pub fn limit_statfs(&self, mut fs: FsStat) -> FsStat {
        let (bytes, count) = self.used();
        if let Some(l) = self.size {
            let unit = u64::from(fs.frsize.max(1));
            fs.blocks = fs.blocks.min(l / unit);
            let free = l.saturating_sub(bytes) / unit;
            fs.bfree = fs.bfree.min(free);
            fs.bavail = fs.bavail.min(free);
        }
        if let Some(l) = self.inodes {
            fs.files = fs.files.min(l);
            fs.ffree = fs.ffree.min(l.saturating_sub(count));
        }
        fs
    }
}

/// Allocated bytes and objects below `root` (not counting the root; hard links once).
fn usage(root: BorrowedFd<'_>) -> Res<(i64, i64)> {
    let mut bytes = 0i64;
    let mut count = 0i64;
    let mut seen = HashSet::new();
    let mut stack = vec![open::openat(root, crate::sys::DOT, OFlags::RDONLY | OFlags::DIRECTORY, 0)?];
    while let Some(dir) = stack.pop() {
        for e in crate::sys::dir::read_all(&dir)? {
            let Ok(name) = CString::new(e.name) else { continue };
            let st = match stat::statat(dir.as_fd(), &name) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e),
            };
            if st.nlink > 1 && !st.is_dir() && !seen.insert(st.ino) {
                continue;
            }
            count += 1;
            bytes += allocated(&st);
            if st.is_dir() {
                stack.push(open::openat(dir.as_fd(), &name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW, 0)?);
            }
        }
    }
    Ok((bytes, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(size: Option<u64>, inodes: Option<u64>) -> Quota {
        Quota { size, inodes, bytes: AtomicI64::new(0), count: AtomicI64::new(0) }
    }

    #[test]
    fn inode_limit() {
        let q = quota(None, Some(2));
        assert!(q.take_inode().is_ok() && q.take_inode().is_ok());
        assert_eq!(q.take_inode(), Err(Errno::EDQUOT));
        q.give_inode();
        assert!(q.take_inode().is_ok());
        assert_eq!(q.used().1, 2);
    }

    #[test]
    fn size_limit() {
        let q = quota(Some(10_000), None);
        assert!(q.check_bytes(10_000).is_ok());
        q.add_bytes(8192);
        assert_eq!(q.check_bytes(4096), Err(Errno::EDQUOT));
        assert!(q.check_bytes(1808).is_ok());
        q.add_bytes(-8192);
        assert!(q.check_bytes(4096).is_ok());
        assert!(quota(None, None).check_bytes(u64::MAX).is_ok());
    }
}

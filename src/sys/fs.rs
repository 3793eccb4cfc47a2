//! Namespace calls on one component of a directory: create, link, rename, remove, and
//! attribute changes. None of them follows a final symlink.

use std::ffi::CStr;
use std::os::fd::AsFd;

use rustix::fs::{AtFlags, FileType, Gid, Mode, RenameFlags, Timestamps, Uid};

use crate::error::Res;
use crate::sys::stat::{FileKind, Timespec};

/// Safe wrapper for `mkdirat(2)`.
pub fn mkdirat(dir: impl AsFd, name: &CStr, mode: u32) -> Res<()> {
    Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?)
}

/// Safe wrapper for `mknodat(2)` (devices, fifos, sockets, and 0/0 whiteouts).
pub fn mknodat(dir: impl AsFd, name: &CStr, kind: FileKind, perm: u32, rdev: u64) -> Res<()> {
    let ft = FileType::from_raw_mode(kind.mode_bits());
    Ok(rustix::fs::mknodat(dir, name, ft, Mode::from_raw_mode(perm), rdev)?)
}

/// Safe wrapper for `symlinkat(2)`: creates `name` in `dir` pointing at `target`.
pub fn symlinkat(target: &CStr, dir: impl AsFd, name: &CStr) -> Res<()> {
    Ok(rustix::fs::symlinkat(target, dir, name)?)
}

/// Safe wrapper for `linkat(2)` without following symlinks. An empty `old` names the object
/// `old_dir` holds (an unnamed `O_TMPFILE` file): linked by `AT_EMPTY_PATH` where the daemon
/// may (`CAP_DAC_READ_SEARCH`), else through its `/proc/self/fd` link, which any owner of the
/// descriptor may follow.
pub fn linkat(old_dir: impl AsFd, old: &CStr, new_dir: impl AsFd, new: &CStr) -> Res<()> {
    if !old.is_empty() {
        return Ok(rustix::fs::linkat(old_dir, old, new_dir, new, AtFlags::empty())?);
    }
    match rustix::fs::linkat(old_dir.as_fd(), old, new_dir.as_fd(), new, AtFlags::EMPTY_PATH) {
        Err(rustix::io::Errno::NOENT) => {
            let path = crate::sys::open::proc_fd_path(old_dir.as_fd());
            Ok(rustix::fs::linkat(rustix::fs::CWD, path.as_c_str(), new_dir, new, AtFlags::SYMLINK_FOLLOW)?)
        }
        r => Ok(r?),
    }
}

/// Safe wrapper for `unlinkat(2)` of a non-directory.
pub fn unlinkat(dir: impl AsFd, name: &CStr) -> Res<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
}

/// Safe wrapper for `unlinkat(2)` with `AT_REMOVEDIR`.
pub fn rmdirat(dir: impl AsFd, name: &CStr) -> Res<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// How [`renameat2`] treats the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameMode {
    /// Replace the target if it exists (plain `rename(2)`).
    Replace,
    /// Fail with `EEXIST` if the target exists.
    NoReplace,
    /// Swap source and target atomically.
    Exchange,
    /// Move, and leave a whiteout (0/0 char device) at the source.
    Whiteout,
}

/// Safe wrapper for `renameat2(2)`.
pub fn renameat2(old_dir: impl AsFd, old: &CStr, new_dir: impl AsFd, new: &CStr, mode: RenameMode) -> Res<()> {
    let flags = match mode {
        RenameMode::Replace => RenameFlags::empty(),
        RenameMode::NoReplace => RenameFlags::NOREPLACE,
        RenameMode::Exchange => RenameFlags::EXCHANGE,
        RenameMode::Whiteout => RenameFlags::WHITEOUT,
    };
    Ok(rustix::fs::renameat_with(old_dir, old, new_dir, new, flags)?)
}

/// Safe wrapper for `readlinkat(2)`.
pub fn readlinkat(dir: impl AsFd, name: &CStr) -> Res<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Safe wrapper for `fchownat(2)` with `AT_SYMLINK_NOFOLLOW`; `None` leaves an id unchanged.
pub fn chownat(dir: impl AsFd, name: &CStr, uid: Option<u32>, gid: Option<u32>) -> Res<()> {
    let uid = uid.map(Uid::from_raw);
    let gid = gid.map(Gid::from_raw);
    Ok(rustix::fs::chownat(dir, name, uid, gid, crate::sys::stat::at_flags(name))?)
}

/// Safe wrapper for `fchown(2)`.
pub fn fchown(fd: impl AsFd, uid: Option<u32>, gid: Option<u32>) -> Res<()> {
    Ok(rustix::fs::fchown(fd, uid.map(Uid::from_raw), gid.map(Gid::from_raw))?)
}

/// Safe wrapper for `fchmod(2)`.
pub fn fchmod(fd: impl AsFd, perm: u32) -> Res<()> {
    Ok(rustix::fs::fchmod(fd, Mode::from_raw_mode(perm))?)
}

/// Safe wrapper for `chmod(2)` of entry `name` of `dir`, never of what a symlink points to.
/// The entry is opened `O_PATH | O_NOFOLLOW` once, its type checked on that descriptor, and
/// the mode changed through the descriptor (`/proc/self/fd/N` names exactly the object it
/// holds): a symlink swapped in under the name after the check is never followed. Symlinks
/// have no mode of their own: `EOPNOTSUPP`, as the kernel answers.
pub fn chmodat(dir: impl AsFd, name: &CStr, perm: u32) -> Res<()> {
    if name.is_empty() {
        // The object `dir` holds.
        return chmod_fd(dir.as_fd(), perm);
    }
    let fd = crate::sys::open::openat(dir, name, crate::sys::open::OFlags::PATH, 0)?;
    chmod_fd(fd.as_fd(), perm)
}

/// `chmod` of the object an (`O_PATH`) descriptor holds, unless it is a symlink.
fn chmod_fd(fd: std::os::fd::BorrowedFd<'_>, perm: u32) -> Res<()> {
    let st = crate::sys::stat::fstat(fd)?;
    if st.kind() == Some(FileKind::Symlink) {
        return Err(crate::error::Errno::EOPNOTSUPP);
    }
    let path = crate::sys::open::proc_fd_path(fd.as_fd());
    Ok(rustix::fs::chmod(path.as_c_str(), Mode::from_raw_mode(perm))?)
}

/// A time to set: a value, "now", or "leave unchanged".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    /// Leave the timestamp as it is.
    Omit,
    /// The current time.
    Now,
    /// This exact time.
    At(Timespec),
}

fn to_rustix_ts(t: SetTime) -> rustix::fs::Timespec {
    match t {
        SetTime::Omit => rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT },
        SetTime::Now => rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW },
        SetTime::At(t) => rustix::fs::Timespec { tv_sec: t.sec, tv_nsec: i64::from(t.nsec) },
    }
}

/// Safe wrapper for `utimensat(2)` with `AT_SYMLINK_NOFOLLOW`.
pub fn utimensat(dir: impl AsFd, name: &CStr, atime: SetTime, mtime: SetTime) -> Res<()> {
    let ts = Timestamps { last_access: to_rustix_ts(atime), last_modification: to_rustix_ts(mtime) };
    Ok(rustix::fs::utimensat(dir, name, &ts, crate::sys::stat::at_flags(name))?)
}

/// Safe wrapper for `futimens(3)`.
pub fn futimens(fd: impl AsFd, atime: SetTime, mtime: SetTime) -> Res<()> {
    let ts = Timestamps { last_access: to_rustix_ts(atime), last_modification: to_rustix_ts(mtime) };
    Ok(rustix::fs::futimens(fd, &ts)?)
}

/// Whether the calling process's real user may read and write `path` (`access(2)`).
pub fn can_read_write(path: &std::path::Path) -> Res<bool> {
    match rustix::fs::access(path, rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::ACCESS) | Err(rustix::io::Errno::PERM) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

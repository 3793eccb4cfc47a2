//! Opening files inside layers without ever following a symlink out of them.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{CWD, ResolveFlags};
pub use rustix::fs::{Mode, OFlags};

use crate::error::{Errno, Res};

/// How every multi-component path inside a layer is resolved: never leave the layer root,
/// never follow a symlink or magic link, never cross into another mount.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Opens a directory given by the user (a layer root, a work dir) as an `O_PATH` descriptor.
/// The path itself may contain symlinks (engines pass `l/SHORTID` links); what is inside the
/// directory is then reached only through [`resolve_beneath`].
pub fn open_dir_path(path: &Path) -> Res<OwnedFd> {
    Ok(rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// Safe wrapper for `openat2(2)`: opens `rel` (a relative path of one or more components, or
/// empty for the root itself) below `root` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`. A symlink as the last component yields `ELOOP`
/// unless `flags` has `O_PATH` (then the link itself is opened).
///
/// Paths longer than the kernel's `PATH_MAX` (deeply nested layers) are resolved a piece at
/// a time, each piece beneath the directory the previous one reached.
pub fn resolve_beneath(root: impl AsFd, rel: &CStr, flags: OFlags) -> Res<OwnedFd> {
    let bytes = rel.to_bytes();
    if bytes.len() <= PIECE {
        return resolve_piece(root.as_fd(), rel, flags);
    }
    let pieces = split_path(bytes, PIECE).ok_or(Errno::ENAMETOOLONG)?;
    let mut cur: Option<OwnedFd> = None;
    let last = pieces.len() - 1;
    for (i, p) in pieces.into_iter().enumerate() {
        let p = CString::new(p).map_err(|_| Errno::EINVAL)?;
        let f = if i == last { flags } else { OFlags::PATH | OFlags::DIRECTORY };
        let next = match &cur {
            None => resolve_piece(root.as_fd(), &p, f)?,
            Some(fd) => resolve_piece(fd.as_fd(), &p, f)?,
        };
        cur = Some(next);
    }
    cur.ok_or(Errno::EINVAL)
}

/// The longest path resolved in one `openat2` call.
const PIECE: usize = 2048;

/// Splits a relative path at `/` into pieces of at most `max` bytes (`None` if one component
/// alone is longer).
pub fn split_path(path: &[u8], max: usize) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut last_cut = None;
    for (i, b) in path.iter().enumerate() {
        if *b == b'/' {
            if i - start > max {
                let cut = last_cut?;
                out.push(&path[start..cut]);
                start = cut + 1;
            }
            last_cut = Some(i);
        }
    }
    if path.len() - start > max {
        let cut = last_cut.filter(|c| *c > start)?;
        out.push(&path[start..cut]);
        start = cut + 1;
    }
    out.push(&path[start..]);
    out.iter().all(|p| p.len() <= max && !p.is_empty()).then_some(out)
}

fn resolve_piece(root: BorrowedFd<'_>, rel: &CStr, flags: OFlags) -> Res<OwnedFd> {
    let rel = if rel.is_empty() { c"." } else { rel };
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    loop {
        match rustix::fs::openat2(root.as_fd(), rel, flags, Mode::empty(), BENEATH) {
            // openat2 asks for a retry when a rename raced with the walk.
            Err(rustix::io::Errno::AGAIN) => continue,
            // A symlink in the middle of a layer path, or a crossing into another mount, is
            // reported as the component not being a directory we may enter.
            Err(rustix::io::Errno::XDEV) => return Err(Errno::ENOENT),
            r => return Ok(r?),
        }
    }
}

/// Safe wrapper for `openat(2)` of one component `name` in `dir`, never following a final
/// symlink (`O_NOFOLLOW`), always `O_CLOEXEC`.
pub fn openat(dir: impl AsFd, name: &CStr, flags: OFlags, mode: u32) -> Res<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode))?)
}

/// Opens an unnamed regular file in directory `dir` (`O_TMPFILE`, never `O_EXCL`: whether
/// it may be linked is the kernel's to enforce on the mount's own inode).
pub fn open_tmpfile(dir: impl AsFd, flags: OFlags, mode: u32) -> Res<OwnedFd> {
    let flags = (flags - OFlags::EXCL - OFlags::CREATE) | OFlags::TMPFILE | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, crate::sys::DOT, flags, Mode::from_raw_mode(mode))?)
}

/// Opens regular file `name` in `dir` for its data: like [`openat`], and never blocks on
/// what was swapped in under the name behind the daemon's back (a FIFO without a writer
/// would hang the request, and with it the thread): opened `O_NONBLOCK` first, checked to be
/// a regular file on the descriptor, then made blocking again. Anything else is `ESTALE`
/// (the kernel then looks the name up again and finds what it is now).
pub fn open_file(dir: impl AsFd, name: &CStr, flags: OFlags) -> Res<OwnedFd> {
    let opened = match name.is_empty() {
        // The object `dir` holds (a removed file, by its `O_PATH` descriptor): opened again.
        true => rustix::fs::open(
            proc_fd_path(dir.as_fd()).as_c_str(),
            flags | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(Errno::from),
        false => openat(dir, name, flags | OFlags::NONBLOCK, 0),
    };
    let fd = opened.map_err(|e| match e {
        // A FIFO opened for writing without a reader, or a device without its driver.
        Errno::ENXIO | Errno::ENODEV => Errno::ESTALE,
        e => e,
    })?;
    if !crate::sys::stat::fstat(&fd)?.is_reg() {
        return Err(Errno::ESTALE);
    }
    if !flags.contains(OFlags::NONBLOCK) {
        // The status flags are the ones asked for (F_SETFL keeps the access mode).
        rustix::fs::fcntl_setfl(&fd, flags)?;
    }
    Ok(fd)
}

/// An `O_PATH` descriptor of the object `fd` holds (whatever its type, named or not).
pub fn open_path_of(fd: BorrowedFd<'_>) -> Res<OwnedFd> {
    let path = proc_fd_path(fd);
    Ok(rustix::fs::open(path.as_c_str(), OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?)
}

/// Another `O_PATH` descriptor of the same directory.
pub fn open_dir_path_at(dir: impl AsFd) -> Res<OwnedFd> {
    openat(dir, crate::sys::DOT, OFlags::PATH | OFlags::DIRECTORY, 0)
}

/// Opens a directory for reading entries (`O_RDONLY | O_DIRECTORY`) from any descriptor of
/// it, including an `O_PATH` one.
pub fn open_dir_for_read(dir: impl AsFd) -> Res<OwnedFd> {
    openat(dir, crate::sys::DOT, OFlags::RDONLY | OFlags::DIRECTORY, 0)
}

/// A `/proc/self/fd/N/NAME` path: the race-free way to name "entry NAME of the directory
/// open as fd N" for calls that have no `*at` form (the xattr calls, chmod of a symlink's
/// target). With `NAME` = `.` it names the directory itself.
pub fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> CString {
    let mut s = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    s.extend_from_slice(name.to_bytes());
    // The name came from a CStr and the prefix has no NUL.
    CString::new(s).unwrap_or_default()
}

/// A `/proc/self/fd/N` path: names exactly the object descriptor N holds (an `O_PATH` one
/// included), for calls that have no descriptor form (`chmod`).
pub fn proc_fd_path(fd: BorrowedFd<'_>) -> CString {
    // Digits only: no NUL inside.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Safe wrapper for `open(2)` of an ordinary path (used at the edges, not on layers).
pub fn open_plain(path: &Path, flags: OFlags, mode: u32) -> Res<OwnedFd> {
    Ok(rustix::fs::openat(CWD, path, flags | OFlags::CLOEXEC, Mode::from_raw_mode(mode))?)
}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn long_paths_split_at_slashes_into_short_pieces() {
        assert_eq!(split_path(b"a/b/c", 100).unwrap(), [&b"a/b/c"[..]]);
        let p = b"aaaa/bbbb/cccc/dddd";
        let pieces = split_path(p, 9).unwrap();
        assert_eq!(pieces, [&b"aaaa/bbbb"[..], &b"cccc/dddd"[..]]);
        let pieces = split_path(p, 4).unwrap();
        assert_eq!(pieces, [&b"aaaa"[..], &b"bbbb"[..], &b"cccc"[..], &b"dddd"[..]]);
        assert_eq!(pieces.concat().len() + 3, p.len());
        assert!(split_path(b"aaaaaaaa/b", 4).is_none(), "a component longer than a piece");
    }
}

//! Conversions between the core's values and `fuser`'s request and reply types: attributes,
//! times, file types, the errno of a failed call, and the replies that need more than one
//! line (an entry, an open or create with its passthrough or cache mode). Also [`guard`],
//! which runs every handler.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, ReplyCreate, ReplyData, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyXattr, Request, TimeOrNow,
};
use tracing::error;

use super::TTL;
use super::passthrough::{OpenMode, Passthrough};
use crate::error::Errno;
use crate::sys::fs::SetTime;
use crate::sys::stat::{FileKind, Timespec};
use crate::union::file::Opened;
use crate::union::fileattr::AttrFlags;
use crate::union::inode::Killer;
use crate::union::{Attr, Ctx, Entry, UnionFs};

pub(super) fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.raw())
}

/// Whether `name` on `ino` is the statistics attribute on the root (see [`crate::stats`]):
/// answered here, from the daemon's counters, and never written.
pub(super) fn is_stats(ino: INodeNo, name: &OsStr) -> bool {
    ino.0 == crate::union::tables::ROOT_INO && name.as_bytes() == crate::stats::XATTR.as_bytes()
}

/// The caller as a [`Killer`] when `kill` (it lacks `CAP_FSETID`).
pub(super) fn killer(req: &Request, kill: bool) -> Option<Killer> {
    kill.then(|| Killer { gid: req.gid(), pid: req.pid(), fsetid: false })
}

pub(super) fn ctx(req: &Request) -> Ctx {
    Ctx { uid: req.uid(), gid: req.gid() }
}

pub(super) fn systime(t: Timespec) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(u64::from(t.nsec))
    }
}

pub(super) fn settime(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(st) => SetTime::At(match st.duration_since(UNIX_EPOCH) {
            Ok(d) => Timespec { sec: d.as_secs() as i64, nsec: d.subsec_nanos() },
            Err(e) => {
                let d = e.duration();
                let (mut sec, mut nsec) = (-(d.as_secs() as i64), d.subsec_nanos());
                if nsec > 0 {
                    sec -= 1;
                    nsec = 1_000_000_000 - nsec;
                }
                Timespec { sec, nsec }
            }
        }),
    }
}

pub(super) fn ftype(k: FileKind) -> FileType {
    match k {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

pub(super) fn fattr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: systime(a.atime),
        mtime: systime(a.mtime),
        ctime: systime(a.ctime),
        crtime: UNIX_EPOCH,
        kind: ftype(a.kind),
        perm: (a.perm & 0o7777) as u16,
        nlink: a.nlink.min(u64::from(u32::MAX)) as u32,
        uid: a.uid,
        gid: a.gid,
        // FUSE carries the 32-bit "new" device encoding, which is the low half of glibc's.
        rdev: a.rdev as u32,
        blksize: a.blksize,
        flags: 0,
    }
}

/// A negative entry: node id 0 tells the kernel to cache "no such name" for the TTL.
pub(super) fn negative() -> FileAttr {
    fattr(&Attr {
        ino: 0,
        kind: FileKind::Regular,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        size: 0,
        blocks: 0,
        blksize: 0,
        atime: Timespec::default(),
        mtime: Timespec::default(),
        ctime: Timespec::default(),
    })
}

pub(super) fn cname(name: &OsStr) -> Result<CString, Errno> {
    crate::sys::cname(name)
}

pub(super) fn reply_entry(reply: ReplyEntry, r: Result<Entry, Errno>) {
    match r {
        // Neither the name nor the link count of a lower hard link may be cached: see
        // `Entry::revalidate`.
        Ok(e) if e.revalidate => {
            reply.entry_node(INodeNo(e.ino), &Duration::ZERO, &Duration::ZERO, &fattr(&e.attr), Generation(0))
        }
        Ok(e) => reply.entry_node(INodeNo(e.ino), &TTL, &TTL, &fattr(&e.attr), Generation(0)),
        Err(e) => reply.error(errno(e)),
    }
}

pub(super) fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

pub(super) fn reply_data(reply: ReplyData, r: Result<Vec<u8>, Errno>) {
    match r {
        Ok(d) => reply.data(&d),
        Err(e) => reply.error(errno(e)),
    }
}

pub(super) fn reply_xattr(reply: ReplyXattr, size: u32, r: Result<Vec<u8>, Errno>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(fuser::Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(e)),
    }
}

/// Runs a handler; a panic is logged instead of taking the thread down (the reply it owned
/// is dropped, which answers `EIO`).
pub(super) fn guard(op: &'static str, f: impl FnOnce()) {
    thread_local! {
        static READY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !READY.get() {
        // Once per request thread: a private umask of 0 (see `private_umask_zero`).
        if let Err(e) = crate::sys::proc::private_umask_zero() {
            error!("cannot give the request thread a private umask: {e}");
        }
        READY.set(true);
    }
    let timer = crate::stats::begin(op);
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        error!("BUG: {op} handler panicked; answered EIO");
    }
    timer.end();
}

/// How to answer an open of `ino` with `flags` as handle `fh` (see [`Passthrough`]).
///
/// Without passthrough, a handle open for writing only is not cached: through the page cache
/// its data would be copied twice (into the mount's cache, then into the upper file's) and
/// cached twice, for no reader. Written straight through, the kernel drops what other
/// handles cached of the range it writes. (1 GiB `dd`: 0.81–0.99 s cached, 0.55 s direct.)
pub(super) fn open_mode(
    fs: &UnionFs,
    pt: &Passthrough,
    ino: u64,
    fh: u64,
    flags: i32,
    register: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> std::io::Result<fuser::BackingId>,
) -> OpenMode {
    let mode = if pt.is_on() {
        let Ok(f) = fs.file_handle(fh) else { return OpenMode::Direct };
        use std::os::fd::AsFd;
        pt.mode(ino, fh, f.real, f.sxid, || fs.reopened_soon(fh), || register(f.fd.as_fd()))
    } else {
        OpenMode::Cached
    };
    match mode {
        OpenMode::Cached if flags & libc::O_ACCMODE == libc::O_WRONLY => OpenMode::Direct,
        m => m,
    }
}

/// Opens `ino` and answers (`kill`: an `O_TRUNC` by a caller without `CAP_FSETID`).
pub(super) fn reply_open(fs: &UnionFs, pt: &Passthrough, ino: u64, flags: i32, kill: Option<Killer>, reply: ReplyOpen) {
    match fs.open(ino, flags, kill) {
        Ok(o) => match open_mode(fs, pt, ino, o.fh, flags, |fd| reply.open_backing(fd)) {
            OpenMode::Backed(b) => reply.opened_passthrough(FileHandle(o.fh), FopenFlags::empty(), &b),
            OpenMode::Direct => reply.opened(FileHandle(o.fh), FopenFlags::FOPEN_DIRECT_IO),
            OpenMode::Stale => {
                fs.release(o.fh);
                let _gone = fs.supersede(ino);
                reply.error(fuser::Errno::ESTALE)
            }
            mode @ (OpenMode::Cached | OpenMode::Reopened) => {
                fs.page_cached(o.fh);
                if matches!(mode, OpenMode::Reopened) && o.keep_cache {
                    fs.prefill_pages(o.fh);
                }
                let f = if o.keep_cache { FopenFlags::FOPEN_KEEP_CACHE } else { FopenFlags::empty() };
                reply.opened(FileHandle(o.fh), f)
            }
        },
        Err(e) => reply.error(errno(e)),
    }
}

/// A file attribute ioctl: whether it sets, and what (`None`: any other ioctl, or a set
/// without its argument).
pub(super) fn fileattr_request(cmd: u32, data: &[u8]) -> Option<(bool, AttrFlags)> {
    use crate::sys::fileattr as fa;
    match cmd {
        fa::FS_IOC_GETFLAGS => Some((false, AttrFlags::Flags(0))),
        fa::FS_IOC_FSGETXATTR => Some((false, AttrFlags::Fsx(fa::FsXattr::default()))),
        fa::FS_IOC_SETFLAGS => {
            let w = data.get(..4)?.try_into().ok()?;
            Some((true, AttrFlags::Flags(u32::from_ne_bytes(w))))
        }
        fa::FS_IOC_FSSETXATTR => Some((true, AttrFlags::Fsx(fa::FsXattr::from_bytes(data)?))),
        _ => None,
    }
}

/// Answers a `create` or `tmpfile` that made and opened entry `e` as handle `o`.
pub(super) fn reply_created(fs: &UnionFs, pt: &Passthrough, e: Entry, o: Opened, flags: i32, reply: ReplyCreate) {
    let (a, fh, id) = (fattr(&e.attr), FileHandle(o.fh), INodeNo(e.ino));
    match open_mode(fs, pt, e.ino, o.fh, flags, |fd| reply.open_backing(fd)) {
        OpenMode::Backed(b) => reply.created_node(id, &TTL, &a, Generation(0), fh, FopenFlags::empty(), Some(&b)),
        OpenMode::Direct => reply.created_node(id, &TTL, &a, Generation(0), fh, FopenFlags::FOPEN_DIRECT_IO, None),
        // A new file cannot be pinned elsewhere; should it ever be, fail cleanly.
        OpenMode::Stale => {
            fs.release(o.fh);
            reply.error(fuser::Errno::ESTALE)
        }
        OpenMode::Cached | OpenMode::Reopened => {
            let f = if o.keep_cache { FopenFlags::FOPEN_KEEP_CACHE } else { FopenFlags::empty() };
            reply.created_node(id, &TTL, &a, Generation(0), fh, f, None)
        }
    }
}

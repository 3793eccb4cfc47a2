//! The FUSE adapter: the only module that sees `fuser` request and reply types.
//!
//! Each method converts its arguments, calls the value-returning core in [`crate::union`],
//! and turns the `Result` into a reply: the one place where errno values cross to the
//! kernel. A panic inside a handler is caught and logged; the dropped reply answers `EIO`
//! and the thread keeps serving.
//!
//! FUSE contracts honoured here: every `lookup`, `mkdir`, `mknod`, `symlink`, `link` and
//! `create` that returns an entry counts one reference that a later `forget` gives back;
//! a name that does not exist is answered with a negative entry (node id 0) so the kernel
//! caches the miss; the root is node 1.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    BsdFileFlags, CopyFileRangeFlags, FileAttr, FileHandle, Filesystem, Generation, INodeNo, InitFlags, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use tracing::debug;

use crate::error::Errno;
use crate::union::UnionFs;
use crate::union::fileattr::AttrFlags;
use crate::union::inode::{Killer, SetAttr};
use crate::union::rename::RenameFlags as URenameFlags;

mod invalidate;
mod passthrough;
mod priority;
mod reply;
mod slow;
pub mod uring;

pub use invalidate::NotifierInvalidator;
use passthrough::Passthrough;
use reply::{
    cname, ctx, errno, fattr, fileattr_request, ftype, guard, is_stats, killer, negative, reply_created, reply_data,
    reply_empty, reply_entry, reply_open, reply_xattr, settime,
};
use slow::SlowPool;

/// How long the kernel may trust names and attributes. Every change goes through the
/// daemon, which invalidates what it changes behind the kernel's back.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// The FUSE filesystem: a thin shell around the core.
#[derive(Debug)]
pub struct Fuse {
    fs: Arc<UnionFs>,
    /// Handing regular files to the kernel (FUSE passthrough): reads and writes then never
    /// reach the daemon.
    pt: Arc<Passthrough>,
    /// Where requests that wait on slow I/O run.
    slow: SlowPool,
    /// FUSE over io_uring: allowed, negotiated, serving.
    uring: Arc<uring::UringState>,
    /// The read-ahead window (KiB) this mount's page cache should have: what one `READ`
    /// carries, where reads go through the daemon (0: leave the kernel's). Decided at `INIT`.
    read_ahead: Arc<std::sync::atomic::AtomicU32>,
}

impl Fuse {
    /// Wraps the core; `passthrough` allows FUSE passthrough where the kernel offers it.
    pub fn new(fs: Arc<UnionFs>, passthrough: bool) -> std::io::Result<Fuse> {
        let slow = SlowPool::new((crate::sys::proc::cpus() * 2).clamp(2, 8))?;
        let pt = Arc::new(Passthrough::new(passthrough));
        Ok(Fuse { fs, pt, slow, uring: Arc::default(), read_ahead: Arc::default() })
    }

    /// Lets `INIT` accept FUSE over io_uring where the kernel offers it; the session then
    /// needs [`uring::start`] with [`Fuse::uring`] to serve the rings.
    pub fn with_uring(mut self, wanted: bool) -> Fuse {
        let reader = wanted.then(|| uring::core_reader(&self.fs));
        self.uring = Arc::new(uring::UringState::new(wanted, reader));
        self
    }

    /// The read-ahead window (KiB) `INIT` chose for the mount's page cache (0: the kernel's),
    /// for the daemon to set once the handshake is done ([`crate::daemon`]).
    pub fn read_ahead(&self) -> Arc<std::sync::atomic::AtomicU32> {
        self.read_ahead.clone()
    }

    /// The io_uring transport's state (shared with the session that starts its threads).
    pub fn uring(&self) -> Arc<uring::UringState> {
        self.uring.clone()
    }

    /// Runs a request's handler on the slow pool when `slow`, else right here.
    fn run(&self, slow: bool, job: impl FnOnce() + Send + 'static) {
        if slow { self.slow.run(job) } else { job() }
    }
}

impl Filesystem for Fuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Passthrough needs CAP_SYS_ADMIN in the initial user namespace; layers on a stacked
        // filesystem (overlayfs, FUSE) need a stacking depth of 2.
        let caps = config.capabilities();
        if self.pt.wanted && crate::sys::proc::privileged() && caps.contains(InitFlags::FUSE_PASSTHROUGH) {
            let depth = if self.fs.layers_stacked() { 2 } else { 1 };
            if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok() && config.set_max_stack_depth(depth).is_ok()
            {
                self.pt.on.store(true, std::sync::atomic::Ordering::Relaxed);
                self.fs.track_reopens();
                if caps.contains(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP) {
                    let _ok = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP).is_ok();
                }
                debug!("FUSE passthrough on (stack depth {depth})");
            }
        }
        // POSIX_ACL: the kernel caches ACLs and checks them itself (as kernel overlayfs
        // does), instead of asking for them on every permission check and `ls -l`.
        let want = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_ASYNC_DIO
            | InitFlags::FUSE_POSIX_ACL
            // The kernel stops asking for security.capability on every write (SB_NOSEC);
            // set-id bits are cleared here instead (write, truncate, O_TRUNC; chown clears
            // them in the upper filesystem itself).
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2
            // Entries with their attributes for listings, plain READDIR when the kernel
            // sees them unused.
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO;
        let have = config.capabilities();
        if let Err(missing) = config.add_capabilities(want & have) {
            debug!("kernel lacks {missing:?}");
        }
        if config.set_max_background(64).is_err() || config.set_congestion_threshold(48).is_err() {
            debug!("kernel refused background limits");
        }
        // FUSE over io_uring: a request reaches a daemon thread on the caller's CPU in one
        // system call per request instead of a read and a write on /dev/fuse.
        let uring = self.uring.wanted
            && caps.contains(InitFlags::FUSE_OVER_IO_URING)
            && config.add_capabilities(InitFlags::FUSE_OVER_IO_URING).is_ok();
        // Every ring slot has a payload buffer as large as the largest request or reply
        // (max(max_write, max_pages pages)), and a ring keeps several slots: with io_uring
        // and passthrough (reads and writes bypass the daemon), 128 KiB requests keep that
        // memory small. Without passthrough the data comes through the daemon: 1 MiB
        // requests (a 1 GiB write 0.55 → 0.40 s; the slots' pages are touched only as
        // requests fill them, about 4 MiB more after it).
        let mut max_write: u32 = if uring && self.pt.is_on() { 128 << 10 } else { 1 << 20 };
        if let Err(max) = config.set_max_write(max_write) {
            max_write = max;
            let _ok = config.set_max_write(max).is_ok();
        }
        let mut readahead = max_write;
        if uring && let Err(max) = config.set_max_readahead(readahead) {
            readahead = max;
            let _ok = config.set_max_readahead(max).is_ok();
        }
        // Without passthrough reads fill the mount's page cache through the daemon, in windows
        // the kernel caps at 128 KiB for FUSE (INIT can only lower it): as large as one
        // request (1 GiB of a cached lower file: 600 → 410 ms over io_uring, 520 → 400 on
        // /dev/fuse). The daemon sets it once the handshake is done, where it may.
        if !self.pt.is_on() {
            self.read_ahead.store(max_write >> 10, std::sync::atomic::Ordering::Relaxed);
        }
        if uring {
            let page = rustix::param::page_size();
            // (pages × page is at least max_write: pages counts max(max_write, readahead).)
            let pages = (max_write.max(readahead) as usize).div_ceil(page);
            let payload = (pages * page).max(8192);
            self.uring.payload.store(payload, std::sync::atomic::Ordering::Relaxed);
            self.uring.negotiated.store(true, std::sync::atomic::Ordering::Relaxed);
            debug!("FUSE over io_uring accepted (payload {payload} bytes)");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guard("lookup", || match cname(name).and_then(|n| self.fs.lookup(parent.0, &n)) {
            Ok(e) => reply_entry(reply, Ok(e)),
            Err(Errno::ENOENT) => reply.entry(&TTL, &negative(), Generation(0)),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        guard("forget", || {
            self.fs.forget(ino.0, nlookup);
            self.pt.forget(ino.0);
        })
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        guard("getattr", || match self.fs.getattr(ino.0, fh.map(|f| f.0)) {
            Ok(a) => reply.attr(&self.fs.attr_ttl(ino.0, TTL), &fattr(&a)),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        flags: Option<BsdFileFlags>,
        kill_suidgid: bool,
        reply: ReplyAttr,
    ) {
        // Nothing to set: the kernel's "remove privileges" before a write the daemon does
        // not see (its ATTR_KILL_* bits are dropped on the way, see FUSE_HANDLE_KILLPRIV_V2).
        let remove_privs = [mode, uid, gid].iter().all(Option::is_none)
            && size.is_none()
            && atime.is_none()
            && mtime.is_none()
            && ctime.is_none()
            && fh.is_none()
            && flags.is_none();
        let sa = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(settime),
            mtime: mtime.map(settime),
            fh: fh.map(|f| f.0),
            // The kernel says when to clear set-id bits (FATTR_KILL_SUIDGID): on a truncate by
            // a caller without CAP_FSETID, and on every chown of a non-directory (which the
            // upper filesystem's own chown does). An empty request carries no such word: the
            // VFS sends one (`file_remove_privs`, `chown(f, -1, -1)`) only when the file has
            // bits to clear, and which ones depends on the caller's CAP_FSETID, which the
            // request does not say; root (of the mount's namespace) stands for it there.
            kill: match remove_privs {
                true => Some(Killer { gid: req.gid(), pid: req.pid(), fsetid: req.uid() == 0 }),
                false => killer(req, kill_suidgid),
            },
            remove_privs,
        };
        // Any change to a lower file copies it up, with its data unless truncated to nothing.
        let slow = size != Some(0) && self.fs.copies_up(ino.0);
        let fs = self.fs.clone();
        self.run(slow, move || {
            guard("setattr", || match fs.setattr(ino.0, sa) {
                Ok(a) => reply.attr(&fs.attr_ttl(ino.0, TTL), &fattr(&a)),
                Err(e) => reply.error(errno(e)),
            })
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        guard("readlink", || reply_data(reply, self.fs.readlink(ino.0)))
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        guard("mknod", || {
            reply_entry(reply, cname(name).and_then(|n| self.fs.mknod(ctx(req), parent.0, &n, mode, u64::from(rdev))))
        })
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        guard("mkdir", || reply_entry(reply, cname(name).and_then(|n| self.fs.mkdir(ctx(req), parent.0, &n, mode))))
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guard("unlink", || reply_empty(reply, cname(name).and_then(|n| self.fs.unlink(parent.0, &n))))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guard("rmdir", || reply_empty(reply, cname(name).and_then(|n| self.fs.rmdir(parent.0, &n))))
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        guard("symlink", || {
            let r = cname(link_name).and_then(|n| {
                let t = CString::new(target.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
                self.fs.symlink(ctx(req), parent.0, &n, &t)
            });
            reply_entry(reply, r)
        })
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        guard("rename", || {
            let r = (|| {
                let (a, b) = (cname(name)?, cname(newname)?);
                let f = URenameFlags::from_raw(flags.bits())?;
                self.fs.rename(parent.0, &a, newparent.0, &b, f)
            })();
            reply_empty(reply, r)
        })
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let (fs, newname) = (self.fs.clone(), newname.to_owned());
        self.run(self.fs.copies_up(ino.0), move || {
            guard("link", || reply_entry(reply, cname(&newname).and_then(|n| fs.link(ino.0, newparent.0, &n))))
        })
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, kill_suidgid: bool, reply: ReplyOpen) {
        // Opening a lower file for writing copies its data up, unless O_TRUNC drops it.
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY && flags.0 & libc::O_TRUNC == 0;
        let (fs, pt) = (self.fs.clone(), self.pt.clone());
        // FUSE_OPEN_KILL_SUIDGID: an O_TRUNC open by a caller without CAP_FSETID.
        let kill = killer(req, kill_suidgid);
        self.run(write && self.fs.copies_up(ino.0), move || {
            guard("open", || reply_open(&fs, &pt, ino.0, flags.0, kill, reply))
        })
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        guard("read", || reply_data(reply, self.fs.read(fh.0, offset, size)))
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = killer(req, write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID));
        guard("write", || match self.fs.write(fh.0, offset, data, kill) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        })
    }

    /// Nothing to do at `close`: writes reach the real file as they happen. `ENOSYS` tells
    /// the kernel not to send `FLUSH` again (one round trip saved per `close`).
    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        guard("release", || {
            self.pt.release(fh.0);
            self.fs.release(fh.0);
            reply.ok()
        })
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        self.run(true, move || guard("fsync", || reply_empty(reply, fs.fsync(fh.0, datasync))))
    }

    /// Directories need no open handle: `ENOSYS` tells the kernel never to send `OPENDIR`
    /// and `RELEASEDIR` again (two round trips saved per directory walked). It then caches
    /// listings as if every open said `FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE` (Linux 6.x); the
    /// listing a reader is part-way through lives on the node ([`UnionFs::readdir`]).
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(fuser::Errno::ENOSYS)
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        guard("readdir", || match self.fs.readdir(ino.0, offset) {
            Ok(list) => {
                for (i, e) in list.entries.iter().enumerate().skip(list.start) {
                    let name = OsStr::from_bytes(e.name.to_bytes());
                    if reply.add(INodeNo(e.ino), list.cookie(i), ftype(e.kind), name) {
                        break;
                    }
                }
                reply.ok();
                self.fs.listed(ino.0, &list);
            }
            Err(e) => reply.error(errno(e)),
        })
    }

    /// `READDIRPLUS` (the kernel asks for it at the start of a directory, and for the rest
    /// once a program stats the entries, as `ls -l` does): the listing with each entry's
    /// attributes, saving one `LOOKUP` round trip per entry — or, while walks do not use
    /// them, only its subdirectories' ([`crate::union::lean`]): the others go as plain
    /// entries (node id 0). Every entry sent with attributes counts as one lookup of its
    /// node, as the kernel counts it.
    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        guard("readdirplus", || match self.fs.readdir(ino.0, offset) {
            Ok(list) => {
                let lean = self.fs.lean_listing();
                if lean {
                    self.fs.listed_lean(ino.0);
                }
                for (i, e) in list.entries.iter().enumerate().skip(list.start) {
                    let name = OsStr::from_bytes(e.name.to_bytes());
                    let off = list.cookie(i);
                    let dots = matches!(e.name.to_bytes(), b"." | b"..");
                    if dots || (lean && !crate::union::lean::keeps_attrs(e)) {
                        // Node id 0: the kernel links no dentry, it shows the number and type
                        // (and links neither dot entry in any case).
                        let attr = FileAttr { ino: INodeNo(e.ino), kind: ftype(e.kind), ..negative() };
                        let id = if dots { e.ino } else { 0 };
                        if reply.add(INodeNo(id), off, name, &Duration::ZERO, &attr, Generation(0)) {
                            break;
                        }
                        continue;
                    }
                    // A name that vanished since the listing was made is left out.
                    let Ok(entry) = self.fs.lookup_listed(ino.0, e, list.seen(i)) else { continue };
                    let ttl = if entry.revalidate { Duration::ZERO } else { TTL };
                    if reply.add(INodeNo(entry.ino), off, name, &ttl, &fattr(&entry.attr), Generation(0)) {
                        // No room: the kernel will not see this entry, so it was not looked up.
                        self.fs.forget(entry.ino, 1);
                        break;
                    }
                }
                reply.ok();
                self.fs.listed(ino.0, &list);
            }
            Err(e) => reply.error(errno(e)),
        })
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        self.run(true, move || guard("fsyncdir", || reply_empty(reply, fs.fsyncdir(ino.0))))
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        guard("statfs", || match self.fs.statfs(ino.0) {
            Ok(s) => reply.statfs(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if is_stats(ino, name) {
            return reply.error(errno(Errno::EPERM));
        }
        let (fs, name, value) = (self.fs.clone(), name.to_owned(), value.to_vec());
        self.run(self.fs.copies_up(ino.0), move || {
            guard("setxattr", || {
                let r = CString::new(name.as_bytes())
                    .map_err(|_| Errno::EINVAL)
                    .and_then(|n| fs.setxattr(ino.0, &n, &value, flags));
                reply_empty(reply, r)
            })
        })
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        guard("getxattr", || {
            if is_stats(ino, name) {
                return reply_xattr(reply, size, Ok(crate::stats::report(self.fs.node_count()).into_bytes()));
            }
            let r = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL).and_then(|n| self.fs.getxattr(ino.0, &n));
            reply_xattr(reply, size, r)
        })
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        guard("listxattr", || reply_xattr(reply, size, self.fs.listxattr(ino.0)))
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if is_stats(ino, name) {
            return reply.error(errno(Errno::EPERM));
        }
        let (fs, name) = (self.fs.clone(), name.to_owned());
        self.run(self.fs.copies_up(ino.0), move || {
            guard("removexattr", || {
                let r =
                    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL).and_then(|n| fs.removexattr(ino.0, &n));
                reply_empty(reply, r)
            })
        })
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        // A created file is new and empty: a truncating open of it has nothing to clear.
        _kill_suidgid: bool,
        reply: ReplyCreate,
    ) {
        guard("create", || match cname(name).and_then(|n| self.fs.create(ctx(req), parent.0, &n, mode, flags)) {
            Ok((e, o)) => reply_created(&self.fs, &self.pt, e, o, flags, reply),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn tmpfile(&self, req: &Request, parent: INodeNo, mode: u32, _umask: u32, flags: i32, reply: ReplyCreate) {
        guard("tmpfile", || match self.fs.tmpfile(ctx(req), parent.0, mode, flags) {
            Ok((e, o)) => reply_created(&self.fs, &self.pt, e, o, flags, reply),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // File attribute flags, which the kernel asks for itself (`lsattr`, `chattr`: its
        // `fileattr_get`/`fileattr_set` open the file and send these); every other ioctl is
        // ENOTTY (the kernel remembers no refusal, and turns ENOSYS into ENOTTY for the
        // caller; Python's open(), for one, asks TCGETS of every file).
        guard("ioctl", || {
            let r = match fileattr_request(cmd, in_data) {
                Some((false, want)) => self.fs.fileattr_get(ino.0, want).map(|a| match a {
                    AttrFlags::Flags(f) => f.to_ne_bytes().to_vec(),
                    AttrFlags::Fsx(x) => x.to_bytes().to_vec(),
                }),
                Some((true, set)) => self.fs.fileattr_set(ino.0, set).map(|()| Vec::new()),
                None => Err(Errno::ENOTTY),
            };
            match r {
                Ok(data) => reply.ioctl(0, &data),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.run(true, move || guard("fallocate", || reply_empty(reply, fs.fallocate(fh.0, offset, length, mode))))
    }

    fn lseek(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        guard("lseek", || match self.fs.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let fs = self.fs.clone();
        self.run(true, move || {
            guard("copy_file_range", || match fs.copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len) {
                Ok(n) => reply.written(n as u32),
                Err(e) => reply.error(errno(e)),
            })
        })
    }
}

//! Open files and their data (the kernel's `file.c`).
//!
//! Opening for writing (or with `O_TRUNC`) copies the file up first; `O_TRUNC` copies no
//! data. Each open handle holds its own real descriptor, so a file opened before a copy-up
//! keeps reading the lower data, as in the kernel.

use crate::union::inode::Killer;
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};

use crate::error::{Errno, Res};
use crate::sys::io as sio;
use crate::sys::open::{self, OFlags};
use crate::sys::stat::FileKind;
use crate::union::copy_up::Data;
use crate::union::fileattr::Change;
use crate::union::node::{Identity, Loc, Lower, Node, NodeSpec, flag};
use crate::union::tables::{FileHandle, Handle, Side};
use crate::union::{Ctx, Entry, UnionFs};

/// How a file was opened, for the adapter's reply flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Handle number.
    pub fh: u64,
    /// Whether the kernel may keep cached pages across opens (the union is the only writer).
    pub keep_cache: bool,
}

/// The kernel's `__FMODE_EXEC` in the open flags: an open by `execve` (or `uselib`).
const FMODE_EXEC: i32 = 0x20;

/// Open flags passed on to the real file: access mode and the synchronous-I/O flags.
/// `O_APPEND` is left to the kernel, which sends writes at the end of the file; `O_DIRECT`
/// is left out since the union's buffers are not aligned.
fn real_flags(flags: i32) -> OFlags {
    let keep = libc::O_ACCMODE | libc::O_SYNC | libc::O_DSYNC;
    OFlags::from_bits_retain((flags & keep) as u32)
}

impl UnionFs {
    /// `open`.
    pub fn open(&self, ino: u64, flags: i32, kill: Option<Killer>) -> Res<Opened> {
        let node = self.inodes.get(ino)?;
        if node.is_dir() {
            return Err(Errno::EISDIR);
        }
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let trunc = flags & libc::O_TRUNC != 0;
        let mut oflags = real_flags(flags);
        if write || trunc {
            self.deny(&node, Change::Write(flags & libc::O_APPEND != 0))?;
            if trunc {
                self.deny(&node, Change::Truncate)?;
            }
            if self.handles.executing(ino) {
                return Err(Errno::ETXTBSY);
            }
            self.layers.upper()?;
            if !node.has_upper() || node.has(flag::METACOPY) {
                self.copy_up_data(&node, if trunc { Data::Truncate(0) } else { Data::Full })?;
            }
            self.link_up_walked(&node)?;
            // Also after a copy-up that copied no data: the real `O_TRUNC` marks the times
            // for update, as `open(2)` does whether or not the file was empty (and truncates
            // an indexed copy, which was linked, not copied).
            if trunc {
                oflags |= OFlags::TRUNC;
            }
        }
        // Whether a truncate by a caller without CAP_FSETID has set-id bits to clear (asked
        // before the real O_TRUNC, which may clear them itself, see `kill_privs`).
        let kills = trunc && kill.is_some() && super::inode::is_sxid(self.getattr(ino, None)?.perm);
        let (fd, side) = self.stable(|| {
            // A metadata-only copy opened for reading reads the lower data.
            let r = self.data_real(&node)?;
            Ok((open::open_file(&*r.dir, &r.name, oflags)?, r.side))
        })?;
        let mut h = FileHandle::new(node, fd, side == Side::Upper);
        h.exec = flags & FMODE_EXEC != 0;
        let fh = self.handles.insert(h);
        if kills
            && let Some(k) = kill
            && let Err(e) = self.kill_privs(ino, Some(fh), &k)
        {
            self.release(fh);
            return Err(e);
        }
        Ok(Opened { fh, keep_cache: true })
    }

    /// `create`: makes and opens a new regular file.
    pub fn create(&self, ctx: Ctx, parent: u64, name: &CStr, mode: u32, flags: i32) -> Res<(Entry, Opened)> {
        let oflags = real_flags(flags);
        let (node, st, fd) = self.create_file(ctx, parent, name, mode, oflags)?;
        // The kernel asks for `security.capability` before the first write of every new
        // file: a new file usually has no extended attributes, which its descriptor tells at
        // once (an inherited ACL or a security label is read the usual way when asked).
        if self.opts.xattrs
            && crate::sys::xattr::list(crate::sys::xattr::XTarget::Fd(fd.as_fd())).is_ok_and(|n| n.is_empty())
        {
            node.cache_xattrs(Vec::new());
        }
        let entry = Entry { ino: node.ino, attr: self.attr_overridden(&node, &st), revalidate: false };
        let fh = self.handles.insert(FileHandle::new(node, fd, true));
        Ok((entry, Opened { fh, keep_cache: true }))
    }

    /// `open(O_TMPFILE)`: a new unnamed regular file in directory `parent` (copied up
    /// first), open, as kernel overlayfs makes one in the upper directory. Its node counts as
    /// removed (its object is its descriptor) until [`UnionFs::link`] names it.
    pub fn tmpfile(&self, ctx: Ctx, parent: u64, mode: u32, flags: i32) -> Res<(Entry, Opened)> {
        let perm = mode & 0o7777;
        self.deny(&self.inodes.get(parent)?, Change::AddEntry)?;
        let (dir, up, pfd) = self.upper_parent(parent)?;
        let (owner, _) = self.new_owner(ctx, pfd.as_fd())?;
        let fd = up.tmpfile(pfd.as_fd(), real_flags(flags), perm)?;
        let new = super::dir::NewObject { owner, kind: FileKind::Regular, perm };
        self.fix_owner(up, pfd.as_fd(), c"", Some(&fd), &new)?;
        let st = crate::sys::stat::fstat(&fd)?;
        let spec = NodeSpec {
            kind: FileKind::Regular,
            identity: Identity { fs: self.layers.upper_fs(dir.vol), ino: st.ino },
            upper_ino: st.ino,
            lower: Lower::None,
            flags: flag::UPPER,
            loc: Loc { parent: Some(dir.clone()), name: c"".into() },
            vol: dir.vol,
            index_key: None,
        };
        let node = self.inodes.intern(spec, &self.layers.xino);
        node.set_orphan(open::open_path_of(fd.as_fd())?);
        self.inodes.retire(&node);
        node.cache_xattrs(Vec::new());
        let entry = Entry { ino: node.ino, attr: self.attr_overridden(&node, &st), revalidate: false };
        let fh = self.handles.insert(FileHandle::new(node, fd, true));
        Ok((entry, Opened { fh, keep_cache: true }))
    }

    fn with_file<T>(&self, fh: u64, f: impl FnOnce(&FileHandle) -> Res<T>) -> Res<T> {
        f(&*self.handles.file(fh)?)
    }

    /// The descriptor to read through: the handle's own, or — for a handle opened on a lower
    /// file that was copied up since — the upper copy.
    pub(crate) fn read_fd<'a>(&self, f: &'a FileHandle) -> Res<BorrowedFd<'a>> {
        if f.upper || !f.node.has_upper() || f.node.has(flag::METACOPY) {
            return Ok(f.fd.as_fd());
        }
        if let Some(fd) = f.reopened.get() {
            return Ok(fd.as_fd());
        }
        let fd = self.stable(|| {
            let r = self.real(&f.node)?;
            open::open_file(&*r.dir, &r.name, OFlags::RDONLY)
        })?;
        // A racing reader may have set it first; either descriptor is the same file.
        let _lost_race = f.reopened.set(fd);
        f.reopened.get().map(|fd| fd.as_fd()).ok_or(Errno::EIO)
    }

    /// `read`.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Res<Vec<u8>> {
        self.with_file(fh, |f| sio::pread(self.read_fd(f)?, offset, size as usize))
    }

    /// `read` into `buf` (as much as it holds): the number of bytes read, fewer only at the
    /// end of the file.
    pub fn read_into(&self, fh: u64, offset: u64, buf: &mut [u8]) -> Res<usize> {
        self.with_file(fh, |f| sio::pread_into(self.read_fd(f)?, offset, buf))
    }

    /// `write`. With `kill` (the writer lacks `CAP_FSETID`) set-user-id and set-group-id
    /// are cleared, as the kernel leaves to us (`FUSE_HANDLE_KILLPRIV_V2`).
    pub fn write(&self, fh: u64, offset: u64, data: &[u8], kill: Option<Killer>) -> Res<usize> {
        let (n, ino, sxid) = self.with_file(fh, |f| {
            if !f.upper {
                return Err(Errno::EBADF);
            }
            let up = self.layers.upper()?;
            let end = offset + data.len() as u64;
            // The mode before the write, where a writer without CAP_FSETID may have bits to
            // clear: the upper filesystem may clear them itself with it (see `kill_privs`).
            let perm = match (kill, self.opts.override_stat) {
                (None, _) => 0,
                (Some(_), Some(_)) => 0o6010,
                (Some(_), None) => crate::sys::stat::fstat(&f.fd)?.perm(),
            };
            let n =
                up.charged(f.fd.as_fd(), |b| Some(end.saturating_sub(b.size)), || sio::pwrite(&f.fd, offset, data))?;
            // The upper filesystem dropped file capabilities with the write.
            if f.node.cached_xattrs().is_some_and(|x| x.iter().any(|(n, _)| n == b"security.capability")) {
                f.node.forget_xattrs();
            }
            Ok((n, f.node.ino, super::inode::is_sxid(perm)))
        })?;
        if let Some(k) = kill
            && sxid
        {
            self.kill_privs(ino, Some(fh), &k)?;
        }
        Ok(n)
    }

    /// `fsync` / `fdatasync` (skipped on a volatile mount).
    pub fn fsync(&self, fh: u64, datasync: bool) -> Res<()> {
        if self.layers.upper.as_ref().is_some_and(|u| !u.sync()) {
            return Ok(());
        }
        self.with_file(fh, |f| if datasync { sio::fdatasync(&f.fd) } else { sio::fsync(&f.fd) })
    }

    /// `fsyncdir`: syncs the upper directory.
    pub fn fsyncdir(&self, ino: u64) -> Res<()> {
        let Some(up) = self.layers.upper.as_ref() else {
            return Ok(());
        };
        if !up.sync() {
            return Ok(());
        }
        let node = self.inodes.get(ino)?;
        if !node.has_upper() {
            return Ok(());
        }
        let fd = self.dir_fd(&node, Side::Upper)?;
        let rd = open::open_dir_for_read(&*fd)?;
        sio::fsync(&rd)
    }

    /// An open file's handle (for the adapter, to hand its real file to the kernel for
    /// passthrough).
    pub fn file_handle(&self, fh: u64) -> Res<std::sync::Arc<Handle>> {
        self.handles.file(fh)
    }

    /// Retires node `ino` from lookups and has the kernel drop its names, so they resolve to
    /// a fresh node (the adapter's answer when the kernel inode is pinned to a real file the
    /// object left, see [`super::node::flag::SUPERSEDED`]).
    pub fn supersede(&self, ino: u64) -> Res<()> {
        let node = self.inodes.get(ino)?;
        self.inodes.supersede(&node);
        let names: Vec<(u64, std::ffi::CString)> = {
            let l = node.locs.read();
            std::iter::once(&l.first)
                .chain(l.more.iter())
                .filter_map(|x| x.parent.as_ref().map(|p| (p.ino, std::ffi::CString::from(&x.name))))
                .collect()
        };
        for (parent, name) in names {
            self.inval_entry(parent, &name);
        }
        // Its open descriptors still show the object, which changes through the new node
        // from now on: nothing the kernel cached of it holds (see [`UnionFs::attr_ttl`]).
        self.inval_attrs_now(ino);
        Ok(())
    }

    /// How long the kernel may keep attributes of `ino`: `ttl`, except for a node retired
    /// for a stale pinned file, whose object changes through another node.
    pub fn attr_ttl(&self, ino: u64, ttl: std::time::Duration) -> std::time::Duration {
        match self.inodes.get(ino) {
            Ok(n) if n.has(flag::SUPERSEDED) => std::time::Duration::ZERO,
            _ => ttl,
        }
    }

    /// `release`.
    pub fn release(&self, fh: u64) {
        if let Some(h) = self.handles.remove(fh) {
            self.let_go_if_closed(&h.node);
            if super::idle::small_lower(&h) {
                self.idle.small_closed(h.node.ino);
            }
            if h.page_cached.load(std::sync::atomic::Ordering::Relaxed) && !h.upper && !self.handles.is_open(h.node.ino)
            {
                self.idle.closed(h.node.ino);
            }
        }
    }

    /// A removed regular file's descriptor is kept only while the file is open: its space is
    /// free once the last handle goes (the release and the unlink may be served in either
    /// order; each checks after its own change, so one of them sees the other's).
    pub(crate) fn let_go_if_closed(&self, node: &Node) {
        if node.kind == FileKind::Regular && node.has(flag::DEAD) && !self.handles.is_open(node.ino) {
            node.take_orphan();
        }
    }

    /// `fallocate`.
    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> Res<()> {
        self.with_file(fh, |f| {
            if !f.upper {
                return Err(Errno::EBADF);
            }
            let need = if mode & libc::FALLOC_FL_PUNCH_HOLE == 0 { Some(len) } else { None };
            self.layers.upper()?.charged(f.fd.as_fd(), |_| need, || sio::fallocate(&f.fd, mode, offset, len))
        })
    }

    /// `lseek` (the kernel forwards `SEEK_DATA` and `SEEK_HOLE`).
    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Res<u64> {
        self.with_file(fh, |f| sio::lseek(self.read_fd(f)?, offset, whence))
    }

    /// `copy_file_range` between two open files of the mount.
    pub fn copy_file_range(&self, fh_in: u64, off_in: u64, fh_out: u64, off_out: u64, len: u64) -> Res<usize> {
        let hin = self.handles.file(fh_in)?;
        let hout = self.handles.file(fh_out)?;
        if !hout.upper {
            return Err(Errno::EBADF);
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 30);
        let src = self.read_fd(&hin)?;
        let end = off_out + len as u64;
        self.layers.upper()?.charged(
            hout.fd.as_fd(),
            |b| Some(end.saturating_sub(b.size)),
            || sio::copy_file_range(src, off_in, hout.fd.as_fd(), off_out, len),
        )
    }
}

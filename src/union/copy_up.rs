//! How does a lower object become writable? (the kernel's `copy_up.c`)
//!
//! The protocol, in this order:
//! 1. copy up the parent directories first (each by this same protocol);
//! 2. build a temporary in the work directory;
//! 3. copy data before xattrs (writing data clears `security.capability`): reflink, else
//!    `copy_file_range` over data extents (holes stay holes), else `sendfile`, else read/write;
//! 4. copy xattrs (not the union's private ones), then owner, then mode, then timestamps
//!    (nanoseconds); record the origin in `overlay.origin` (kernel format);
//! 5. fsync the temporary (unless the mount is volatile), then one rename into the upper
//!    directory: the only step that makes it visible;
//! 6. restore the upper parent's timestamps (copy-up is not a change to the parent) and mark
//!    it `impure` as the kernel does;
//! 7. a concurrent copy-up that finds the object already there is a success.
//!
//! A crash at any point leaves the lower view or the complete copy; the temporary is removed
//! at the next mount. Lower layers are only read.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use tracing::debug;

use crate::error::{Errno, Res};
use crate::sys::fs::{RenameMode, SetTime};
use crate::sys::open::{self, OFlags};
use crate::sys::stat::{self, FileKind, Stat};
use crate::sys::xattr::{self, SetMode, XTarget};
use crate::sys::{fs as sfs, handle, io as sio};
use crate::union::UnionFs;
use crate::union::layer::Upper;
use crate::union::node::{Lower, Node, flag};
use crate::union::tables::Side;

/// How much data a copy-up copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data {
    /// All of it.
    Full,
    /// Only the first `n` bytes, and the copy gets size `n` (a truncate or `O_TRUNC`).
    Truncate(u64),
    /// None (a metadata-only copy-up, `metacopy`): the copy has the size but no data, and
    /// is marked to be read from the lower file until its data is copied.
    Meta,
}

/// What a copy-up copies from: the lower object (`name` in directory `dir` of the layer
/// with `uuid`, with status `st`), and for a lower metadata-only copy the file holding its
/// data.
struct CopyFrom<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
    uuid: &'a [u8; 16],
    data_from: Option<&'a crate::union::Real>,
    st: &'a Stat,
}

impl UnionFs {
    /// Whether changing node `ino` would copy a regular file's data up (so the adapter can
    /// run the request where waiting on that I/O blocks no one).
    pub fn copies_up(&self, ino: u64) -> bool {
        self.inodes
            .get(ino)
            .is_ok_and(|n| n.kind == FileKind::Regular && (!n.has_upper() || n.has(flag::METACOPY)) && n.vol == 0)
    }

    /// Copies `node` up for a change of its metadata only: without the data when the mount
    /// has `metacopy` and `node` is a regular file, else as [`UnionFs::copy_up`].
    pub(crate) fn copy_up_meta(&self, node: &Arc<Node>) -> Res<()> {
        if self.opts.metacopy && node.kind == FileKind::Regular && node.vol == 0 {
            if node.has_upper() {
                return Ok(());
            }
            return self.copy_up_data(node, Data::Meta);
        }
        self.copy_up(node)
    }

    /// Copies `node` up (with all its data) unless it is already in the upper layer.
    pub(crate) fn copy_up(&self, node: &Arc<Node>) -> Res<()> {
        self.copy_up_data(node, Data::Full)
    }

    /// Copies `node` up, copying only as much data as `data` says.
    pub(crate) fn copy_up_data(&self, node: &Arc<Node>, data: Data) -> Res<()> {
        if node.has_upper() {
            if node.has(flag::METACOPY) && data != Data::Meta {
                return self.stable(|| self.finish_metacopy(node, data));
            }
            return Ok(());
        }
        if node.has(flag::DEAD) {
            // A lower object whose name was removed or replaced, changed through a
            // descriptor: there is no name to copy it up under (and whatever the upper now
            // holds there is another object). Kernel overlayfs answers the same.
            return Err(Errno::EEXIST);
        }
        let up = self.layers.upper()?;
        loop {
            let parent = node.parent().ok_or(Errno::EIO)?;
            self.copy_up(&parent)?;
            let _guard = node.copy_up_lock.lock();
            if node.has_upper() {
                return Ok(());
            }
            // The name may have moved to another parent (a hard link's other name) meanwhile.
            let loc = node.loc();
            let parent = loc.parent.ok_or(Errno::EIO)?;
            if !parent.has_upper() {
                continue;
            }
            return self.stable(|| self.copy_up_locked(up, node, &parent, &loc.name, data));
        }
    }

    fn copy_up_locked(&self, up: &Upper, node: &Arc<Node>, parent: &Arc<Node>, name: &CStr, data: Data) -> Res<()> {
        let src = self.real(node)?;
        let Side::Lower(idx) = src.side else {
            return Ok(());
        };
        let uuid = self.layers.lower(idx)?.uuid;
        let pfd = self.dir_fd(parent, Side::Upper)?;
        let st = stat::statat(&*src.dir, &src.name)?;
        if st.kind() != Some(node.kind) {
            // Replaced behind the mount's back by another kind of object (a FIFO for a file):
            // not what the caller looked up; the kernel looks the name up again.
            return Err(Errno::ESTALE);
        }
        let parent_times = stat::fstat(&*pfd)?;
        // A lower hard link under `index=on`: another name's copy may be in the index already.
        let key = self.index_key(src.dir.as_fd(), &src.name, &st, &uuid);
        if let (Some(k), Some(index)) = (&key, self.index_dir())
            && self.indexed(k)
        {
            return self.link_up_from_index(up, index, k, node, pfd.as_fd(), name, st.nlink);
        }
        // A lower metadata-only copy: its data is in a layer below (the copy gets all of it).
        let data_from = match node.lower {
            Lower::Meta { .. } => Some(self.data_real(node)?),
            _ => None,
        };
        let data = if (key.is_some() || data_from.is_some()) && data == Data::Meta { Data::Full } else { data };
        let tmp = up.temp_name();
        let from =
            CopyFrom { dir: src.dir.as_fd(), name: &src.name, uuid: &uuid, data_from: data_from.as_ref(), st: &st };
        let mut built = self.build_copy(up, node, &from, &tmp, data);
        if let (Some(k), Some(index), true) = (&key, self.index_dir(), built.is_ok()) {
            // Into the index first: the upper inode gets its other names from there. Shown
            // link count: the lower one, stored relative to it (`L+0`), which holds however
            // many upper links exist when a crash comes; settled once this name is linked.
            let names = up.dialect.names();
            built = up
                .set_xattr(
                    XTarget::At(up.work(), &tmp),
                    names.nlink,
                    &crate::union::index::encode_nlink(crate::union::index::StoredNlink::Lower(0)),
                    SetMode::Any,
                )
                .and_then(|()| up.link(up.work(), &tmp, index, k));
        }
        if let Err(e) = built {
            up.discard(&tmp);
            return Err(e);
        }
        if !self.publish_copy(up, &tmp, node, pfd.as_fd(), name, &st)? {
            return Ok(());
        }
        crate::stats::add(crate::stats::Counter::CopyUps, 1);
        let upper_ino = stat::statat(&*pfd, name)?.ino;
        // Step 6: the parent did not change as far as the merged view is concerned.
        let restore =
            up.utimens(pfd.as_fd(), crate::sys::DOT, SetTime::At(parent_times.atime), SetTime::At(parent_times.mtime));
        if let Err(e) = restore {
            debug!("cannot restore parent times after copy-up: {e}");
        }
        // The parent may now hold an object whose number is not its real one (kernel
        // `ovl_do_copy_up`: every copy-up marks it, merged or not): kernel overlayfs reads
        // this upper's directory entries' numbers right only where it is marked.
        self.mark_impure(up, parent, pfd.as_fd());
        self.copied_up(node, parent, &st, data, key.as_deref(), upper_ino);
        Ok(())
    }

    /// Another name of an indexed lower hard link, copied up already: linked to the index's
    /// upper inode (`nlink`: the lower link count).
    #[allow(clippy::too_many_arguments)]
    fn link_up_from_index(
        &self,
        up: &Upper,
        index: BorrowedFd<'_>,
        key: &CStr,
        node: &Arc<Node>,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        nlink: u64,
    ) -> Res<()> {
        self.link_index(up, index, key, pfd, name, nlink)?;
        let upper_ino = stat::statat(pfd, name)?.ino;
        node.set_indexed(key);
        node.set(flag::ORIGIN);
        node.set_upper(upper_ino);
        node.forget_xattrs();
        self.inodes.register_upper(node);
        Ok(())
    }

    /// Renames the finished copy `tmp` into place: true if it is the copy now, false if
    /// another copy-up of the object finished first (step 7; the node then uses that one).
    fn publish_copy(
        &self,
        up: &Upper,
        tmp: &CStr,
        node: &Arc<Node>,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        st: &Stat,
    ) -> Res<bool> {
        match up.rename(up.work(), tmp, pfd, name, RenameMode::NoReplace) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => {
                up.discard(tmp);
                let now = stat::statat(pfd, name)?;
                if now.kind() != st.kind() {
                    return Err(Errno::EEXIST);
                }
                node.set_upper(now.ino);
                self.inodes.register_upper(node);
                Ok(false)
            }
            Err(e) => {
                up.discard(tmp);
                Err(e)
            }
        }
    }

    /// The node after its copy-up (`st`: the lower object's status, `key`: its index key
    /// under `index=on`, `upper_ino`: the copy's number).
    fn copied_up(
        &self,
        node: &Arc<Node>,
        parent: &Arc<Node>,
        st: &Stat,
        data: Data,
        key: Option<&CStr>,
        upper_ino: u64,
    ) {
        if !node.is_dir() {
            node.set(flag::ORIGIN);
        } else if !self.watching() {
            node.set(flag::MADE_HERE);
        }
        if data == Data::Meta && st.is_reg() {
            node.set(flag::METACOPY);
        }
        node.set_upper(upper_ino);
        node.forget_xattrs();
        self.inodes.register_upper(node);
        if let (Some(k), Some(index)) = (key, self.index_dir()) {
            // The other names stay as they are until a change goes through them (lazy
            // link-up, as the kernel's): they reach the upper inode through the index.
            node.set_indexed(k);
            self.load_nlink_diff(upper_ino, XTarget::At(index, k), Some(st.nlink));
        } else if !node.is_dir() && st.nlink > 1 {
            // One name of a lower hard link, copied up alone: an object of its own, numbered
            // as its upper file (the other names keep the lower number).
            self.split_lower_links(node);
            let fs = self.layers.upper_fs(node.vol);
            node.set_shown(self.layers.xino.map(fs, upper_ino).unwrap_or(node.ino));
            // Its directory entry's number changed with it (the parent's times did not, so
            // the kernel would keep its cached listing).
            parent.touch_dir();
            self.inval_dir_now(parent.ino);
        }
        if node.is_dir() {
            // Now a merged directory, it shows one link, as the kernel's do (the kernel's
            // cached count would stay until it looks again); no cached descriptor is stale.
            self.inval_attrs_now(node.ino);
        }
    }

    /// A lower file with several names became one upper file under one of them. As in
    /// kernel overlayfs (without an index), the other names keep showing the lower file: a
    /// different object now. Forget them on this node and have the kernel look them up again.
    fn split_lower_links(&self, node: &Arc<Node>) {
        let others = {
            let mut locs = node.locs.write();
            locs.more.take()
        };
        for l in others {
            if let Some(p) = &l.parent {
                self.inval_entry(p.ino, &l.name);
            }
        }
    }

    /// Marks the upper directory of `dir` (open as `dfd`) `impure` once: it holds copied-up
    /// or moved objects, whose directory entries the kernel must renumber.
    pub(crate) fn mark_impure(&self, up: &Upper, dir: &Node, dfd: std::os::fd::BorrowedFd<'_>) {
        if dir.has(flag::IMPURE) || dir.vol != 0 {
            return;
        }
        let names = up.dialect.names();
        match up.set_xattr(XTarget::At(dfd, crate::sys::DOT), names.impure, b"y", SetMode::Any) {
            Ok(()) => dir.set(flag::IMPURE),
            // An upper without xattrs has no origins either.
            Err(e) => debug!("cannot mark a directory impure: {e}"),
        }
    }

    /// Copies the data of a metadata-only copy (`metacopy`) into it: opened for writing or
    /// truncated. The data goes into the upper file in place, then the marker goes; until
    /// then a crash leaves a file that still reads the lower data (the same bytes), as in the
    /// kernel's `ovl_copy_up_meta_inode_data`.
    fn finish_metacopy(&self, node: &Arc<Node>, data: Data) -> Res<()> {
        let _guard = node.copy_up_lock.lock();
        if !node.has(flag::METACOPY) {
            return Ok(());
        }
        let up = self.layers.upper()?;
        let lower = self.data_real(node)?;
        let src = open::open_file(&*lower.dir, &lower.name, OFlags::RDONLY)?;
        let src_size = stat::fstat(&src)?.size;
        let r = self.upper_real(node)?;
        let dst = open::open_file(&*r.dir, &r.name, OFlags::WRONLY)?;
        let before = stat::fstat(&dst)?;
        let size = before.size;
        // A truncation to `n` keeps at most `n` bytes: the data beyond never comes up, and
        // the file never shows zeros where the lower file had data.
        let keep = match data {
            Data::Truncate(n) => n.min(size),
            _ => size,
        };
        let len = keep.min(src_size);
        up.step();
        let rep = up.charged(dst.as_fd(), |_| Some(len), || sio::copy_data(&src, &dst, len, src_size, up.sync()))?;
        // copy_data leaves the size at `len`; the file keeps the size it had (up to `keep`).
        if stat::fstat(&dst)?.size != keep {
            sio::ftruncate(dst.as_fd(), keep)?;
        }
        // Bringing the data up changes nothing the merged view shows: the times stay (what
        // the caller does next, a write or a truncation, sets them as it would anyway).
        crate::sys::fs::futimens(&dst, SetTime::At(before.atime), SetTime::At(before.mtime))?;
        crate::stats::add(crate::stats::Counter::CopyUpBytes, len);
        debug!(op = "metacopy data", ino = node.ino, len, cloned = rep.cloned, copied = rep.copied);
        if up.sync() {
            sio::fdatasync(&dst)?;
        }
        match up.remove_xattr(XTarget::Fd(dst.as_fd()), up.dialect.names().metacopy) {
            Ok(()) | Err(Errno::ENODATA) => {}
            Err(e) => return Err(e),
        }
        node.clear(flag::METACOPY);
        node.forget_xattrs();
        Ok(())
    }

    /// Steps 2–5 up to (not including) the rename: builds the complete copy as `tmp` in the
    /// work dir.
    fn build_copy(&self, up: &Upper, node: &Node, from: &CopyFrom<'_>, tmp: &CStr, data: Data) -> Res<()> {
        let (work, ldir, lname, st) = (up.work(), from.dir, from.name, from.st);
        let kind = st.kind().ok_or(Errno::EIO)?;
        match kind {
            FileKind::Regular => self.build_file_copy(up, node, from, tmp, data),
            FileKind::Directory => {
                up.mkdir(work, tmp, 0o700)?;
                self.copy_xattrs(up, XTarget::At(ldir, lname), XTarget::At(work, tmp))?;
                let src = open::openat(ldir, lname, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
                self.copy_fileattr(up, &src, XTarget::At(work, tmp), || {
                    open::openat(work, tmp, OFlags::RDONLY | OFlags::DIRECTORY, 0)
                })?;
                self.finish_copy(up, tmp, from)
            }
            FileKind::Symlink => {
                let target = sfs::readlinkat(ldir, lname)?;
                let target = std::ffi::CString::new(target).map_err(|_| Errno::EIO)?;
                up.symlink(&target, work, tmp)?;
                self.copy_xattrs(up, XTarget::At(ldir, lname), XTarget::At(work, tmp))?;
                self.finish_copy(up, tmp, from)
            }
            FileKind::CharDev | FileKind::BlockDev | FileKind::Fifo | FileKind::Socket => {
                up.mknod(work, tmp, kind, 0o600, st.rdev)?;
                self.copy_xattrs(up, XTarget::At(ldir, lname), XTarget::At(work, tmp))?;
                self.finish_copy(up, tmp, from)
            }
        }
    }

    /// The last steps of a copy of anything but a regular file, `tmp` in the work dir: the
    /// owner, the mode (a symlink has none to set), the times and the origin.
    fn finish_copy(&self, up: &Upper, tmp: &CStr, from: &CopyFrom<'_>) -> Res<()> {
        let (work, st) = (up.work(), from.st);
        self.copy_owner(up, work, tmp, st)?;
        if st.kind() != Some(FileKind::Symlink) {
            up.chmod(work, tmp, st.perm())?;
        }
        up.utimens(work, tmp, SetTime::At(st.atime), SetTime::At(st.mtime))?;
        self.set_origin(up, from.dir, from.name, XTarget::At(work, tmp), from.uuid);
        Ok(())
    }

    /// [`UnionFs::build_copy`] of a regular file: its data (`data`: all of it, a truncated
    /// part, or none for a metadata-only copy), xattrs, attribute flags, owner, mode, times
    /// and origin; on disk before it is renamed into place.
    fn build_file_copy(&self, up: &Upper, node: &Node, from: &CopyFrom<'_>, tmp: &CStr, data: Data) -> Res<()> {
        let (work, ldir, lname, uuid, data_from, st) =
            (up.work(), from.dir, from.name, from.uuid, from.data_from, from.st);
        let src = open::open_file(ldir, lname, OFlags::RDONLY)?;
        let data_src = match data_from {
            Some(r) => Some(open::open_file(&*r.dir, &r.name, OFlags::RDONLY)?),
            None => None,
        };
        let dst = up.create(work, tmp, OFlags::WRONLY, 0o600)?;
        let len = match data {
            Data::Full => st.size,
            Data::Truncate(n) => n,
            Data::Meta => 0,
        };
        up.step();
        // Within the size limit, or nothing is copied and the lower version stays.
        let need = st.blocks.saturating_mul(512).min(len.next_multiple_of(4096));
        let rep = up.charged(
            dst.as_fd(),
            |_| Some(need),
            || sio::copy_data(data_src.as_ref().unwrap_or(&src), &dst, len, st.size, up.sync()),
        )?;
        debug!(op = "copy-up data", ino = node.ino, len, cloned = rep.cloned, copied = rep.copied);
        crate::stats::add(crate::stats::Counter::CopyUpBytes, len);
        self.copy_xattrs(up, XTarget::At(ldir, lname), XTarget::Fd(dst.as_fd()))?;
        self.copy_fileattr(up, &src, XTarget::Fd(dst.as_fd()), || Ok(dst.as_fd()))?;
        self.copy_owner(up, work, tmp, st)?;
        up.fchmod(dst.as_fd(), st.perm())?;
        crate::sys::fs::futimens(&dst, SetTime::At(st.atime), SetTime::At(st.mtime))?;
        self.set_origin(up, ldir, lname, XTarget::Fd(dst.as_fd()), uuid);
        if data == Data::Meta {
            // The size without the data: the lower file holds it (`metacopy`).
            sio::ftruncate(dst.as_fd(), st.size)?;
            up.set_xattr(XTarget::Fd(dst.as_fd()), up.dialect.names().metacopy, b"", SetMode::Any)?;
            crate::sys::fs::futimens(&dst, SetTime::At(st.atime), SetTime::At(st.mtime))?;
        }
        if up.sync() {
            // Data must be on disk before the rename makes it visible (as the kernel does): a
            // power cut must not leave an empty or partial upper file hiding the lower one.
            // Metadata goes to the journal before the rename does.
            sio::fdatasync(&dst)?;
        }
        Ok(())
    }

    /// Copies every xattr except the union's private ones. Attributes the upper cannot take
    /// (a namespace this process may not write, an unsupported one) are skipped, as the
    /// kernel does.
    pub(crate) fn copy_xattrs(&self, up: &Upper, from: XTarget<'_>, to: XTarget<'_>) -> Res<()> {
        for name in xattr::list(from)? {
            if self.opts.dialect.is_private(&name) {
                continue;
            }
            let Ok(cname) = std::ffi::CString::new(name) else {
                continue;
            };
            let Some(value) = xattr::get(from, &cname)? else {
                continue;
            };
            match up.set_xattr(to, &cname, &value, SetMode::Any) {
                Ok(()) => {}
                Err(Errno::EPERM) | Err(Errno::EACCES) | Err(Errno::EOPNOTSUPP) | Err(Errno::EINVAL) => {
                    debug!("copy-up skips xattr {cname:?}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Gives the temporary the lower object's owner. Without the privilege to do so, an
    /// object owned by someone else cannot be copied up faithfully: that is `EPERM`, and the
    /// copy-up does not happen.
    fn copy_owner(&self, up: &Upper, dir: BorrowedFd<'_>, name: &CStr, st: &Stat) -> Res<()> {
        let cur = stat::statat(dir, name)?;
        if cur.uid == st.uid && cur.gid == st.gid {
            return Ok(());
        }
        up.chown(dir, name, Some(st.uid), Some(st.gid))
    }

    /// Records where the copy came from, in the kernel's `overlay.origin` format (a null
    /// handle when the lower filesystem cannot export handles). Best effort: a filesystem
    /// without xattrs still works, only without `st_ino` stability across remounts.
    fn set_origin(&self, up: &Upper, ldir: BorrowedFd<'_>, lname: &CStr, to: XTarget<'_>, uuid: &[u8; 16]) {
        let value = match handle::name_to_handle_at(ldir, lname) {
            Ok(fh) => encode_origin(fh.kind, &fh.bytes, uuid),
            Err(_) => Vec::new(),
        };
        if let Err(e) = up.set_xattr(to, up.dialect.names().origin, &value, SetMode::Any) {
            debug!("cannot record copy-up origin: {e}");
        }
    }
}

/// Encodes a file handle as the kernel's `struct ovl_fb`: version 0, magic 0xfb, total
/// length, flags (CPU endian = little endian: 0), handle type, the lower filesystem's UUID
/// (as the kernel records it with `uuid=on`; null where the filesystem has none), then the
/// handle bytes.
pub fn encode_origin(kind: i32, fid: &[u8], uuid: &[u8; 16]) -> Vec<u8> {
    let len = 5 + 16 + fid.len();
    let mut v = Vec::with_capacity(len);
    let flags = if cfg!(target_endian = "big") { 1u8 } else { 0u8 };
    v.extend_from_slice(&[0, 0xfb, len.min(255) as u8, flags, kind as u8]);
    v.extend_from_slice(uuid);
    v.extend_from_slice(fid);
    v
}

/// `statfs` magic numbers of filesystems whose file handle layout is known.
pub mod magic {
    /// ext2/3/4.
    pub const EXT4: i64 = 0xEF53;
    /// XFS.
    pub const XFS: i64 = 0x5846_5342;
    /// Btrfs.
    pub const BTRFS: i64 = 0x9123_683E;
    /// tmpfs.
    pub const TMPFS: i64 = 0x0102_1994;
}

/// The filesystem UUID recorded in an origin value (`None` if it is not one).
pub fn origin_uuid(v: &[u8]) -> Option<&[u8]> {
    (v.len() >= 21 && v[1] == 0xfb).then(|| &v[5..21])
}

/// Decodes the lower inode number from an origin written by [`encode_origin`] or by the
/// kernel, when the lower filesystem (`fs_magic`) lays its handles out in a known way:
/// `FILEID_INO32_GEN*` and `FILEID_INO64_GEN*` as ext4 and XFS write them, and btrfs's
/// object id. `None` for a null handle, an unknown type or filesystem.
pub fn origin_ino(v: &[u8], fs_magic: i64) -> Option<u64> {
    if v.len() < 21 + 4 || v[0] != 0 || v[1] != 0xfb || usize::from(v[2]) != v.len() || v[3] & 1 != 0 {
        return None;
    }
    let fid = &v[21..];
    let word = |i: usize| fid.get(i * 4..i * 4 + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    match (fs_magic, v[4]) {
        (magic::EXT4 | magic::XFS, 1 | 2) => word(0).map(u64::from),
        (magic::EXT4 | magic::XFS, 0x81 | 0x82) => Some(u64::from(word(0)?) | (u64::from(word(1)?) << 32)),
        (magic::BTRFS, 0x4d..=0x4f) => Some(u64::from(word(0)?) | (u64::from(word(1)?) << 32)),
        // shmem_encode_fh: generation, inode number low and high words.
        (magic::TMPFS, 1) => Some(u64::from(word(1)?) | (u64::from(word(2)?) << 32)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_matches_the_kernel_layout() {
        // What kernel overlayfs wrote for an ext4 file (read back with getfattr):
        // 00 fb 1d 00 01 | 16 zero bytes | d3c09800 db1a3ef3
        let fid = [0xd3, 0xc0, 0x98, 0x00, 0xdb, 0x1a, 0x3e, 0xf3];
        let v = encode_origin(1, &fid, &[0; 16]);
        assert_eq!(&v[..5], &[0x00, 0xfb, 0x1d, 0x00, 0x01]);
        assert_eq!(v.len(), 0x1d);
        assert!(v[5..21].iter().all(|&b| b == 0));
        assert_eq!(origin_ino(&v, magic::EXT4), Some(0x0098c0d3));
        assert_eq!(origin_ino(&v, magic::TMPFS), None, "tmpfs handles have three words");
        let t = encode_origin(1, &[7, 0, 0, 0, 0x34, 0x12, 0, 0, 1, 0, 0, 0], &[9; 16]);
        assert_eq!(origin_ino(&t, magic::TMPFS), Some(0x1_0000_1234));
        assert_eq!(origin_uuid(&t), Some(&[9u8; 16][..]));
    }

    #[test]
    fn origin_rejects_garbage() {
        assert_eq!(origin_ino(b"", magic::EXT4), None);
        assert_eq!(origin_ino(&[0u8; 30], magic::EXT4), None);
        let mut v = encode_origin(0x4d, &[1, 2, 3, 4], &[0; 16]);
        assert_eq!(origin_ino(&v, magic::EXT4), None, "unknown handle type");
        v[2] = 99;
        assert_eq!(origin_ino(&v, magic::EXT4), None, "length mismatch");
    }
}

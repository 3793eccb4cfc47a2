//! How does the namespace change? (the kernel's `dir.c`)
//!
//! * New objects go straight into the upper directory, or, where the upper holds a whiteout
//!   for the name, are built in the work dir and renamed over it (a directory made over a
//!   whiteout is opaque, since lowers still hold the name).
//! * Removing a name that a lower layer still shows leaves a whiteout; otherwise it is a
//!   plain delete (no whiteout where no lower has the name).
//! * `rmdir` judges emptiness on the merged view and removes the whiteouts inside.
//! * Renames are in [`crate::union::rename`].

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::error::{Errno, Res};
use crate::sys::fs::RenameMode;
use crate::sys::open::OFlags;
use crate::sys::stat::{self, FileKind, Stat};
use crate::sys::xattr::{SetMode, XTarget};
use crate::union::fileattr::Change;
use crate::union::layer::Upper;
use crate::union::node::{Identity, Loc, Lower, Node, NodeSpec, flag};
use crate::union::tables::Side;
use crate::union::{Ctx, Entry, UnionFs};

/// What the upper directory holds under a name the merged view says is free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// Nothing.
    Free,
    /// A whiteout (lowers still have the name).
    Whiteout,
}

/// Makes one new object at (directory, name), returning its descriptor if it opened one.
type MakeFn<'a> = &'a dyn Fn(&Upper, BorrowedFd<'_>, &CStr) -> Res<Option<OwnedFd>>;

/// Who owns a new object and with which type and permission bits.
#[derive(Clone, Copy, Debug)]
pub(super) struct NewObject {
    pub(super) owner: (u32, u32),
    pub(super) kind: FileKind,
    pub(super) perm: u32,
}

impl UnionFs {
    /// The parent directory, copied up, and its upper descriptor.
    pub(super) fn upper_parent(&self, parent: u64) -> Res<(Arc<Node>, &Upper, Arc<OwnedFd>)> {
        let up = self.layers.upper()?;
        let dir = self.inodes.get(parent)?;
        if !dir.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if dir.has(flag::DEAD) {
            return Err(Errno::ENOENT);
        }
        self.copy_up(&dir)?;
        let fd = self.dir_fd(&dir, Side::Upper)?;
        Ok((dir, up, fd))
    }

    /// What the upper holds at a name the merged view has as absent.
    pub(super) fn slot(&self, pfd: BorrowedFd<'_>, name: &CStr) -> Res<Slot> {
        match stat::statat(pfd, name) {
            Ok(st) if st.is_chardev_whiteout() => Ok(Slot::Whiteout),
            // Anything else in the upper under a name the merged view lacks is another
            // dialect's whiteout (a `.wh.` or xattr one is never at the name itself) or a
            // race with a change behind our back: the name is taken.
            Ok(_) => Err(Errno::EEXIST),
            Err(Errno::ENOENT) => Ok(Slot::Free),
            Err(e) => Err(e),
        }
    }

    /// Owner and group a new object in `pfd` gets (stored ids: the caller's shown ids mapped
    /// to the layers' ids): the caller's, or the directory's group if it is setgid; and
    /// whether it is (a new directory in it is setgid too). A caller whose id no mapping
    /// covers (rootless podman's own root, making `/etc/mtab` in a container it maps from
    /// id 1) makes objects owned by the overflow id, as with fuse-overlayfs.
    pub(super) fn new_owner(&self, ctx: Ctx, pfd: BorrowedFd<'_>) -> Res<((u32, u32), bool)> {
        let pst = stat::fstat(pfd)?;
        let overflow = |r: Res<u32>| r.unwrap_or(crate::union::idmap::OVERFLOW_ID);
        let uid = overflow(self.opts.uids.store(ctx.uid));
        let sgid = pst.mode & libc::S_ISGID != 0;
        let gid = if sgid { pst.gid } else { overflow(self.opts.gids.store(ctx.gid)) };
        Ok(((uid, gid), sgid))
    }

    /// Gives a freshly made object its owner (when the daemon may) and its exact mode (a
    /// chown drops setuid/setgid bits, which must then be set again).
    pub(super) fn fix_owner(
        &self,
        up: &Upper,
        dir: BorrowedFd<'_>,
        name: &CStr,
        fd: Option<&OwnedFd>,
        new: &NewObject,
    ) -> Res<()> {
        let NewObject { owner, kind, perm } = *new;
        if let Some(xname) = self.opts.override_stat {
            // Owner and mode live in the xattr; the real object keeps the daemon's.
            if kind == FileKind::Symlink {
                return Ok(());
            }
            let o = crate::union::idmap::OverrideStat {
                uid: self.opts.uids.show(owner.0),
                gid: self.opts.gids.show(owner.1),
                mode: perm,
            };
            let t = match fd {
                Some(fd) => XTarget::Fd(fd.as_fd()),
                None => XTarget::At(dir, name),
            };
            return up.set_xattr(t, xname, o.render().as_bytes(), SetMode::Any);
        }
        if !self.opts.set_owner {
            return Ok(());
        }
        let st = match fd {
            Some(fd) => stat::fstat(fd)?,
            None => stat::statat(dir, name)?,
        };
        let chown = (st.uid, st.gid) != owner;
        if chown {
            match fd {
                Some(fd) => up.fchown(fd.as_fd(), Some(owner.0), Some(owner.1))?,
                None => up.chown(dir, name, Some(owner.0), Some(owner.1))?,
            }
        }
        // A chown drops set-id bits; an object made in the work dir (over a whiteout) did not
        // inherit its parent's setgid.
        let setid = perm & (libc::S_ISUID | libc::S_ISGID);
        if kind != FileKind::Symlink && setid != 0 && (chown || st.mode & setid != setid) {
            match fd {
                Some(fd) => up.fchmod(fd.as_fd(), perm)?,
                None => up.chmod(dir, name, perm)?,
            }
        }
        Ok(())
    }

    /// Makes a new object `name` in directory `parent` with `make`, either in place or (over
    /// a whiteout) in the work dir then renamed over the whiteout.
    fn create_object(
        &self,
        ctx: Ctx,
        parent: u64,
        name: &CStr,
        kind: FileKind,
        perm: u32,
        make: MakeFn<'_>,
    ) -> Res<(Arc<Node>, Stat, Option<OwnedFd>)> {
        crate::sys::name_ok(name.to_bytes())?;
        if crate::union::whiteout::is_marker_name(name.to_bytes()) {
            // A `.wh.` name would be read back as a whiteout marker.
            return Err(Errno::EINVAL);
        }
        self.deny(&self.inodes.get(parent)?, Change::AddEntry)?;
        let (dir, up, pfd) = self.upper_parent(parent)?;
        let (owner, sgid_parent) = self.new_owner(ctx, pfd.as_fd())?;
        // A directory made in a setgid directory is setgid too (the kernel's
        // `inode_init_owner`), also when it is made in the work dir.
        let perm = if kind == FileKind::Directory && sgid_parent { perm | libc::S_ISGID } else { perm };
        let new = NewObject { owner, kind, perm };
        let slot = if dir.vol != 0 { Slot::Free } else { self.slot(pfd.as_fd(), name)? };
        let opaque = kind == FileKind::Directory && slot == Slot::Whiteout;
        let fd = match slot {
            Slot::Free => self.make_in_place(up, pfd.as_fd(), name, &new, make)?,
            Slot::Whiteout => self.make_over_whiteout(up, pfd.as_fd(), name, &new, opaque, make)?,
        };
        let st = match &fd {
            Some(fd) => stat::fstat(fd)?,
            None => stat::statat(&*pfd, name)?,
        };
        let mut flags = flag::UPPER;
        if opaque {
            flags |= flag::OPAQUE;
        }
        if kind == FileKind::Directory && !self.watching() {
            flags |= flag::MADE_HERE;
        }
        let spec = NodeSpec {
            kind,
            identity: Identity { fs: self.layers.upper_fs(dir.vol), ino: st.ino },
            upper_ino: st.ino,
            lower: Lower::None,
            flags,
            loc: Loc { parent: Some(dir.clone()), name: name.into() },
            vol: dir.vol,
            index_key: None,
        };
        let node = self.inodes.intern(spec, &self.layers.xino);
        dir.touch_dir();
        Ok((node, st, fd))
    }

    /// Makes `new` at a free `name` in upper directory `pfd`, with its owner (removed again
    /// if the owner cannot be set: the caller could not have made it).
    fn make_in_place(
        &self,
        up: &Upper,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        new: &NewObject,
        make: MakeFn<'_>,
    ) -> Res<Option<OwnedFd>> {
        let fd = make(up, pfd, name)?;
        if let Err(e) = self.fix_owner(up, pfd, name, fd.as_ref(), new) {
            let undo = if new.kind == FileKind::Directory { up.rmdir(pfd, name) } else { up.unlink(pfd, name) };
            if let Err(u) = undo {
                tracing::warn!("cannot remove {name:?} after failing to set its owner: {u}");
            }
            return Err(e);
        }
        Ok(fd)
    }

    /// Makes `new` in the work dir, complete (owner; `opaque` marker for a directory that
    /// must hide the lowers), and puts it in place of the whiteout at `name` in one rename.
    fn make_over_whiteout(
        &self,
        up: &Upper,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        new: &NewObject,
        opaque: bool,
        make: MakeFn<'_>,
    ) -> Res<Option<OwnedFd>> {
        let tmp = up.temp_name();
        let built = (|| {
            let fd = make(up, up.work(), &tmp)?;
            self.fix_owner(up, up.work(), &tmp, fd.as_ref(), new)?;
            if opaque {
                let names = up.dialect.names();
                up.set_xattr(XTarget::At(up.work(), &tmp), names.opaque, b"y", SetMode::Any)?;
            }
            if new.kind == FileKind::Directory {
                // A directory cannot replace a non-directory: swap, then drop the whiteout
                // that landed in the work dir.
                up.rename(up.work(), &tmp, pfd, name, RenameMode::Exchange)?;
                up.discard(&tmp);
            } else {
                up.rename(up.work(), &tmp, pfd, name, RenameMode::Replace)?;
            }
            Ok(fd)
        })();
        if built.is_err() {
            up.discard(&tmp);
        }
        built
    }

    fn entry(&self, node: &Arc<Node>, st: &Stat) -> Entry {
        Entry { ino: node.ino, attr: self.attr_overridden(node, st), revalidate: false }
    }

    /// Makes sure the directories above a volume's mount point exist in the merged view
    /// (created in the upper as the daemon's user, as container engines do for mount
    /// points). Leaves no kernel references behind.
    pub fn make_volume_parents(&self, at: &str) -> Res<()> {
        let comps = crate::union::layer::volume_path(at).map_err(|_| Errno::EINVAL)?;
        let ctx = Ctx { uid: crate::sys::proc::euid(), gid: crate::sys::proc::egid() };
        let mut dir = crate::union::tables::ROOT_INO;
        for c in &comps[..comps.len() - 1] {
            let e = match self.lookup(dir, c) {
                Ok(e) => e,
                Err(Errno::ENOENT) => self.mkdir(ctx, dir, c, 0o755)?,
                Err(e) => return Err(e),
            };
            if e.attr.kind != FileKind::Directory {
                self.forget(e.ino, 1);
                return Err(Errno::ENOTDIR);
            }
            if dir != crate::union::tables::ROOT_INO {
                self.forget(dir, 1);
            }
            dir = e.ino;
        }
        if dir != crate::union::tables::ROOT_INO {
            self.forget(dir, 1);
        }
        Ok(())
    }

    /// `mkdir`.
    pub fn mkdir(&self, ctx: Ctx, parent: u64, name: &CStr, mode: u32) -> Res<Entry> {
        let perm = mode & 0o7777;
        let (node, st, _) = self.create_object(ctx, parent, name, FileKind::Directory, perm, &|up, d, n| {
            up.mkdir(d, n, perm).map(|()| None)
        })?;
        Ok(self.entry(&node, &st))
    }

    /// `mknod`: regular files, fifos, sockets, and devices (where the daemon may make them).
    /// A 0/0 character device is refused (`EPERM`): it would be read back as a whiteout.
    pub fn mknod(&self, ctx: Ctx, parent: u64, name: &CStr, mode: u32, rdev: u64) -> Res<Entry> {
        let kind = FileKind::from_mode(mode).ok_or(Errno::EINVAL)?;
        if kind == FileKind::Directory || kind == FileKind::Symlink {
            return Err(Errno::EINVAL);
        }
        if kind == FileKind::CharDev && rdev == 0 {
            return Err(Errno::EPERM);
        }
        let perm = mode & 0o7777;
        let (node, st, _) = self.create_object(ctx, parent, name, kind, perm, &|up, d, n| {
            up.mknod(d, n, kind, perm, rdev).map(|()| None)
        })?;
        Ok(self.entry(&node, &st))
    }

    /// `symlink`.
    pub fn symlink(&self, ctx: Ctx, parent: u64, name: &CStr, target: &CStr) -> Res<Entry> {
        if target.to_bytes().len() >= libc::PATH_MAX as usize {
            return Err(Errno::ENAMETOOLONG);
        }
        let (node, st, _) = self.create_object(ctx, parent, name, FileKind::Symlink, 0o777, &|up, d, n| {
            up.symlink(target, d, n).map(|()| None)
        })?;
        Ok(self.entry(&node, &st))
    }

    /// `create`: makes and opens a regular file. Returns the entry and the open descriptor.
    pub(crate) fn create_file(
        &self,
        ctx: Ctx,
        parent: u64,
        name: &CStr,
        mode: u32,
        flags: OFlags,
    ) -> Res<(Arc<Node>, Stat, OwnedFd)> {
        let perm = mode & 0o7777;
        let (node, st, fd) = self.create_object(ctx, parent, name, FileKind::Regular, perm, &|up, d, n| {
            up.create(d, n, flags, perm).map(Some)
        })?;
        let fd = fd.ok_or(Errno::EIO)?;
        Ok((node, st, fd))
    }

    /// `link`: a new name for an existing object (copied up first).
    pub fn link(&self, ino: u64, newparent: u64, newname: &CStr) -> Res<Entry> {
        crate::sys::name_ok(newname.to_bytes())?;
        if crate::union::whiteout::is_marker_name(newname.to_bytes()) {
            return Err(Errno::EINVAL);
        }
        let node = self.inodes.get(ino)?;
        if node.is_dir() {
            return Err(Errno::EPERM);
        }
        self.deny(&self.inodes.get(newparent)?, Change::AddEntry)?;
        self.deny(&node, Change::Object)?;
        self.layers.upper()?;
        self.copy_up(&node)?;
        self.link_up_walked(&node)?;
        let (dir, up, pfd) = self.upper_parent(newparent)?;
        if dir.vol != node.vol {
            return Err(Errno::EXDEV);
        }
        let slot = if dir.vol != 0 { Slot::Free } else { self.slot(pfd.as_fd(), newname)? };
        let src = self.upper_real(&node)?;
        // An unnamed (`O_TMPFILE`) file gets its first name; the kernel has checked that it
        // may (it refuses other removed files and files opened `O_EXCL`).
        let unnamed = node.has(flag::DEAD) && src.name.is_empty();
        match slot {
            Slot::Free => up.link(src.dir.as_fd(), &src.name, pfd.as_fd(), newname)?,
            Slot::Whiteout => {
                let tmp = up.temp_name();
                up.link(src.dir.as_fd(), &src.name, up.work(), &tmp)?;
                if let Err(e) = up.rename(up.work(), &tmp, pfd.as_fd(), newname, RenameMode::Replace) {
                    up.discard(&tmp);
                    return Err(e);
                }
            }
        }
        // A name of a copied-up object: the kernel reads the directory's entries with their
        // origins' numbers only if it is marked (as `ovl_link` marks it).
        if node.has(flag::ORIGIN) || self.has_origin(pfd.as_fd(), newname).unwrap_or(false) {
            self.mark_impure(up, &dir, pfd.as_fd());
        }
        let loc = Loc { parent: Some(dir.clone()), name: newname.into() };
        if unnamed {
            node.name_unnamed(loc);
            self.inodes.reinstate(&node);
        } else {
            node.add_loc(loc);
        }
        self.inodes.add_lookup(&node);
        dir.touch_dir();
        let st = stat::statat(&*pfd, newname)?;
        Ok(self.entry(&node, &st))
    }

    /// The node under `name` in `dir` and the layer showing it, without counting a kernel
    /// reference.
    pub(super) fn peek(&self, dir: &Arc<Node>, name: &CStr) -> Res<(Arc<Node>, Side)> {
        self.peek_stat(dir, name).map(|(node, side, _)| (node, side))
    }

    /// [`UnionFs::peek`], with the object's status.
    pub(super) fn peek_stat(&self, dir: &Arc<Node>, name: &CStr) -> Res<(Arc<Node>, Side, Stat)> {
        let found = self.find(dir, name)?.ok_or(Errno::ENOENT)?;
        let side = found.side;
        let (node, st) = self.intern(dir, name, found)?;
        self.inodes.forget(node.ino, 1);
        Ok((node, side, st))
    }

    /// Removes `name` from the upper (or hides it), leaving a whiteout where a lower layer
    /// still has it.
    fn remove_name(
        &self,
        dir: &Arc<Node>,
        up: &Upper,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        in_upper: bool,
        is_dir: bool,
    ) -> Res<()> {
        if !in_upper {
            // Found in a lower layer: that layer still has it.
            return up.whiteout(pfd, name, false);
        }
        if self.lower_has(dir, name)? {
            if is_dir {
                let tmp = up.whiteout_temp()?;
                if let Err(e) = up.rename(up.work(), &tmp, pfd, name, RenameMode::Exchange) {
                    up.discard(&tmp);
                    return Err(e);
                }
                // The old directory is now `tmp` in the work dir, holding only markers.
                up.discard_later(tmp);
                Ok(())
            } else {
                up.whiteout(pfd, name, true)
            }
        } else if is_dir {
            match up.rmdir(pfd, name) {
                Err(Errno::ENOTEMPTY) | Err(Errno::EEXIST) => {
                    // Only whiteouts and markers are left inside: move it out, then delete.
                    let tmp = up.temp_name();
                    up.rename(pfd, name, up.work(), &tmp, RenameMode::NoReplace)?;
                    up.discard_later(tmp);
                    Ok(())
                }
                r => r,
            }
        } else {
            up.unlink(pfd, name)
        }
    }

    /// `unlink`.
    pub fn unlink(&self, parent: u64, name: &CStr) -> Res<()> {
        crate::sys::name_ok(name.to_bytes())?;
        let up = self.layers.upper()?;
        let dir = self.inodes.get(parent)?;
        let (node, side, st) = self.peek_stat(&dir, name)?;
        self.deny(&dir, Change::RemoveEntry)?;
        self.deny(&node, Change::Object)?;
        if node.is_dir() {
            return Err(Errno::EISDIR);
        }
        let (dir, _, pfd) = self.upper_parent(parent)?;
        let nlink = self.shown_nlink(&node, &st);
        let side = match self.owns_name_first(&node, side, &st) {
            true => {
                self.own_name(&node, &dir, name)?;
                Side::Upper
            }
            false => side,
        };
        // The last link of an upper object: its real inode is free once the name goes.
        let frees = (side == Side::Upper && nlink <= 1).then_some(&node);
        self.freeing(frees, || {
            self.stable(|| self.remove_name(&dir, up, pfd.as_fd(), name, side == Side::Upper, false))
        })?;
        self.name_gone(&node, &dir, name, nlink);
        dir.touch_dir();
        Ok(())
    }

    /// `name` in `dir` no longer names `node`, which showed `nlink` links before. With no
    /// name left the node is gone, unless other links (names not looked up yet) keep the
    /// object; the index entry of an indexed hard link goes with its last link (the
    /// kernel's `ovl_cleanup_index`).
    pub(super) fn name_gone(&self, node: &Arc<Node>, dir: &Arc<Node>, name: &CStr, nlink: u64) {
        if !node.remove_loc(dir, name) {
            node.set(if nlink > 1 { flag::NAMELESS } else { flag::DEAD });
            if node.is_dir() {
                self.forget_dirfds(node);
            }
        }
        if nlink <= 1
            && let (Some(key), Some(index), Ok(up)) = (node.index_key(), self.index_dir(), self.layers.upper())
            && stat::statat(index, &key).is_ok_and(|st| st.nlink == 1)
            && let Err(e) = up.unlink(index, &key)
        {
            tracing::debug!("cannot remove the index entry of a removed hard link: {e}");
        }
    }

    /// `rmdir`: only of a directory whose merged view is empty.
    pub fn rmdir(&self, parent: u64, name: &CStr) -> Res<()> {
        crate::sys::name_ok(name.to_bytes())?;
        let up = self.layers.upper()?;
        let dir = self.inodes.get(parent)?;
        let (node, side) = self.peek(&dir, name)?;
        self.deny(&dir, Change::RemoveEntry)?;
        self.deny(&node, Change::Object)?;
        if !node.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if !self.is_empty_dir(&node)? {
            return Err(Errno::ENOTEMPTY);
        }
        let (dir, _, pfd) = self.upper_parent(parent)?;
        let frees = (side == Side::Upper).then_some(&node);
        self.freeing(frees, || {
            self.stable(|| self.remove_name(&dir, up, pfd.as_fd(), name, side == Side::Upper, true))
        })?;
        node.set(flag::DEAD);
        self.forget_dirfds(&node);
        dir.touch_dir();
        Ok(())
    }

    /// Runs `op`, which may free `node`'s real upper inode, with the node taken out of
    /// matching first (see [`crate::union::tables::InodeTable::retire`]); a failed `op` puts
    /// it back.
    pub(super) fn freeing<T>(&self, node: Option<&Arc<Node>>, op: impl FnOnce() -> Res<T>) -> Res<T> {
        let Some(n) = node.filter(|n| !n.has(flag::DEAD)) else { return op() };
        // What the kernel keeps of the object once it is gone: descriptors opened before go
        // on acting on it (kernel overlayfs holds the real dentry). Not for symlinks, which
        // nothing can hold open, nor for a regular file no one has open: its space must be
        // free at once, not when the kernel forgets it.
        let keep = match n.kind {
            FileKind::Symlink => false,
            FileKind::Regular => self.handles.is_open(n.ino),
            _ => true,
        };
        if keep
            && n.orphan().is_none()
            && let Ok(r) = self.real(n)
            && r.side == Side::Upper
        {
            let fd = match n.is_dir() {
                true => crate::sys::open::open_dir_path_at(&*r.dir),
                false => crate::sys::open::openat(&*r.dir, &r.name, OFlags::PATH, 0),
            };
            match fd {
                Ok(fd) => n.set_orphan(fd),
                Err(e) => tracing::debug!("cannot keep a descriptor of {:?}: {e}", r.name),
            }
        }
        self.inodes.retire(n);
        let r = op();
        if r.is_err() {
            self.inodes.reinstate(n);
        } else if keep {
            // Closed meanwhile (a release served beside this unlink).
            self.let_go_if_closed(n);
        }
        r
    }
}

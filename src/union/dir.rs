//! How does the namespace change? (the kernel's `dir.c`)
//!
//! * New objects go straight into the upper directory, or, where the upper holds a whiteout
//!   for the name, are built in the work dir and renamed over it (a directory made over a
//!   whiteout is opaque, since lowers still hold the name).
//! * Removing a name that a lower layer still shows leaves a whiteout; otherwise it is a
//!   plain delete (no whiteout where no lower has the name).
//! * `rmdir` judges emptiness on the merged view and removes the whiteouts inside.
//! * Renaming copies the source up, renames in the upper and whites out the old name if a
//!   lower still shows it. A directory that exists in a lower layer is not renamed: `EXDEV`,
//!   the kernel's default (`mv` then copies).

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
use crate::union::{Ctx, Entry, UnionFs, whiteout};

/// What the upper directory holds under a name the merged view says is free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
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

/// `renameat2` flags the union understands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// `RENAME_NOREPLACE`.
    pub noreplace: bool,
    /// `RENAME_EXCHANGE`.
    pub exchange: bool,
}

impl RenameFlags {
    /// From raw `renameat2` flags; `RENAME_WHITEOUT` and unknown bits are `EINVAL`.
    pub fn from_raw(flags: u32) -> Res<RenameFlags> {
        let known = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
        if flags & !known != 0 {
            return Err(Errno::EINVAL);
        }
        let f = RenameFlags {
            noreplace: flags & libc::RENAME_NOREPLACE != 0,
            exchange: flags & libc::RENAME_EXCHANGE != 0,
        };
        if f.noreplace && f.exchange {
            return Err(Errno::EINVAL);
        }
        Ok(f)
    }
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
    fn slot(&self, pfd: BorrowedFd<'_>, name: &CStr) -> Res<Slot> {
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
    /// whether it is (a new directory in it is setgid too).
    pub(super) fn new_owner(&self, ctx: Ctx, pfd: BorrowedFd<'_>) -> Res<((u32, u32), bool)> {
        let pst = stat::fstat(pfd)?;
        let uid = self.opts.uids.store(ctx.uid)?;
        let sgid = pst.mode & libc::S_ISGID != 0;
        let gid = if sgid { pst.gid } else { self.opts.gids.store(ctx.gid)? };
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
            Slot::Free => {
                let fd = make(up, pfd.as_fd(), name)?;
                if let Err(e) = self.fix_owner(up, pfd.as_fd(), name, fd.as_ref(), &new) {
                    // Do not leave an object the caller could not have made.
                    let undo = if kind == FileKind::Directory {
                        up.rmdir(pfd.as_fd(), name)
                    } else {
                        up.unlink(pfd.as_fd(), name)
                    };
                    if let Err(u) = undo {
                        tracing::warn!("cannot remove {name:?} after failing to set its owner: {u}");
                    }
                    return Err(e);
                }
                fd
            }
            Slot::Whiteout => {
                let tmp = up.temp_name();
                let built = (|| {
                    let fd = make(up, up.work(), &tmp)?;
                    self.fix_owner(up, up.work(), &tmp, fd.as_ref(), &new)?;
                    if opaque {
                        let names = up.dialect.names();
                        up.set_xattr(XTarget::At(up.work(), &tmp), names.opaque, b"y", SetMode::Any)?;
                    }
                    if kind == FileKind::Directory {
                        // A directory cannot replace a non-directory: swap, then drop the
                        // whiteout that landed in the work dir.
                        up.rename(up.work(), &tmp, pfd.as_fd(), name, RenameMode::Exchange)?;
                        up.discard(&tmp);
                    } else {
                        up.rename(up.work(), &tmp, pfd.as_fd(), name, RenameMode::Replace)?;
                    }
                    Ok(fd)
                })();
                match built {
                    Ok(fd) => fd,
                    Err(e) => {
                        up.discard(&tmp);
                        return Err(e);
                    }
                }
            }
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
        };
        let node = self.inodes.intern(spec, &self.layers.xino);
        dir.touch_dir();
        Ok((node, st, fd))
    }

    fn entry(&self, node: &Arc<Node>, st: &Stat) -> Entry {
        Entry { ino: node.ino, attr: self.attr_for(node, st), revalidate: false }
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
    fn peek(&self, dir: &Arc<Node>, name: &CStr) -> Res<(Arc<Node>, Side)> {
        self.peek_stat(dir, name).map(|(node, side, _)| (node, side))
    }

    /// [`UnionFs::peek`], with the object's status.
    fn peek_stat(&self, dir: &Arc<Node>, name: &CStr) -> Res<(Arc<Node>, Side, Stat)> {
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
        // The last link of an upper object: its real inode is free once the name goes.
        let frees = (side == Side::Upper && st.nlink <= 1).then_some(&node);
        self.freeing(frees, || {
            self.stable(|| self.remove_name(&dir, up, pfd.as_fd(), name, side == Side::Upper, false))
        })?;
        if !node.remove_loc(&dir, name) {
            // Gone, unless other links (names not looked up yet) keep the object.
            node.set(if st.nlink > 1 { flag::NAMELESS } else { flag::DEAD });
        }
        dir.touch_dir();
        Ok(())
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

    /// `rename` / `renameat2` with `RENAME_NOREPLACE` or `RENAME_EXCHANGE`.
    pub fn rename(&self, parent: u64, name: &CStr, newparent: u64, newname: &CStr, flags: RenameFlags) -> Res<()> {
        crate::sys::name_ok(name.to_bytes())?;
        crate::sys::name_ok(newname.to_bytes())?;
        if crate::union::whiteout::is_marker_name(newname.to_bytes()) {
            return Err(Errno::EINVAL);
        }
        let up = self.layers.upper()?;
        let odir = self.inodes.get(parent)?;
        let ndir = self.inodes.get(newparent)?;
        let (src, _) = self.peek(&odir, name)?;
        let dst = match self.peek_stat(&ndir, newname) {
            Ok((d, side, st)) => Some((d, side, st.nlink)),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(e),
        };
        if flags.noreplace && dst.is_some() {
            return Err(Errno::EEXIST);
        }
        if flags.exchange && dst.is_none() {
            return Err(Errno::ENOENT);
        }
        if let Some((d, ..)) = &dst
            && Arc::ptr_eq(d, &src)
        {
            // Two names of one object: rename does nothing (POSIX).
            return Ok(());
        }
        // The kernel's `may_delete` of the source, then of the target or `may_create`.
        self.deny(&odir, Change::RemoveEntry)?;
        self.deny(&src, Change::Object)?;
        match &dst {
            Some((d, ..)) => {
                self.deny(&ndir, Change::RemoveEntry)?;
                self.deny(d, Change::Object)?;
            }
            None => self.deny(&ndir, Change::AddEntry)?,
        }
        if src.is_dir() && src.has_lower() && !self.opts.redirect_dir {
            return Err(Errno::EXDEV);
        }
        // Between a volume and the union (or two volumes) there is no rename, as between two
        // mounts; nor can a volume's root itself move.
        if odir.vol != ndir.vol || src.vol != ndir.vol || src.has(flag::VOL_ROOT) {
            return Err(Errno::EXDEV);
        }
        if let Some((d, ..)) = &dst
            && (d.has(flag::VOL_ROOT) || d.vol != ndir.vol)
        {
            return Err(Errno::EXDEV);
        }
        if let Some((d, ..)) = &dst {
            if flags.exchange && d.is_dir() && d.has_lower() && !self.opts.redirect_dir {
                return Err(Errno::EXDEV);
            }
            if !flags.exchange {
                match (src.is_dir(), d.is_dir()) {
                    (false, true) => return Err(Errno::EISDIR),
                    (true, false) => return Err(Errno::ENOTDIR),
                    (true, true) if !self.is_empty_dir(d)? => {
                        if !d.has_lower() {
                            // Kernel overlayfs leaves a directory with nothing below to the
                            // upper filesystem to refuse, after copying the source (and the
                            // target's parent) up; the copies show (merged directories report
                            // one link), so they are made here too.
                            self.upper_parent(newparent)?;
                            self.copy_up(&src)?;
                        }
                        return Err(Errno::ENOTEMPTY);
                    }
                    _ => {}
                }
            }
        }
        let (odir, _, opfd) = self.upper_parent(parent)?;
        let (ndir, _, npfd) = self.upper_parent(newparent)?;
        self.copy_up(&src)?;
        if let (true, Some((d, ..))) = (flags.exchange, &dst) {
            self.copy_up(d)?;
        }
        let old_whiteout = !flags.exchange && self.lower_has(&odir, name)?;
        let names = up.dialect.names();
        let samedir = Arc::ptr_eq(&odir, &ndir);
        // A directory with lower parts records where they are (kernel `ovl_set_redirect`):
        // its old name for a move within one directory, else its lower path from the root;
        // a redirect already there stays when it still holds. A directory without lower
        // parts landing in a merged directory must instead hide whatever lowers hold under
        // its new name (the kernel marks it opaque the same way).
        let mark_moved = |n: &Arc<Node>, pfd: BorrowedFd<'_>, nm: &CStr, into: &Arc<Node>| -> Res<()> {
            if let (true, Some(dl)) = (n.is_dir(), n.dir_lower()) {
                let old = whiteout::read_redirect(pfd, nm, names)?;
                let new = match old {
                    Some(whiteout::Redirect::Absolute(_)) => return Ok(()),
                    Some(whiteout::Redirect::Relative(_)) if samedir => return Ok(()),
                    None if samedir => whiteout::Redirect::Relative(nm.to_owned()),
                    _ => whiteout::Redirect::Absolute(dl.path.clone()),
                };
                return up.set_xattr(XTarget::At(pfd, nm), names.redirect, &new.encode(), SetMode::Any);
            }
            if n.is_dir() && into.has_lower() && !n.has(flag::OPAQUE) {
                up.set_xattr(XTarget::At(pfd, nm), names.opaque, b"y", SetMode::Any)?;
                n.set(flag::OPAQUE);
            }
            Ok(())
        };
        mark_moved(&src, opfd.as_fd(), name, &ndir)?;
        if let (true, Some((d, ..))) = (flags.exchange, &dst) {
            mark_moved(d, npfd.as_fd(), newname, &odir)?;
        }
        // A directory replaced by the rename may still hold whiteouts: empty it first.
        if let (false, Some((d, dside, _))) = (flags.exchange, &dst)
            && d.is_dir()
            && *dside == Side::Upper
        {
            self.clear_markers(up, npfd.as_fd(), newname)?;
        }
        let slot = if flags.exchange || ndir.vol != 0 { Slot::Free } else { self.slot_any(npfd.as_fd(), newname)? };
        // The object a rename replaces loses its name; its real inode is free at once if
        // that was its last link.
        let frees = match &dst {
            Some((d, Side::Upper, nlink)) if !flags.exchange && (d.is_dir() || *nlink <= 1) => Some(d),
            _ => None,
        };
        self.rename_mark();
        let r = self.freeing(frees, || {
            if flags.exchange {
                return up.rename(opfd.as_fd(), name, npfd.as_fd(), newname, RenameMode::Exchange);
            }
            if slot == Slot::Whiteout && src.is_dir() {
                // A directory cannot replace the whiteout: swap them, and keep the whiteout
                // at the old name only if a lower still shows that name.
                up.rename(opfd.as_fd(), name, npfd.as_fd(), newname, RenameMode::Exchange)?;
                return if old_whiteout { Ok(()) } else { up.unlink(opfd.as_fd(), name) };
            }
            if old_whiteout {
                up.rename_whiteout(opfd.as_fd(), name, npfd.as_fd(), newname)
            } else {
                up.rename(opfd.as_fd(), name, npfd.as_fd(), newname, RenameMode::Replace)
            }
        });
        if r.is_ok() {
            let (oname, nname) = (name.to_owned(), newname.to_owned());
            if flags.exchange {
                if let Some((d, ..)) = &dst {
                    d.move_loc(&ndir, &nname, &odir, oname.as_c_str().into());
                }
            } else if let Some((d, ..)) = &dst
                && !d.remove_loc(&ndir, &nname)
            {
                d.set(flag::DEAD);
                self.forget_dirfds(d);
            }
            src.move_loc(&odir, &oname, &ndir, nname.into());
        }
        self.rename_mark();
        r?;
        // Objects with a lower origin moved into a directory make it impure (kernel
        // `ovl_rename`), both ways for an exchange.
        let has_origin = |n: &Node| n.has(flag::ORIGIN) || (n.is_dir() && n.has_lower());
        if has_origin(&src) {
            self.mark_impure(up, &ndir, npfd.as_fd());
        }
        if let (true, Some((d, ..))) = (flags.exchange, &dst)
            && has_origin(d)
        {
            self.mark_impure(up, &odir, opfd.as_fd());
        }
        odir.touch_dir();
        ndir.touch_dir();
        Ok(())
    }

    /// Runs `op`, which may free `node`'s real upper inode, with the node taken out of
    /// matching first (see [`crate::union::tables::InodeTable::retire`]); a failed `op` puts
    /// it back.
    fn freeing<T>(&self, node: Option<&Arc<Node>>, op: impl FnOnce() -> Res<T>) -> Res<T> {
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

    /// What the upper holds at a rename target: a whiteout, or anything else (which a rename
    /// replaces).
    fn slot_any(&self, pfd: BorrowedFd<'_>, name: &CStr) -> Res<Slot> {
        match stat::statat(pfd, name) {
            Ok(st) if st.is_chardev_whiteout() => Ok(Slot::Whiteout),
            Ok(_) | Err(Errno::ENOENT) => Ok(Slot::Free),
            Err(e) => Err(e),
        }
    }

    /// Empties upper directory `name` (empty in the merged view: only whiteouts and markers
    /// are left in it) before a rename replaces it, in one step, as the kernel's
    /// `ovl_clear_empty` does: an empty opaque directory with its mode and owner is built in
    /// the work dir and swapped with it by one rename, and the old one leaves through the work
    /// dir. Whiteouts removed one by one would let a crash between two of them bring deleted
    /// lower files back into the directory.
    fn clear_markers(&self, up: &Upper, pfd: BorrowedFd<'_>, name: &CStr) -> Res<()> {
        let sub = crate::sys::open::openat(pfd, name, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
        if crate::sys::dir::read_all(&sub)?.is_empty() {
            return Ok(());
        }
        let st = stat::fstat(&sub)?;
        drop(sub);
        let tmp = up.temp_name();
        let built = (|| {
            up.mkdir(up.work(), &tmp, st.perm())?;
            if self.opts.set_owner {
                up.chown(up.work(), &tmp, Some(st.uid), Some(st.gid))?;
                // A chown drops the set-group-id bit a directory may carry.
                up.chmod(up.work(), &tmp, st.perm())?;
            }
            up.set_xattr(XTarget::At(up.work(), &tmp), up.dialect.names().opaque, b"y", SetMode::Any)?;
            up.rename(up.work(), &tmp, pfd, name, RenameMode::Exchange)
        })();
        // Either the half-built replacement or, after the swap, the old directory.
        up.discard_later(tmp);
        built
    }
}

//! Renames: `rename` and `renameat2` with `RENAME_NOREPLACE` or `RENAME_EXCHANGE` (the
//! kernel's `ovl_rename`): copy-ups of what moves, redirects and opaque markers for what
//! has lower parts, whiteouts where a lower still shows the old name, and the replaced
//! object's removal.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::error::{Errno, Res};
use crate::sys::fs::RenameMode;
use crate::sys::open::OFlags;
use crate::sys::stat::{self, FileKind};
use crate::sys::xattr::{SetMode, XTarget};
use crate::union::dir::Slot;
use crate::union::fileattr::Change;
use crate::union::layer::{LowerIdx, Upper};
use crate::union::node::{Node, flag};
use crate::union::tables::Side;
use crate::union::{UnionFs, whiteout};

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

/// The object a rename replaces (or, exchanged, moves the other way).
struct Target {
    node: Arc<Node>,
    /// Where its name is: the upper, or only a lower.
    side: Side,
    /// Its link count as shown.
    nlink: u64,
    /// It is an indexed lower hard link whose name must be linked up first.
    own: bool,
}

/// What a rename found, once every check has passed (the kernel's `ovl_renamedata`).
struct Checked<'a> {
    name: &'a CStr,
    newname: &'a CStr,
    flags: RenameFlags,
    src: Arc<Node>,
    src_side: Side,
    src_st: stat::Stat,
    dst: Option<Target>,
}

/// A rename with everything it moves copied up, ready to commit.
struct RenamePlan<'a> {
    name: &'a CStr,
    newname: &'a CStr,
    flags: RenameFlags,
    up: &'a Upper,
    odir: Arc<Node>,
    ndir: Arc<Node>,
    opfd: Arc<OwnedFd>,
    npfd: Arc<OwnedFd>,
    src: Arc<Node>,
    dst: Option<Target>,
    /// Where the data of a metadata-only source (and, exchanged, target) is.
    src_data: Option<(LowerIdx, CString)>,
    dst_data: Option<(LowerIdx, CString)>,
    /// A lower still shows the old name: a whiteout takes its place.
    old_whiteout: bool,
}

impl UnionFs {
    /// `rename` / `renameat2` with `RENAME_NOREPLACE` or `RENAME_EXCHANGE`: every check first
    /// (`rename_check`), then the copy-ups it needs (`rename_plan`),
    /// then the marks and the one rename of the upper (`rename_commit`).
    pub fn rename(&self, parent: u64, name: &CStr, newparent: u64, newname: &CStr, flags: RenameFlags) -> Res<()> {
        crate::sys::name_ok(name.to_bytes())?;
        crate::sys::name_ok(newname.to_bytes())?;
        if crate::union::whiteout::is_marker_name(newname.to_bytes()) {
            return Err(Errno::EINVAL);
        }
        let up = self.layers.upper()?;
        let Some(checked) = self.rename_check(parent, name, newparent, newname, flags)? else {
            // Two names of one object: rename does nothing (POSIX).
            return Ok(());
        };
        let plan = self.rename_plan(up, parent, newparent, checked)?;
        self.rename_commit(plan)
    }

    /// The checks of a rename, before anything changes: `None` when both names are one object.
    fn rename_check<'a>(
        &self,
        parent: u64,
        name: &'a CStr,
        newparent: u64,
        newname: &'a CStr,
        flags: RenameFlags,
    ) -> Res<Option<Checked<'a>>> {
        let odir = self.inodes.get(parent)?;
        let ndir = self.inodes.get(newparent)?;
        let (src, src_side, src_st) = self.peek_stat(&odir, name)?;
        let dst = match self.peek_stat(&ndir, newname) {
            Ok((d, side, st)) => {
                let nlink = self.shown_nlink(&d, &st);
                let own = self.owns_name_first(&d, side, &st);
                Some(Target { node: d, side, nlink, own })
            }
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(e),
        };
        if flags.noreplace && dst.is_some() {
            return Err(Errno::EEXIST);
        }
        if flags.exchange && dst.is_none() {
            return Err(Errno::ENOENT);
        }
        if dst.as_ref().is_some_and(|d| Arc::ptr_eq(&d.node, &src)) {
            return Ok(None);
        }
        // The kernel's `may_delete` of the source, then of the target or `may_create`.
        self.deny(&odir, Change::RemoveEntry)?;
        self.deny(&src, Change::Object)?;
        match &dst {
            Some(d) => {
                self.deny(&ndir, Change::RemoveEntry)?;
                self.deny(&d.node, Change::Object)?;
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
        if let Some(d) = &dst {
            self.check_target(&src, &d.node, &ndir, newparent, flags)?;
        }
        Ok(Some(Checked { name, newname, flags, src, src_side, src_st, dst }))
    }

    /// The checks on the object a rename replaces or exchanges with.
    fn check_target(&self, src: &Arc<Node>, d: &Arc<Node>, ndir: &Node, newparent: u64, flags: RenameFlags) -> Res<()> {
        if d.has(flag::VOL_ROOT) || d.vol != ndir.vol {
            return Err(Errno::EXDEV);
        }
        if flags.exchange {
            if d.is_dir() && d.has_lower() && !self.opts.redirect_dir {
                return Err(Errno::EXDEV);
            }
            return Ok(());
        }
        match (src.is_dir(), d.is_dir()) {
            (false, true) => Err(Errno::EISDIR),
            (true, false) => Err(Errno::ENOTDIR),
            (true, true) if !self.is_empty_dir(d)? => {
                if !d.has_lower() {
                    // Kernel overlayfs leaves a directory with nothing below to the upper
                    // filesystem to refuse, after copying the source (and the target's
                    // parent) up; the copies show (merged directories report one link), so
                    // they are made here too.
                    self.upper_parent(newparent)?;
                    self.copy_up(src)?;
                }
                Err(Errno::ENOTEMPTY)
            }
            _ => Ok(()),
        }
    }

    /// Copies up what a checked rename moves (both parents; the source, as a metadata-only
    /// copy where the mount makes them; an exchanged target) and decides the whiteout.
    fn rename_plan<'a>(&self, up: &'a Upper, parent: u64, newparent: u64, c: Checked<'a>) -> Res<RenamePlan<'a>> {
        let (odir, _, opfd) = self.upper_parent(parent)?;
        let (ndir, _, npfd) = self.upper_parent(newparent)?;
        // A regular file moves as a metadata-only copy where the mount makes them (its data
        // stays below, found through a redirect, as kernel overlayfs does).
        match self.owns_name_first(&c.src, c.src_side, &c.src_st) {
            true => self.own_name(&c.src, &odir, c.name)?,
            false => self.copy_up_meta(&c.src)?,
        }
        let mut dst = c.dst;
        if let Some(d) = &mut dst {
            if d.own {
                // The kernel's `ovl_nlink_start` on the target, for exchange and overwrite.
                self.own_name(&d.node, &ndir, c.newname)?;
                d.side = Side::Upper;
            } else if c.flags.exchange {
                self.copy_up_meta(&d.node)?;
            }
        }
        // Where the data of a metadata-only copy moved is (known by its old name).
        let data_at = |n: &Arc<Node>| match n.kind == FileKind::Regular && n.has(flag::METACOPY) {
            true => self.metacopy_data_path(n).map(Some),
            false => Ok(None),
        };
        let src_data = data_at(&c.src)?;
        let dst_data = match (&dst, c.flags.exchange) {
            (Some(d), true) => data_at(&d.node)?,
            _ => None,
        };
        let old_whiteout = !c.flags.exchange && self.lower_has(&odir, c.name)?;
        Ok(RenamePlan {
            name: c.name,
            newname: c.newname,
            flags: c.flags,
            up,
            odir,
            ndir,
            opfd,
            npfd,
            src: c.src,
            dst,
            src_data,
            dst_data,
            old_whiteout,
        })
    }

    /// Marks what moves, renames in the upper, and updates the nodes (the kernel's
    /// `ovl_rename` from `ovl_set_redirect` on).
    fn rename_commit(&self, p: RenamePlan<'_>) -> Res<()> {
        let (up, exchange) = (p.up, p.flags.exchange);
        let samedir = Arc::ptr_eq(&p.odir, &p.ndir);
        self.mark_moved(up, &p.src, p.opfd.as_fd(), p.name, &p.ndir, &p.src_data, samedir)?;
        if let (true, Some(d)) = (exchange, &p.dst) {
            self.mark_moved(up, &d.node, p.npfd.as_fd(), p.newname, &p.odir, &p.dst_data, samedir)?;
        }
        // A directory replaced by the rename may still hold whiteouts: empty it first.
        if let (false, Some(d)) = (exchange, &p.dst)
            && d.node.is_dir()
            && d.side == Side::Upper
        {
            self.clear_markers(up, p.npfd.as_fd(), p.newname)?;
        }
        let slot = if exchange || p.ndir.vol != 0 { Slot::Free } else { self.slot_any(p.npfd.as_fd(), p.newname)? };
        // The object a rename replaces loses its name; its real inode is free at once if
        // that was its last link.
        let frees = match &p.dst {
            Some(d) if !exchange && d.side == Side::Upper && (d.node.is_dir() || d.nlink <= 1) => Some(&d.node),
            _ => None,
        };
        self.rename_mark();
        let r = self.freeing(frees, || self.rename_upper(&p, slot));
        if r.is_ok() {
            self.renamed(&p);
        }
        self.rename_mark();
        r?;
        // Objects with a lower origin moved into a directory make it impure (kernel
        // `ovl_rename`), both ways for an exchange.
        let has_origin = |n: &Node| n.has(flag::ORIGIN) || (n.is_dir() && n.has_lower());
        if has_origin(&p.src) {
            self.mark_impure(up, &p.ndir, p.npfd.as_fd());
        }
        if let (true, Some(d)) = (exchange, &p.dst)
            && has_origin(&d.node)
        {
            self.mark_impure(up, &p.odir, p.opfd.as_fd());
        }
        p.odir.touch_dir();
        p.ndir.touch_dir();
        Ok(())
    }

    /// A directory with lower parts records where they are (the kernel's `ovl_set_redirect`):
    /// its old name for a move within one directory, else its lower path from the root; a
    /// redirect already there stays when it still holds. A metadata-only copy records where
    /// its data is (`data`) the same way. A directory without lower parts landing in a merged
    /// directory must instead hide whatever lowers hold under its new name (the kernel marks
    /// it opaque the same way).
    #[allow(clippy::too_many_arguments)]
    fn mark_moved(
        &self,
        up: &Upper,
        n: &Arc<Node>,
        pfd: BorrowedFd<'_>,
        nm: &CStr,
        into: &Arc<Node>,
        data: &Option<(LowerIdx, CString)>,
        samedir: bool,
    ) -> Res<()> {
        let names = up.dialect.names();
        let lower_path = match n.dir_lower() {
            Some(dl) if n.is_dir() => Some(dl.path.clone()),
            _ => data.as_ref().map(|(_, p)| p.clone()),
        };
        if let Some(path) = lower_path {
            let old = whiteout::read_redirect(pfd, nm, names)?;
            let new = match old {
                Some(whiteout::Redirect::Absolute(_)) => return Ok(()),
                Some(whiteout::Redirect::Relative(_)) if samedir => return Ok(()),
                None if samedir => whiteout::Redirect::Relative(nm.to_owned()),
                _ => whiteout::Redirect::Absolute(path),
            };
            return up.set_xattr(XTarget::At(pfd, nm), names.redirect, &new.encode(), SetMode::Any);
        }
        if n.is_dir() && into.has_lower() && !n.has(flag::OPAQUE) {
            up.set_xattr(XTarget::At(pfd, nm), names.opaque, b"y", SetMode::Any)?;
            n.set(flag::OPAQUE);
        }
        Ok(())
    }

    /// The one rename of the upper a union rename is (`slot`: what the upper holds at the
    /// target).
    fn rename_upper(&self, p: &RenamePlan<'_>, slot: Slot) -> Res<()> {
        let (up, o, n) = (p.up, p.opfd.as_fd(), p.npfd.as_fd());
        if p.flags.exchange {
            return up.rename(o, p.name, n, p.newname, RenameMode::Exchange);
        }
        if slot == Slot::Whiteout && p.src.is_dir() {
            // A directory cannot replace the whiteout: swap them, and keep the whiteout at
            // the old name only if a lower still shows that name.
            up.rename(o, p.name, n, p.newname, RenameMode::Exchange)?;
            return if p.old_whiteout { Ok(()) } else { up.unlink(o, p.name) };
        }
        if p.old_whiteout {
            up.rename_whiteout(o, p.name, n, p.newname)
        } else {
            up.rename(o, p.name, n, p.newname, RenameMode::Replace)
        }
    }

    /// The nodes after a rename: where each moved object is now, the replaced one's lost
    /// name, and where moved metadata-only copies find their data.
    fn renamed(&self, p: &RenamePlan<'_>) {
        let (oname, nname) = (p.name.to_owned(), p.newname.to_owned());
        if p.flags.exchange {
            if let Some(d) = &p.dst {
                d.node.move_loc(&p.ndir, &nname, &p.odir, oname.as_c_str().into());
            }
        } else if let Some(d) = &p.dst {
            let nlink = if d.node.is_dir() { 1 } else { d.nlink };
            self.name_gone(&d.node, &p.ndir, &nname, nlink);
        }
        p.src.move_loc(&p.odir, &oname, &p.ndir, nname.into());
        for (n, data) in [(Some(&p.src), &p.src_data), (p.dst.as_ref().map(|d| &d.node), &p.dst_data)] {
            if let (Some(n), Some((idx, path))) = (n, data) {
                n.set_moved_data(*idx, path.clone());
            }
        }
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

//! Renames: `rename` and `renameat2` with `RENAME_NOREPLACE` or `RENAME_EXCHANGE` (the
//! kernel's `ovl_rename`): copy-ups of what moves, redirects and opaque markers for what
//! has lower parts, whiteouts where a lower still shows the old name, and the replaced
//! object's removal.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd};
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

impl UnionFs {
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
        let (src, src_side, src_st) = self.peek_stat(&odir, name)?;
        let dst = match self.peek_stat(&ndir, newname) {
            Ok((d, side, st)) => {
                let nlink = self.shown_nlink(&d, &st);
                let own = self.owns_name_first(&d, side, &st);
                Some((d, side, nlink, own))
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
        // A regular file moves as a metadata-only copy where the mount makes them (its data
        // stays below, found through a redirect, as kernel overlayfs does).
        match self.owns_name_first(&src, src_side, &src_st) {
            true => self.own_name(&src, &odir, name)?,
            false => self.copy_up_meta(&src)?,
        }
        let mut dst = dst;
        if let Some((d, side, _, own)) = &mut dst {
            if *own {
                // The kernel's `ovl_nlink_start` on the target, for exchange and overwrite.
                self.own_name(d, &ndir, newname)?;
                *side = Side::Upper;
            } else if flags.exchange {
                self.copy_up_meta(d)?;
            }
        }
        // Where the data of a metadata-only copy moved is (known by its old name).
        let data_at = |n: &Arc<Node>| match n.kind == FileKind::Regular && n.has(flag::METACOPY) {
            true => self.metacopy_data_path(n).map(Some),
            false => Ok(None),
        };
        let src_data = data_at(&src)?;
        let dst_data = match (&dst, flags.exchange) {
            (Some((d, ..)), true) => data_at(d)?,
            _ => None,
        };
        let old_whiteout = !flags.exchange && self.lower_has(&odir, name)?;
        let names = up.dialect.names();
        let samedir = Arc::ptr_eq(&odir, &ndir);
        // A directory with lower parts records where they are (kernel `ovl_set_redirect`):
        // its old name for a move within one directory, else its lower path from the root;
        // a redirect already there stays when it still holds. A directory without lower
        // parts landing in a merged directory must instead hide whatever lowers hold under
        // its new name (the kernel marks it opaque the same way).
        // A metadata-only copy records where its data is (`data`) the same way.
        let mark_moved = |n: &Arc<Node>,
                          pfd: BorrowedFd<'_>,
                          nm: &CStr,
                          into: &Arc<Node>,
                          data: &Option<(LowerIdx, CString)>|
         -> Res<()> {
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
        };
        mark_moved(&src, opfd.as_fd(), name, &ndir, &src_data)?;
        if let (true, Some((d, ..))) = (flags.exchange, &dst) {
            mark_moved(d, npfd.as_fd(), newname, &odir, &dst_data)?;
        }
        // A directory replaced by the rename may still hold whiteouts: empty it first.
        if let (false, Some((d, dside, ..))) = (flags.exchange, &dst)
            && d.is_dir()
            && *dside == Side::Upper
        {
            self.clear_markers(up, npfd.as_fd(), newname)?;
        }
        let slot = if flags.exchange || ndir.vol != 0 { Slot::Free } else { self.slot_any(npfd.as_fd(), newname)? };
        // The object a rename replaces loses its name; its real inode is free at once if
        // that was its last link.
        let frees = match &dst {
            Some((d, Side::Upper, nlink, _)) if !flags.exchange && (d.is_dir() || *nlink <= 1) => Some(d),
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
            } else if let Some((d, _, nlink, _)) = &dst {
                let nlink = if d.is_dir() { 1 } else { *nlink };
                self.name_gone(d, &ndir, &nname, nlink);
            }
            src.move_loc(&odir, &oname, &ndir, nname.into());
            for (n, data) in [(Some(&src), src_data), (dst.as_ref().map(|d| &d.0), dst_data)] {
                if let (Some(n), Some((idx, path))) = (n, data) {
                    n.set_moved_data(idx, path);
                }
            }
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

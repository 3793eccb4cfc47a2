//! The hard-link index (`index=on`, kernel overlayfs's format): when one name of a lower
//! file with several names is copied up, the copy is also linked as `WORK/index/<hex of its
//! origin handle>`, and every name of the lower file is one object with that upper inode:
//! same `st_ino`, same data, one link count. A lookup of another name finds the index entry
//! and uses it as the object (nothing is written); the name is linked to it (its directory
//! copied up) only when a change goes through that name: an open for writing, a change of
//! status, a link, a rename or unlink (the kernel's `ovl_link_up`). The link count the mount
//! shows is the upper inode's, minus the index's own link, plus the lower names not linked
//! up yet; that difference is kept in `overlay.nlink` as `U+n`/`U-n` (upper count plus n),
//! as the kernel writes it. The entry goes with the last name.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use crate::error::{Errno, Res};
use crate::sys::fs::SetTime;
use crate::sys::stat::{self, FileKind, Stat};
use crate::sys::xattr::{self, SetMode, XTarget};
use crate::union::UnionFs;
use crate::union::node::{Loc, Node, flag};
use crate::union::tables::Side;

/// The index entry name for an origin value: its bytes in lower-case hex.
pub fn key_of_origin(origin: &[u8]) -> Res<CString> {
    let hex: String = origin.iter().map(|b| format!("{b:02x}")).collect();
    CString::new(hex).map_err(|_| Errno::EIO)
}

/// A stored link count (`overlay.nlink`), as the kernel writes it: relative to the upper
/// inode's own link count (`U+n`), or to the lower file's (`L+n`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredNlink {
    /// `U+n`: the upper inode's link count plus n.
    Upper(i64),
    /// `L+n`: the lower file's link count plus n. Written before a lower name is linked up
    /// (as the kernel's `ovl_link_up` does): the count it gives does not depend on how many
    /// upper links exist, so a crash before or after the link leaves it right.
    Lower(i64),
}

/// Parses `U+n` / `U-n` / `L+n` / `L-n`.
pub fn parse_nlink(v: &[u8]) -> Option<StoredNlink> {
    let s = std::str::from_utf8(v).ok()?;
    let n = |rest: &str| rest.parse::<i64>().ok().filter(|_| rest.starts_with(['+', '-']));
    match s.split_at_checked(1)? {
        ("U", rest) => n(rest).map(StoredNlink::Upper),
        ("L", rest) => n(rest).map(StoredNlink::Lower),
        _ => None,
    }
}

/// Encodes a stored link count.
pub fn encode_nlink(n: StoredNlink) -> Vec<u8> {
    match n {
        StoredNlink::Upper(n) => format!("U{n:+}").into_bytes(),
        StoredNlink::Lower(n) => format!("L{n:+}").into_bytes(),
    }
}

impl UnionFs {
    /// The index key of lower file `name` in `dir` of lower layer with filesystem `uuid`, if
    /// the mount keeps an index and the file has more than one name.
    pub(crate) fn index_key(&self, dir: BorrowedFd<'_>, name: &CStr, st: &Stat, uuid: &[u8; 16]) -> Option<CString> {
        if !self.opts.index || !st.is_reg() || st.nlink < 2 {
            return None;
        }
        let fh = crate::sys::handle::name_to_handle_at(dir, name).ok()?;
        key_of_origin(&crate::union::copy_up::encode_origin(fh.kind, &fh.bytes, uuid)).ok()
    }

    /// The index directory, if the mount keeps one.
    pub(crate) fn index_dir(&self) -> Option<BorrowedFd<'_>> {
        self.layers.upper.as_ref()?.index.get().map(|f| f.as_fd())
    }

    /// The index directory, shared (for [`crate::union::Real`]).
    pub(crate) fn index_dir_shared(&self) -> Option<Arc<std::os::fd::OwnedFd>> {
        self.layers.upper.as_ref()?.index.get().cloned()
    }

    /// Whether the index holds `key`.
    pub(crate) fn indexed(&self, key: &CStr) -> bool {
        self.index_dir().is_some_and(|d| stat::statat(d, key).is_ok())
    }

    /// The link count the mount shows for the indexed upper inode reached as `t` (the lower
    /// file has `lower_nlink` names, if known), and the inode's own link count.
    fn shown_and_upper(&self, t: XTarget<'_>, lower_nlink: Option<u64>) -> Res<(i64, i64)> {
        let up = self.layers.upper()?;
        let upper = match t {
            XTarget::Fd(fd) => stat::fstat(fd)?.nlink,
            XTarget::At(d, n) => stat::statat(d, n)?.nlink,
        };
        let upper = i64::try_from(upper).unwrap_or(i64::MAX);
        let stored = xattr::get(t, up.dialect.names().nlink)?.as_deref().and_then(parse_nlink);
        let shown = match (stored, lower_nlink) {
            (Some(StoredNlink::Upper(n)), _) => upper + n,
            (Some(StoredNlink::Lower(n)), Some(l)) => i64::try_from(l).unwrap_or(i64::MAX) + n,
            // Relative to a lower file that cannot be found: the best guess is the upper count.
            (Some(StoredNlink::Lower(n)), None) => upper + n,
            (None, _) => upper,
        };
        Ok((shown, upper))
    }

    /// Whether a change to the name of `node` (found on `side`, with status `st`) must make
    /// the name an upper link first: under `index=on`, a lower hard link is indexed before
    /// one of its names goes, and a name of an indexed one is linked up, so that the count
    /// its other names show changes with it (the kernel's `ovl_nlink_start`).
    pub(crate) fn owns_name_first(&self, node: &Node, side: Side, st: &Stat) -> bool {
        self.opts.index
            && node.kind == FileKind::Regular
            && node.vol == 0
            && (node.has(flag::INDEXED) || (side != Side::Upper && st.nlink > 1))
    }

    /// Makes `name` in `dir` an upper link of `node`: copied up under that name, or (an
    /// indexed hard link) linked up.
    pub(crate) fn own_name(&self, node: &Arc<Node>, dir: &Arc<Node>, name: &CStr) -> Res<()> {
        if !node.has_upper() {
            node.use_loc(Loc { parent: Some(dir.clone()), name: name.into() });
            self.copy_up(node)?;
        }
        self.link_up_name(node, dir, name)
    }

    /// Links up the name of indexed hard link `node` walked last (the kernel's `ovl_copy_up`
    /// of the dentry an open for writing, a `link` or a change of status goes through).
    pub(crate) fn link_up_walked(&self, node: &Arc<Node>) -> Res<()> {
        if !node.has(flag::INDEXED) {
            return Ok(());
        }
        let loc = node.loc();
        match &loc.parent {
            Some(p) => self.link_up_name(node, p, &loc.name),
            None => Ok(()),
        }
    }

    /// For a change to a file with several names, makes the name the kernel's dentry would
    /// be the one walked last: for a change FUSE names with a descriptor (`ftruncate`), the
    /// name that descriptor was opened by, and false if that name is gone (the change goes
    /// to the object through no name). Other changes (`chmod` and `fchmod` look alike to
    /// FUSE: both name only the inode) go through the name looked up last, which is the
    /// one a path names; for a change through a descriptor it may be another (see the
    /// README's semantics).
    pub(crate) fn change_through(&self, node: &Arc<Node>, fh: Option<u64>) -> bool {
        let Some(h) = fh.and_then(|fh| self.handles.get(fh).ok()) else { return true };
        let Some(name) = h.name.as_ref().filter(|_| Arc::ptr_eq(&h.node, node)) else { return true };
        if !node.has_loc(name) {
            return false;
        }
        node.use_loc(name.clone());
        true
    }

    /// Links the indexed copy `key` in as `name` of upper directory `dir` (a lower name of
    /// an indexed hard link, with `lower_nlink` names, that a change goes through for the
    /// first time): one more upper link, one fewer lower name outstanding, the same count
    /// shown. The count is stored relative to the lower file first, so a crash around the
    /// link leaves it right. The directory is copied up and marked impure, as the kernel's
    /// `ovl_link_up` does.
    pub(crate) fn link_up(&self, dir: &Arc<Node>, name: &CStr, key: &CStr, lower_nlink: u64) -> Res<()> {
        let up = self.layers.upper()?;
        let index = self.index_dir().ok_or(Errno::EIO)?;
        self.copy_up(dir)?;
        let pfd = self.dir_fd(dir, Side::Upper)?;
        self.mark_impure(up, dir, pfd.as_fd());
        self.link_index(up, index, key, pfd.as_fd(), name, lower_nlink)
    }

    /// Makes `name` in `dir`, a name of indexed hard link `node`, a link of its upper inode
    /// if it is not one yet (lazily, as the kernel links names up: a lookup finds the index
    /// entry and uses it; only a change through the name links it).
    pub(crate) fn link_up_name(&self, node: &Arc<Node>, dir: &Arc<Node>, name: &CStr) -> Res<()> {
        let Some(key) = node.index_key() else { return Ok(()) };
        if node.has(flag::DEAD) {
            return Ok(());
        }
        let _guard = node.copy_up_lock.lock();
        if dir.has_upper() {
            let pfd = self.dir_fd(dir, Side::Upper)?;
            match stat::statat(&*pfd, name) {
                Ok(st) if st.ino == node.upper_ino() => return Ok(()),
                Ok(_) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        // Not a lower name (a name made through the mount is always linked): nothing to do.
        let Some(lower_nlink) = self.lower_nlink_of(dir, name) else { return Ok(()) };
        self.link_up(dir, name, &key, lower_nlink)
    }

    /// Links index entry `key` as `name` in upper directory `pfd`, keeping the shown link
    /// count (see [`UnionFs::link_up`]); an existing `name` is taken as done.
    pub(crate) fn link_index(
        &self,
        up: &crate::union::layer::Upper,
        index: BorrowedFd<'_>,
        key: &CStr,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        lower_nlink: u64,
    ) -> Res<()> {
        let t = XTarget::At(index, key);
        let (shown, _) = self.shown_and_upper(t, Some(lower_nlink))?;
        let lower = i64::try_from(lower_nlink).unwrap_or(i64::MAX);
        let nlink = up.dialect.names().nlink;
        up.set_xattr(t, nlink, &encode_nlink(StoredNlink::Lower(shown - lower)), SetMode::Any)?;
        // Another name of an object already there: the directory's times do not change in
        // the merged view (kernel overlayfs keeps them, as for any copy-up).
        let times = stat::fstat(pfd)?;
        match up.link(index, key, pfd, name) {
            Ok(()) => {
                let (a, m) = (SetTime::At(times.atime), SetTime::At(times.mtime));
                if let Err(e) = up.utimens(pfd, crate::sys::DOT, a, m) {
                    tracing::debug!("cannot restore directory times after a link-up: {e}");
                }
            }
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        self.settle_nlink(t, Some(lower_nlink))
    }

    /// Rewrites the stored count of the indexed inode reached as `t` relative to its upper
    /// link count (`U+n`), which link, unlink and rename through the mount keep right as
    /// they change the upper count, and loads it.
    pub(crate) fn settle_nlink(&self, t: XTarget<'_>, lower_nlink: Option<u64>) -> Res<()> {
        let up = self.layers.upper()?;
        let (shown, upper) = self.shown_and_upper(t, lower_nlink)?;
        let stored = xattr::get(t, up.dialect.names().nlink)?.as_deref().and_then(parse_nlink);
        let want = StoredNlink::Upper(shown - upper);
        if stored != Some(want) {
            up.set_xattr(t, up.dialect.names().nlink, &encode_nlink(want), SetMode::Any)?;
        }
        let ino = match t {
            XTarget::Fd(fd) => stat::fstat(fd)?.ino,
            XTarget::At(d, n) => stat::statat(d, n)?.ino,
        };
        self.index_diffs.insert(ino, shown - upper);
        Ok(())
    }

    /// The link count a node shows: for an indexed hard link, the upper inode's without the
    /// index's own link, plus the lower names not linked up yet.
    pub(crate) fn shown_nlink(&self, node: &Node, st: &Stat) -> u64 {
        if !node.has(flag::INDEXED) {
            return st.nlink;
        }
        if st.nlink == 0 || node.has(flag::DEAD) {
            // Its last name went (and the index entry with it): open descriptors show none.
            return 0;
        }
        let diff = self.index_diffs.get(&node.upper_ino()).map(|d| *d).unwrap_or(0);
        u64::try_from(i64::try_from(st.nlink).unwrap_or(i64::MAX) + diff).unwrap_or(1).max(1)
    }

    /// Reads the stored count of node `upper_ino`'s upper inode (reached as `t`) into
    /// memory; one stored relative to the lower file (a crash cut a link-up short) is
    /// settled relative to the upper count.
    pub(crate) fn load_nlink_diff(&self, upper_ino: u64, t: XTarget<'_>, lower_nlink: Option<u64>) {
        match self.settle_nlink(t, lower_nlink) {
            Ok(()) => {}
            Err(e) => {
                tracing::debug!("cannot read the link count of indexed inode {upper_ino}: {e}");
                self.index_diffs.insert(upper_ino, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nlink_codec_is_the_kernels() {
        assert_eq!(encode_nlink(StoredNlink::Upper(0)), b"U+0");
        assert_eq!(encode_nlink(StoredNlink::Upper(2)), b"U+2");
        assert_eq!(encode_nlink(StoredNlink::Upper(-1)), b"U-1");
        assert_eq!(encode_nlink(StoredNlink::Lower(0)), b"L+0");
        assert_eq!(parse_nlink(b"U+0"), Some(StoredNlink::Upper(0)));
        assert_eq!(parse_nlink(b"U-3"), Some(StoredNlink::Upper(-3)));
        assert_eq!(parse_nlink(b"L+1"), Some(StoredNlink::Lower(1)));
        assert_eq!(parse_nlink(b"U3"), None);
        assert_eq!(parse_nlink(b"X+1"), None);
        assert_eq!(parse_nlink(b""), None);
        assert_eq!(key_of_origin(&[0x00, 0xfb, 0x1d]).unwrap().as_bytes(), b"00fb1d");
    }
}

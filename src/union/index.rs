//! The hard-link index (`index=on`, kernel overlayfs's format): when one name of a lower
//! file with several names is copied up, the copy is also linked as `WORK/index/<hex of its
//! origin handle>`; every other name of the lower file is then linked to that same upper
//! inode (at copy-up for names the daemon knows, at lookup for the others), so all names stay
//! one inode: same `st_ino`, same data, one link count. The link count the mount shows is the
//! upper inode's, minus the index's own link, plus the lower names not linked up yet; that
//! difference is kept in `overlay.nlink` as `U+n`/`U-n` (upper count plus n), as the kernel
//! writes it.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use crate::error::{Errno, Res};
use crate::sys::stat::{self, Stat};
use crate::sys::xattr::{self, SetMode, XTarget};
use crate::union::UnionFs;
use crate::union::node::{Node, flag};
use crate::union::tables::Side;

/// The index entry name for an origin value: its bytes in lower-case hex.
pub fn key_of_origin(origin: &[u8]) -> Res<CString> {
    let hex: String = origin.iter().map(|b| format!("{b:02x}")).collect();
    CString::new(hex).map_err(|_| Errno::EIO)
}

/// Parses `U+n` / `U-n`.
pub fn parse_nlink(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let rest = s.strip_prefix('U')?;
    rest.parse::<i64>().ok()
}

/// Encodes `U+n` / `U-n`.
pub fn encode_nlink(n: i64) -> Vec<u8> {
    format!("U{n:+}").into_bytes()
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

    /// Whether the index holds `key`.
    pub(crate) fn indexed(&self, key: &CStr) -> bool {
        self.index_dir().is_some_and(|d| stat::statat(d, key).is_ok())
    }

    /// The stored link-count difference of the upper inode reached as `t`.
    pub(crate) fn nlink_diff(&self, t: XTarget<'_>) -> i64 {
        let Ok(up) = self.layers.upper() else { return 0 };
        match xattr::get(t, up.dialect.names().nlink) {
            Ok(Some(v)) => parse_nlink(&v).unwrap_or(0),
            _ => 0,
        }
    }

    /// Adds `by` to the stored link-count difference of the upper inode reached as `t`.
    pub(crate) fn add_nlink_diff(&self, t: XTarget<'_>, by: i64) -> Res<()> {
        let up = self.layers.upper()?;
        let n = self.nlink_diff(t) + by;
        up.set_xattr(t, up.dialect.names().nlink, &encode_nlink(n), SetMode::Any)
    }

    /// Links the indexed copy `key` in as `name` of upper directory `dir` (a lower name of
    /// an indexed hard link seen for the first time): one more upper link, one fewer lower
    /// name outstanding.
    pub(crate) fn link_up(&self, dir: &Arc<Node>, name: &CStr, key: &CStr) -> Res<()> {
        let up = self.layers.upper()?;
        let index = self.index_dir().ok_or(Errno::EIO)?;
        self.copy_up(dir)?;
        let pfd = self.dir_fd(dir, Side::Upper)?;
        match up.link(index, key, pfd.as_fd(), name) {
            Ok(()) => self.add_nlink_diff(XTarget::At(index, key), -1),
            Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The link count a node shows: for an indexed hard link, the upper inode's without the
    /// index's own link, plus the lower names not linked up yet.
    pub(crate) fn shown_nlink(&self, node: &Node, st: &Stat) -> u64 {
        if !node.has(flag::INDEXED) {
            return st.nlink;
        }
        let diff = self.index_diffs.get(&node.upper_ino()).map(|d| *d).unwrap_or(0);
        u64::try_from(i64::try_from(st.nlink).unwrap_or(i64::MAX) + diff).unwrap_or(1).max(1)
    }

    /// Reads the stored difference of node `ino`'s upper inode (reached as `t`) into memory.
    pub(crate) fn load_nlink_diff(&self, upper_ino: u64, t: XTarget<'_>) {
        let d = self.nlink_diff(t);
        self.index_diffs.insert(upper_ino, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nlink_codec_is_the_kernels() {
        assert_eq!(encode_nlink(0), b"U+0");
        assert_eq!(encode_nlink(2), b"U+2");
        assert_eq!(encode_nlink(-1), b"U-1");
        assert_eq!(parse_nlink(b"U+0"), Some(0));
        assert_eq!(parse_nlink(b"U-3"), Some(-3));
        assert_eq!(parse_nlink(b"L+1"), None);
        assert_eq!(key_of_origin(&[0x00, 0xfb, 0x1d]).unwrap().as_bytes(), b"00fb1d");
    }
}

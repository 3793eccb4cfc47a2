//! The marker codec: whiteouts and opaque directories in every dialect we read, and the
//! kernel's dialect that we write.
//!
//! | meaning    | dialect                                                    | read | written |
//! |------------|------------------------------------------------------------|------|---------|
//! | whiteout   | 0/0 character device                                       | yes  | yes     |
//! | whiteout   | empty file with `{trusted,user}.overlay.whiteout` (parent `overlay.opaque=x`) | yes | no |
//! | whiteout   | `.wh.NAME` beside it (OCI/AUFS)                            | yes  | no      |
//! | opaque dir | `{trusted,user}.overlay.opaque=y`                          | yes  | yes (trusted as root, user otherwise) |
//! | opaque dir | `.wh..wh..opq` entry inside                                | yes  | no      |
//! | renamed dir | `{trusted,user}.overlay.redirect` = old name, or `/`-rooted lower path | yes | yes |
//! | data below | `{trusted,user}.overlay.metacopy` on an upper file (with `metacopy=on`) | yes | yes |
//!
//! No marker and no private xattr (`trusted.overlay.*`, `user.overlay.*`) ever reaches the
//! merged view: the functions here decide what is hidden.

use std::ffi::{CStr, CString};
use std::os::fd::BorrowedFd;

use crate::error::{Errno, Res};
use crate::sys::xattr::{self, XTarget};

/// Prefix of OCI/AUFS whiteout entries.
pub const WH_PREFIX: &[u8] = b".wh.";
/// The OCI/AUFS opaque-directory marker entry.
pub const OPAQUE_MARKER: &CStr = c".wh..wh..opq";
/// Prefix of AUFS metadata entries (`.wh..wh.plnk`, `.wh..wh.aufs`, the opaque marker).
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// Which xattr namespace the union's private markers live in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `trusted.overlay.*`: kernel overlayfs mounted by root.
    Trusted,
    /// `user.overlay.*`: kernel overlayfs with `userxattr` (rootless).
    User,
}

/// The private xattr names of one dialect.
#[derive(Clone, Copy, Debug)]
pub struct XattrNames {
    /// Opaque directory (`y`) or directory holding xattr whiteouts (`x`).
    pub opaque: &'static CStr,
    /// Xattr whiteout marker.
    pub whiteout: &'static CStr,
    /// Copy-up origin file handle.
    pub origin: &'static CStr,
    /// Directory that may hold copied-up (origin-carrying) entries.
    pub impure: &'static CStr,
    /// Where a renamed directory came from.
    pub redirect: &'static CStr,
    /// A copied-up file whose data is still in the lower layer.
    pub metacopy: &'static CStr,
    /// An indexed hard link's link count relative to its upper one (`U+n`, `U-n`).
    pub nlink: &'static CStr,
    /// Immutable (`i`) and append-only (`a`) flags of an upper object, kept out of its real
    /// flags (see [`crate::union::fileattr`]).
    pub protattr: &'static CStr,
}

/// `trusted.overlay.*`.
pub const TRUSTED: XattrNames = XattrNames {
    opaque: c"trusted.overlay.opaque",
    whiteout: c"trusted.overlay.whiteout",
    origin: c"trusted.overlay.origin",
    impure: c"trusted.overlay.impure",
    redirect: c"trusted.overlay.redirect",
    metacopy: c"trusted.overlay.metacopy",
    nlink: c"trusted.overlay.nlink",
    protattr: c"trusted.overlay.protattr",
};

/// `user.overlay.*`.
pub const USER: XattrNames = XattrNames {
    opaque: c"user.overlay.opaque",
    whiteout: c"user.overlay.whiteout",
    origin: c"user.overlay.origin",
    impure: c"user.overlay.impure",
    redirect: c"user.overlay.redirect",
    metacopy: c"user.overlay.metacopy",
    nlink: c"user.overlay.nlink",
    protattr: c"user.overlay.protattr",
};

impl Dialect {
    /// The names of this dialect.
    pub fn names(self) -> &'static XattrNames {
        match self {
            Dialect::Trusted => &TRUSTED,
            Dialect::User => &USER,
        }
    }

    /// The namespace of its private attributes.
    fn prefix(self) -> &'static [u8] {
        match self {
            Dialect::Trusted => b"trusted.overlay.",
            Dialect::User => b"user.overlay.",
        }
    }

    /// Whether an attribute stored in a layer is private to a mount of this dialect (hidden
    /// from the merged view). As kernel overlayfs: a root mount's markers are
    /// `trusted.overlay.*` only (`user.overlay.*` are a user's ordinary attributes there),
    /// a `userxattr` mount's `user.overlay.*` only; escaped names are not private.
    pub fn is_private(self, name: &[u8]) -> bool {
        let p = self.prefix();
        is_foreign_xattr(name) || (name.starts_with(p) && !name[p.len()..].starts_with(b"overlay."))
    }

    /// The name under which an attribute the merged view calls `name` is stored: the
    /// dialect's `P.overlay.X` becomes `P.overlay.overlay.X` (the kernel's escaping).
    pub fn escape(self, name: &[u8]) -> std::borrow::Cow<'_, [u8]> {
        let p = self.prefix();
        match name.strip_prefix(p) {
            Some(rest) => std::borrow::Cow::Owned([p, b"overlay.", rest].concat()),
            None => std::borrow::Cow::Borrowed(name),
        }
    }

    /// What the merged view calls an attribute stored as `name`: escaped names unescaped,
    /// private ones `None`.
    pub fn unescape(self, name: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        if is_foreign_xattr(name) {
            return None;
        }
        let p = self.prefix();
        match name.strip_prefix(p) {
            Some(rest) => Some(std::borrow::Cow::Owned([p, rest.strip_prefix(b"overlay.")?].concat())),
            None => Some(std::borrow::Cow::Borrowed(name)),
        }
    }

    /// The dialects whose markers a mount of this one reads: its own only.
    pub fn only(self) -> Dialects {
        Dialects(Some(self))
    }
}

/// Whose markers a reader honours: one dialect (a mount, as the kernel), or every dialect
/// (`None`: the manager's own tools, reading layers any engine wrote).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialects(pub Option<Dialect>);

impl Dialects {
    /// Every dialect.
    pub const ANY: Dialects = Dialects(None);

    fn names(self) -> &'static [&'static XattrNames] {
        match self.0 {
            Some(Dialect::Trusted) => &[&TRUSTED],
            Some(Dialect::User) => &[&USER],
            None => &[&TRUSTED, &USER],
        }
    }
}

/// The two namespaces of private xattrs.
const PRIVATE_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// fuse-overlayfs's own namespace (its opacity marker, `user.fuseoverlayfs.opaque`, and its
/// bookkeeping) in layers it wrote: hidden from the merged view as fuse-overlayfs hides it,
/// never escaped, and not settable through the mount.
const FOREIGN_PREFIX: &[u8] = b"user.fuseoverlayfs.";

/// fuse-overlayfs's opacity marker (`y`).
const FOREIGN_OPAQUE: &CStr = c"user.fuseoverlayfs.opaque";

/// Whether an attribute name belongs to fuse-overlayfs's private namespace.
pub fn is_foreign_xattr(name: &[u8]) -> bool {
    name.starts_with(FOREIGN_PREFIX)
}

/// Whether an xattr name, as stored in a layer, is private to the union (a marker: hidden
/// from the merged view). Escaped names (`trusted.overlay.overlay.*`) are not: they hold a
/// user's own `trusted.overlay.*` attributes, as kernel overlayfs stores them for nested
/// overlays.
pub fn is_private_xattr(name: &[u8]) -> bool {
    is_foreign_xattr(name)
        || PRIVATE_PREFIXES.iter().any(|p| name.starts_with(p) && !name[p.len()..].starts_with(b"overlay."))
}

/// Whether a directory entry name is a marker that never appears in the merged view.
pub fn is_marker_name(name: &[u8]) -> bool {
    name.starts_with(WH_PREFIX)
}

/// For `.wh.NAME`, the whited-out `NAME`; `None` for other names and for AUFS metadata
/// (`.wh..wh.*`, including the opaque marker).
pub fn whiteout_target(name: &[u8]) -> Option<&[u8]> {
    if name.starts_with(AUFS_META_PREFIX) {
        return None;
    }
    name.strip_prefix(WH_PREFIX).filter(|t| !t.is_empty())
}

/// `.wh.NAME`, or `None` when that would exceed the longest name a filesystem accepts (so no
/// such whiteout can exist).
pub fn whiteout_name(name: &[u8]) -> Option<CString> {
    if name.len() + WH_PREFIX.len() > crate::sys::NAME_MAX {
        return None;
    }
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name);
    CString::new(v).ok()
}

/// What a directory's markers in one layer say about the layers below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DirMarks {
    /// The directory hides every layer below it.
    pub opaque: bool,
    /// Entries may be xattr whiteouts (`overlay.opaque=x`).
    pub xwhiteouts: bool,
}

/// Reads the opacity markers of directory `name` in `dir` (`"."` for `dir` itself): the
/// `overlay.opaque` xattr of `dialects`, fuse-overlayfs's `user.fuseoverlayfs.opaque` and
/// the `.wh..wh..opq` entry.
pub fn dir_marks(
    dir: BorrowedFd<'_>,
    name: &CStr,
    dir_fd: Option<BorrowedFd<'_>>,
    dialects: Dialects,
) -> Res<DirMarks> {
    let mut marks = dir_xattr_marks(dir, name, dialects)?;
    if !marks.opaque {
        marks.opaque = match dir_fd {
            Some(fd) => gone_is_false(crate::sys::stat::statat(fd, OPAQUE_MARKER))?,
            None => has_opaque_file(dir, name)?,
        };
    }
    Ok(marks)
}

/// Whether directory `name` in `dir` holds the OCI dialect's opaque marker file.
pub fn has_opaque_file(dir: BorrowedFd<'_>, name: &CStr) -> Res<bool> {
    let flags = crate::sys::open::OFlags::PATH | crate::sys::open::OFlags::DIRECTORY;
    let fd = crate::sys::open::openat(dir, name, flags, 0)?;
    gone_is_false(crate::sys::stat::statat(&fd, OPAQUE_MARKER))
}

/// `Ok(true)` for a result, `Ok(false)` for `ENOENT`.
fn gone_is_false<T>(r: Res<T>) -> Res<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The markers of directory `name` in `dir` that its xattrs carry, without looking inside
/// it for the OCI dialect's opaque marker file (which costs a read of the directory's
/// contents): what a directory with no layer below it needs.
pub fn dir_xattr_marks(dir: BorrowedFd<'_>, name: &CStr, dialects: Dialects) -> Res<DirMarks> {
    let mut marks = DirMarks::default();
    let attrs = dialects.names().iter().map(|n| n.opaque).chain([FOREIGN_OPAQUE]);
    for attr in attrs {
        match xattr::get(XTarget::At(dir, name), attr) {
            Ok(Some(v)) if v.as_slice() == b"y" => marks.opaque = true,
            Ok(Some(_)) if attr == FOREIGN_OPAQUE => {}
            Ok(Some(v)) if v.as_slice() == b"x" => marks.xwhiteouts = true,
            Ok(_) => {}
            // Unreadable (permissions on trusted.* for example): not a marker we can see.
            Err(Errno::EPERM) | Err(Errno::EACCES) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(marks)
}

/// Whether entry `name` of `dir`, an empty regular file, carries the xattr-whiteout marker.
pub fn is_xattr_whiteout(dir: BorrowedFd<'_>, name: &CStr, dialects: Dialects) -> Res<bool> {
    for names in dialects.names() {
        match xattr::get(XTarget::At(dir, name), names.whiteout) {
            Ok(Some(_)) => return Ok(true),
            Ok(None) | Err(Errno::EPERM) | Err(Errno::EACCES) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Where a redirected directory's lower parts are (the `overlay.redirect` value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// Under this other name in the same parent (a rename within one directory).
    Relative(CString),
    /// At this path from every lower layer's root (no leading `/`; empty for the root).
    Absolute(CString),
}

impl Redirect {
    /// Decodes a stored value. Names must be plain (no `.`, `..`, empty components, or `/`
    /// in a relative value): anything else is a corrupt or hostile marker (`EIO`).
    pub fn parse(v: &[u8]) -> Res<Redirect> {
        let plain = |c: &[u8]| !c.is_empty() && c != b"." && c != b".." && !c.contains(&0);
        if let Some(path) = v.strip_prefix(b"/") {
            if path.split(|b| *b == b'/').all(plain) {
                return CString::new(path).map(Redirect::Absolute).map_err(|_| Errno::EIO);
            }
            return Err(Errno::EIO);
        }
        if plain(v) && !v.contains(&b'/') {
            return CString::new(v).map(Redirect::Relative).map_err(|_| Errno::EIO);
        }
        Err(Errno::EIO)
    }

    /// The value to store.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Redirect::Relative(n) => n.as_bytes().to_vec(),
            Redirect::Absolute(p) => [b"/", p.as_bytes()].concat(),
        }
    }
}

/// The redirect recorded on directory `name` in `dir`, if any.
pub fn read_redirect(dir: BorrowedFd<'_>, name: &CStr, names: &XattrNames) -> Res<Option<Redirect>> {
    match xattr::get(XTarget::At(dir, name), names.redirect) {
        Ok(Some(v)) => Redirect::parse(&v).map(Some),
        Ok(None) | Err(Errno::EPERM) | Err(Errno::EACCES) | Err(Errno::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redirect_codec() {
        use super::Redirect;
        let r = Redirect::parse(b"old").unwrap();
        assert_eq!(r, Redirect::Relative(c"old".into()));
        assert_eq!(r.encode(), b"old");
        let a = Redirect::parse(b"/a/b").unwrap();
        assert_eq!(a, Redirect::Absolute(c"a/b".into()));
        assert_eq!(a.encode(), b"/a/b");
        for bad in [&b""[..], b"a/b", b"..", b".", b"/a/../b", b"/a//b", b"/a/", b"/..", b"a\0b"] {
            let bad: Vec<u8> = bad.iter().map(|c| if *c == b'\\' { 0 } else { *c }).collect();
            assert!(Redirect::parse(&bad).is_err(), "{bad:?}");
        }
    }

    use super::*;

    #[test]
    fn oci_whiteout_names() {
        assert_eq!(whiteout_target(b".wh.foo"), Some(&b"foo"[..]));
        assert_eq!(whiteout_target(b".wh..wh..opq"), None);
        assert_eq!(whiteout_target(b".wh..wh.plnk"), None);
        assert_eq!(whiteout_target(b".wh."), None);
        assert_eq!(whiteout_target(b"foo"), None);
        assert_eq!(whiteout_target(b".wh.foo.wh.bar"), Some(&b"foo.wh.bar"[..]));
    }

    #[test]
    fn markers_are_hidden() {
        assert!(is_marker_name(b".wh.foo"));
        assert!(is_marker_name(b".wh..wh..opq"));
        assert!(!is_marker_name(b".whatever"));
        assert!(!is_marker_name(b"a.wh.b"));
    }

    #[test]
    fn whiteout_name_respects_name_max() {
        assert_eq!(whiteout_name(b"a").as_deref(), Some(c".wh.a"));
        assert!(whiteout_name(&[b'x'; 251]).is_some());
        assert!(whiteout_name(&[b'x'; 252]).is_none());
    }

    #[test]
    fn private_xattrs() {
        assert!(is_private_xattr(b"trusted.overlay.opaque"));
        assert!(is_private_xattr(b"user.overlay.origin"));
        assert!(!is_private_xattr(b"trusted.overlay.overlay.opaque"), "escaped user data");
        assert!(!is_private_xattr(b"user.overlayx"));
        assert!(!is_private_xattr(b"user.note"));
        assert!(!is_private_xattr(b"security.selinux"));
        assert!(is_private_xattr(b"user.fuseoverlayfs.opaque"), "fuse-overlayfs's namespace");
    }

    #[test]
    fn xattr_escaping_follows_the_mounts_dialect() {
        let (t, u) = (Dialect::Trusted, Dialect::User);
        // A root mount escapes trusted.overlay.* only; user.overlay.* is a user's attribute.
        assert_eq!(&*t.escape(b"trusted.overlay.opaque"), b"trusted.overlay.overlay.opaque");
        assert_eq!(&*t.escape(b"user.overlay.j"), b"user.overlay.j");
        assert_eq!(t.unescape(b"trusted.overlay.overlay.opaque").as_deref(), Some(&b"trusted.overlay.opaque"[..]));
        assert_eq!(t.unescape(b"trusted.overlay.opaque"), None, "a real marker is hidden");
        assert_eq!(t.unescape(b"user.overlay.opaque").as_deref(), Some(&b"user.overlay.opaque"[..]));
        assert!(t.is_private(b"trusted.overlay.origin") && !t.is_private(b"user.overlay.origin"));
        // A rootless (or userxattr) mount the other way round.
        assert_eq!(&*u.escape(b"user.overlay.x"), b"user.overlay.overlay.x");
        assert_eq!(&*u.escape(b"trusted.overlay.x"), b"trusted.overlay.x");
        assert_eq!(u.unescape(b"user.overlay.opaque"), None);
        assert!(u.is_private(b"user.overlay.origin") && !u.is_private(b"trusted.overlay.origin"));
        // fuse-overlayfs's namespace is private to every mount.
        assert!(t.is_private(b"user.fuseoverlayfs.opaque") && u.is_private(b"user.fuseoverlayfs.opaque"));
        assert!(t.unescape(b"user.fuseoverlayfs.origin").is_none());
        assert_eq!(t.unescape(b"user.note").as_deref(), Some(&b"user.note"[..]));
    }
}

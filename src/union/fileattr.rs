//! File attribute flags (`lsattr`/`chattr`: `FS_IOC_GETFLAGS`/`SETFLAGS`,
//! `FS_IOC_FSGETXATTR`/`FSSETXATTR`), as kernel overlayfs keeps them (its `inode.c`):
//!
//! * read from the real object (the upper copy if there is one), with the upper's
//!   protection flags added;
//! * set on the upper copy (made first, metadata only where `metacopy` allows), except
//!   immutable and append-only: those are stored in the upper's `overlay.protattr` (`a`,
//!   `i`) and cleared from its real flags, so that the union can still link, rename, mark
//!   and remove the real object, and whoever deletes a container's upper is not stopped;
//! * copied up with the object: sync and noatime to the real copy, immutable and append-only
//!   to `overlay.protattr`;
//! * enforced by the union, since the kernel's FUSE inode does not carry them: an immutable
//!   object cannot be opened for writing, changed, linked, renamed or removed, and nothing
//!   can be added to or removed from an immutable directory; an append-only file opens for
//!   writing only with `O_APPEND`, cannot be truncated, renamed or removed, and nothing can
//!   be removed from an append-only directory (the kernel's `may_open`, `may_delete`,
//!   `notify_change`).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::error::{Errno, Res};
use crate::sys::fileattr::{
    self as sfa, FS_APPEND_FL, FS_IMMUTABLE_FL, FS_NOATIME_FL, FS_SYNC_FL, FS_XFLAG_APPEND, FS_XFLAG_IMMUTABLE, FsXattr,
};
use crate::sys::open::{self, OFlags};
use crate::sys::stat::FileKind;
use crate::sys::xattr::{self, SetMode, XTarget};
use crate::union::UnionFs;
use crate::union::layer::Upper;
use crate::union::node::{Node, flag};
use crate::union::tables::Side;

/// Immutable and append-only, as kept by the union.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prot {
    /// `chattr +i`.
    pub immutable: bool,
    /// `chattr +a`.
    pub append: bool,
}

impl Prot {
    /// The `overlay.protattr` value (the kernel's order: `a`, then `i`).
    fn render(self) -> Vec<u8> {
        let mut v = Vec::new();
        if self.append {
            v.push(b'a');
        }
        if self.immutable {
            v.push(b'i');
        }
        v
    }

    /// Reads an `overlay.protattr` value (unknown letters are ignored, as the kernel does).
    fn parse(v: &[u8]) -> Prot {
        Prot { immutable: v.contains(&b'i'), append: v.contains(&b'a') }
    }

    fn from_flags(flags: u32) -> Prot {
        Prot { immutable: flags & FS_IMMUTABLE_FL != 0, append: flags & FS_APPEND_FL != 0 }
    }

    fn from_xflags(x: u32) -> Prot {
        Prot { immutable: x & FS_XFLAG_IMMUTABLE != 0, append: x & FS_XFLAG_APPEND != 0 }
    }

    fn any(self) -> bool {
        self.immutable || self.append
    }
}

/// What a caller asks of an object, for `UnionFs::deny`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Mode, owner, explicit times, extended attributes, a new link, a rename or removal of
    /// the object itself.
    Object,
    /// Setting its times to now (allowed on append-only objects).
    Touch,
    /// Truncating it.
    Truncate,
    /// Opening it for writing; `true` with `O_APPEND`.
    Write(bool),
    /// Adding an entry to this directory.
    AddEntry,
    /// Removing (or renaming away) an entry of this directory.
    RemoveEntry,
}

/// What the kernel's FUSE asks: the flags word or the `fsxattr` structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrFlags {
    /// `FS_IOC_[GS]ETFLAGS`.
    Flags(u32),
    /// `FS_IOC_FS[GS]ETXATTR`.
    Fsx(FsXattr),
}

/// Flags copied up with the object (the kernel's `OVL_COPY_FS_FLAGS_MASK` without the two
/// kept in `overlay.protattr`).
const COPY_FLAGS: u32 = FS_SYNC_FL | FS_NOATIME_FL;
const PROT_FLAGS: u32 = FS_IMMUTABLE_FL | FS_APPEND_FL;
const PROT_XFLAGS: u32 = FS_XFLAG_IMMUTABLE | FS_XFLAG_APPEND;

impl UnionFs {
    /// The object's protection flags (read once per node: the upper's `overlay.protattr`, or
    /// the lower object's own flags).
    pub(crate) fn prot(&self, node: &Arc<Node>) -> Res<Prot> {
        if node.has(flag::PROT_KNOWN) {
            return Ok(Prot { immutable: node.has(flag::IMMUTABLE), append: node.has(flag::APPEND) });
        }
        if node.ino == crate::union::tables::ROOT_INO && !node.has_upper() && self.layers.upper.is_none() {
            return Ok(Prot::default());
        }
        let r = self.real(node)?;
        let p = match r.side {
            Side::Upper => match &self.layers.upper {
                Some(up) if node.vol == 0 => {
                    let v = xattr::get(XTarget::At(r.dir.as_fd(), &r.name), up.dialect.names().protattr);
                    match v {
                        Ok(v) => v.map(|v| Prot::parse(&v)).unwrap_or_default(),
                        // A filesystem without xattrs holds no protection flags.
                        Err(Errno::EOPNOTSUPP) => Prot::default(),
                        Err(e) => return Err(e),
                    }
                }
                // A volume is a plain directory tree: its objects' own flags.
                _ => {
                    let (immutable, append) = crate::sys::stat::protection_at(r.dir.as_fd(), &r.name)?;
                    Prot { immutable, append }
                }
            },
            Side::Lower(_) => {
                let (immutable, append) = crate::sys::stat::protection_at(r.dir.as_fd(), &r.name)?;
                Prot { immutable, append }
            }
        };
        self.remember_prot(node, p);
        Ok(p)
    }

    fn remember_prot(&self, node: &Node, p: Prot) {
        if p.immutable {
            node.set(flag::IMMUTABLE)
        } else {
            node.clear(flag::IMMUTABLE)
        }
        if p.append {
            node.set(flag::APPEND)
        } else {
            node.clear(flag::APPEND)
        }
        node.set(flag::PROT_KNOWN);
    }

    /// `EPERM` if the object's protection flags forbid `change`.
    pub(crate) fn deny(&self, node: &Arc<Node>, change: Change) -> Res<()> {
        if !matches!(node.kind, FileKind::Regular | FileKind::Directory) {
            return Ok(());
        }
        let p = self.prot(node)?;
        let denied = match change {
            Change::Object | Change::Truncate | Change::RemoveEntry => p.any(),
            Change::Touch | Change::AddEntry => p.immutable,
            Change::Write(append) => p.immutable || (p.append && !append),
        };
        if denied { Err(Errno::EPERM) } else { Ok(()) }
    }

    /// The real object opened for its flags: the upper copy if there is one.
    fn attr_fd(&self, node: &Arc<Node>) -> Res<OwnedFd> {
        self.stable(|| {
            let r = self.real(node)?;
            match node.kind {
                FileKind::Directory => open::open_dir_for_read(&*r.dir),
                FileKind::Regular => open::open_file(&*r.dir, &r.name, OFlags::RDONLY),
                _ => Err(Errno::ENOTTY),
            }
        })
    }

    /// `FS_IOC_GETFLAGS` / `FS_IOC_FSGETXATTR` (`want` says which; its value is ignored).
    pub fn fileattr_get(&self, ino: u64, want: AttrFlags) -> Res<AttrFlags> {
        let node = self.inodes.get(ino)?;
        let fd = self.attr_fd(&node)?;
        let p = self.prot(&node)?;
        Ok(match want {
            AttrFlags::Flags(_) => {
                let mut f = sfa::get_flags(&fd)?;
                f |= if p.immutable { FS_IMMUTABLE_FL } else { 0 } | if p.append { FS_APPEND_FL } else { 0 };
                AttrFlags::Flags(f)
            }
            AttrFlags::Fsx(_) => {
                let mut x = sfa::get_fsxattr(&fd)?;
                x.xflags |=
                    if p.immutable { FS_XFLAG_IMMUTABLE } else { 0 } | if p.append { FS_XFLAG_APPEND } else { 0 };
                AttrFlags::Fsx(x)
            }
        })
    }

    /// `FS_IOC_SETFLAGS` / `FS_IOC_FSSETXATTR`: copies the object up, keeps immutable and
    /// append-only in `overlay.protattr`, sets the rest on the upper copy. The kernel has
    /// checked ownership and `CAP_LINUX_IMMUTABLE`.
    pub fn fileattr_set(&self, ino: u64, attr: AttrFlags) -> Res<()> {
        let node = self.inodes.get(ino)?;
        if !matches!(node.kind, FileKind::Regular | FileKind::Directory) {
            return Err(Errno::ENOTTY);
        }
        let up = self.layers.upper()?;
        self.copy_up_meta(&node)?;
        self.link_up_walked(&node)?;
        let old = self.prot(&node)?;
        if node.vol != 0 {
            // A volume is a plain directory tree: its objects carry their own flags.
            let fd = self.attr_fd(&node)?;
            node.clear(flag::PROT_KNOWN);
            self.inval_attrs_now(node.ino);
            return match attr {
                AttrFlags::Flags(f) => sfa::set_flags(&fd, f),
                AttrFlags::Fsx(x) => sfa::set_fsxattr(&fd, x),
            };
        }
        let (new, attr) = match attr {
            AttrFlags::Flags(f) => (Prot::from_flags(f), AttrFlags::Flags(f & !PROT_FLAGS)),
            AttrFlags::Fsx(x) => {
                (Prot::from_xflags(x.xflags), AttrFlags::Fsx(FsXattr { xflags: x.xflags & !PROT_XFLAGS, ..x }))
            }
        };
        let r = self.upper_real(&node)?;
        self.store_prot(up, XTarget::At(r.dir.as_fd(), &r.name), old, new)?;
        let fd = self.attr_fd(&node)?;
        let set = match attr {
            AttrFlags::Flags(f) => sfa::set_flags(&fd, f),
            AttrFlags::Fsx(x) => sfa::set_fsxattr(&fd, x),
        };
        self.remember_prot(&node, new);
        node.forget_xattrs();
        self.inval_attrs_now(node.ino);
        self.inval_twin(node.ino);
        set
    }

    /// Writes (or removes) `overlay.protattr`.
    fn store_prot(&self, up: &Upper, t: XTarget<'_>, old: Prot, new: Prot) -> Res<()> {
        let names = up.dialect.names();
        if new.any() {
            return up.set_xattr(t, names.protattr, &new.render(), SetMode::Any).map_err(|e| match e {
                // As the kernel: no xattrs on the upper, no protection flags.
                Errno::EOPNOTSUPP => Errno::EPERM,
                e => e,
            });
        }
        if old.any() {
            match up.remove_xattr(t, names.protattr) {
                Ok(()) | Err(Errno::ENODATA) | Err(Errno::EOPNOTSUPP) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Copy-up: the lower object's sync and noatime flags go to the copy, immutable and
    /// append-only to its `overlay.protattr` (`src` is the lower object open, `dst` the copy:
    /// a regular file or a directory, opened by `dst` when needed). A filesystem without flags has none to copy.
    pub(crate) fn copy_fileattr<F: AsFd>(
        &self,
        up: &Upper,
        src: impl AsFd,
        t: XTarget<'_>,
        dst: impl FnOnce() -> Res<F>,
    ) -> Res<()> {
        let flags = match sfa::get_flags(src) {
            Ok(f) => f,
            Err(Errno::ENOTTY) | Err(Errno::EINVAL) | Err(Errno::EOPNOTSUPP) => return Ok(()),
            Err(e) => return Err(e),
        };
        let p = Prot::from_flags(flags);
        if p.any() {
            match self.store_prot(up, t, Prot::default(), p) {
                Ok(()) => {}
                Err(Errno::EPERM) => tracing::debug!("cannot keep protection flags on copy-up"),
                Err(e) => return Err(e),
            }
        }
        if flags & COPY_FLAGS == 0 {
            return Ok(());
        }
        let dst = dst()?;
        let cur = sfa::get_flags(&dst)?;
        sfa::set_flags(&dst, (cur & !COPY_FLAGS) | (flags & COPY_FLAGS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protattr_values_read_and_written_as_the_kernel_does() {
        assert_eq!(Prot { immutable: true, append: true }.render(), b"ai");
        assert_eq!(Prot { immutable: true, append: false }.render(), b"i");
        assert_eq!(Prot::parse(b"ia"), Prot { immutable: true, append: true });
        assert_eq!(Prot::parse(b"a"), Prot { immutable: false, append: true });
        assert_eq!(Prot::parse(b"x"), Prot::default());
        assert_eq!(Prot::from_flags(FS_IMMUTABLE_FL | 0x80000), Prot { immutable: true, append: false });
    }
}

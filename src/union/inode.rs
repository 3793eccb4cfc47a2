//! Attributes and extended attributes (the kernel's `inode.c` and `xattrs.c`).
//!
//! Reading shows the visible real object. Any change copies the object up first, then
//! changes the upper copy. The union's private xattrs are never shown, and writing them is
//! refused.

use std::ffi::CStr;
use std::os::fd::AsFd;
use std::sync::Arc;

use crate::error::{Errno, Res};
use crate::sys::fs::SetTime;
use crate::sys::open::OFlags;
use crate::sys::stat::{self, FileKind, FsStat};
use crate::sys::xattr::{self, SetMode, XTarget};
use crate::union::copy_up::Data;
use crate::union::fileattr::Change;
use crate::union::node::{Node, flag};
use crate::union::tables::Handle;
use crate::union::{Attr, UnionFs, whiteout};

/// A writer without `CAP_FSETID`, whose write or truncate clears set-id bits (the kernel
/// leaves this to the daemon: `FUSE_HANDLE_KILLPRIV_V2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Killer {
    /// The writer's group id.
    pub gid: u32,
    /// The writer's process (for its supplementary groups).
    pub pid: u32,
    /// The writer has `CAP_FSETID` (root): it keeps set-group-id on a file that is not
    /// group-executable, as if it were in every group.
    pub fsetid: bool,
}

impl Killer {
    /// Whether the writer belongs to group `gid`.
    fn in_group(&self, gid: u32) -> bool {
        self.fsetid || self.gid == gid || crate::sys::proc::supplementary_groups(self.pid).contains(&gid)
    }
}

/// The permission bits left after a write or truncate by `killer`, as the kernel's
/// `should_remove_suid` decides: set-user-id goes; set-group-id goes from a group-executable
/// file, or from any file whose group the writer is not in.
pub fn kill_suidgid(perm: u32, file_gid: u32, killer: &Killer) -> u32 {
    let mut m = perm & !0o4000;
    if m & 0o2000 != 0 && (m & 0o010 != 0 || !killer.in_group(file_gid)) {
        m &= !0o2000;
    }
    m
}

/// Whether a file has set-id bits a write could have to clear.
pub fn is_sxid(perm: u32) -> bool {
    perm & 0o6000 != 0
}

/// The changes a `setattr` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
    /// The open file the change came through, if any.
    pub fh: Option<u64>,
    /// A truncate by a caller without `CAP_FSETID`: clear set-user-id and set-group-id as
    /// the kernel would (it leaves this to the daemon, see `FUSE_HANDLE_KILLPRIV_V2`).
    pub kill: Option<Killer>,
    /// The request carries nothing to set: the kernel asks to remove privileges before a
    /// write that does not come here (see [`UnionFs::setattr`]).
    pub remove_privs: bool,
}

impl UnionFs {
    /// A change made through a node retired for a stale pinned file (a descriptor opened
    /// before a copy-up) is a change of the object the live node for it shows: the kernel's
    /// cached attributes of that one are dropped.
    pub(crate) fn inval_twin(&self, ino: u64) {
        if let Ok(node) = self.inodes.get(ino)
            && node.has(flag::SUPERSEDED)
            && let Some(live) = self.inodes.live_upper(node.vol, node.upper_ino())
            && live != ino
        {
            if let Ok(l) = self.inodes.get(live) {
                l.forget_xattrs();
                l.clear(flag::PROT_KNOWN);
            }
            self.inval_attrs_now(live);
        }
    }

    /// `EPERM` for what an immutable or append-only object refuses (the kernel's
    /// `notify_change` and `do_truncate`): mode, owner and explicit times on either, setting
    /// the times to now on an immutable one, any size change.
    fn deny_setattr(&self, node: &Arc<Node>, sa: &SetAttr) -> Res<()> {
        let explicit = |t: &Option<SetTime>| matches!(t, Some(SetTime::At(_)));
        let now = |t: &Option<SetTime>| matches!(t, Some(SetTime::Now));
        if sa.mode.is_some() || sa.uid.is_some() || sa.gid.is_some() || explicit(&sa.atime) || explicit(&sa.mtime) {
            self.deny(node, Change::Object)?;
        }
        if sa.size.is_some() {
            self.deny(node, Change::Truncate)?;
        }
        if now(&sa.atime) || now(&sa.mtime) {
            self.deny(node, Change::Touch)?;
        }
        Ok(())
    }

    /// The descriptor of an open upper file, if `fh` names one for `node`.
    fn upper_handle_fd(&self, node: &Node, fh: Option<u64>) -> Option<Arc<Handle>> {
        let h = self.handles.get(fh?).ok()?;
        (h.upper && h.node.ino == node.ino).then_some(h)
    }

    /// Clears set-user-id and set-group-id after a write or truncate of a set-id file by a
    /// caller without `CAP_FSETID` (the kernel leaves this to the daemon:
    /// `FUSE_HANDLE_KILLPRIV_V2`), and has the kernel drop its cached mode before the caller's
    /// reply goes out: `execve` decides set-id execution from the mode the kernel has cached,
    /// not from the daemon. The mode is dropped even when nothing is left to clear here: the
    /// upper filesystem may have cleared the bits itself with the write (a daemon without
    /// `CAP_FSETID`, as in a user namespace), and the kernel still shows them.
    pub(crate) fn kill_privs(&self, ino: u64, fh: Option<u64>, killer: &Killer) -> Res<()> {
        let a = self.getattr(ino, fh)?;
        let perm = a.perm & 0o7777;
        let killed = kill_suidgid(perm, a.gid, killer);
        if killed != perm {
            self.setattr(ino, SetAttr { mode: Some(killed), fh, ..SetAttr::default() })?;
        }
        self.inval_attrs_now(ino);
        Ok(())
    }

    /// The kernel's request to remove privileges before a write it does not send here (a
    /// `SETATTR` with nothing to set: FUSE passthrough writes, `copy_file_range`,
    /// `fallocate`), because the file is set-id or has file capabilities: clears what
    /// [`kill_suidgid`] says for `killer` (a caller without `CAP_FSETID`) and drops
    /// `security.capability`, as every Linux filesystem does before such a write.
    fn remove_privs(&self, ino: u64, killer: Option<Killer>) -> Res<Attr> {
        let node = self.inodes.get(ino)?;
        // A change of nothing still changes the object (its ctime): it is copied up, as
        // kernel overlayfs's `ovl_setattr` does (a directory then shows as merged).
        if let Some(up) = self.layers.upper.as_ref() {
            self.copy_up_meta(&node)?;
            self.link_up_walked(&node)?;
            if node.kind == FileKind::Directory {
                self.stable(|| {
                    let r = self.upper_real(&node)?;
                    up.chown(r.dir.as_fd(), &r.name, None, None)
                })?;
            }
        }
        if node.kind == FileKind::Regular && node.has_upper() && self.opts.xattrs {
            let up = self.layers.upper()?;
            let r = self.stable(|| {
                let r = self.upper_real(&node)?;
                up.remove_xattr(XTarget::At(r.dir.as_fd(), &r.name), c"security.capability")
            });
            node.forget_xattrs();
            match r {
                Ok(()) | Err(Errno::ENODATA | Errno::EOPNOTSUPP) => {}
                Err(e) => return Err(e),
            }
        }
        // A directory keeps its bits (a chown of one kills nothing; writes have none).
        if let Some(k) = killer
            && node.kind != FileKind::Directory
        {
            self.kill_privs(ino, None, &k)?;
        }
        self.getattr(ino, None)
    }

    /// `getattr`. With `fh` (fstat on an open file) a removed file still answers.
    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> Res<Attr> {
        let node = self.inodes.get(ino)?;
        if node.has(flag::DEAD | flag::NAMELESS) && node.orphan().is_none() {
            // Removed but still open: the kernel asks without a handle for a plain fstat, so
            // answer from any open handle of the node. (A removed upper object is its kept
            // descriptor: a handle may be open on the lower file it was copied from.)
            let h = match fh.map(|f| self.handles.get(f)) {
                Some(Ok(h)) => Some(h),
                _ => self.handles.file_of(node.ino),
            };
            if let Some(f) = h {
                let fd = self.read_fd(&f)?;
                return Ok(self.attr_overridden_fd(&node, fd, &stat::fstat(fd)?));
            }
        }
        let st = self.stat_node(&node)?;
        Ok(self.attr_overridden(&node, &st))
    }

    /// `setattr`: chmod, chown, truncate, utimens; and, with nothing to set, the kernel's
    /// request to remove privileges before a write it does not send to the daemon.
    pub fn setattr(&self, ino: u64, sa: SetAttr) -> Res<Attr> {
        if sa.remove_privs {
            return self.remove_privs(ino, sa.kill);
        }
        let kill = if sa.size.is_some() && sa.mode.is_none() { sa.kill } else { None };
        let fh = sa.fh;
        let a = self.setattr_inner(ino, sa)?;
        self.inval_twin(ino);
        if let Some(k) = kill {
            let perm = a.perm & 0o7777;
            let killed = kill_suidgid(perm, a.gid, &k);
            if killed != perm {
                return self.setattr_inner(ino, SetAttr { mode: Some(killed), fh, ..SetAttr::default() });
            }
        }
        Ok(a)
    }

    fn setattr_inner(&self, ino: u64, sa: SetAttr) -> Res<Attr> {
        let node = self.inodes.get(ino)?;
        let up = self.layers.upper()?;
        self.deny_setattr(&node, &sa)?;
        let named = self.change_through(&node, sa.fh);
        if let Some(size) = sa.size {
            if node.is_dir() {
                return Err(Errno::EISDIR);
            }
            if node.kind != FileKind::Regular {
                return Err(Errno::EINVAL);
            }
            self.copy_up_data(&node, Data::Truncate(size))?;
        } else {
            self.copy_up_meta(&node)?;
        }
        // Kernel overlayfs's `ovl_setattr` copies the dentry up: a name of an indexed hard
        // link is linked up (its `setxattr` changes the upper inode without that).
        if named {
            self.link_up_walked(&node)?;
        }
        // A mode change rewrites ACL attributes, an owner or size change may drop
        // capabilities; none adds an attribute, so an object known to have none keeps that
        // answer (untar chowns and chmods every file it makes, then the kernel asks for
        // `security.capability` again).
        if !node.has(flag::XATTRS_NONE) {
            node.forget_xattrs();
        }
        let mut sa = sa;
        if let Some(xname) = self.opts.override_stat
            && node.kind != FileKind::Symlink
            && (sa.uid.is_some() || sa.gid.is_some() || sa.mode.is_some())
        {
            self.set_override_stat(up, &node, xname, &sa)?;
            (sa.uid, sa.gid, sa.mode) = (None, None, None);
        }
        // Ids as the layers store them.
        let uid = sa.uid.map(|u| self.opts.uids.store(u)).transpose()?;
        let gid = sa.gid.map(|g| self.opts.gids.store(g)).transpose()?;
        if let Some(f) = self.upper_handle_fd(&node, sa.fh) {
            let fd = f.fd.as_fd();
            if uid.is_some() || gid.is_some() {
                up.fchown(fd, uid, gid)?;
            }
            if let Some(m) = sa.mode {
                up.fchmod(fd, m & 0o7777)?;
            }
            if let Some(size) = sa.size {
                up.truncate(fd, size)?;
            }
            if sa.atime.is_some() || sa.mtime.is_some() {
                crate::sys::fs::futimens(fd, sa.atime.unwrap_or(SetTime::Omit), sa.mtime.unwrap_or(SetTime::Omit))?;
            }
            return Ok(self.attr_overridden(&node, &stat::fstat(fd)?));
        }
        let st = self.stable(|| {
            let r = self.upper_real(&node)?;
            let dir = r.dir.as_fd();
            if uid.is_some() || gid.is_some() {
                up.chown(dir, &r.name, uid, gid)?;
            }
            if let Some(m) = sa.mode {
                up.chmod(dir, &r.name, m & 0o7777)?;
            }
            if let Some(size) = sa.size {
                let fd = crate::sys::open::open_file(dir, &r.name, OFlags::WRONLY)?;
                up.truncate(fd.as_fd(), size)?;
            }
            if sa.atime.is_some() || sa.mtime.is_some() {
                up.utimens(dir, &r.name, sa.atime.unwrap_or(SetTime::Omit), sa.mtime.unwrap_or(SetTime::Omit))?;
            }
            stat::statat(dir, &r.name)
        })?;
        Ok(self.attr_overridden(&node, &st))
    }

    /// `xattr_permissions`: an owner or mode change is kept in the override attribute
    /// `xname` (the daemon may not chown the real file), clearing set-id bits on a chown as
    /// the kernel's `notify_change` does.
    fn set_override_stat(
        &self,
        up: &crate::union::layer::Upper,
        node: &Arc<Node>,
        xname: &CStr,
        sa: &SetAttr,
    ) -> Res<()> {
        let st = self.stat_node(node)?;
        let cur = self.override_of(node).unwrap_or(crate::union::idmap::OverrideStat {
            uid: self.opts.uids.show(st.uid),
            gid: self.opts.gids.show(st.gid),
            mode: st.perm(),
        });
        let mut mode = sa.mode.map_or(cur.mode, |m| m & 0o7777);
        if (sa.uid.is_some() || sa.gid.is_some()) && sa.mode.is_none() && node.kind != FileKind::Directory {
            // A chown clears set-user-id, and set-group-id where it means "set gid on
            // exec" (group-executable), as the kernel's `notify_change` does.
            mode &= !libc::S_ISUID;
            if mode & 0o010 != 0 {
                mode &= !libc::S_ISGID;
            }
        }
        let new =
            crate::union::idmap::OverrideStat { uid: sa.uid.unwrap_or(cur.uid), gid: sa.gid.unwrap_or(cur.gid), mode };
        self.stable(|| {
            let r = self.upper_real(node)?;
            up.set_xattr(XTarget::At(r.dir.as_fd(), &r.name), xname, new.render().as_bytes(), SetMode::Any)
        })?;
        node.forget_xattrs();
        Ok(())
    }

    /// `readlink`.
    pub fn readlink(&self, ino: u64) -> Res<Vec<u8>> {
        let node = self.inodes.get(ino)?;
        if node.kind != FileKind::Symlink {
            return Err(Errno::EINVAL);
        }
        self.stable(|| {
            let r = self.real(&node)?;
            crate::sys::fs::readlinkat(&*r.dir, &r.name)
        })
    }

    /// `statfs`: the upper layer's filesystem (the top lower's for a read-only mount); a
    /// volume's own filesystem inside a volume.
    pub fn statfs(&self, ino: u64) -> Res<FsStat> {
        if let Ok(node) = self.inodes.get(ino)
            && node.vol != 0
        {
            return stat::fstatvfs(&*self.layers.volume(node.vol)?.layer.root);
        }
        let root = match &self.layers.upper {
            Some(u) => u.layer.root.clone(),
            None => self.layers.lower(0)?.root.clone(),
        };
        let fs = stat::fstatvfs(&*root)?;
        Ok(match self.layers.upper.as_ref().and_then(|u| u.quota.as_ref()) {
            Some(q) => q.limit_statfs(fs),
            None => fs,
        })
    }

    /// `getxattr`. The union's own markers do not exist in the merged view; a user's
    /// `*.overlay.*` attributes are read from their escaped names.
    pub fn getxattr(&self, ino: u64, name: &CStr) -> Res<Vec<u8>> {
        let stored = self.xattr_name(name)?;
        let node = self.inodes.get(ino)?;
        let set = self.xattr_set(&node)?;
        set.iter().find(|(n, _)| n.as_slice() == stored.as_bytes()).map(|(_, v)| v.clone()).ok_or(Errno::ENODATA)
    }

    /// The real object's extended attributes, from the node's cache or read (and cached).
    fn xattr_set(&self, node: &Arc<Node>) -> Res<Arc<crate::union::node::XattrSet>> {
        if let Some(s) = node.cached_xattrs() {
            crate::stats::add(crate::stats::Counter::XattrHits, 1);
            return Ok(s);
        }
        crate::stats::add(crate::stats::Counter::XattrMisses, 1);
        let set = self.stable(|| {
            let r = self.real(node)?;
            let t = XTarget::At(r.dir.as_fd(), &r.name);
            let mut set = Vec::new();
            for n in xattr::list(t)? {
                let Ok(c) = std::ffi::CString::new(n.clone()) else { continue };
                if let Some(v) = xattr::get(t, &c)? {
                    set.push((n, v));
                }
            }
            Ok(set)
        })?;
        Ok(node.cache_xattrs(set))
    }

    /// `listxattr`: names, each NUL-terminated; markers left out, escaped names unescaped.
    pub fn listxattr(&self, ino: u64) -> Res<Vec<u8>> {
        if !self.opts.xattrs {
            return Err(Errno::EOPNOTSUPP);
        }
        let node = self.inodes.get(ino)?;
        let set = self.xattr_set(&node)?;
        let mut out = Vec::new();
        for (n, _) in set.iter() {
            if self.opts.override_stat.is_some_and(|o| o.to_bytes() == n.as_slice()) {
                continue;
            }
            if let Some(shown) = self.opts.dialect.unescape(n) {
                out.extend_from_slice(&shown);
                out.push(0);
            }
        }
        Ok(out)
    }

    /// `setxattr`. Copies the object up first; `*.overlay.*` names are stored escaped, as
    /// kernel overlayfs does, so they never act as markers.
    pub fn setxattr(&self, ino: u64, name: &CStr, value: &[u8], flags: i32) -> Res<()> {
        self.deny(&self.inodes.get(ino)?, Change::Object)?;
        reserved(name)?;
        let stored = self.xattr_name(name)?;
        let mode = SetMode::from_flags(flags)?;
        let node = self.inodes.get(ino)?;
        let up = self.layers.upper()?;
        // (An indexed hard link's upper inode changes as it is: no name is linked up.)
        self.copy_up_meta(&node)?;
        let r = self.stable(|| {
            let r = self.upper_real(&node)?;
            up.set_xattr(XTarget::At(r.dir.as_fd(), &r.name), &stored, value, mode)
        });
        node.forget_xattrs();
        self.inval_twin(ino);
        r
    }

    /// `removexattr`. Removing an xattr a lower object does not have is `ENODATA` without a
    /// copy-up.
    pub fn removexattr(&self, ino: u64, name: &CStr) -> Res<()> {
        self.deny(&self.inodes.get(ino)?, Change::Object)?;
        reserved(name)?;
        let stored = self.xattr_name(name)?;
        let node = self.inodes.get(ino)?;
        let up = self.layers.upper()?;
        if !node.has_upper() && self.getxattr(ino, name).is_err() {
            return Err(Errno::ENODATA);
        }
        self.copy_up_meta(&node)?;
        let r = self.stable(|| {
            let r = self.upper_real(&node)?;
            up.remove_xattr(XTarget::At(r.dir.as_fd(), &r.name), &stored)
        });
        node.forget_xattrs();
        self.inval_twin(ino);
        r
    }
}

impl UnionFs {
    /// The layer-side name of an attribute the merged view calls `name`; `EOPNOTSUPP` when
    /// the mount has xattrs off, `ENODATA` for the owner/mode override the union keeps.
    fn xattr_name(&self, name: &CStr) -> Res<std::ffi::CString> {
        if !self.opts.xattrs {
            return Err(Errno::EOPNOTSUPP);
        }
        if self.opts.override_stat.is_some_and(|o| o == name) || whiteout::is_foreign_xattr(name.to_bytes()) {
            return Err(Errno::ENODATA);
        }
        std::ffi::CString::new(self.opts.dialect.escape(name.to_bytes()).into_owned()).map_err(|_| Errno::EINVAL)
    }
}

/// fuse-overlayfs's private namespace cannot be written through the mount (as through
/// fuse-overlayfs).
fn reserved(name: &CStr) -> Res<()> {
    if whiteout::is_foreign_xattr(name.to_bytes()) {
        return Err(Errno::EPERM);
    }
    Ok(())
}

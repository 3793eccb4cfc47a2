//! Reaching a node's real objects: its path in the upper layer, the descriptors of its real
//! directories (cached), and the real file that holds its metadata or its data ([`Real`]) —
//! the upper copy, the lower file, or a metacopy's data file below.

use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::error::{Errno, Res};
use crate::sys::open::{self, OFlags};
use crate::union::layer::LowerIdx;
use crate::union::node::{Lower, Node, flag};
use crate::union::tables::Side;
use crate::union::{Real, UnionFs, lookup, name, sys_dot, tables};

impl UnionFs {
    /// The path of a node inside the upper layer (its merged path), `""` for the root; for a
    /// node in a volume, the path inside the volume.
    pub(crate) fn upper_path(&self, node: &Arc<Node>) -> Res<CString> {
        let mut parts: Vec<CString> = Vec::new();
        let mut cur = node.clone();
        loop {
            if cur.has(flag::DEAD) {
                return Err(Errno::ENOENT);
            }
            if cur.has(flag::VOL_ROOT) {
                break;
            }
            let loc = cur.loc();
            match loc.parent {
                None => break,
                Some(p) => {
                    parts.push(CString::from(&loc.name));
                    cur = p;
                }
            }
            if parts.len() > 4096 {
                return Err(Errno::ELOOP);
            }
        }
        let mut v = Vec::new();
        for (i, p) in parts.iter().rev().enumerate() {
            if i > 0 {
                v.push(b'/');
            }
            v.extend_from_slice(p.to_bytes());
        }
        CString::new(v).map_err(|_| Errno::EINVAL)
    }

    /// The merged path of a directory as components (for volume mount points).
    pub(crate) fn merged_components(&self, node: &Arc<Node>) -> Vec<CString> {
        let mut parts = Vec::new();
        let mut cur = node.clone();
        while let Some(p) = cur.parent() {
            parts.push(CString::from(&cur.loc().name));
            cur = p;
        }
        parts.reverse();
        parts
    }

    /// The real directory of `node` on `side`, as an `O_PATH` descriptor (cached).
    pub(crate) fn dir_fd(&self, node: &Arc<Node>, side: Side) -> Res<Arc<OwnedFd>> {
        if node.ino == tables::ROOT_INO {
            return match side {
                Side::Upper => Ok(self.layers.upper()?.layer.root.clone()),
                Side::Lower(i) => Ok(self.layers.lower(i)?.root.clone()),
            };
        }
        if node.has(flag::VOL_ROOT) {
            return Ok(self.layers.volume(node.vol)?.layer.root.clone());
        }
        if let Some(fd) = self.dirfds.get(node.ino, side) {
            crate::stats::add(crate::stats::Counter::DirfdHits, 1);
            return Ok(fd);
        }
        if side == Side::Upper
            && node.has(flag::DEAD)
            && let Some(fd) = node.orphan()
        {
            return Ok(fd);
        }
        crate::stats::add(crate::stats::Counter::DirfdMisses, 1);
        let fd = match side {
            Side::Upper => {
                if !node.has_upper() {
                    return Err(Errno::ENOENT);
                }
                let path = self.upper_path(node)?;
                let root = match node.vol {
                    0 => self.layers.upper()?.layer.root.clone(),
                    v => self.layers.volume(v)?.layer.root.clone(),
                };
                open::resolve_beneath(&*root, &path, OFlags::PATH | OFlags::DIRECTORY)?
            }
            Side::Lower(i) => {
                let dl = node.dir_lower().ok_or(Errno::EIO)?;
                open::resolve_beneath(&*self.layers.lower(i)?.root, dl.path_in(i), OFlags::PATH | OFlags::DIRECTORY)?
            }
        };
        let fd = Arc::new(fd);
        if let Some(w) = self.watch.get() {
            w.add(std::os::fd::AsFd::as_fd(&*fd), node.ino);
        }
        self.dirfds.put(node.ino, side, fd.clone());
        Ok(fd)
    }

    /// Drops cached descriptors of a node.
    pub(crate) fn forget_dirfds(&self, node: &Node) {
        if !node.is_dir() {
            return;
        }
        self.dirfds.forget_side(node.ino, Side::Upper);
        if let Some(dl) = node.dir_lower() {
            for l in &dl.layers {
                self.dirfds.forget_side(node.ino, Side::Lower(l.idx));
            }
        }
    }

    /// Where the node's visible real object is: the upper copy if any, else its lower one.
    pub(crate) fn real(&self, node: &Arc<Node>) -> Res<Real> {
        self.stable(|| self.real_once(node))
    }

    pub(crate) fn real_once(&self, node: &Arc<Node>) -> Res<Real> {
        if node.has(flag::DEAD)
            && let Some(fd) = node.orphan()
        {
            // Removed: the object itself, named by its descriptor (an empty name).
            let name = if node.is_dir() { sys_dot().into() } else { name::Name::from(c"") };
            return Ok(Real { dir: fd, name, side: Side::Upper });
        }
        if node.is_dir() {
            let side = if node.has_upper() {
                Side::Upper
            } else {
                Side::Lower(node.dir_lower().and_then(|d| d.layers.first()).ok_or(Errno::EIO)?.idx)
            };
            return Ok(Real { dir: self.dir_fd(node, side)?, name: sys_dot().into(), side });
        }
        if node.has_upper()
            && let Some(key) = node.index_key()
        {
            // An indexed hard link: its index entry, which is linked whichever of its names
            // are not yet (see `flag::INDEXED`).
            let dir = self.index_dir_shared().ok_or(Errno::EIO)?;
            return Ok(Real { dir, name: key.as_c_str().into(), side: Side::Upper });
        }
        let loc = node.loc();
        let parent = loc.parent.ok_or(Errno::EIO)?;
        let side = if node.has_upper() {
            Side::Upper
        } else {
            match node.lower {
                Lower::File(i) | Lower::Meta { meta: i, .. } => Side::Lower(i),
                _ => return Err(Errno::EIO),
            }
        };
        Ok(Real { dir: self.dir_fd(&parent, side)?, name: loc.name, side })
    }

    /// Where the node's data is: its lower file while it is a metadata-only copy
    /// ([`flag::METACOPY`]), else [`UnionFs::real`].
    pub(crate) fn data_real(&self, node: &Arc<Node>) -> Res<Real> {
        let lower_meta = matches!(node.lower, Lower::Meta { .. }) && !node.has_upper();
        if !node.has(flag::METACOPY) && !lower_meta {
            return self.real(node);
        }
        if let Some(m) = node.moved_data() {
            return self.stable(|| self.lower_file_at(m.0, &m.1));
        }
        self.stable(|| match &node.lower {
            Lower::File(i) | Lower::Meta { data: i, moved: None, .. } => {
                let loc = node.loc();
                let parent = loc.parent.ok_or(Errno::EIO)?;
                Ok(Real { dir: self.dir_fd(&parent, Side::Lower(*i))?, name: loc.name, side: Side::Lower(*i) })
            }
            Lower::Moved(i, path) | Lower::Meta { data: i, moved: Some(path), .. } => self.lower_file_at(*i, path),
            _ => Err(Errno::EIO),
        })
    }

    /// The file at `path` (from the root) of lower layer `i`.
    fn lower_file_at(&self, i: LowerIdx, path: &CStr) -> Res<Real> {
        let (parent, last) = lookup::split_path(path)?;
        let root = self.layers.lower(i)?.root.clone();
        let dir = match parent.is_empty() {
            true => root,
            false => Arc::new(open::resolve_beneath(&*root, &parent, OFlags::PATH | OFlags::DIRECTORY)?),
        };
        Ok(Real { dir, name: last.as_c_str().into(), side: Side::Lower(i) })
    }

    /// Where the data of metadata-only copy `node` is: its lower layer and the path from
    /// that layer's root (what a redirect records when it is renamed).
    pub(crate) fn metacopy_data_path(&self, node: &Arc<Node>) -> Res<(LowerIdx, CString)> {
        if let Some(m) = node.moved_data() {
            return Ok((m.0, m.1.clone()));
        }
        match &node.lower {
            Lower::Moved(i, path) => Ok((*i, (**path).clone())),
            Lower::File(i) => {
                let loc = node.loc();
                let parent = loc.parent.ok_or(Errno::EIO)?;
                let base = parent.dir_lower().map(|d| d.path_in(*i).to_bytes().to_vec()).unwrap_or_default();
                Ok((*i, lookup::join(&base, loc.name.as_c_str().to_bytes())?))
            }
            _ => Err(Errno::EIO),
        }
    }

    /// The node's upper object (after copy-up): its directory descriptor and name.
    pub(crate) fn upper_real(&self, node: &Arc<Node>) -> Res<Real> {
        if !node.has_upper() {
            return Err(Errno::EIO);
        }
        self.real(node)
    }
}

//! Turning what a lookup found ([`Found`]) into a node: the node's spec for a volume root,
//! a merged directory, an upper file (its identity from the origin marker where the copy-up
//! left one), an indexed or plain lower file; and the name a known node was reached under.

use std::ffi::CStr;
use std::sync::Arc;

use crate::error::{Errno, Res};
use crate::sys::stat::{FileKind, Stat};
use crate::union::UnionFs;
use crate::union::layer::LowerIdx;
use crate::union::lookup::{DataAt, Found};
use crate::union::node::{DirLower, Identity, Loc, Lower, Node, NodeSpec, flag};
use crate::union::tables::Side;

impl UnionFs {
    /// Makes (or finds) the node for a resolved name and counts one kernel reference.
    pub(crate) fn intern(&self, parent: &Arc<Node>, name: &CStr, found: Found) -> Res<(Arc<Node>, Stat)> {
        let kind = found.stat.kind().ok_or(Errno::EIO)?;
        let loc = Loc { parent: Some(parent.clone()), name: name.into() };
        let spec = if found.vol != 0 {
            let flags = if parent.vol == 0 { flag::UPPER | flag::VOL_ROOT } else { flag::UPPER };
            NodeSpec {
                kind,
                identity: Identity { fs: self.layers.upper_fs(found.vol), ino: found.stat.ino },
                upper_ino: found.stat.ino,
                lower: Lower::None,
                flags,
                loc,
                vol: found.vol,
                index_key: None,
            }
        } else if kind == FileKind::Directory {
            self.dir_spec(parent, name, &found, loc)?
        } else {
            match found.side {
                Side::Upper => self.upper_file_spec(parent, name, &found, kind, loc),
                Side::Lower(idx) if found.index_key.is_some() => self.indexed_lower_spec(idx, &found, kind, loc)?,
                Side::Lower(idx) => self.lower_file_spec(parent, name, idx, &found, kind, loc)?,
            }
        };
        let node = self.inodes.intern(spec, &self.layers.xino);
        self.remember_name(&node, parent, name);
        Ok((node, found.stat))
    }

    /// The node of a directory: numbered as its topmost lower directory if it has one,
    /// with the lower directories it merges and the upper's markers.
    fn dir_spec(&self, parent: &Arc<Node>, name: &CStr, found: &Found, loc: Loc) -> Res<NodeSpec> {
        let layers = found.state.lower_layers();
        let identity = match found.state.first_lower() {
            Some((idx, st)) => Identity { fs: self.layers.lower(idx)?.fs, ino: st.ino },
            None => Identity { fs: self.layers.upper_fs(0), ino: found.stat.ino },
        };
        let mut flags = 0;
        let mut upper_ino = 0;
        if found.side == Side::Upper {
            flags |= flag::UPPER;
            upper_ino = found.stat.ino;
            let m = found.state.upper_marks();
            if m.opaque {
                flags |= flag::OPAQUE;
            }
            if m.xwhiteouts {
                flags |= flag::UPPER_XWH;
            }
        }
        let lower = if layers.is_empty() {
            Lower::None
        } else {
            let paths = found.state.lower_paths();
            let path = paths.first().cloned().ok_or(Errno::EIO)?;
            let other_paths =
                layers.iter().zip(paths).filter(|(_, p)| **p != path).map(|(l, p)| (l.idx, p.clone())).collect();
            Lower::Dir(Box::new(DirLower { path, layers, other_paths }))
        };
        if parent.has(flag::VOL_ANCESTOR) && self.leads_to_volume(parent, name) {
            flags |= flag::VOL_ANCESTOR;
        }
        Ok(NodeSpec { kind: FileKind::Directory, identity, upper_ino, lower, flags, loc, vol: 0, index_key: None })
    }

    /// The node of an upper non-directory: numbered as its origin when it was copied up
    /// (unless it is a lower hard link copied up alone), a metadata-only copy's data below.
    fn upper_file_spec(&self, parent: &Arc<Node>, name: &CStr, found: &Found, kind: FileKind, loc: Loc) -> NodeSpec {
        let own = Identity { fs: self.layers.upper_fs(0), ino: found.stat.ino };
        let (identity, mut flags) = match found.origin {
            Some(_) if found.own_number => (own, flag::UPPER | flag::ORIGIN),
            Some(o) => (o, flag::UPPER | flag::ORIGIN),
            None => (own, flag::UPPER),
        };
        if let (Some(k), Some(index)) = (&found.index_key, self.index_dir()) {
            let lower_nlink = self.lower_nlink_of(parent, name);
            self.load_nlink_diff(found.stat.ino, crate::sys::xattr::XTarget::At(index, k), lower_nlink);
        }
        let lower = match &found.metacopy {
            Some(DataAt { idx, moved: None }) => {
                flags |= flag::METACOPY;
                Lower::File(*idx)
            }
            Some(DataAt { idx, moved: Some(path) }) => {
                flags |= flag::METACOPY;
                Lower::Moved(*idx, Box::new(path.clone()))
            }
            None => Lower::None,
        };
        NodeSpec {
            kind,
            identity,
            upper_ino: found.stat.ino,
            lower,
            flags,
            loc,
            vol: 0,
            index_key: found.index_key.clone(),
        }
    }

    /// The node of a lower name of an indexed hard link: the upper inode is the index's.
    fn indexed_lower_spec(&self, idx: LowerIdx, found: &Found, kind: FileKind, loc: Loc) -> Res<NodeSpec> {
        let lower = found.state.top().map(|(_, st)| st).ok_or(Errno::EIO)?;
        if let (Some(k), Some(index)) = (&found.index_key, self.index_dir()) {
            let t = crate::sys::xattr::XTarget::At(index, k);
            self.load_nlink_diff(found.stat.ino, t, Some(lower.nlink));
        }
        Ok(NodeSpec {
            kind,
            identity: Identity { fs: self.layers.lower(idx)?.fs, ino: lower.ino },
            upper_ino: found.stat.ino,
            lower: Lower::File(idx),
            flags: flag::UPPER | flag::ORIGIN,
            loc,
            vol: 0,
            index_key: found.index_key.clone(),
        })
    }

    /// The node of a lower non-directory (with `metacopy`, where its data is if a lower
    /// metadata-only copy holds it).
    fn lower_file_spec(
        &self,
        parent: &Arc<Node>,
        name: &CStr,
        idx: LowerIdx,
        found: &Found,
        kind: FileKind,
        loc: Loc,
    ) -> Res<NodeSpec> {
        let data = match self.opts.metacopy && found.stat.is_reg() {
            true => self.data_of(parent, name, found.side)?,
            false => None,
        };
        let lower = match data {
            Some(DataAt { idx: d, moved }) => Lower::Meta { meta: idx, data: d, moved: moved.map(Box::new) },
            None => Lower::File(idx),
        };
        Ok(NodeSpec {
            kind,
            identity: Identity { fs: self.layers.lower(idx)?.fs, ino: found.stat.ino },
            upper_ino: 0,
            lower,
            flags: 0,
            loc,
            vol: 0,
            index_key: None,
        })
    }

    /// A known node reached under another name: remember that name too.
    fn remember_name(&self, node: &Arc<Node>, parent: &Arc<Node>, name: &CStr) {
        let l = node.loc();
        let same = l.name.as_c_str() == name && l.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, parent));
        if same {
            return;
        }
        let loc = Loc { parent: Some(parent.clone()), name: name.into() };
        if node.is_dir() {
            node.locs.write().first = loc;
        } else if node.has_upper() && !node.has(flag::INDEXED) {
            node.add_loc(loc);
        } else {
            // Names of one lower file (or of an indexed one, not all linked up): FUSE's open
            // and link name only the inode, and the kernel looks the name up right before
            // (such entries are never cached, see `Entry::revalidate`), so the copy-up (or
            // link-up) takes the name walked last.
            node.use_loc(loc);
        }
    }
}

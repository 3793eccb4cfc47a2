//! Which object does this name mean? (the kernel's `namei.c`)
//!
//! A name is looked for in the upper directory, then in each lower directory of the merged
//! parent, top-down. What each layer holds is fed to [`LookupState`], a small state machine:
//! * a whiteout stops the walk: the name does not exist;
//! * a non-directory stops it: it hides everything below;
//! * a directory merges with directories of the same name below, unless it is opaque, which
//!   stops the walk below it;
//! * a non-directory below a directory is hidden.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::error::{Errno, Res};
use crate::sys::open::OFlags;
use crate::sys::stat::{self, FileKind, Stat};
use crate::union::layer::LowerIdx;
use crate::union::node::{DirLayer, Identity, Node, flag};
use crate::union::tables::Side;
use crate::union::whiteout::{self, Dialects, DirMarks};
use crate::union::{Entry, UnionFs};

/// What one layer holds under a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Nothing (and no `.wh.` marker).
    Missing,
    /// A whiteout in any dialect.
    Whiteout,
    /// A non-directory.
    NonDir(Stat),
    /// A directory and its markers.
    Dir(Stat, DirMarks),
}

/// The walk so far.
#[derive(Debug, Default)]
pub struct LookupState {
    /// The topmost object found: where, and its status.
    top: Option<(Side, Stat)>,
    /// For a directory result: its markers in the upper layer.
    upper_marks: DirMarks,
    /// For a directory result: the lower layers it merges, topmost first, with status.
    lowers: Vec<(DirLayer, Stat)>,
    /// For a directory result: the path of each of `lowers` from its layer's root.
    lower_paths: Vec<CString>,
}

impl LookupState {
    /// Feeds what `side` holds; returns whether to look at the next layer down.
    pub fn feed(&mut self, side: Side, seen: Seen) -> bool {
        match seen {
            Seen::Missing => true,
            Seen::Whiteout => false,
            Seen::NonDir(st) => {
                if self.top.is_none() {
                    self.top = Some((side, st));
                }
                false
            }
            Seen::Dir(st, marks) => {
                match self.top {
                    None => self.top = Some((side, st)),
                    Some((_, t)) if t.is_dir() => {}
                    // Unreachable: a non-directory on top ends the walk.
                    Some(_) => return false,
                }
                match side {
                    Side::Upper => self.upper_marks = marks,
                    Side::Lower(idx) => self.lowers.push((DirLayer { idx, xwhiteouts: marks.xwhiteouts }, st)),
                }
                !marks.opaque
            }
        }
    }

    /// Whether the name exists in the merged view.
    pub fn found(&self) -> bool {
        self.top.is_some()
    }

    /// The side and status of the object the name shows.
    pub fn top(&self) -> Option<(Side, Stat)> {
        self.top
    }

    /// The merged lower layers (directories only).
    pub fn lower_layers(&self) -> Vec<DirLayer> {
        self.lowers.iter().map(|(l, _)| *l).collect()
    }

    /// Status of the topmost lower directory, if any.
    pub fn first_lower(&self) -> Option<(LowerIdx, Stat)> {
        self.lowers.first().map(|(l, s)| (l.idx, *s))
    }

    /// Markers of the upper directory.
    pub fn upper_marks(&self) -> DirMarks {
        self.upper_marks
    }

    /// The path of each merged lower directory from its layer's root, topmost first.
    pub fn lower_paths(&self) -> &[CString] {
        &self.lower_paths
    }
}

/// Where a lookup looks in the lower layers.
#[derive(Clone, Debug)]
enum At {
    /// Under this name in the merged parent's lower directories.
    In(CString),
    /// At this path from each lower layer's root (after an absolute redirect).
    Root(CString),
}

impl At {
    /// Where a directory found here with redirect `r` continues below.
    fn follow(self, r: whiteout::Redirect) -> Res<At> {
        Ok(match (self, r) {
            (_, whiteout::Redirect::Absolute(p)) => At::Root(p),
            (At::In(_), whiteout::Redirect::Relative(old)) => At::In(old),
            (At::Root(p), whiteout::Redirect::Relative(old)) => {
                let (parent, _) = split_path(&p)?;
                At::Root(join(parent.as_bytes(), old.to_bytes())?)
            }
        })
    }
}

/// What a directory listing already knows about one of its names: the lower layer it
/// found the name in (the lower layers above it do not have it, and lower layers never
/// change), and, if a listing built ahead probed it there, what that layer holds.
#[derive(Clone, Copy, Debug)]
pub struct Hint {
    /// The topmost lower layer holding the name.
    pub layer: LowerIdx,
    /// What [`probe`] found there, if it was already asked.
    pub seen: Option<Seen>,
}

/// A name resolved in the merged view.
#[derive(Debug)]
pub struct Found {
    /// The walk's result.
    pub state: LookupState,
    /// Status of the visible object.
    pub stat: Stat,
    /// Which layer shows it.
    pub side: Side,
    /// For an upper non-directory that was copied up: the lower object it came from.
    pub origin: Option<Identity>,
    /// A name of a lower hard link copied up alone: numbered as its upper object (see
    /// `UnionFs::broken_link`).
    pub own_number: bool,
    /// For a metadata-only copy (`metacopy`): the lower layer holding its data.
    pub metacopy: Option<DataAt>,
    /// For an upper hard link kept in the index (`index=on`): its index key.
    pub index_key: Option<CString>,
    /// The volume the object lives in (0: the union).
    pub vol: u16,
}

impl Found {
    /// A name outside the layered view (in or at a volume): the object, nothing else.
    fn plain(stat: Stat, vol: u16) -> Found {
        Found {
            state: LookupState::default(),
            stat,
            side: Side::Upper,
            origin: None,
            own_number: false,
            metacopy: None,
            index_key: None,
            vol,
        }
    }
}

impl UnionFs {
    /// `seen`, what [`UnionFs::probe_kind`] found at `name` in lower layer `idx`'s directory
    /// `dir`, with a directory's opacity completed: its OCI opaque marker file is looked for
    /// only if a layer below could merge into it — `later` (the walk goes on in a layer
    /// below at the same path), or any layer below through a redirect. A directory that
    /// merges with nothing below is not read (on a cold disk, one read per directory that
    /// kernel overlayfs, reading only the xattr, does not make).
    fn settle_opacity(&self, dir: BorrowedFd<'_>, name: &CStr, seen: Seen, later: bool, idx: LowerIdx) -> Res<Seen> {
        let Seen::Dir(st, marks) = seen else { return Ok(seen) };
        if marks.opaque {
            return Ok(seen);
        }
        let below = later
            || (usize::from(idx) + 1 < self.layers.lowers.len()
                && whiteout::read_redirect(dir, name, self.opts.dialect.names())?.is_some());
        match below {
            true => Ok(Seen::Dir(st, DirMarks { opaque: whiteout::has_opaque_file(dir, name)?, ..marks })),
            false => Ok(seen),
        }
    }

    /// What kind of entry `name` in directory layer `dir` is, a directory's opacity from its
    /// xattrs alone: what callers that need only the kind use, and what a lookup completes
    /// with [`UnionFs::settle_opacity`].
    pub(crate) fn probe_kind(&self, dir: BorrowedFd<'_>, name: &CStr, xwhiteouts: bool) -> Res<Seen> {
        probe_with(dir, name, xwhiteouts, true, self.opts.dialect.only(), false)
    }

    /// Walks the layers of `dir` for `name`, skipping the lower layers above the hinted one
    /// (known not to have it: lower layers never change).
    fn walk_from(&self, dir: &Arc<Node>, name: &CStr, hint: Option<Hint>) -> Res<LookupState> {
        let mut state = LookupState::default();
        if whiteout::is_marker_name(name.to_bytes()) {
            return Ok(state);
        }
        let mut at = None;
        if dir.has_upper() {
            let fd = self.dir_fd(dir, Side::Upper)?;
            let seen =
                probe(fd.as_fd(), name, dir.has(flag::UPPER_XWH), !dir.has(flag::MADE_HERE), self.opts.dialect.only())?;
            if !state.feed(Side::Upper, seen) {
                return Ok(state);
            }
            if let Seen::Dir(..) = seen {
                let names = self.layers.upper()?.dialect.names();
                at = whiteout::read_redirect(fd.as_fd(), name, names)?.map(|r| At::In(name.to_owned()).follow(r));
            }
        }
        let at = at.transpose()?;
        // A listing's hint holds for the name itself, not for a redirect.
        let hint = if at.is_some() { None } else { hint };
        self.walk_lowers(dir, at.unwrap_or_else(|| At::In(name.to_owned())), hint, &mut state)?;
        Ok(state)
    }

    /// Feeds what the lower layers hold at `at`, top-down, following the redirects of the
    /// directories found there as the kernel's `ovl_lookup` does: a relative one renames the
    /// last component for the layers below, an absolute one moves the walk to that path
    /// from the roots of the layers below (an upper becomes a lower when an image is built
    /// from it, and keeps its redirects).
    fn walk_lowers(&self, dir: &Arc<Node>, mut at: At, hint: Option<Hint>, state: &mut LookupState) -> Res<()> {
        let names = self.opts.dialect.names();
        let nlowers = self.layers.lowers.len() as LowerIdx;
        let dl = dir.dir_lower();
        // Layers at or above `done` were walked.
        let mut done: Option<LowerIdx> = None;
        let mut known = None;
        if let (Some(h), Some(dl)) = (hint, dl) {
            // The layers above the hinted one do not have the name (nor any redirect).
            if let Some(pos) = dl.layers.iter().position(|l| l.idx == h.layer) {
                done = pos.checked_sub(1).map(|p| dl.layers[p].idx);
                known = h.seen;
            }
        }
        loop {
            let after = |i: LowerIdx| done.is_none_or(|d| i > d);
            let (idx, seen, parent, last) = match &at {
                At::In(n) => {
                    let Some(l) = dl.and_then(|d| d.layers.iter().find(|l| after(l.idx)).copied()) else { break };
                    let fd = self.dir_fd(dir, Side::Lower(l.idx))?;
                    let seen = match known.take() {
                        Some(seen) => seen,
                        None => self.probe_kind(fd.as_fd(), n, l.xwhiteouts)?,
                    };
                    let later = dl.is_some_and(|d| d.layers.iter().any(|x| x.idx > l.idx));
                    let seen = self.settle_opacity(fd.as_fd(), n, seen, later, l.idx)?;
                    (l.idx, seen, Some(fd), n.clone())
                }
                At::Root(path) => {
                    let idx = done.map_or(0, |d| d + 1);
                    if idx >= nlowers {
                        break;
                    }
                    let (pfd, last) = self.lower_parent(idx, path)?;
                    let seen = match &pfd {
                        Some(fd) => {
                            let seen = self.probe_kind(fd.as_fd(), &last, false)?;
                            self.settle_opacity(fd.as_fd(), &last, seen, idx + 1 < nlowers, idx)?
                        }
                        None => Seen::Missing,
                    };
                    (idx, seen, pfd, last)
                }
            };
            done = Some(idx);
            let before = state.lowers.len();
            let go_on = state.feed(Side::Lower(idx), seen);
            if state.lowers.len() > before {
                let path = match &at {
                    At::In(n) => join(dl.map(|d| d.path_in(idx).to_bytes()).unwrap_or_default(), n.to_bytes())?,
                    At::Root(p) => p.clone(),
                };
                state.lower_paths.push(path);
            }
            if !go_on {
                break;
            }
            if let (Seen::Dir(..), Some(pfd)) = (seen, &parent)
                && let Some(r) = whiteout::read_redirect(pfd.as_fd(), &last, names)?
            {
                at = at.follow(r)?;
            }
        }
        Ok(())
    }

    /// The directory of `path` (from lower layer `idx`'s root) and its last component;
    /// `None` when the layer has no such directory.
    fn lower_parent(&self, idx: LowerIdx, path: &CStr) -> Res<(Option<Arc<OwnedFd>>, CString)> {
        let (parent, last) = split_path(path)?;
        let root = &self.layers.lower(idx)?.root;
        if parent.is_empty() {
            return Ok((Some(root.clone()), last));
        }
        match crate::sys::open::resolve_beneath(&**root, &parent, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(pfd) => Ok((Some(Arc::new(pfd)), last)),
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV) => Ok((None, last)),
            Err(e) => Err(e),
        }
    }

    /// Resolves `name` in directory `dir`; `Ok(None)` if the merged view has no such name.
    pub(crate) fn find(&self, dir: &Arc<Node>, name: &CStr) -> Res<Option<Found>> {
        self.find_from(dir, name, None)
    }

    /// [`UnionFs::find`], starting the lower layers at the hinted one (see
    /// [`UnionFs::walk_from`]).
    fn find_from(&self, dir: &Arc<Node>, name: &CStr, hint: Option<Hint>) -> Res<Option<Found>> {
        if !dir.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        self.stable(|| {
            if dir.vol != 0 {
                // Inside a volume: a plain directory, no layers, no markers.
                let fd = self.dir_fd(dir, Side::Upper)?;
                return match stat::statat(&*fd, name) {
                    Ok(stat) => Ok(Some(Found::plain(stat, dir.vol))),
                    Err(Errno::ENOENT) => Ok(None),
                    Err(e) => Err(e),
                };
            }
            if dir.has(flag::VOL_ANCESTOR)
                && let Some(vol) = self.volume_at(dir, name)
            {
                let stat = stat::fstat(&*self.layers.volume(vol)?.layer.root)?;
                return Ok(Some(Found::plain(stat, vol)));
            }
            let state = self.walk_from(dir, name, hint)?;
            let Some((side, stat)) = state.top() else {
                return Ok(None);
            };
            let origin_value = match side == Side::Upper && !stat.is_dir() {
                true => self.upper_xattr(dir, name, |n| n.origin)?,
                false => None,
            };
            let origin = match (&origin_value, stat.kind()) {
                (Some(v), Some(kind)) => self.origin_of(dir, name, kind, v)?,
                _ => None,
            };
            if let Side::Lower(idx) = side
                && self.opts.index
                && stat.is_reg()
                && stat.nlink > 1
            {
                // A lower hard link whose sibling was copied up: the object is the copy in
                // the index (its status is the copy's); this name is linked to it only when
                // a change goes through it (as the kernel's `ovl_lookup` uses the index).
                let lfd = self.dir_fd(dir, side)?;
                let uuid = self.layers.lower(idx)?.uuid;
                if let (Some(k), Some(index)) = (self.index_key(lfd.as_fd(), name, &stat, &uuid), self.index_dir())
                    && let Ok(copy) = stat::statat(index, &k)
                    && copy.is_reg()
                {
                    let f = Found {
                        state,
                        stat: copy,
                        side,
                        origin: None,
                        own_number: false,
                        metacopy: None,
                        index_key: Some(k),
                        vol: 0,
                    };
                    return Ok(Some(f));
                }
            }
            // By the marker, not by a decoded origin: an upper moved to other (identical)
            // lowers keeps its data, found by name or redirect.
            // (The kernel records no origin for a lower hard link copied up alone.)
            let metacopy = match (origin_value.is_some() || self.opts.metacopy) && side == Side::Upper && stat.is_reg()
            {
                true => self.metacopy_of(dir, name)?,
                false => None,
            };
            let index_key =
                match (&origin_value, origin.is_some() && stat.is_reg() && stat.nlink > 1 && self.opts.index) {
                    (Some(v), true) => Some(crate::union::index::key_of_origin(v)?).filter(|k| self.indexed(k)),
                    _ => None,
                };
            let own_number = match (&origin, &origin_value) {
                (Some(o), Some(v)) => self.broken_link(dir, name, o, stat.kind().ok_or(Errno::EIO)?, Some(v))?,
                _ => false,
            };
            Ok(Some(Found { state, stat, side, origin, own_number, metacopy, index_key, vol: 0 }))
        })
    }

    /// The link count of the lower file an indexed upper `name` in `dir` was copied up
    /// from (the first regular file of that name in the directory's lower layers).
    pub(crate) fn lower_nlink_of(&self, dir: &Arc<Node>, name: &CStr) -> Option<u64> {
        let layers = dir.dir_lower()?.layers.clone();
        layers.iter().find_map(|l| {
            let fd = self.dir_fd(dir, Side::Lower(l.idx)).ok()?;
            stat::statat(&*fd, name).ok().filter(Stat::is_reg).map(|st| st.nlink)
        })
    }

    /// The volume (1-based) whose mount point is `name` in `dir`, if any.
    pub(crate) fn volume_at(&self, dir: &Arc<Node>, name: &CStr) -> Option<u16> {
        let mut path = self.merged_components(dir);
        path.push(name.to_owned());
        self.layers.volumes.iter().position(|v| v.at == path).map(|i| i as u16 + 1)
    }

    /// Whether `name` in `dir` lies on the path to a volume's mount point.
    pub(crate) fn leads_to_volume(&self, dir: &Arc<Node>, name: &CStr) -> bool {
        let mut path = self.merged_components(dir);
        path.push(name.to_owned());
        self.layers.volumes.iter().any(|v| v.at.len() > path.len() && v.at.starts_with(&path))
    }

    /// For an upper non-directory: if it carries an origin marker, the identity of the lower
    /// object it was copied from. Decoded from the recorded file handle where that is exact
    /// (one lower filesystem of a known handle layout), else the first lower object of the
    /// same type under the same name.
    pub(super) fn origin_of(&self, dir: &Arc<Node>, name: &CStr, kind: FileKind, v: &[u8]) -> Res<Option<Identity>> {
        if let Some((fs, magic)) = crate::union::copy_up::origin_uuid(v).and_then(|u| self.layers.origin_fs(u))
            && let Some(ino) = crate::union::copy_up::origin_ino(v, magic)
        {
            return Ok(Some(Identity { fs, ino }));
        }
        match self.first_lower_nondir(dir, name)? {
            Some((idx, ls)) if ls.kind() == Some(kind) => {
                Ok(Some(Identity { fs: self.layers.lower(idx)?.fs, ino: ls.ino }))
            }
            _ => Ok(None),
        }
    }

    /// For an upper directory `name` of `dir` that carries a redirect: the identity lookup
    /// numbers it by (its topmost lower directory, found through the redirect), if any.
    pub(super) fn redirected_dir_identity(&self, dir: &Arc<Node>, name: &CStr) -> Res<Option<Identity>> {
        match self.find_from(dir, name, None)? {
            Some(f) if f.vol == 0 && f.stat.is_dir() => match f.state.first_lower() {
                Some((idx, st)) => Ok(Some(Identity { fs: self.layers.lower(idx)?.fs, ino: st.ino })),
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// One of the union's private attributes (chosen from the upper's dialect by `which`)
    /// of upper entry `name` in `dir`.
    fn upper_xattr(
        &self,
        dir: &Arc<Node>,
        name: &CStr,
        which: impl FnOnce(&whiteout::XattrNames) -> &'static CStr,
    ) -> Res<Option<Vec<u8>>> {
        let fd = self.dir_fd(dir, Side::Upper)?;
        let attr = which(self.layers.upper()?.dialect.names());
        crate::sys::xattr::get(crate::sys::xattr::XTarget::At(fd.as_fd(), name), attr)
    }

    /// The topmost lower object under `name` in `dir`, if it is a non-directory.
    pub(super) fn first_lower_nondir(&self, dir: &Arc<Node>, name: &CStr) -> Res<Option<(LowerIdx, Stat)>> {
        self.first_nondir_below(dir, name, Side::Upper)
    }

    /// [`UnionFs::first_lower_nondir`] in the layers below `side` only.
    fn first_nondir_below(&self, dir: &Arc<Node>, name: &CStr, side: Side) -> Res<Option<(LowerIdx, Stat)>> {
        let Some(dl) = dir.dir_lower() else { return Ok(None) };
        for l in dl.layers.iter().filter(|l| below(side, l.idx)) {
            let lfd = self.dir_fd(dir, Side::Lower(l.idx))?;
            match self.probe_kind(lfd.as_fd(), name, l.xwhiteouts)? {
                Seen::Missing => continue,
                Seen::NonDir(ls) => return Ok(Some((l.idx, ls))),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Whether an upper non-directory copied up from `origin` is one name of a lower hard
    /// link copied up alone (no index): an object of its own, with its own number, as kernel
    /// overlayfs numbers it (`ovl_getattr` takes the origin's number only from a lower file
    /// with one link, or an indexed one). Known where the lower file is still under the same
    /// name.
    ///
    /// The lower file is found under the same name, else (renamed since) by the recorded
    /// handle where the daemon may open by handle (`CAP_DAC_READ_SEARCH`); otherwise it
    /// counts as a file of one link.
    pub(super) fn broken_link(
        &self,
        dir: &Arc<Node>,
        name: &CStr,
        origin: &Identity,
        kind: FileKind,
        value: Option<&[u8]>,
    ) -> Res<bool> {
        if kind == FileKind::Directory || self.opts.index {
            return Ok(false);
        }
        if let Some((idx, ls)) = self.first_lower_nondir(dir, name)?
            && ls.ino == origin.ino
            && self.layers.lower(idx)?.fs == origin.fs
        {
            return Ok(ls.nlink > 1);
        }
        let Some(v) = value.filter(|v| v.len() > 21) else { return Ok(false) };
        let Some(layer) = self.layers.lowers.iter().find(|l| l.fs == origin.fs) else { return Ok(false) };
        match crate::sys::handle::open_by_handle_at(&*layer.root, i32::from(v[4]), &v[21..]) {
            Ok(fd) => {
                let st = stat::fstat(&fd)?;
                Ok(st.ino == origin.ino && st.nlink > 1)
            }
            Err(_) => Ok(false),
        }
    }

    /// For an upper regular file marked as a metadata-only copy: where its data is (`None`:
    /// not such a copy, or no data found). Under the same name in the lower layers of `dir`,
    /// unless the kernel renamed it and left an `overlay.redirect` (kernel
    /// `ovl_check_metacopy` then `ovl_lookup`'s data path): a relative one names the file in
    /// the same lower directory, an absolute one is a path from every lower layer's root.
    fn metacopy_of(&self, dir: &Arc<Node>, name: &CStr) -> Res<Option<DataAt>> {
        self.data_of(dir, name, Side::Upper)
    }

    /// [`UnionFs::metacopy_of`] for a file in any layer: a metadata-only copy in a lower layer
    /// (an upper written with `metacopy=on` that became a lower layer) has its data in the
    /// layers below it, as kernel overlayfs's lookup follows it.
    pub(crate) fn data_of(&self, dir: &Arc<Node>, name: &CStr, side: Side) -> Res<Option<DataAt>> {
        let (fd, names) = match side {
            Side::Upper => (self.dir_fd(dir, side)?, self.layers.upper()?.dialect.names()),
            Side::Lower(_) => (self.dir_fd(dir, side)?, self.opts.dialect.names()),
        };
        if crate::sys::xattr::get(crate::sys::xattr::XTarget::At(fd.as_fd(), name), names.metacopy)?.is_none() {
            return Ok(None);
        }
        let redirect = whiteout::read_redirect(fd.as_fd(), name, names)?;
        // The directory's path in the layer the data is found in (a renamed directory is
        // elsewhere in lower layers than in the one above).
        let base = |idx| dir.dir_lower().map(|d| d.path_in(idx).to_bytes()).unwrap_or_default();
        match redirect {
            None => Ok(self
                .first_nondir_below(dir, name, side)?
                .filter(|(_, ls)| ls.is_reg())
                .map(|(idx, _)| DataAt { idx, moved: None })),
            Some(whiteout::Redirect::Relative(old)) => Ok(self
                .first_nondir_below(dir, &old, side)?
                .filter(|(_, ls)| ls.is_reg())
                .map(|(idx, _)| join(base(idx), old.to_bytes()).map(|p| DataAt { idx, moved: Some(p) }))
                .transpose()?),
            Some(whiteout::Redirect::Absolute(path)) => {
                for idx in (0..self.layers.lowers.len() as LowerIdx).filter(|i| below(side, *i)) {
                    match self.lower_at_path(idx, &path)? {
                        Some(st) if st.is_reg() => return Ok(Some(DataAt { idx, moved: Some(path) })),
                        Some(_) => return Ok(None),
                        None => continue,
                    }
                }
                Ok(None)
            }
        }
    }

    /// What lower layer `idx` holds at `path` (from its root), if anything.
    fn lower_at_path(&self, idx: LowerIdx, path: &CStr) -> Res<Option<Stat>> {
        let (Some(pfd), last) = self.lower_parent(idx, path)? else { return Ok(None) };
        match stat::statat(&*pfd, &last) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether any lower layer of `dir` still shows `name` (so removing it from the merged
    /// view needs a whiteout).
    pub(crate) fn lower_has(&self, dir: &Arc<Node>, name: &CStr) -> Res<bool> {
        let Some(dl) = dir.dir_lower() else {
            return Ok(false);
        };
        for l in &dl.layers {
            let fd = self.dir_fd(dir, Side::Lower(l.idx))?;
            match self.probe_kind(fd.as_fd(), name, l.xwhiteouts)? {
                Seen::Missing => continue,
                Seen::Whiteout => return Ok(false),
                Seen::NonDir(_) | Seen::Dir(..) => return Ok(true),
            }
        }
        Ok(false)
    }

    /// `lookup`: resolves `name` in directory `parent` and counts a kernel reference.
    pub fn lookup(&self, parent: u64, name: &CStr) -> Res<Entry> {
        let e = self.lookup_from(parent, name, None)?;
        if e.attr.kind != FileKind::Directory
            && let Ok(dir) = self.inodes.get(parent)
        {
            self.looked_up_in(&dir);
        }
        Ok(e)
    }

    /// `lookup` of an entry of `parent`'s listing (for `READDIRPLUS`): the lower layers
    /// above the one the listing found it in are not probed again, nor that one if a
    /// listing built ahead already did (`seen`).
    pub fn lookup_listed(&self, parent: u64, e: &crate::union::readdir::DirEntry, seen: Option<Seen>) -> Res<Entry> {
        self.lookup_from(parent, &e.name, e.lower.map(|layer| Hint { layer, seen }))
    }

    fn lookup_from(&self, parent: u64, name: &CStr, hint: Option<Hint>) -> Res<Entry> {
        crate::sys::name_ok(name.to_bytes())?;
        let dir = self.inodes.get(parent)?;
        let found = self.find_from(&dir, name, hint)?.ok_or(Errno::ENOENT)?;
        let (node, st) = self.intern(&dir, name, found)?;
        self.maybe_reclaim();
        let revalidate = !node.is_dir() && ((!node.has_upper() && st.nlink > 1) || node.has(flag::INDEXED));
        Ok(Entry { ino: node.ino, attr: self.attr_overridden(&node, &st), revalidate })
    }

    /// `forget`: the kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if let Ok(node) = self.inodes.get(ino) {
            self.inodes.forget(ino, n);
            if self.inodes.get(ino).map(|cur| !Arc::ptr_eq(&cur, &node)).unwrap_or(true) {
                self.forget_dirfds(&node);
                self.listings.forget(ino);
                self.node_left();
            }
        }
    }
}

/// What `name` in one layer's directory `dir` holds, markers of every dialect decoded
/// (`.wh.NAME` files only with `dot_wh`: a directory known to hold none need not be asked).
pub fn probe(dir: BorrowedFd<'_>, name: &CStr, xwhiteouts: bool, dot_wh: bool, dialects: Dialects) -> Res<Seen> {
    probe_with(dir, name, xwhiteouts, dot_wh, dialects, true)
}

/// [`probe`], looking inside a directory for the OCI dialect's opaque marker file only with
/// `opq_file` (without it, [`Seen::Dir`]'s opacity comes from xattrs alone: right where no
/// layer lies below, or where only the kind of the entry matters).
fn probe_with(
    dir: BorrowedFd<'_>,
    name: &CStr,
    xwhiteouts: bool,
    dot_wh: bool,
    dialects: Dialects,
    opq_file: bool,
) -> Res<Seen> {
    let marks = |dir, name| match opq_file {
        true => whiteout::dir_marks(dir, name, None, dialects),
        false => whiteout::dir_xattr_marks(dir, name, dialects),
    };
    match stat::statat(dir, name) {
        Ok(st) if st.is_chardev_whiteout() => Ok(Seen::Whiteout),
        Ok(st) if st.is_dir() => Ok(Seen::Dir(st, marks(dir, name)?)),
        Ok(st) if xwhiteouts && st.is_reg() && st.size == 0 && whiteout::is_xattr_whiteout(dir, name, dialects)? => {
            Ok(Seen::Whiteout)
        }
        Ok(st) => Ok(Seen::NonDir(st)),
        Err(Errno::ENOENT) if !dot_wh => Ok(Seen::Missing),
        Err(Errno::ENOENT) => match whiteout::whiteout_name(name.to_bytes()) {
            Some(wh) => match stat::statat(dir, &wh) {
                Ok(_) => Ok(Seen::Whiteout),
                Err(Errno::ENOENT) => Ok(Seen::Missing),
                Err(e) => Err(e),
            },
            None => Ok(Seen::Missing),
        },
        Err(e) => Err(e),
    }
}

/// `base/name`, or `name` when `base` is empty.
/// Where a metadata-only copy's data is: a regular file in lower layer `idx`, under the
/// copy's own name in its directory's lower path, or at `moved` (a path from the layer's
/// root) when the kernel renamed the copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataAt {
    /// The lower layer.
    pub idx: LowerIdx,
    /// The path from the layer's root, when it is not the copy's own.
    pub moved: Option<CString>,
}

/// Whether lower layer `idx` lies below `side`.
fn below(side: Side, idx: LowerIdx) -> bool {
    match side {
        Side::Upper => true,
        Side::Lower(i) => idx > i,
    }
}

/// A path from a layer's root split into its parent's path (empty for the root) and its last
/// component.
pub(crate) fn split_path(path: &CStr) -> Res<(CString, CString)> {
    let bytes = path.to_bytes();
    let (parent, last) = match bytes.iter().rposition(|b| *b == b'/') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (&b""[..], bytes),
    };
    Ok((CString::new(parent).map_err(|_| Errno::EIO)?, CString::new(last).map_err(|_| Errno::EIO)?))
}

pub(crate) fn join(base: &[u8], name: &[u8]) -> Res<CString> {
    let mut v = Vec::with_capacity(base.len() + 1 + name.len());
    if !base.is_empty() {
        v.extend_from_slice(base);
        v.push(b'/');
    }
    v.extend_from_slice(name);
    CString::new(v).map_err(|_| Errno::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::stat::Timespec;

    fn st(mode: u32, ino: u64) -> Stat {
        Stat {
            dev: 1,
            ino,
            mode,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            size: 0,
            blocks: 0,
            blksize: 4096,
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
        }
    }
    const DIR: u32 = libc::S_IFDIR | 0o755;
    const REG: u32 = libc::S_IFREG | 0o644;
    const OPAQUE: DirMarks = DirMarks { opaque: true, xwhiteouts: false };

    #[test]
    fn whiteout_stops_the_walk() {
        let mut s = LookupState::default();
        assert!(s.feed(Side::Upper, Seen::Missing));
        assert!(!s.feed(Side::Lower(0), Seen::Whiteout));
        assert!(!s.found());
    }

    #[test]
    fn non_directory_hides_everything_below() {
        let mut s = LookupState::default();
        assert!(!s.feed(Side::Lower(0), Seen::NonDir(st(REG, 5))));
        assert_eq!(s.top().map(|t| t.0), Some(Side::Lower(0)));
        assert!(s.lower_layers().is_empty());
    }

    #[test]
    fn directories_merge_until_opaque() {
        let mut s = LookupState::default();
        assert!(s.feed(Side::Upper, Seen::Dir(st(DIR, 1), DirMarks::default())));
        assert!(s.feed(Side::Lower(0), Seen::Dir(st(DIR, 2), DirMarks::default())));
        assert!(s.feed(Side::Lower(1), Seen::Missing));
        assert!(!s.feed(Side::Lower(2), Seen::Dir(st(DIR, 3), OPAQUE)));
        assert_eq!(s.top().map(|t| (t.0, t.1.ino)), Some((Side::Upper, 1)));
        let idx: Vec<_> = s.lower_layers().iter().map(|l| l.idx).collect();
        assert_eq!(idx, vec![0, 2]);
        assert_eq!(s.first_lower().map(|f| f.1.ino), Some(2));
    }

    #[test]
    fn opaque_upper_dir_merges_nothing() {
        let mut s = LookupState::default();
        assert!(!s.feed(Side::Upper, Seen::Dir(st(DIR, 1), OPAQUE)));
        assert!(s.upper_marks().opaque);
        assert!(s.lower_layers().is_empty());
    }

    #[test]
    fn non_directory_below_directory_is_hidden() {
        let mut s = LookupState::default();
        assert!(s.feed(Side::Lower(0), Seen::Dir(st(DIR, 1), DirMarks::default())));
        assert!(!s.feed(Side::Lower(1), Seen::NonDir(st(REG, 2))));
        assert!(s.top().is_some_and(|t| t.1.is_dir()));
        assert_eq!(s.lower_layers().len(), 1);
    }

    #[test]
    fn join_paths() {
        assert_eq!(join(b"", b"a").unwrap().as_bytes(), b"a");
        assert_eq!(join(b"a/b", b"c").unwrap().as_bytes(), b"a/b/c");
    }
}

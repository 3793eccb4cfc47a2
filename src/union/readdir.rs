//! What does this directory list? (the kernel's `readdir.c`)
//!
//! The listing of a merged directory is built once per open (and again when a read starts
//! over after the directory changed): the upper directory, then each merged lower directory,
//! top-down. [`merge`] is the pure rule: the first layer to show a name decides it; a
//! whiteout decides "absent"; a `.wh.NAME` marker hides `NAME` in the layers below it (not in
//! its own layer, as OCI specifies); markers themselves never appear.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Errno, Res};
use crate::sys::stat::{self, FileKind};
use crate::sys::{dir as sdir, open};
use crate::union::UnionFs;
use crate::union::lookup::Seen;
use crate::union::name::Name;
use crate::union::node::{Identity, Node, flag};
use crate::union::prefetch::Serving;
use crate::union::tables::Side;
use crate::union::whiteout;

/// One entry of a merged listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Name (inline when short: a listing of a big directory is kept as one snapshot).
    pub name: Name,
    /// Inode number reported in `d_ino`.
    pub ino: u64,
    /// Type reported in `d_type`.
    pub kind: FileKind,
    /// The lower layer showing it, when the upper does not: lookups of the name can start
    /// there, since the lower layers above it (which never change) do not have it.
    pub lower: Option<crate::union::layer::LowerIdx>,
}

/// One entry of one layer, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Name.
    pub name: Vec<u8>,
    /// Real inode number.
    pub ino: u64,
    /// Type.
    pub kind: FileKind,
    /// Whether it is a whiteout (in any dialect).
    pub whiteout: bool,
}

/// The classified listing of one layer's directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerListing {
    /// Filesystem index of the layer (for inode numbers).
    pub fs: u8,
    /// Whether this is the upper layer.
    pub upper: bool,
    /// Entries, markers excluded.
    pub entries: Vec<Listed>,
    /// Names hidden in lower layers by `.wh.NAME` markers of this layer.
    pub hidden_below: Vec<Vec<u8>>,
}

/// `ENOENT` as nothing: an entry removed since the layer was read keeps the number it was
/// listed with (a listing is a snapshot) rather than failing the listing.
fn gone_is_none<T>(r: Res<Option<T>>) -> Res<Option<T>> {
    match r {
        Err(Errno::ENOENT) => Ok(None),
        r => r,
    }
}

/// A visible name of the merged listing, with what it shadows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// Name.
    pub name: Vec<u8>,
    /// Type.
    pub kind: FileKind,
    /// Filesystem index and real inode of the visible entry.
    pub fs: u8,
    /// Real inode number.
    pub ino: u64,
    /// Whether the visible entry is in the upper layer.
    pub upper: bool,
    /// Index (in the listings merged) of the layer showing it.
    pub layer: usize,
    /// The first lower entry of the same name below it that is not a whiteout (its type,
    /// filesystem index and inode), if one exists: a merged directory's lower part, or a
    /// copied-up file's origin.
    pub shadow: Option<(FileKind, u8, u64)>,
}

/// Merges layer listings, topmost first, into the visible names in order of appearance.
pub fn merge(layers: &[LayerListing]) -> Vec<Merged> {
    // name -> index in `out`, or None for a name decided as absent.
    let mut seen: HashMap<&[u8], Option<usize>> = HashMap::new();
    let mut out: Vec<Merged> = Vec::new();
    // Per output entry: whether the search for its shadow is over.
    let mut closed: Vec<bool> = Vec::new();
    for (li, layer) in layers.iter().enumerate() {
        for e in &layer.entries {
            match seen.get(e.name.as_slice()) {
                Some(Some(i)) => {
                    let i = *i;
                    if !closed[i] && !layer.upper {
                        closed[i] = true;
                        if !e.whiteout {
                            out[i].shadow = Some((e.kind, layer.fs, e.ino));
                        }
                    }
                }
                Some(None) => {}
                None => {
                    if e.whiteout {
                        seen.insert(&e.name, None);
                    } else {
                        seen.insert(&e.name, Some(out.len()));
                        closed.push(!layer.upper);
                        out.push(Merged {
                            name: e.name.clone(),
                            kind: e.kind,
                            fs: layer.fs,
                            ino: e.ino,
                            upper: layer.upper,
                            layer: li,
                            shadow: None,
                        });
                    }
                }
            }
        }
        for h in &layer.hidden_below {
            match seen.get(h.as_slice()) {
                Some(Some(i)) => closed[*i] = true,
                Some(None) => {}
                None => {
                    seen.insert(h, None);
                }
            }
        }
    }
    out
}

impl UnionFs {
    /// Reads and classifies one layer's directory.
    fn list_layer(&self, dir: &Arc<Node>, side: Side, xwhiteouts: bool) -> Res<LayerListing> {
        let plain = dir.vol != 0;
        let fd = self.dir_fd(dir, side)?;
        let rd = open::open_dir_for_read(&*fd)?;
        let raw = sdir::read_all(&rd)?;
        let fs = match side {
            Side::Upper => self.layers.upper_fs(dir.vol),
            Side::Lower(i) => self.layers.lower(i)?.fs,
        };
        let mut listing = LayerListing { fs, upper: side == Side::Upper, ..Default::default() };
        for e in raw {
            if plain {
                // A volume is a plain directory tree: nothing in it is a marker.
                let kind = match e.kind {
                    Some(k) => k,
                    None => {
                        let name = CString::new(e.name.clone()).map_err(|_| Errno::EIO)?;
                        match stat::statat(fd.as_fd(), &name) {
                            Ok(st) => st.kind().ok_or(Errno::EIO)?,
                            Err(Errno::ENOENT) => continue,
                            Err(err) => return Err(err),
                        }
                    }
                };
                listing.entries.push(Listed { name: e.name, ino: e.ino, kind, whiteout: false });
                continue;
            }
            if whiteout::is_marker_name(&e.name) {
                if let Some(t) = whiteout::whiteout_target(&e.name) {
                    listing.hidden_below.push(t.to_vec());
                }
                continue;
            }
            let name = CString::new(e.name.clone()).map_err(|_| Errno::EIO)?;
            let (kind, whiteout) = match e.kind {
                Some(FileKind::CharDev) | None => match stat::statat(fd.as_fd(), &name) {
                    Ok(st) => (st.kind().ok_or(Errno::EIO)?, st.is_chardev_whiteout()),
                    // Gone since getdents: not listed.
                    Err(Errno::ENOENT) => continue,
                    Err(err) => return Err(err),
                },
                Some(FileKind::Regular) if xwhiteouts => {
                    let st = match stat::statat(fd.as_fd(), &name) {
                        Ok(st) => st,
                        Err(Errno::ENOENT) => continue,
                        Err(err) => return Err(err),
                    };
                    let wh = st.size == 0 && whiteout::is_xattr_whiteout(fd.as_fd(), &name, self.opts.dialect.only())?;
                    (FileKind::Regular, wh)
                }
                Some(k) => (k, false),
            };
            listing.entries.push(Listed { name: e.name, ino: e.ino, kind, whiteout });
        }
        Ok(listing)
    }

    /// The merged listing of a directory node, with `.` and `..` first.
    pub(crate) fn list(&self, dir: &Arc<Node>) -> Res<Vec<DirEntry>> {
        self.stable(|| self.list_once(dir))
    }

    fn list_once(&self, dir: &Arc<Node>) -> Res<Vec<DirEntry>> {
        let mut layers = Vec::new();
        let mut sides = Vec::new();
        if dir.has_upper() {
            layers.push(self.list_layer(dir, Side::Upper, dir.has(flag::UPPER_XWH))?);
            sides.push(None);
        }
        if let Some(dl) = dir.dir_lower() {
            for l in &dl.layers {
                layers.push(self.list_layer(dir, Side::Lower(l.idx), l.xwhiteouts)?);
                sides.push(Some(l.idx));
            }
        }
        let merged = merge(&layers);
        let upper_fd = if dir.has_upper() { Some(self.dir_fd(dir, Side::Upper)?) } else { None };
        // Marked impure: copied-up entries may have come in under other names (renamed).
        let marked = dir.has(flag::IMPURE) || self.dir_is_impure(dir)?;
        let impure = dir.has_lower() || marked;
        let mut out = Vec::with_capacity(merged.len() + 2);
        let parent_ino = dir.parent().map_or(dir.ino, |p| p.ino);
        out.push(DirEntry { name: c".".into(), ino: dir.ino, kind: FileKind::Directory, lower: None });
        out.push(DirEntry { name: c"..".into(), ino: parent_ino, kind: FileKind::Directory, lower: None });
        for m in merged {
            let name = CString::new(m.name).map_err(|_| Errno::EIO)?;
            let (mut fs, mut ino) = (m.fs, m.ino);
            // Report the same number that lookup will give the entry: a directory over a
            // lower one has that one's (of the same name, or where its redirect leads); a
            // non-directory copied up has its origin's, wherever the origin was (kernel
            // `ovl_cache_update_ino`).
            if let Some(ufd) = upper_fd.as_ref().filter(|_| m.upper) {
                if m.kind == FileKind::Directory {
                    // A directory renamed in (marked impure then) is numbered as the lower
                    // directory its redirect leads to.
                    let names = self.layers.upper()?.dialect.names();
                    if marked && gone_is_none(whiteout::read_redirect(ufd.as_fd(), &name, names))?.is_some() {
                        if let Some(o) = gone_is_none(self.redirected_dir_identity(dir, &name))? {
                            (fs, ino) = (o.fs, o.ino);
                        }
                    } else if let Some((FileKind::Directory, sfs, sino)) = m.shadow
                        && !whiteout::dir_marks(ufd.as_fd(), &name, None, self.opts.dialect.only())?.opaque
                    {
                        (fs, ino) = (sfs, sino);
                    }
                } else if (marked || (impure && m.shadow.is_some()))
                    && let Some(o) = gone_is_none(self.listed_origin(dir, ufd.as_fd(), &name, m.kind))?
                {
                    (fs, ino) = (o.fs, o.ino);
                }
            }
            let ino = self.layers.xino.map(fs, ino).unwrap_or(ino);
            let lower = sides.get(m.layer).copied().flatten();
            out.push(DirEntry { name: name.into(), ino, kind: m.kind, lower });
        }
        if dir.has(flag::VOL_ANCESTOR) {
            self.add_volume_entries(dir, &mut out)?;
        }
        Ok(out)
    }

    /// Lists the volume mount points directly inside `dir` (a volume shows there even where
    /// no layer has the name).
    fn add_volume_entries(&self, dir: &Arc<Node>, out: &mut Vec<DirEntry>) -> Res<()> {
        let here = self.merged_components(dir);
        for v in &self.layers.volumes {
            if v.at.len() != here.len() + 1 || !v.at.starts_with(&here) {
                continue;
            }
            let name = &v.at[here.len()];
            let st = stat::fstat(&*v.layer.root)?;
            let ino = self.layers.xino.map(v.layer.fs, st.ino).unwrap_or(st.ino);
            match out.iter_mut().find(|e| *e.name == **name) {
                Some(e) => {
                    e.ino = ino;
                    e.kind = FileKind::Directory;
                    e.lower = None;
                }
                None => {
                    out.push(DirEntry { name: name.as_c_str().into(), ino, kind: FileKind::Directory, lower: None })
                }
            }
        }
        Ok(())
    }

    /// Whether the upper directory of `dir` carries the `impure` marker.
    fn dir_is_impure(&self, dir: &Arc<Node>) -> Res<bool> {
        if !dir.has_upper() {
            return Ok(false);
        }
        let fd = self.dir_fd(dir, Side::Upper)?;
        let names = self.layers.upper()?.dialect.names();
        let v = crate::sys::xattr::get(crate::sys::xattr::XTarget::At(fd.as_fd(), c"."), names.impure)?;
        if v.is_some() {
            dir.set(flag::IMPURE);
        }
        Ok(v.is_some())
    }

    /// Whether upper entry `name` carries an origin marker.
    pub(crate) fn has_origin(&self, dir: BorrowedFd<'_>, name: &CStr) -> Res<bool> {
        Ok(self.origin_value(dir, name)?.is_some())
    }

    /// The origin marker of upper entry `name` in upper directory `dir`, if it has one.
    fn origin_value(&self, dir: BorrowedFd<'_>, name: &CStr) -> Res<Option<Vec<u8>>> {
        let names = self.layers.upper()?.dialect.names();
        crate::sys::xattr::get(crate::sys::xattr::XTarget::At(dir, name), names.origin)
    }

    /// For upper non-directory `name` of `dir` (`ufd` its upper directory): the identity
    /// lookup numbers it by, when that is its origin's (as [`UnionFs::find`] decides: the
    /// origin marker decoded, unless the file is a lower hard link copied up alone).
    fn listed_origin(
        &self,
        dir: &Arc<Node>,
        ufd: BorrowedFd<'_>,
        name: &CStr,
        kind: FileKind,
    ) -> Res<Option<Identity>> {
        let Some(v) = self.origin_value(ufd, name)? else { return Ok(None) };
        match self.origin_of(dir, name, kind, &v)? {
            Some(o) if !self.broken_link(dir, name, &o, kind, Some(&v))? => Ok(Some(o)),
            _ => Ok(None),
        }
    }

    /// Whether the merged directory has no entries (for `rmdir` and rename over it).
    pub(crate) fn is_empty_dir(&self, dir: &Arc<Node>) -> Res<bool> {
        Ok(self.list(dir)?.len() <= 2)
    }

    /// `readdir` of directory `ino` from `offset` (a cookie [`Listing::cookie`] handed out
    /// with an earlier entry, or 0 for the start).
    ///
    /// Directories are opened without a handle (the kernel caches listings itself), so there
    /// is no per-open state: instead every listing built is a numbered snapshot, and each
    /// entry's cookie names the snapshot and the position in it. A reader part-way through
    /// keeps reading its own snapshot even when the directory changed and another reader
    /// started a newer one, so no name is listed twice or skipped (`seekdir`/`telldir` stay
    /// stable too). A read from 0 takes the newest snapshot, or makes one if the directory
    /// changed since (`rewinddir` sees changes).
    pub fn readdir(&self, ino: u64, offset: u64) -> Res<Listing> {
        let dir = self.inodes.get(ino)?;
        if !dir.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let version = dir.dir_version.load(Ordering::Acquire);
        let (generation, index) = ((offset >> 32) as u32, (offset & 0xffff_ffff) as usize);
        if offset != 0
            && let Some(s) = self.listings.find(ino, generation)
        {
            return Ok(Listing { generation, entries: s, start: index, fresh: None, seen: Vec::new() });
        }
        if offset == 0
            && let Some((g, s, ahead)) = self.listings.newest(ino, version)
        {
            // A listing built ahead and now used is a walk step like a fresh one.
            let fresh = ahead.is_some().then(|| {
                crate::stats::add(crate::stats::Counter::PrefetchHits, 1);
                self.serving(&dir)
            });
            return Ok(Listing { generation: g, entries: s, start: 0, fresh, seen: ahead.unwrap_or_default() });
        }
        // A new snapshot (the first read, a change, or a snapshot long evicted: then the
        // reader continues at the same position in a fresh one, as best it can).
        let entries = Arc::new(self.list(&dir)?);
        let generation = self.listings.add(ino, version, entries.clone(), None);
        let start = if offset == 0 { 0 } else { index };
        Ok(Listing { generation, entries, start, fresh: Some(self.serving(&dir)), seen: Vec::new() })
    }

    /// A listing of directory `ino` was served: if it was built for this read (or ahead of
    /// it and now used), read its subdirectories ahead ([`crate::union::prefetch`]).
    pub fn listed(&self, ino: u64, list: &Listing) {
        if list.fresh.is_some()
            && let Ok(dir) = self.inodes.get(ino)
        {
            self.read_ahead(&dir, &list.entries);
        }
    }
}

/// What one `readdir` serves: a snapshot and where to start in it.
#[derive(Debug)]
pub struct Listing {
    /// The snapshot's number.
    pub generation: u32,
    /// The snapshot.
    pub entries: Arc<Vec<DirEntry>>,
    /// Index of the first entry to serve.
    pub start: usize,
    /// Built from the layers for this read, or built ahead and used for the first time:
    /// then this holds the read-ahead it starts ([`UnionFs::listed`]) as pending until the
    /// listing is dropped.
    pub fresh: Option<Serving>,
    /// For a listing built ahead, read for the first time: what each entry's lower layer
    /// holds under its name, where it was probed (by entry index; may be shorter).
    pub seen: Vec<Option<Seen>>,
}

impl Listing {
    /// What the listing built ahead found for entry `i` in its lower layer.
    pub fn seen(&self, i: usize) -> Option<Seen> {
        self.seen.get(i).copied().flatten()
    }
}

impl Listing {
    /// The cookie to resume after entry `i`: the snapshot number and the next position.
    pub fn cookie(&self, i: usize) -> u64 {
        (u64::from(self.generation) << 32) | (i as u64 + 1)
    }
}

/// Listing snapshots by directory inode: the newest few per directory, and a bounded number
/// of directories and of entries in all (the least recently built go first). The kernel
/// caches every listing it has read to the end, so a snapshot matters only to a reader
/// part-way through; one evicted is built again on demand, the same if nothing changed.
#[derive(Debug, Default)]
pub struct Snapshots {
    map: dashmap::DashMap<u64, Vec<Snapshot>>,
    next_gen: std::sync::atomic::AtomicU32,
    /// Memory the snapshots hold, in entries (a probe counts as two: it is larger).
    held: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Clone)]
struct Snapshot {
    generation: u32,
    version: u32,
    entries: Arc<Vec<DirEntry>>,
    /// Built ahead of a walk and not read yet: the probes of its entries' lower layers.
    ahead: Option<Vec<Option<Seen>>>,
}

/// Snapshots kept per directory (readers part-way through older ones keep them).
const PER_DIR: usize = 16;
/// Directories with snapshots kept.
const DIRS: usize = 2048;
/// Entries all snapshots may hold (about 8 MiB; a single larger listing is still kept).
const ENTRIES: usize = 128 * 1024;

impl Snapshot {
    /// What it holds, in entries.
    fn weight(&self) -> usize {
        self.entries.len() + 2 * self.ahead.as_ref().map_or(0, Vec::len)
    }
}

impl Snapshots {
    fn find(&self, ino: u64, generation: u32) -> Option<Arc<Vec<DirEntry>>> {
        self.map.get(&ino)?.iter().find(|s| s.generation == generation).map(|s| s.entries.clone())
    }

    /// The newest snapshot if it is of `version`, and, if it was built ahead and is read for
    /// the first time now, its entries' probes.
    #[allow(clippy::type_complexity)]
    fn newest(&self, ino: u64, version: u32) -> Option<(u32, Arc<Vec<DirEntry>>, Option<Vec<Option<Seen>>>)> {
        let mut v = self.map.get_mut(&ino)?;
        let s = v.last_mut().filter(|s| s.version == version)?;
        let ahead = std::mem::take(&mut s.ahead);
        self.release(2 * ahead.as_ref().map_or(0, Vec::len));
        Some((s.generation, s.entries.clone(), ahead))
    }

    fn release(&self, n: usize) {
        // Saturating: concurrent adds and evictions only approximate the total. (The update
        // always succeeds.)
        let _previous = self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| Some(h.saturating_sub(n)));
    }

    /// Drops directory `ino`'s snapshots.
    fn evict(&self, ino: u64) {
        if let Some((_, v)) = self.map.remove(&ino) {
            self.release(v.iter().map(Snapshot::weight).sum());
        }
    }

    /// The newest snapshot's entries if it is of `version` (without reading it).
    pub(crate) fn current(&self, ino: u64, version: u32) -> Option<Arc<Vec<DirEntry>>> {
        let v = self.map.get(&ino)?;
        v.last().filter(|s| s.version == version).map(|s| s.entries.clone())
    }

    /// Keeps a listing built ahead of a walk, with what its entries' lower layers hold, as
    /// the directory's newest snapshot.
    pub(crate) fn add_ahead(&self, ino: u64, version: u32, entries: Arc<Vec<DirEntry>>, seen: Vec<Option<Seen>>) {
        self.add(ino, version, entries, Some(seen));
    }

    fn add(&self, ino: u64, version: u32, entries: Arc<Vec<DirEntry>>, ahead: Option<Vec<Option<Seen>>>) -> u32 {
        let snap = Snapshot { generation: 0, version, entries, ahead };
        let weight = snap.weight();
        let held = self.held.fetch_add(weight, Ordering::AcqRel) + weight;
        if self.map.len() >= DIRS || held > ENTRIES {
            // Drop the oldest directories (by their newest generation): an eighth of them,
            // or as many as it takes to get within the entry budget.
            let mut gens: Vec<(u32, u64, usize)> = self
                .map
                .iter()
                .map(|e| {
                    (
                        e.value().last().map_or(0, |s| s.generation),
                        *e.key(),
                        e.value().iter().map(Snapshot::weight).sum(),
                    )
                })
                .collect();
            gens.sort_unstable();
            let mut dirs = if self.map.len() >= DIRS { DIRS / 8 } else { 0 };
            let mut held = held;
            for (_, k, w) in gens {
                if dirs == 0 && held <= ENTRIES {
                    break;
                }
                if k == ino {
                    continue;
                }
                self.evict(k);
                dirs = dirs.saturating_sub(1);
                held = held.saturating_sub(w);
            }
        }
        // Generation 0 never names a snapshot (offset 0 means "from the start").
        let generation = self.next_gen.fetch_add(1, Ordering::Relaxed).wrapping_add(1).max(1);
        let mut v = self.map.entry(ino).or_default();
        v.push(Snapshot { generation, ..snap });
        if v.len() > PER_DIR {
            let old = v.remove(0);
            self.release(old.weight());
        }
        generation
    }

    /// Forgets a directory's snapshots (the kernel forgot the directory).
    pub fn forget(&self, ino: u64) {
        self.evict(ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, kind: FileKind, ino: u64) -> Listed {
        Listed { name: name.as_bytes().to_vec(), ino, kind, whiteout: false }
    }
    fn wh(name: &str) -> Listed {
        Listed { name: name.as_bytes().to_vec(), ino: 9, kind: FileKind::CharDev, whiteout: true }
    }
    fn names(m: &[Merged]) -> Vec<String> {
        m.iter().map(|m| String::from_utf8_lossy(&m.name).into_owned()).collect()
    }
    use FileKind::{Directory as D, Regular as R};

    #[test]
    fn first_layer_wins_and_names_appear_once() {
        let upper = LayerListing { upper: true, entries: vec![e("a", R, 1), e("d", D, 2)], ..Default::default() };
        let l1 = LayerListing { fs: 0, entries: vec![e("a", R, 3), e("b", R, 4), e("d", D, 5)], ..Default::default() };
        let l2 = LayerListing { fs: 0, entries: vec![e("b", R, 6), e("c", R, 7)], ..Default::default() };
        let m = merge(&[upper, l1, l2]);
        assert_eq!(names(&m), ["a", "d", "b", "c"]);
        assert_eq!(m[0].ino, 1);
        assert_eq!(m[1].shadow, Some((D, 0, 5)));
        assert_eq!(m[2].ino, 4);
        // Where each visible name was found (lookups of it may start there).
        assert_eq!(m.iter().map(|m| m.layer).collect::<Vec<_>>(), [0, 0, 1, 2]);
    }

    #[test]
    fn whiteouts_hide_lower_entries_and_never_show() {
        let upper = LayerListing { upper: true, entries: vec![wh("a")], ..Default::default() };
        let l1 = LayerListing { entries: vec![e("a", R, 3), e("b", R, 4)], ..Default::default() };
        let m = merge(&[upper, l1]);
        assert_eq!(names(&m), ["b"]);
    }

    #[test]
    fn oci_markers_hide_below_but_not_their_own_layer() {
        let l1 = LayerListing {
            entries: vec![e("x", R, 1)],
            hidden_below: vec![b"x".to_vec(), b"y".to_vec()],
            ..Default::default()
        };
        let l2 = LayerListing { entries: vec![e("x", R, 2), e("y", R, 3), e("z", R, 4)], ..Default::default() };
        let m = merge(&[l1, l2]);
        assert_eq!(names(&m), ["x", "z"]);
        assert_eq!(m[0].ino, 1);
    }

    #[test]
    fn shadow_stops_at_whiteouts_and_is_only_for_upper_entries() {
        let upper = LayerListing { upper: true, entries: vec![e("f", R, 1)], ..Default::default() };
        let l1 = LayerListing { entries: vec![wh("f"), e("g", R, 2)], ..Default::default() };
        let l2 = LayerListing { entries: vec![e("f", R, 3), e("g", R, 4)], ..Default::default() };
        let m = merge(&[upper, l1, l2]);
        assert_eq!(m[0].shadow, None, "a whiteout between ends the search");
        assert_eq!(m[1].shadow, None, "lower entries have no shadow");
    }

    fn listing(n: usize) -> Arc<Vec<DirEntry>> {
        Arc::new(
            (0..n)
                .map(|i| DirEntry {
                    name: CString::new(format!("f{i}")).unwrap().into(),
                    ino: i as u64,
                    kind: R,
                    lower: None,
                })
                .collect(),
        )
    }

    #[test]
    fn snapshots_stay_within_the_entry_budget_and_keep_the_newest() {
        let s = Snapshots::default();
        let big = ENTRIES / 4 + 1;
        for ino in 1..=8u64 {
            s.add(ino, 0, listing(big), None);
            assert!(s.held.load(Ordering::Acquire) <= ENTRIES + big, "held {}", s.held.load(Ordering::Acquire));
            assert!(s.current(ino, 0).is_some(), "the snapshot just made is kept");
        }
        assert!(s.current(1, 0).is_none(), "the oldest went");
        // A single listing larger than the budget is still kept.
        s.add(100, 0, listing(ENTRIES + 10), None);
        assert!(s.current(100, 0).is_some());
        // Probes count, and are released when the listing is first read.
        s.forget(100);
        let before = s.held.load(Ordering::Acquire);
        s.add_ahead(200, 3, listing(10), vec![None; 10]);
        assert_eq!(s.held.load(Ordering::Acquire), before + 30);
        let (_, entries, seen) = s.newest(200, 3).unwrap();
        assert_eq!((entries.len(), seen.map(|v| v.len())), (10, Some(10)));
        assert_eq!(s.held.load(Ordering::Acquire), before + 10);
        assert!(s.newest(200, 3).unwrap().2.is_none(), "probes are handed out once");
    }
}

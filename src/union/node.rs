//! A node is one object of the merged tree, as the kernel knows it by inode number.
//!
//! What never changes for a node: its inode number, type, identity, and where its lower
//! part lives. What changes, each under its own rule:
//! * `upper` goes from absent to present exactly once (copy-up or creation), under
//!   `copy_up_lock`; readers use an atomic flag and take no lock;
//! * `locs` (the names it is known by) changes on rename, link and unlink, under its
//!   `RwLock`, which is never held across a system call;
//! * `lookups` counts the kernel's references (lookup +1, forget -n) and is changed only
//!   under the inode table's shard lock.

use std::ffi::{CStr, CString};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::sys::stat::FileKind;
use crate::union::layer::LowerIdx;
use crate::union::name::Name;

/// Where an object came from: the filesystem index and real inode number that give it its
/// union inode number (the topmost lower for merged directories, the origin for copied-up
/// files, the upper object for pure-upper ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Filesystem index within the stack (see [`crate::union::layer::Layer::fs`]).
    pub fs: u8,
    /// Real inode number on that filesystem.
    pub ino: u64,
}

/// One name a node is known by.
#[derive(Clone, Debug)]
pub struct Loc {
    /// The directory holding the name (`None` only for the root).
    pub parent: Option<Arc<Node>>,
    /// The name.
    pub name: Name,
}

/// Extra names of a node: usually none, so they cost one pointer.
#[derive(Debug, Default)]
// A thin pointer on purpose: most nodes never have a second name.
#[allow(clippy::box_collection)]
pub struct More(Option<Box<Vec<Loc>>>);

impl More {
    /// The names.
    pub fn iter(&self) -> std::slice::Iter<'_, Loc> {
        self.0.as_deref().map_or([].iter(), |v| v.iter())
    }

    /// The names, mutable.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Loc> {
        self.0.as_deref_mut().map_or([].iter_mut(), |v| v.iter_mut())
    }

    fn edit<T>(&mut self, f: impl FnOnce(&mut Vec<Loc>) -> T) -> T {
        let mut v = self.0.take().map(|b| *b).unwrap_or_default();
        let r = f(&mut v);
        self.0 = if v.is_empty() { None } else { Some(Box::new(v)) };
        r
    }

    /// Adds a name.
    pub fn push(&mut self, l: Loc) {
        self.edit(|v| v.push(l));
    }

    /// Removes and returns the last name.
    pub fn pop(&mut self) -> Option<Loc> {
        self.edit(|v| v.pop())
    }

    /// Keeps the names `keep` accepts.
    pub fn retain(&mut self, keep: impl FnMut(&Loc) -> bool) {
        self.edit(|v| v.retain(keep));
    }

    /// Takes all the names out.
    pub fn take(&mut self) -> Vec<Loc> {
        self.0.take().map(|b| *b).unwrap_or_default()
    }
}

/// The names of a node: directories have one; hard-linked files may have several.
#[derive(Debug)]
pub struct Locs {
    /// The name used to reach the real object.
    pub first: Loc,
    /// Other known names of the same object (hard links; rare, so boxed).
    pub more: More,
}

/// Where the lower part of a node lives. Fixed when the node is made.
#[derive(Debug)]
pub enum Lower {
    /// Nothing below: a pure upper object.
    None,
    /// A non-directory in this lower layer, at its parent's lower path plus its name.
    File(LowerIdx),
    /// A metadata-only copy's data in this lower layer at this path from its root (the copy
    /// was renamed by the kernel, which left an `overlay.redirect` on it).
    Moved(LowerIdx, Box<CString>),
    /// A directory merged from these lower layers.
    Dir(Box<DirLower>),
    /// A metadata-only copy in lower layer `meta` (under its parent's lower path), whose data
    /// is in layer `data`, under the same name or at `moved` from that layer's root.
    Meta {
        /// The layer holding the metadata.
        meta: LowerIdx,
        /// The layer holding the data.
        data: LowerIdx,
        /// Where the data is, when not under the same name.
        moved: Option<Box<CString>>,
    },
}

/// The lower layers a directory merges, and where in them.
#[derive(Debug)]
pub struct DirLower {
    /// Path of the directory inside every lower layer, relative to the layer root (empty for
    /// the root). Differs from the merged path only for redirected directories.
    pub path: CString,
    /// Layers holding the directory, topmost first, with their markers.
    pub layers: Vec<DirLayer>,
    /// The layers where the directory is at another path (a redirect in a layer above
    /// moved the walk), with that path.
    pub other_paths: Vec<(LowerIdx, CString)>,
}

impl DirLower {
    /// The directory's path in lower layer `idx`, from its root.
    pub fn path_in(&self, idx: LowerIdx) -> &CStr {
        self.other_paths.iter().find(|(i, _)| *i == idx).map_or(&self.path, |(_, p)| p)
    }
}

/// One lower layer of a merged directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirLayer {
    /// Which lower layer.
    pub idx: LowerIdx,
    /// Its entries may be xattr whiteouts (`overlay.opaque=x`).
    pub xwhiteouts: bool,
}

/// Node flags.
pub mod flag {
    /// The object exists in the upper layer.
    pub const UPPER: u32 = 1 << 0;
    /// The object was removed from the merged tree; only open handles keep it.
    pub const DEAD: u32 = 1 << 1;
    /// The upper directory is opaque.
    pub const OPAQUE: u32 = 1 << 2;
    /// The upper directory has the `impure` marker.
    pub const IMPURE: u32 = 1 << 3;
    /// The upper directory's entries may be xattr whiteouts.
    pub const UPPER_XWH: u32 = 1 << 4;
    /// The upper object carries an origin (it was copied up).
    pub const ORIGIN: u32 = 1 << 5;
    /// The root directory of a volume.
    pub const VOL_ROOT: u32 = 1 << 6;
    /// A directory on the path to a volume's mount point.
    pub const VOL_ANCESTOR: u32 = 1 << 7;
    /// Retired from lookups: the kernel inode is pinned to a real file the object no longer
    /// lives in (a passthrough backing on the lower file after copy-up). Its names get a fresh
    /// node at the next lookup; the kernel forgets this one when its last open closes.
    pub const SUPERSEDED: u32 = 1 << 8;
    /// The kernel was asked to forget its names (reclaim); cleared by the next lookup.
    pub const RECLAIMED: u32 = 1 << 9;
    /// The real object's extended attributes were read: it has none.
    pub const XATTRS_NONE: u32 = 1 << 10;
    /// The real object's extended attributes were read and are in the side table.
    pub const XATTRS_SOME: u32 = 1 << 11;
    /// A regular file copied up without its data (`metacopy`): metadata from the upper
    /// copy, data still read from the lower file until it is opened for writing.
    pub const METACOPY: u32 = 1 << 12;
    /// A copied-up lower hard link kept in the index (`index=on`): its upper inode is its
    /// index entry (see [`super::Node::index_key`]); each of its lower names is linked to it
    /// when a change goes through that name (as the kernel's `ovl_link_up`), and its
    /// `overlay.nlink` says how many lower names are not linked up yet.
    pub const INDEXED: u32 = 1 << 13;
    /// The last name the daemon knew was removed, but the object has other links (a hard
    /// link not looked up yet): the next lookup of one of them names it again, and it keeps
    /// its inode number. Until then it answers only through open files.
    pub const NAMELESS: u32 = 1 << 14;
    /// A listing of the directory was served afresh (a walk went through it; see
    /// [`crate::union::prefetch`]).
    pub const LISTED: u32 = 1 << 15;
    /// The upper directory was made by this daemon (`mkdir`, or a copy-up) and, the upper
    /// not being changed behind the mount's back (no `--watch`), holds only names made
    /// through the mount: never a `.wh.` name (refused), so lookups in it do not look for
    /// `.wh.NAME` in the upper.
    pub const MADE_HERE: u32 = 1 << 16;
    /// Removed from the upper while the kernel still knew it: a descriptor of the real
    /// object, taken before its last name went, is in the side table (see
    /// [`super::Node::orphan`]).
    pub const ORPHAN: u32 = 1 << 17;
    /// [`IMMUTABLE`] and [`APPEND`] are known (see [`crate::union::fileattr`]).
    pub const PROT_KNOWN: u32 = 1 << 18;
    /// The object is immutable (`chattr +i`).
    pub const IMMUTABLE: u32 = 1 << 19;
    /// The object is append-only (`chattr +a`).
    pub const APPEND: u32 = 1 << 20;
    /// A metadata-only copy renamed through the mount: its data is where
    /// [`super::Node::moved_data`] says, not under its name.
    pub const DATA_MOVED: u32 = 1 << 21;
    /// The directory's last listing went out without the attributes of its non-directories:
    /// a lookup of one of them shows a walk that wants them ([`crate::union::lean`]).
    pub const LEAN_LISTED: u32 = 1 << 22;
}

/// Everything needed to make a node (or to find the live node for the same object).
#[derive(Debug)]
pub struct NodeSpec {
    /// File type.
    pub kind: FileKind,
    /// Where its number comes from.
    pub identity: Identity,
    /// Real inode number of the upper object, 0 if none.
    pub upper_ino: u64,
    /// The lower part.
    pub lower: Lower,
    /// Initial `flag::*` bits.
    pub flags: u32,
    /// The name it was found under.
    pub loc: Loc,
    /// The volume it lives in (`0`: the union itself, `i + 1`: volume `i`).
    pub vol: u16,
    /// For an indexed hard link (`index=on`): its index entry name (see
    /// [`Node::index_key`]).
    pub index_key: Option<CString>,
}

/// One object of the merged tree.
#[derive(Debug)]
pub struct Node {
    /// Union inode number, also the FUSE node id; never changes.
    pub ino: u64,
    /// The number `stat` shows (`st_ino`): [`Node::ino`] unless another node holds the
    /// object's natural number as its node id (see [`Node::shown`]).
    shown: AtomicU64,
    /// File type; never changes.
    pub kind: FileKind,
    /// Where the number came from.
    pub identity: Identity,
    /// Kernel references (lookups minus forgets).
    pub(crate) lookups: AtomicU64,
    /// When the kernel last looked it up (the inode table's clock, wrapping), for reclaim.
    pub(crate) used: AtomicU32,
    /// `flag::*` bits.
    flags: AtomicU32,
    /// Real inode number of the upper object once there is one (0 before).
    upper_ino: AtomicU64,
    /// The names of this node.
    pub(crate) locs: RwLock<Locs>,
    /// The lower part.
    pub lower: Lower,
    /// Serialises copy-up of this node.
    pub copy_up_lock: Mutex<()>,
    /// Bumped on every change to this directory's entries (for readdir snapshots).
    pub dir_version: AtomicU32,
    /// The volume it lives in (`0`: the union; `i + 1`: volume `i`, a plain directory tree
    /// with no layers and no markers).
    pub vol: u16,
}

/// Values only some nodes carry, kept beside them (keyed by the node's address) so that the
/// others pay a flag bit and nothing more: present while the node has `flag`.
struct SideTable<T> {
    map: std::sync::LazyLock<dashmap::DashMap<usize, Arc<T>>>,
    flag: u32,
}

impl<T> SideTable<T> {
    const fn new(flag: u32) -> SideTable<T> {
        SideTable { map: std::sync::LazyLock::new(dashmap::DashMap::new), flag }
    }

    fn get(&self, n: &Node) -> Option<Arc<T>> {
        if !n.has(self.flag) {
            return None;
        }
        self.map.get(&n.key()).map(|v| v.clone())
    }

    fn put(&self, n: &Node, v: Arc<T>) {
        self.map.insert(n.key(), v);
        n.set(self.flag);
    }

    /// Clears the flag and drops the value, whether or not the flag was set (a `put` may be
    /// between its insert and its flag).
    fn remove(&self, n: &Node) {
        n.clear(self.flag);
        self.map.remove(&n.key());
    }

    /// Drops the value of a node that goes.
    fn drop_for(&self, n: &Node) {
        if n.has(self.flag) {
            self.map.remove(&n.key());
        }
    }
}

/// Extended attributes of real objects, read once per node (`ls -l` asks for
/// `security.selinux` of every file; "no such attribute" is then answered from memory) and
/// dropped whenever the object changes. Most objects have none, which a node flag records
/// without allocating; the few sets there are live here.
static XATTR_SETS: SideTable<XattrSet> = SideTable::new(flag::XATTRS_SOME);

/// The empty set every object without extended attributes shares.
static NO_XATTRS: std::sync::LazyLock<Arc<XattrSet>> = std::sync::LazyLock::new(|| Arc::new(Vec::new()));

/// Index entry names (`index=on`) of indexed hard links: the upper inode is reached through
/// its index entry, which every name shares, whichever of its names are linked up yet.
static INDEX_KEYS: SideTable<CString> = SideTable::new(flag::INDEXED);

/// Where the data of renamed metadata-only copies is (lower layer, path from its root).
static MOVED_DATA: SideTable<(LowerIdx, CString)> = SideTable::new(flag::DATA_MOVED);

/// Descriptors (`O_PATH`) of removed objects the kernel still knows: only nodes removed
/// while in use have one.
static ORPHANS: SideTable<std::os::fd::OwnedFd> = SideTable::new(flag::ORPHAN);

impl Drop for Node {
    fn drop(&mut self) {
        XATTR_SETS.drop_for(self);
        ORPHANS.drop_for(self);
        INDEX_KEYS.drop_for(self);
        MOVED_DATA.drop_for(self);
    }
}

/// Extended attributes of a real object: stored names and their values.
pub type XattrSet = Vec<(Vec<u8>, Vec<u8>)>;

impl Node {
    /// A node with number `ino` for the object `spec` describes.
    pub fn new(ino: u64, spec: NodeSpec) -> Node {
        Node {
            ino,
            shown: AtomicU64::new(ino),
            kind: spec.kind,
            identity: spec.identity,
            lookups: AtomicU64::new(0),
            used: AtomicU32::new(0),
            flags: AtomicU32::new(spec.flags),
            upper_ino: AtomicU64::new(spec.upper_ino),
            locs: RwLock::new(Locs { first: spec.loc, more: More::default() }),
            lower: spec.lower,
            copy_up_lock: Mutex::new(()),
            dir_version: AtomicU32::new(0),
            vol: spec.vol,
        }
    }

    fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// The descriptor of the real object after its last name was removed (what the kernel
    /// keeps of an unlinked file: `fstat`, `fchmod`, `fsetxattr` … through an open
    /// descriptor act on it).
    pub fn orphan(&self) -> Option<Arc<std::os::fd::OwnedFd>> {
        ORPHANS.get(self)
    }

    /// Drops the node's [`Node::orphan`], if any.
    pub fn take_orphan(&self) {
        if self.has(flag::ORPHAN) {
            ORPHANS.remove(self);
        }
    }

    /// Keeps `fd` as the node's [`Node::orphan`].
    pub fn set_orphan(&self, fd: std::os::fd::OwnedFd) {
        ORPHANS.put(self, Arc::new(fd));
    }

    /// The index entry name of an indexed hard link ([`flag::INDEXED`]).
    pub fn index_key(&self) -> Option<Arc<CString>> {
        INDEX_KEYS.get(self)
    }

    /// Marks the node an indexed hard link whose index entry is `key`.
    pub fn set_indexed(&self, key: &CStr) {
        INDEX_KEYS.put(self, Arc::new(key.to_owned()));
    }

    /// For a metadata-only copy renamed through the mount: the lower layer and path (from
    /// its root) of its data.
    pub fn moved_data(&self) -> Option<Arc<(LowerIdx, CString)>> {
        MOVED_DATA.get(self)
    }

    /// Records where a renamed metadata-only copy's data is.
    pub fn set_moved_data(&self, idx: LowerIdx, path: CString) {
        MOVED_DATA.put(self, Arc::new((idx, path)));
    }

    /// The cached extended attributes, if read already.
    pub fn cached_xattrs(&self) -> Option<Arc<XattrSet>> {
        // A retired node's object changes through another node: nothing is kept for it.
        if self.has(flag::SUPERSEDED) {
            return None;
        }
        if self.has(flag::XATTRS_NONE) {
            return Some(NO_XATTRS.clone());
        }
        XATTR_SETS.get(self)
    }

    /// Caches the extended attributes. (Most files have none: they share one empty set, so
    /// the cache costs them no allocation.)
    pub fn cache_xattrs(&self, set: XattrSet) -> Arc<XattrSet> {
        if set.is_empty() {
            self.set(flag::XATTRS_NONE);
            return NO_XATTRS.clone();
        }
        let set = Arc::new(set);
        XATTR_SETS.put(self, set.clone());
        set
    }

    /// Forgets the cached extended attributes (the real object changed).
    pub fn forget_xattrs(&self) {
        self.clear(flag::XATTRS_NONE | flag::XATTRS_SOME);
        XATTR_SETS.remove(self);
    }

    /// Whether a flag is set.
    pub fn has(&self, f: u32) -> bool {
        self.flags.load(Ordering::Acquire) & f != 0
    }

    /// Sets flags.
    pub fn set(&self, f: u32) {
        self.flags.fetch_or(f, Ordering::AcqRel);
    }

    /// Clears flags.
    pub fn clear(&self, f: u32) {
        self.flags.fetch_and(!f, Ordering::AcqRel);
    }

    /// Clears flags; whether any of them was set (one caller of several wins).
    pub fn unset(&self, f: u32) -> bool {
        self.flags.fetch_and(!f, Ordering::AcqRel) & f != 0
    }

    /// Whether the object exists in the upper layer.
    pub fn has_upper(&self) -> bool {
        self.has(flag::UPPER)
    }

    /// Records that the object now exists in the upper layer as real inode `ino`.
    pub fn set_upper(&self, ino: u64) {
        self.upper_ino.store(ino, Ordering::Release);
        self.set(flag::UPPER);
    }

    /// The inode number `stat` and `readdir` show. Usually the node id; it differs where the
    /// two must part: a lower hard link copied up alone becomes an object of its own (with
    /// its upper number, as in kernel overlayfs) while its node id stays, and the untouched
    /// other names keep the lower number under a new node id; a node that replaces one pinned
    /// to a stale file keeps the number too.
    pub fn shown(&self) -> u64 {
        self.shown.load(Ordering::Acquire)
    }

    /// Sets [`Node::shown`].
    pub fn set_shown(&self, ino: u64) {
        self.shown.store(ino, Ordering::Release);
    }

    /// Real inode number of the upper object, 0 if none.
    pub fn upper_ino(&self) -> u64 {
        self.upper_ino.load(Ordering::Acquire)
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Directory
    }

    /// Whether any lower layer contributes to this node.
    pub fn has_lower(&self) -> bool {
        match &self.lower {
            Lower::None => false,
            Lower::File(_) | Lower::Moved(..) | Lower::Meta { .. } => true,
            Lower::Dir(d) => !d.layers.is_empty(),
        }
    }

    /// The directory's lower part, if any.
    pub fn dir_lower(&self) -> Option<&DirLower> {
        match &self.lower {
            Lower::Dir(d) if !d.layers.is_empty() => Some(d),
            _ => None,
        }
    }

    /// A merged directory: present in the upper and in at least one lower.
    pub fn is_merged_dir(&self) -> bool {
        self.is_dir() && self.has_upper() && self.has_lower()
    }

    /// The first name and its parent.
    pub fn loc(&self) -> Loc {
        self.locs.read().first.clone()
    }

    /// The parent directory node (`None` for the root).
    pub fn parent(&self) -> Option<Arc<Node>> {
        self.locs.read().first.parent.clone()
    }

    /// Makes `loc` the name used to reach the object, keeping the other names.
    pub fn use_loc(&self, loc: Loc) {
        let mut l = self.locs.write();
        let same = |x: &Loc| x.name == loc.name && ptr_eq(&x.parent, &loc.parent);
        if same(&l.first) {
            return;
        }
        l.more.retain(|x| !same(x));
        let old = std::mem::replace(&mut l.first, loc);
        l.more.push(old);
    }

    /// Whether the node is known by name `loc`.
    pub fn has_loc(&self, loc: &Loc) -> bool {
        let l = self.locs.read();
        let same = |x: &Loc| x.name == loc.name && ptr_eq(&x.parent, &loc.parent);
        same(&l.first) || l.more.iter().any(same)
    }

    /// Gives an unnamed (`O_TMPFILE`) object its first name.
    pub fn name_unnamed(&self, loc: Loc) {
        let mut l = self.locs.write();
        if l.first.name.is_empty() {
            l.first = loc;
        } else {
            drop(l);
            self.add_loc(loc);
        }
    }

    /// Adds a name for this node, unless known already.
    pub fn add_loc(&self, loc: Loc) {
        let mut l = self.locs.write();
        let same = |x: &Loc| x.name == loc.name && ptr_eq(&x.parent, &loc.parent);
        if same(&l.first) || l.more.iter().any(same) {
            return;
        }
        l.more.push(loc);
    }

    /// Forgets a name after unlink; returns whether the node still has a name.
    pub fn remove_loc(&self, parent: &Arc<Node>, name: &CStr) -> bool {
        let mut l = self.locs.write();
        let is = |x: &Loc| x.name.as_c_str() == name && x.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, parent));
        if is(&l.first) {
            if let Some(next) = l.more.pop() {
                l.first = next;
                true
            } else {
                false
            }
        } else {
            l.more.retain(|x| !is(x));
            true
        }
    }

    /// Renames the name (`parent`, `name`) to (`new_parent`, `new_name`).
    pub fn move_loc(&self, parent: &Arc<Node>, name: &CStr, new_parent: &Arc<Node>, new_name: Name) {
        let mut l = self.locs.write();
        let is = |x: &Loc| x.name.as_c_str() == name && x.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, parent));
        let new = Loc { parent: Some(new_parent.clone()), name: new_name };
        if is(&l.first) {
            l.first = new;
        } else if let Some(x) = l.more.iter_mut().find(|x| is(x)) {
            *x = new;
        } else {
            l.first = new;
        }
    }

    /// Marks that the directory's entries changed.
    pub fn touch_dir(&self) {
        self.dir_version.fetch_add(1, Ordering::AcqRel);
    }
}

fn ptr_eq(a: &Option<Arc<Node>>, b: &Option<Arc<Node>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

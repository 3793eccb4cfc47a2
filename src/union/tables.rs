//! The daemon's three tables: inodes the kernel knows, open handles, and a bounded cache of
//! directory descriptors.
//!
//! * [`InodeTable`]: union inode number → node. Sharded (`DashMap`), so lookups of
//!   different names never contend on one lock. A node's lookup count changes only under its
//!   shard's lock, which is never held across a system call.
//! * [`HandleTable`]: file handle number → open file or directory, independent of inode
//!   state.
//! * [`DirFdCache`]: (inode, layer) → `O_PATH` descriptor of a real directory. Bounded, so
//!   walking a huge tree never runs the daemon out of descriptors; a miss re-resolves the
//!   directory from its layer root.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;

use crate::error::{Errno, Res};
use crate::sys::stat::FileKind;
use crate::union::layer::{LowerIdx, SYNTHETIC_BIT, Xino};
use crate::union::node::{Identity, Lower, Node, NodeSpec, flag};

/// The root's inode number (fixed by FUSE).
pub const ROOT_INO: u64 = 1;

/// Key of a synthetic inode number: the object it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SynthKey {
    identity: Identity,
    upper_ino: u64,
    kind: FileKind,
    lower: Option<LowerIdx>,
}

fn lower_file_idx(l: &Lower) -> Option<LowerIdx> {
    match l {
        Lower::File(i) | Lower::Moved(i, _) | Lower::Meta { meta: i, .. } => Some(*i),
        _ => None,
    }
}

/// Union inode number → node.
#[derive(Debug, Default)]
pub struct InodeTable {
    /// The nodes the kernel references, by union inode number.
    map: DashMap<u64, Arc<Node>>,
    /// Real inode number of an upper object → the live node for it. Within a session this
    /// is the exact key for anything in the upper layer, however its union number was
    /// derived (renamed files, hard links made through the mount).
    by_upper: DashMap<(u16, u64), u64>,
    /// Synthetic numbers handed out, by the object they stand for.
    synth: DashMap<SynthKey, u64>,
    /// Next synthetic number.
    next_synth: AtomicU64,
    /// Lookup clock: each lookup stamps its node with the next tick ([`Node::used`]).
    clock: std::sync::atomic::AtomicU32,
}

impl InodeTable {
    /// Installs the root node.
    pub fn insert_root(&self, root: Node) -> Arc<Node> {
        let root = Arc::new(root);
        root.lookups.store(1, Ordering::Relaxed);
        self.map.insert(ROOT_INO, root.clone());
        root
    }

    /// The node with this number, or `ESTALE` if the kernel names one we no longer know.
    pub fn get(&self, ino: u64) -> Res<Arc<Node>> {
        self.map.get(&ino).map(|n| n.clone()).ok_or(Errno::ESTALE)
    }

    /// Number of nodes the kernel currently references.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty (never, once mounted: the root is in it).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Nodes that could be forgotten, with their last-use stamp: nothing but the table holds
    /// them (no open handle, no known child, no other name's parent), and their number is
    /// not synthetic (a synthetic number would not come back the same).
    pub fn reclaimable(&self) -> Vec<(u32, u64)> {
        self.map
            .iter()
            .filter(|e| {
                let n = e.value();
                n.ino != ROOT_INO && n.ino & SYNTHETIC_BIT == 0 && !n.has(flag::RECLAIMED) && Arc::strong_count(n) == 1
            })
            .map(|e| (e.value().used.load(Ordering::Relaxed), e.value().ino))
            .collect()
    }

    /// Finds the node for `spec` or makes one, and counts one kernel lookup on it.
    ///
    /// An upper object is found by its real inode number. Otherwise the number is the
    /// object's identity mapped by `xino`. If that number belongs to a live node for a
    /// *different* object (a reused real inode number, or a lower hard link whose sibling was
    /// copied up), the object gets a synthetic number instead, stable for as long as the
    /// kernel remembers it.
    pub fn intern(&self, spec: NodeSpec, xino: &Xino) -> Arc<Node> {
        let node = self.intern_counted(spec, xino);
        node.used.store(self.clock.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        if node.has(flag::RECLAIMED) {
            node.clear(flag::RECLAIMED);
        }
        node
    }

    fn intern_counted(&self, spec: NodeSpec, xino: &Xino) -> Arc<Node> {
        if spec.upper_ino != 0
            && let Some(ino) = self.by_upper.get(&(spec.vol, spec.upper_ino)).map(|v| *v)
            && let MapEntry::Occupied(e) = self.map.entry(ino)
        {
            let n = e.get();
            if n.kind == spec.kind && !n.has(flag::DEAD | flag::SUPERSEDED) && n.upper_ino() == spec.upper_ino {
                rename_if_nameless(n, &spec);
                n.lookups.fetch_add(1, Ordering::Relaxed);
                return n.clone();
            }
        }
        let upper_ino = spec.upper_ino;
        let node = self.intern_by_identity(spec, xino);
        if upper_ino != 0 {
            self.register_upper(&node);
        }
        node
    }

    fn intern_by_identity(&self, spec: NodeSpec, xino: &Xino) -> Arc<Node> {
        let natural = xino.map(spec.identity.fs, spec.identity.ino);
        // The number a node under a synthetic id shows: the natural one, where the node that
        // holds it as its id no longer stands for it (renumbered, superseded, or gone).
        let mut shown = None;
        if let Some(ino) = natural {
            match self.map.entry(ino) {
                MapEntry::Occupied(e) => {
                    if matches(e.get(), &spec) {
                        let n = e.get().clone();
                        n.lookups.fetch_add(1, Ordering::Relaxed);
                        return n;
                    }
                    let o = e.get();
                    if o.shown() != ino
                        || o.has(flag::SUPERSEDED)
                        || (o.has(flag::DEAD) && o.orphan().is_none() && o.kind != FileKind::Directory)
                    {
                        shown = Some(ino);
                    }
                }
                MapEntry::Vacant(v) => {
                    let n = build(spec, ino);
                    n.lookups.store(1, Ordering::Relaxed);
                    v.insert(n.clone());
                    return n;
                }
            }
        }
        let key = SynthKey {
            identity: spec.identity,
            upper_ino: spec.upper_ino,
            kind: spec.kind,
            lower: lower_file_idx(&spec.lower),
        };
        let fresh = || SYNTHETIC_BIT | (self.next_synth.fetch_add(1, Ordering::Relaxed) + 2);
        let mut ino = *self.synth.entry(key).or_insert_with(fresh);
        // (`supersede` drops a retired node's synthetic key.) A removed object's node keeps
        // its key until the kernel forgets it, which may come after its real inode number
        // was reused for a new object with the same key: that object needs a number of its
        // own, not the dead node. The shard locks are taken one after the other, never
        // nested (`forget` holds a node's shard while it sweeps `synth`).
        // So does an object whose node under this key stands for something else now (a
        // lower hard link's name copied up alone since: its other names are another object).
        let stale_node = |n: &Arc<Node>| n.has(flag::DEAD | flag::SUPERSEDED) || n.upper_ino() != spec.upper_ino;
        if self.map.get(&ino).is_some_and(|n| stale_node(&n)) {
            let stale = ino;
            ino = match self.synth.entry(key) {
                MapEntry::Occupied(mut e) if *e.get() == stale => {
                    let n = fresh();
                    e.insert(n);
                    n
                }
                MapEntry::Occupied(e) => *e.get(),
                MapEntry::Vacant(v) => *v.insert(fresh()),
            };
        }
        match self.map.entry(ino) {
            MapEntry::Occupied(e) => {
                let n = e.get().clone();
                n.lookups.fetch_add(1, Ordering::Relaxed);
                n
            }
            MapEntry::Vacant(v) => {
                let n = build(spec, ino);
                if let Some(s) = shown {
                    n.set_shown(s);
                }
                n.lookups.store(1, Ordering::Relaxed);
                v.insert(n.clone());
                n
            }
        }
    }

    /// The live node of upper object `upper_ino` in volume `vol`, if one is known.
    pub fn live_upper(&self, vol: u16, upper_ino: u64) -> Option<u64> {
        (upper_ino != 0).then(|| self.by_upper.get(&(vol, upper_ino)).map(|v| *v)).flatten()
    }

    /// Records that `node` is the live node of its upper object (after creation or copy-up).
    pub fn register_upper(&self, node: &Node) {
        let u = node.upper_ino();
        if u != 0 {
            self.by_upper.insert((node.vol, u), node.ino);
        }
    }

    /// Takes `node` out of matching before an upper operation that may free its real inode
    /// (unlink, rmdir, a rename over it): ext4 hands a freed inode number to the next object
    /// made anywhere on the filesystem at once, and that object must never be matched to
    /// this node by the number. Marked dead first, the node cannot be found by the number
    /// once it is free. [`InodeTable::reinstate`] undoes it when the operation failed.
    pub fn retire(&self, node: &Node) {
        node.set(flag::DEAD);
        let u = node.upper_ino();
        if u != 0 {
            self.by_upper.remove_if(&(node.vol, u), |_, v| *v == node.ino);
        }
    }

    /// Undoes [`InodeTable::retire`]: the operation failed and the object still lives.
    pub fn reinstate(&self, node: &Node) {
        node.clear(flag::DEAD);
        self.register_upper(node);
    }

    /// Retires `node` from lookups (see [`flag::SUPERSEDED`]): the next lookup of the same
    /// object makes a new node with another number.
    pub fn supersede(&self, node: &Node) {
        node.set(flag::SUPERSEDED);
        let u = node.upper_ino();
        if u != 0 {
            self.by_upper.remove_if(&(node.vol, u), |_, v| *v == node.ino);
        }
        if node.ino & SYNTHETIC_BIT != 0 {
            self.synth.retain(|_, v| *v != node.ino);
        }
    }

    /// Counts one more kernel reference to a node already in the table (for `link`, which
    /// returns an existing inode).
    pub fn add_lookup(&self, node: &Arc<Node>) {
        if let Some(n) = self.map.get(&node.ino) {
            n.lookups.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The kernel dropped `n` references; the node leaves the table at zero.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        if let MapEntry::Occupied(e) = self.map.entry(ino) {
            let prev = e.get().lookups.fetch_sub(n.min(e.get().lookups.load(Ordering::Relaxed)), Ordering::Relaxed);
            if prev <= n {
                let node = e.remove();
                let u = node.upper_ino();
                if u != 0 {
                    self.by_upper.remove_if(&(node.vol, u), |_, v| *v == ino);
                }
                if ino & SYNTHETIC_BIT != 0 {
                    self.synth.retain(|_, v| *v != ino);
                }
                drop(node);
            }
        }
    }
}

/// Whether an existing node stands for the object `spec` describes.
fn matches(node: &Node, spec: &NodeSpec) -> bool {
    if node.kind != spec.kind
        || node.identity != spec.identity
        || node.vol != spec.vol
        || node.has(flag::DEAD | flag::SUPERSEDED)
    {
        return false;
    }
    let same = match (node.upper_ino(), spec.upper_ino) {
        // Both lower-only: the same real file in the same layer.
        (0, 0) => lower_file_idx(&node.lower) == lower_file_idx(&spec.lower),
        (a, b) if a == b => true,
        // Copied up under this very name since this node was made: the same object. Under
        // another name it is a copy of a lower hard link's sibling: a different object.
        (0, b) if node.has_loc(&spec.loc) => {
            if let Some(k) = &spec.index_key {
                node.set_indexed(k);
            }
            node.set_upper(b);
            true
        }
        // The node was copied up; the lookup found another lower name of the same inode,
        // which still shows the lower data: a different object for the merged view.
        _ => false,
    };
    if same {
        rename_if_nameless(node, spec);
    }
    same
}

/// A [`flag::NAMELESS`] node found again under another name of its object: that is its
/// name now.
fn rename_if_nameless(node: &Node, spec: &NodeSpec) {
    if node.has(flag::NAMELESS) {
        node.locs.write().first = spec.loc.clone();
        node.clear(flag::NAMELESS);
    }
}

fn build(mut spec: NodeSpec, ino: u64) -> Arc<Node> {
    let key = spec.index_key.take();
    let n = Arc::new(Node::new(ino, spec));
    if let Some(k) = key {
        n.set_indexed(&k);
    }
    n
}

/// An open regular file.
#[derive(Debug)]
pub struct FileHandle {
    /// The node it was opened on.
    pub node: Arc<Node>,
    /// The real file (in the upper layer if `upper`, else in a lower).
    pub fd: OwnedFd,
    /// Whether `fd` is the upper copy.
    pub upper: bool,
    /// For a handle opened on a lower file that was copied up since: the upper copy, opened
    /// read-only on first use, so reads see what the merged view holds (as the kernel does).
    pub reopened: std::sync::OnceLock<OwnedFd>,
    /// Device and inode number of the real file `fd` is open on.
    pub real: (u64, u64),
    /// The real file's size when opened.
    pub size: u64,
    /// The file was set-user-id or set-group-id when opened.
    pub sxid: bool,
    /// Opened by `execve` (or `uselib`): held for as long as the program runs.
    pub exec: bool,
    /// For an indexed hard link, the name it was opened by (the one walked last): a change
    /// FUSE names with this descriptor (`ftruncate`) goes through that name. (A file opened
    /// for writing is copied up first, and only an indexed one has names to choose from.)
    pub name: Option<crate::union::node::Loc>,
    /// Served from the union inode's page cache ([`crate::union::UnionFs::page_cached`]).
    pub page_cached: std::sync::atomic::AtomicBool,
}

impl FileHandle {
    /// A handle on a real file.
    pub fn new(node: Arc<Node>, fd: OwnedFd, upper: bool) -> FileHandle {
        let st = crate::sys::stat::fstat(&fd).ok();
        let real = st.as_ref().map_or((0, 0), |s| (s.dev, s.ino));
        let size = st.as_ref().map_or(u64::MAX, |s| s.size);
        let sxid = st.is_some_and(|s| crate::union::inode::is_sxid(s.perm()));
        let name = node.has(crate::union::node::flag::INDEXED).then(|| node.loc());
        FileHandle {
            node,
            fd,
            upper,
            reopened: std::sync::OnceLock::new(),
            real,
            size,
            sxid,
            exec: false,
            name,
            page_cached: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// An open file. (Directories have no handles: the kernel opens them without asking, and
/// their listings are snapshots kept per directory, see [`crate::union::readdir::Snapshots`].)
pub type Handle = FileHandle;

/// File handle number → open file.
#[derive(Debug, Default)]
pub struct HandleTable {
    map: DashMap<u64, Arc<Handle>>,
    next: AtomicU64,
    /// Inode number → open handles of programs running from it (see [`HandleTable::executing`]).
    running: DashMap<u64, u32>,
    /// Inode number → open handles of it.
    open: DashMap<u64, u32>,
}

impl HandleTable {
    /// Stores a handle and returns its number (never 0).
    pub fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        if h.exec {
            *self.running.entry(h.node.ino).or_insert(0) += 1;
        }
        *self.open.entry(h.node.ino).or_insert(0) += 1;
        self.map.insert(fh, Arc::new(h));
        fh
    }

    /// Whether node `ino` has an open handle.
    pub fn is_open(&self, ino: u64) -> bool {
        self.open.contains_key(&ino)
    }

    /// Whether a program runs from node `ino`. The kernel refuses to open such a file for
    /// writing itself, but an open with `O_TRUNC` for reading reaches the daemon first (the
    /// truncation is part of the open) and is only refused by the kernel afterwards: the
    /// daemon must refuse it with `ETXTBSY` before it truncates (or copies up) anything.
    pub fn executing(&self, ino: u64) -> bool {
        self.running.get(&ino).is_some_and(|n| *n > 0)
    }

    /// The handle with this number.
    pub fn get(&self, fh: u64) -> Res<Arc<Handle>> {
        self.map.get(&fh).map(|h| h.clone()).ok_or(Errno::EBADF)
    }

    /// An open file handle.
    pub fn file(&self, fh: u64) -> Res<Arc<Handle>> {
        self.get(fh)
    }

    /// Some open file handle of node `ino` (a scan: only for removed-but-open files).
    pub fn file_of(&self, ino: u64) -> Option<Arc<Handle>> {
        self.map.iter().find(|h| h.value().node.ino == ino).map(|h| h.value().clone())
    }

    /// Drops a handle.
    pub fn remove(&self, fh: u64) -> Option<Arc<Handle>> {
        let h = self.map.remove(&fh).map(|(_, h)| h)?;
        self.open.remove_if_mut(&h.node.ino, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
        if h.exec {
            self.running.remove_if_mut(&h.node.ino, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
        Some(h)
    }

    /// Number of open handles.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no handle is open.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Which real directory of a node a cached descriptor is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The upper layer.
    Upper,
    /// A lower layer.
    Lower(LowerIdx),
}

/// (inode, side) → `O_PATH` descriptor of that real directory, bounded in size.
#[derive(Debug)]
pub struct DirFdCache {
    map: DashMap<(u64, Side), Arc<OwnedFd>>,
    cap: AtomicUsize,
    inserts: AtomicUsize,
}

impl DirFdCache {
    /// A cache holding at most about `cap` descriptors.
    pub fn new(cap: usize) -> DirFdCache {
        DirFdCache { map: DashMap::new(), cap: AtomicUsize::new(cap.max(16)), inserts: AtomicUsize::new(0) }
    }

    /// A cached descriptor.
    pub fn get(&self, ino: u64, side: Side) -> Option<Arc<OwnedFd>> {
        self.map.get(&(ino, side)).map(|f| f.clone())
    }

    /// Caches a descriptor, evicting an eighth of the cache when full.
    pub fn put(&self, ino: u64, side: Side, fd: Arc<OwnedFd>) {
        let cap = self.cap.load(Ordering::Relaxed);
        if self.map.len() >= cap {
            let drop_n = cap / 8;
            let mut seen = 0usize;
            // Rotate which entries go by skipping a varying prefix.
            let skip = self.inserts.load(Ordering::Relaxed) % 7;
            self.map.retain(|_, _| {
                seen += 1;
                !(seen > skip && seen <= skip + drop_n)
            });
        }
        self.inserts.fetch_add(1, Ordering::Relaxed);
        self.map.insert((ino, side), fd);
    }

    /// Closes every cached descriptor (the daemon ran out of descriptors) and halves the
    /// cache's size for good; returns how many were closed. Later lookups re-resolve from the
    /// layer roots.
    pub fn shed(&self) -> usize {
        let n = self.map.len();
        self.cap.store((n / 2).max(16), Ordering::Relaxed);
        self.map.clear();
        n
    }

    /// Forgets every descriptor of a node (it was removed or forgotten).
    pub fn forget(&self, ino: u64) {
        self.map.retain(|(i, _), _| *i != ino);
    }

    /// Forgets one descriptor.
    pub fn forget_side(&self, ino: u64, side: Side) {
        self.map.remove(&(ino, side));
    }

    /// Number of cached descriptors.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::union::node::{Loc, Lower};

    /// A pure upper directory whose real inode number is `ino`.
    fn upper_dir(ino: u64) -> NodeSpec {
        NodeSpec {
            kind: FileKind::Directory,
            identity: Identity { fs: 0, ino },
            upper_ino: ino,
            lower: Lower::None,
            flags: flag::UPPER,
            loc: Loc { parent: None, name: c"d".into() },
            vol: 0,
            index_key: None,
        }
    }

    #[test]
    fn a_reused_real_inode_number_never_gets_a_removed_nodes_number() {
        let t = InodeTable::default();
        let xino = Xino::new(1);
        // The first object takes the number its real inode maps to; removed, the kernel
        // has not forgotten it yet.
        let a = t.intern(upper_dir(77), &xino);
        assert_eq!(a.ino, 77);
        a.set(flag::DEAD);
        // The real number comes back for a new directory: a synthetic number.
        let b = t.intern(upper_dir(77), &xino);
        assert_ne!(b.ino, a.ino);
        assert!(b.ino & SYNTHETIC_BIT != 0);
        // The same object looked up again keeps its number.
        assert_eq!(t.intern(upper_dir(77), &xino).ino, b.ino);
        b.set(flag::DEAD);
        // A third time, while both removed nodes are still remembered: neither number.
        let c = t.intern(upper_dir(77), &xino);
        assert!(c.ino != a.ino && c.ino != b.ino, "{} reuses a removed node's number", c.ino);
        assert!(!c.has(flag::DEAD));
        assert_eq!(t.intern(upper_dir(77), &xino).ino, c.ino);
        // Forgetting the removed nodes leaves the live one alone.
        t.forget(b.ino, 2);
        t.forget(a.ino, 1);
        assert_eq!(t.get(c.ino).unwrap().ino, c.ino);
        assert_eq!(t.intern(upper_dir(77), &xino).ino, c.ino);
        assert_eq!(t.len(), 1);
    }
}

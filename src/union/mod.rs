//! The union filesystem core: kernel overlayfs semantics over real layer directories, with
//! no FUSE types in sight. Every operation is a method on [`UnionFs`] that returns a value or
//! an [`Errno`]; the FUSE adapter ([`crate::fuse`]) only translates.
//!
//! # Module map (named after the kernel's `fs/overlayfs/*.c`)
//! | module | question it answers |
//! |---|---|
//! | [`layer`] | what the layers are; the one choke point for upper-layer mutations |
//! | [`whiteout`] | which entries and xattrs are markers (read every dialect, write the kernel's) |
//! | [`node`] | what the kernel's inode number stands for |
//! | [`tables`] | inode table, handle table, directory-descriptor cache |
//! | [`lookup`] | which object does this name mean? (`namei.c`) |
//! | [`readdir`] | what does this directory list? (`readdir.c`) |
//! | [`reap`] | removing trees from the work dir, off the request path where nothing waits |
//! | [`copy_up`] | how does a lower object become writable? (`copy_up.c`) |
//! | [`dir`] | how does the namespace change? (`dir.c`) |
//! | [`inode`] | attributes and extended attributes (`inode.c`, `xattrs.c`) |
//! | [`mod@file`] | open files and their data (`file.c`) |
//!
//! # Invariants
//! * Lower layers are never written. Every upper mutation goes through
//!   [`layer::Upper`]'s methods.
//! * A new upper object becomes visible by one rename from the work dir (copy-up, whiteouts,
//!   creation over a whiteout); a crash leaves the old view or the new one, never a partial
//!   one, and the work dir is emptied at the next mount.
//! * Paths inside a layer are resolved from its root descriptor with `openat2`
//!   (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`); names inside a directory never follow a final
//!   symlink. The daemon never follows a symlink stored in a layer.
//! * A node's inode number never changes, so an object keeps its `st_ino` across copy-up.
//!
//! # Inode numbers (the decision)
//! The FUSE node id is also `st_ino` (fuser ties them). It is the object's *identity* mapped
//! by [`layer::Xino`]: the real inode number of the topmost lower directory for merged
//! directories, of the origin for copied-up files (recorded in `overlay.origin`), or of the
//! object itself. With all layers on one filesystem this equals what kernel overlayfs
//! reports. When that number is held by a different live object the node gets a synthetic
//! number (top bit set) instead.
//!
//! # Paths and descriptors
//! The daemon keeps no descriptor per node (walking a 500k-file tree would exhaust the
//! limit). Lower paths are fixed for a node's life; upper paths follow the node's current
//! name. Directories' real descriptors live in a bounded cache ([`tables::DirFdCache`]);
//! a miss re-resolves from the layer root. Renames bump a sequence counter; a
//! resolution that fails with `ENOENT` while it moved is retried.
//!
//! # Lock order
//! 1. an inode-table shard lock: held only inside [`tables::InodeTable`], never across I/O;
//! 2. a node's `copy_up_lock` (copy-up of the node only; parents are copied up first, before
//!    taking the child's lock, so these locks never nest);
//! 3. a node's `locs` lock: brief, never across I/O.
//!
//! The handle table is never held across a call into the core.

pub mod copy_up;
pub mod dir;
pub mod file;
pub mod fileattr;
pub mod idle;
pub mod idmap;
pub mod index;
pub mod inode;
pub mod intern;
pub mod layer;
pub mod lean;
pub mod lookup;
pub mod name;
pub mod node;
pub mod prefetch;
pub mod quota;
pub mod readdir;
pub mod real;
pub mod reap;
pub mod rename;
pub mod tables;
pub mod watch;
pub mod whiteout;

use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{Errno, Error, Res};
use crate::sys::stat::{self, FileKind, Stat, Timespec};
use crate::sys::xattr::XTarget;
use layer::{Layers, LowerIdx};
use node::{DirLayer, DirLower, Identity, Loc, Lower, Node, NodeSpec, flag};
use tables::{DirFdCache, HandleTable, InodeTable, Side};
use whiteout::Dialect;

/// Who is asking: the credentials of the process behind a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctx {
    /// File-system user id.
    pub uid: u32,
    /// File-system group id.
    pub gid: u32,
}

/// Attributes of a merged object as the mount shows them. The fields are
/// [`crate::sys::stat::Stat`]'s, on purpose a type of their own: what the kernel is told
/// (union inode numbers, mapped owners, overridden modes, one link for merged directories)
/// cannot be a real object's status passed through by mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Union inode number.
    pub ino: u64,
    /// File type.
    pub kind: FileKind,
    /// Permission bits.
    pub perm: u32,
    /// Link count (1 for merged directories, as the kernel reports).
    pub nlink: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number.
    pub rdev: u64,
    /// Size.
    pub size: u64,
    /// 512-byte blocks.
    pub blocks: u64,
    /// Preferred I/O size.
    pub blksize: u32,
    /// Access time.
    pub atime: Timespec,
    /// Modification time.
    pub mtime: Timespec,
    /// Change time.
    pub ctime: Timespec,
}

/// A lookup result: the node's number and attributes. Each `Entry` returned counts one
/// kernel reference, balanced by `forget`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Union inode number.
    pub ino: u64,
    /// Its attributes.
    pub attr: Attr,
    /// The kernel must not cache the name or its attributes: it is one of several lower
    /// links of a file, so if another of them is copied up this name becomes a different
    /// object (or a name of an indexed one, whose link count changes as its names are
    /// linked up); and each walk's lookup tells which name an open, link or change that
    /// follows means.
    pub revalidate: bool,
}

/// Mount-wide settings of the core.
#[derive(Clone, Debug)]
pub struct Options {
    /// Namespace of the private xattrs written.
    pub dialect: Dialect,
    /// The daemon may give new objects the caller's ownership (root, or `CAP_CHOWN`).
    pub set_owner: bool,
    /// How many directory descriptors to keep cached.
    pub dirfd_cache: usize,
    /// User ids: stored versus shown.
    pub uids: idmap::IdMap,
    /// Group ids: stored versus shown.
    pub gids: idmap::IdMap,
    /// Keep owner and mode in this xattr instead of changing the real ones
    /// (`xattr_permissions=1|2`).
    pub override_stat: Option<&'static CStr>,
    /// Extended attributes are supported (`noxattrs=1` turns them off).
    pub xattrs: bool,
    /// Directories report one link (`static_nlink`).
    pub static_nlink: bool,
    /// How many nodes to keep before asking the kernel to forget the least recently used
    /// (`max_nodes=`; memory stays bounded however big the tree walked).
    pub max_nodes: usize,
    /// Renaming a directory with lower parts records a redirect, as kernel overlayfs with
    /// `redirect_dir=on` does (off: such renames fail with `EXDEV`). Redirects are always
    /// followed.
    pub redirect_dir: bool,
    /// Changes of metadata only (owner, mode, times, xattrs) copy a lower file up without
    /// its data, marked as kernel overlayfs's `metacopy=on` does (off by default, as in the
    /// kernel: a kernel mount of such an upper needs `metacopy=on`).
    pub metacopy: bool,
    /// Lower hard links stay one inode after one name is copied up: the copy is also kept in
    /// `WORK/index` under the hex of its origin handle and linked to each name (kernel
    /// overlayfs's `index=on`).
    pub index: bool,
    /// Threads reading directories ahead of tree walks (`prefetch=N`; 0: none; see
    /// [`prefetch`]).
    pub prefetch: usize,
    /// `READDIRPLUS` replies may leave out attributes a walk does not use (`readdirplus=auto`,
    /// the default; see [`lean`]).
    pub lean_listings: bool,
    /// How long after its last close a lower file's pages stay in the union inode's own page
    /// cache, and within how long a small lower file opened again is served from it with
    /// passthrough (`page_cache_idle=SECONDS`; `None`: pages until the kernel reclaims them,
    /// no such reopens; see [`idle`]).
    pub page_cache_idle: Option<std::time::Duration>,
}

impl Options {
    /// Defaults for a mount: no id mapping, xattrs on.
    pub fn new(dialect: Dialect, set_owner: bool, dirfd_cache: usize) -> Options {
        Options {
            dialect,
            set_owner,
            dirfd_cache,
            uids: idmap::IdMap::default(),
            gids: idmap::IdMap::default(),
            override_stat: None,
            xattrs: true,
            static_nlink: false,
            max_nodes: DEFAULT_MAX_NODES,
            redirect_dir: true,
            metacopy: false,
            index: false,
            prefetch: prefetch::DEFAULT_THREADS,
            lean_listings: true,
            page_cache_idle: Some(DEFAULT_PAGE_CACHE_IDLE),
        }
    }
}

/// Default for [`Options::page_cache_idle`].
pub const DEFAULT_PAGE_CACHE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Default for [`Options::max_nodes`]: about 25 MiB of nodes.
pub const DEFAULT_MAX_NODES: usize = 100_000;

/// Nodes that leave the table between two trims of the heap (after a quiet spell).
const TRIM_AFTER: usize = 1000;

/// Lets the core ask the kernel to drop cached names or attributes it can no longer trust.
pub trait Invalidator: Send + Sync {
    /// Drop the cached dentry `name` in directory `parent`.
    fn inval_entry(&self, parent: u64, name: &CStr);
    /// Drop the cached attributes and data (for a directory: its listing) of `ino`.
    fn inval_inode(&self, ino: u64);
    /// Drop the cached attributes of `ino` before returning (the caller's reply must not
    /// overtake it: the kernel decides set-id execution from its cached mode).
    fn inval_attrs_now(&self, ino: u64);
    /// Drop the cached listing (and attributes) of directory `ino` before returning: no
    /// system call holds a directory's cached pages while it waits for the daemon, so this
    /// cannot deadlock as a file's data could.
    fn inval_dir_now(&self, ino: u64);
    /// Drop the cached pages (and attributes) of file `ino` before returning; whether the
    /// kernel took it. Only from a thread that serves no request: a system call may hold
    /// one of the file's pages locked while it waits for a `READ`.
    fn inval_pages_now(&self, ino: u64) -> bool;
    /// Put `data` in the page cache of file `ino` from offset 0 before returning; whether the
    /// kernel took it. Only while no open file of it can hold one of its pages locked.
    fn store_pages_now(&self, ino: u64, data: &[u8]) -> bool;
}

/// The union filesystem.
pub struct UnionFs {
    /// Upper and lower layers.
    pub layers: Layers,
    /// Nodes the kernel references.
    pub(crate) inodes: InodeTable,
    /// Open files and directories.
    pub(crate) handles: HandleTable,
    /// Cached real directory descriptors.
    pub(crate) dirfds: DirFdCache,
    /// Settings.
    pub opts: Options,
    /// Bumped before and after every rename, so path resolution can tell it raced with one.
    rename_seq: AtomicU64,
    /// The root node.
    root: Arc<Node>,
    /// Set once the session exists.
    invalidator: OnceLock<Box<dyn Invalidator>>,
    /// Watches on real directories (`--watch`).
    watch: OnceLock<Arc<watch::Watch>>,
    /// Listings of directories a reader is part-way through, with the directory version
    /// they were built at (see [`UnionFs::readdir`]).
    pub(crate) listings: readdir::Snapshots,
    /// Link-count differences of indexed hard links, by upper inode (see [`index`]).
    pub(crate) index_diffs: dashmap::DashMap<u64, i64>,
    /// The reclaim thread, woken when the node table outgrows [`Options::max_nodes`] or
    /// [`TRIM_AFTER`] nodes have left it since the heap was last trimmed.
    reclaimer: OnceLock<std::thread::Thread>,
    /// Nodes that left the table since the reclaim thread last trimmed the heap.
    forgotten: AtomicUsize,
    /// Reads directories ahead of tree walks.
    pub(crate) prefetch: prefetch::Prefetch,
    /// Which listings carry their entries' attributes.
    pub(crate) lean: lean::Lean,
    /// Closed lower files whose pages go after an interval.
    pub(crate) idle: idle::IdlePages,
}

impl std::fmt::Debug for UnionFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnionFs").field("layers", &self.layers).field("inodes", &self.inodes.len()).finish()
    }
}

impl Drop for UnionFs {
    fn drop(&mut self) {
        // The reclaim thread sleeps without a timer: wake it to see the union gone and end.
        if let Some(t) = self.reclaimer.get() {
            t.unpark();
        }
    }
}

/// Where a node's real object is: a directory descriptor and a name in it (`"."` for a
/// directory's own descriptor).
#[derive(Debug, Clone)]
pub struct Real {
    /// Directory holding the object (or the directory itself, with name `"."`).
    pub dir: Arc<OwnedFd>,
    /// Name in `dir`.
    pub name: name::Name,
    /// Which layer.
    pub side: Side,
}

impl UnionFs {
    /// Builds the union over opened layers.
    pub fn new(layers: Layers, opts: Options) -> Result<UnionFs, Error> {
        let mut dlayers = Vec::with_capacity(layers.lowers.len());
        for (i, l) in layers.lowers.iter().enumerate() {
            let marks = whiteout::dir_marks(std::os::fd::AsFd::as_fd(&*l.root), sys_dot(), None, opts.dialect.only())
                .map_err(|e| Error::io(format!("cannot read lower layer '{}'", l.path.display()), e))?;
            dlayers.push(DirLayer { idx: i as LowerIdx, xwhiteouts: marks.xwhiteouts });
        }
        let top = &layers.lowers[0];
        let top_st = stat::fstat(&*top.root).map_err(|e| Error::io("cannot stat the top lower layer", e))?;
        let mut flags = 0;
        let mut upper_ino = 0;
        if let Some(u) = &layers.upper {
            let st = stat::fstat(&*u.layer.root).map_err(|e| Error::io("cannot stat the upper dir", e))?;
            upper_ino = st.ino;
            flags |= flag::UPPER;
            let marks =
                whiteout::dir_marks(std::os::fd::AsFd::as_fd(&*u.layer.root), sys_dot(), None, opts.dialect.only())
                    .map_err(|e| Error::io("cannot read the upper dir", e))?;
            if marks.xwhiteouts {
                flags |= flag::UPPER_XWH;
            }
        }
        if !layers.volumes.is_empty() {
            flags |= flag::VOL_ANCESTOR;
        }
        let root = Node::new(
            tables::ROOT_INO,
            NodeSpec {
                kind: FileKind::Directory,
                identity: Identity { fs: top.fs, ino: top_st.ino },
                upper_ino,
                lower: Lower::Dir(Box::new(DirLower {
                    path: CString::default(),
                    layers: dlayers,
                    other_paths: Vec::new(),
                })),
                flags,
                loc: Loc { parent: None, name: c"".into() },
                vol: 0,
                index_key: None,
            },
        );
        let inodes = InodeTable::default();
        let root = inodes.insert_root(root);
        // Queued read-ahead may keep a quarter as many directories open as the cache.
        let (opts_prefetch, opts_fds, opts_lean) = (opts.prefetch, opts.dirfd_cache / 4, opts.lean_listings);
        let idle = idle::IdlePages::new(opts.page_cache_idle);
        Ok(UnionFs {
            layers,
            inodes,
            handles: HandleTable::default(),
            dirfds: DirFdCache::new(opts.dirfd_cache),
            opts,
            rename_seq: AtomicU64::new(0),
            root,
            invalidator: OnceLock::new(),
            watch: OnceLock::new(),
            listings: readdir::Snapshots::default(),
            index_diffs: dashmap::DashMap::new(),
            reclaimer: OnceLock::new(),
            forgotten: AtomicUsize::new(0),
            prefetch: prefetch::Prefetch::new(opts_prefetch, opts_fds),
            lean: lean::Lean::new(opts_lean),
            idle,
        })
    }

    /// Installs the kernel-cache invalidator (once the FUSE session exists).
    pub fn set_invalidator(&self, inv: Box<dyn Invalidator>) {
        // A second call keeps the first invalidator; there is only one session.
        let _ = self.invalidator.set(inv);
    }

    /// Starts the thread that keeps the node table within [`Options::max_nodes`]: it asks
    /// the kernel to drop the names of the least recently looked-up nodes that nothing holds
    /// (no open file, no known child); the kernel's `FORGET`s then free them. Directory
    /// descriptors and negative entries are cached separately and are not affected.
    pub fn start_reclaimer(self: &Arc<Self>) -> std::io::Result<()> {
        let weak = Arc::downgrade(self);
        // No timer: the thread sleeps until the table outgrows its limit or a burst of
        // forgotten nodes asks for a trim, so an idle mount never wakes it.
        let t = std::thread::Builder::new().name("reclaim".into()).spawn(move || {
            loop {
                std::thread::park();
                let Some(fs) = weak.upgrade() else { return };
                // Names already sent are not sent again, so passes can follow each other
                // closely while a walk outruns the kernel's FORGETs.
                while fs.reclaim() > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                if fs.forgotten.load(Ordering::Relaxed) < TRIM_AFTER {
                    continue;
                }
                drop(fs);
                // A quiet spell (the table steady for a second), then give the memory of
                // forgotten nodes back to the system.
                loop {
                    let Some(n) = weak.upgrade().map(|fs| fs.inodes.len()) else { return };
                    std::thread::park_timeout(std::time::Duration::from_secs(1));
                    match weak.upgrade() {
                        None => return,
                        Some(fs) if fs.inodes.len() == n => {
                            fs.forgotten.store(0, Ordering::Relaxed);
                            crate::sys::proc::trim_heap();
                            break;
                        }
                        Some(_) => {}
                    }
                }
            }
        })?;
        let _ = self.reclaimer.set(t.thread().clone());
        Ok(())
    }

    /// Starts the thread that removes what removed directories leave in the work dir, off
    /// the request path ([`reap`]); a read-only union has none.
    pub fn start_reaper(&self) -> std::io::Result<()> {
        self.layers.upper().map_or(Ok(()), |up| up.start_reaper())
    }

    /// Waits until the reap thread has emptied its queue, and stops it (before the daemon
    /// exits, so an unmounted upper has an empty work dir).
    pub fn finish_reaper(&self) {
        if let Ok(up) = self.layers.upper() {
            up.finish_reaper();
        }
    }

    /// Counts a node that left the table; the [`TRIM_AFTER`]th since the last trim wakes the
    /// reclaim thread to trim the heap once the table is steady.
    pub(crate) fn node_left(&self) {
        if self.forgotten.fetch_add(1, Ordering::Relaxed) + 1 == TRIM_AFTER
            && let Some(t) = self.reclaimer.get()
        {
            t.unpark();
        }
    }

    /// Wakes the reclaim thread if the node table is over its limit.
    pub(crate) fn maybe_reclaim(&self) {
        if self.inodes.len() > self.opts.max_nodes
            && let Some(t) = self.reclaimer.get()
        {
            t.unpark();
        }
    }

    /// One reclaim pass: if there are more nodes than [`Options::max_nodes`], asks the kernel
    /// to forget the least recently used ones down to three quarters of the limit; returns how
    /// many names it invalidated.
    pub fn reclaim(&self) -> usize {
        let cap = self.opts.max_nodes;
        let len = self.inodes.len();
        if len <= cap {
            return 0;
        }
        let mut victims = self.inodes.reclaimable();
        let want = (len - cap * 3 / 4).min(victims.len());
        if want < victims.len() {
            victims.select_nth_unstable_by_key(want, |(used, _)| *used);
            victims.truncate(want);
        }
        let mut sent = 0;
        for (_, ino) in victims {
            let Ok(node) = self.inodes.get(ino) else { continue };
            node.set(flag::RECLAIMED);
            let names: Vec<(u64, CString)> = {
                let l = node.locs.read();
                std::iter::once(&l.first)
                    .chain(l.more.iter())
                    .filter_map(|x| x.parent.as_ref().map(|p| (p.ino, CString::from(&x.name))))
                    .collect()
            };
            for (parent, name) in names {
                self.inval_entry(parent, &name);
                sent += 1;
            }
        }
        tracing::debug!(nodes = len, sent, "reclaim");
        sent
    }

    /// Starts watching the layers for changes made behind the mount's back (`--watch`):
    /// the layer roots now, every other real directory as the daemon opens it.
    pub fn start_watch(self: &Arc<Self>) -> Res<()> {
        let w = Arc::new(watch::Watch::new()?);
        if let Some(up) = &self.layers.upper {
            w.add(std::os::fd::AsFd::as_fd(&*up.layer.root), tables::ROOT_INO);
        }
        for l in &self.layers.lowers {
            w.add(std::os::fd::AsFd::as_fd(&*l.root), tables::ROOT_INO);
        }
        let _ = self.watch.set(w.clone());
        let fs = self.clone();
        std::thread::Builder::new().name("watch".into()).spawn(move || w.run(&fs)).map_err(Errno::from)?;
        Ok(())
    }

    /// Something changed name `name` (or the directory itself) in one of directory `ino`'s
    /// real directories, not through the mount: drop what the kernel and the daemon cached.
    pub fn external_change(&self, ino: u64, name: Option<&CStr>) {
        let node = self.inodes.get(ino).ok();
        if let Some(node) = &node {
            // A listing being built ahead right now must not become the current one.
            node.touch_dir();
        }
        self.listings.forget(ino);
        if let Some(n) = name {
            self.inval_entry(ino, n);
        } else if let Some(node) = &node {
            node.forget_xattrs();
        }
        if let Some(i) = self.invalidator.get() {
            i.inval_inode(ino);
        }
    }

    /// Whether the layers are watched for changes made behind the mount's back.
    pub(crate) fn watching(&self) -> bool {
        self.watch.get().is_some()
    }

    /// Asks the kernel to forget a cached name.
    pub(crate) fn inval_entry(&self, parent: u64, name: &CStr) {
        if let Some(i) = self.invalidator.get() {
            i.inval_entry(parent, name);
        }
    }

    /// Has the kernel drop its cached listing of directory `ino` before this returns.
    pub(crate) fn inval_dir_now(&self, ino: u64) {
        if let Some(i) = self.invalidator.get() {
            i.inval_dir_now(ino);
        }
    }

    /// Has the kernel drop its cached attributes of `ino` before this returns.
    pub(crate) fn inval_attrs_now(&self, ino: u64) {
        if let Some(i) = self.invalidator.get() {
            i.inval_attrs_now(ino);
        }
    }

    /// The root node.
    pub fn root(&self) -> &Arc<Node> {
        &self.root
    }

    /// Number of nodes the kernel references (for statistics and tests).
    pub fn node_count(&self) -> usize {
        self.inodes.len()
    }

    /// Whether any layer lives on a stacked filesystem (overlayfs, FUSE), which needs a FUSE
    /// passthrough stacking depth of 2.
    pub fn layers_stacked(&self) -> bool {
        const OVERLAYFS: i64 = 0x794C_7630;
        const FUSE: i64 = 0x6573_5546;
        let stacked = |m: i64| m == OVERLAYFS || m == FUSE;
        self.layers.lowers.iter().any(|l| stacked(l.magic))
            || self.layers.upper.as_ref().is_some_and(|u| stacked(u.layer.magic))
            || self.layers.volumes.iter().any(|v| stacked(v.layer.magic))
    }

    /// Number of open handles.
    pub fn handle_count(&self) -> usize {
        self.handles.len()
    }

    /// Runs `f`, retrying when it failed with `ENOENT` while a rename moved things, and once
    /// after emptying the directory-descriptor cache when the daemon ran out of descriptors
    /// (`EMFILE`/`ENFILE`): the cache gives way, the container's open does not fail.
    pub(crate) fn stable<T>(&self, mut f: impl FnMut() -> Res<T>) -> Res<T> {
        let mut shed = false;
        for _ in 0..8 {
            let before = self.rename_seq.load(Ordering::Acquire);
            match f() {
                Err(Errno::ENOENT) if self.rename_seq.load(Ordering::Acquire) != before || before & 1 == 1 => {
                    std::thread::yield_now();
                }
                Err(Errno::EMFILE | Errno::ENFILE) if !shed => {
                    shed = true;
                    let n = self.dirfds.shed();
                    tracing::warn!("out of file descriptors: closed {n} cached directory descriptors and retried");
                }
                r => return r,
            }
        }
        f()
    }

    /// Marks the start and end of a rename for [`UnionFs::stable`].
    pub(crate) fn rename_mark(&self) {
        self.rename_seq.fetch_add(1, Ordering::AcqRel);
    }

    /// Attributes of `node` from the real object's status alone: ids as the mount maps them,
    /// the mode as stored (callers show [`UnionFs::attr_overridden`]).
    fn attr_from_stat(&self, node: &Node, st: &Stat) -> Attr {
        // Kernel overlayfs's "merge" type: a directory with an upper and a lower part, or with
        // parts in more than one lower layer; it reports one link, not the real count.
        let merged = node.is_dir()
            && (node.has_upper() && node.has_lower() || node.dir_lower().is_some_and(|d| d.layers.len() > 1));
        let nlink = if merged || (node.is_dir() && self.opts.static_nlink) { 1 } else { self.shown_nlink(node, st) };
        Attr {
            ino: node.shown(),
            kind: node.kind,
            perm: st.perm(),
            nlink,
            uid: self.opts.uids.show(st.uid),
            gid: self.opts.gids.show(st.gid),
            rdev: st.rdev,
            size: st.size,
            blocks: st.blocks,
            blksize: st.blksize,
            atime: st.atime,
            mtime: st.mtime,
            ctime: st.ctime,
        }
    }

    /// What the mount shows of `node`, whose real object has status `st`: owner and mode from
    /// the `override_stat` xattr when the mount keeps them there.
    pub(crate) fn attr_overridden(&self, node: &Arc<Node>, st: &Stat) -> Attr {
        self.with_override(self.attr_from_stat(node, st), self.override_of(node))
    }

    /// [`UnionFs::attr_overridden`] for an object reached only through an open descriptor
    /// `fd` of it (removed while open), with its status `st`.
    pub(crate) fn attr_overridden_fd(&self, node: &Node, fd: std::os::fd::BorrowedFd<'_>, st: &Stat) -> Attr {
        let over = self.opts.override_stat.and_then(|name| idmap::OverrideStat::read(XTarget::Fd(fd), name, node.kind));
        self.with_override(self.attr_from_stat(node, st), over)
    }

    /// `a` with owner and mode from `over`, if any.
    fn with_override(&self, mut a: Attr, over: Option<idmap::OverrideStat>) -> Attr {
        if let Some(o) = over {
            a.uid = o.uid;
            a.gid = o.gid;
            a.perm = o.mode;
        }
        a
    }

    /// The `override_stat` of a node, if the mount uses them and it has one.
    pub(crate) fn override_of(&self, node: &Arc<Node>) -> Option<idmap::OverrideStat> {
        let name = self.opts.override_stat?;
        let r = self.real(node).ok()?;
        idmap::OverrideStat::read(XTarget::At(std::os::fd::AsFd::as_fd(&*r.dir), &r.name), name, node.kind)
    }

    /// Status of the node's visible real object.
    pub(crate) fn stat_node(&self, node: &Arc<Node>) -> Res<Stat> {
        self.stable(|| {
            let r = self.real_once(node)?;
            stat::statat(&*r.dir, &r.name)
        })
    }
}

/// `"."`.
pub(crate) fn sys_dot() -> &'static CStr {
    crate::sys::DOT
}

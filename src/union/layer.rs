//! The layer stack, and the single choke point through which every change to the upper
//! layer passes.
//!
//! A [`Layer`] is an `O_PATH` descriptor of a layer root: everything inside is reached
//! relative to it (see [`crate::sys::open::resolve_beneath`]). The [`Upper`] owns the
//! upper root, the work directory and the locks that keep a second mount away; its methods
//! are the only code that creates, renames, removes or changes anything in the upper layer,
//! and each logs one `debug!` line.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tracing::debug;

use crate::error::{Context, Errno, Error, Res};
use crate::sys::fs::{self as sfs, RenameMode, SetTime};
use crate::sys::open::{self, OFlags};
use crate::sys::stat::{self, FileKind, Stat};
use crate::sys::xattr::{self, SetMode, XTarget};
use crate::sys::{dir as sdir, io as sio};
use crate::union::reap;
use crate::union::whiteout::Dialect;

/// Index of a lower layer; 0 is the topmost.
pub type LowerIdx = u16;

/// One read-only or writable layer root.
#[derive(Debug)]
pub struct Layer {
    /// The path the user gave (for messages).
    pub path: PathBuf,
    /// `O_PATH | O_DIRECTORY` descriptor of the root; shared with the directory-fd cache.
    pub root: Arc<OwnedFd>,
    /// Device of the layer's filesystem.
    pub dev: u64,
    /// Index of that filesystem among the distinct filesystems of the stack (upper's is 0);
    /// used to make inode numbers unique across filesystems.
    pub fs: u8,
    /// The filesystem's magic number (`statfs` `f_type`).
    pub magic: i64,
    /// The filesystem's UUID (zero when it has none), recorded in origin handles.
    pub uuid: [u8; 16],
}

impl Layer {
    fn open(path: &Path, what: &str) -> Result<Layer, Error> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::msg(format!("{what} '{}' does not exist", path.display())),
            _ => Error::io(format!("cannot read {what} '{}'", path.display()), e),
        })?;
        if !meta.is_dir() {
            return Err(Error::msg(format!("{what} '{}' is not a directory", path.display())));
        }
        let root = open::open_dir_path(path).context(|| format!("cannot open {what} '{}'", path.display()))?;
        let st = stat::fstat(&root).context(|| format!("cannot stat {what} '{}'", path.display()))?;
        let magic = stat::fs_magic(&root).context(|| format!("cannot statfs {what} '{}'", path.display()))?;
        let uuid = crate::sys::handle::fs_uuid(&root).unwrap_or_default();
        Ok(Layer { path: path.to_path_buf(), root: Arc::new(root), dev: st.dev, fs: 0, magic, uuid })
    }
}

/// Whether to call `fsync` where durability is promised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync as asked, and after copy-up before it becomes visible.
    Sync,
    /// `volatile` / `fsync=0`: skip every fsync (engines that can rebuild the layer).
    Volatile,
}

/// The writable layer: root, work directory, and the locks held while mounted.
#[derive(Debug)]
pub struct Upper {
    /// The upper layer root.
    pub layer: Layer,
    /// `WORK/work`: where temporaries are built before a rename makes them visible.
    work: OwnedFd,
    /// Descriptors holding `flock` on the upper and work roots while mounted.
    _locks: [OwnedFd; 2],
    /// Counter for unique temporary names.
    tmp_seq: AtomicU64,
    /// Private xattr namespace written to this upper.
    pub dialect: Dialect,
    /// Whether to fsync.
    pub durability: Durability,
    /// Whether the filesystem accepts `RENAME_WHITEOUT` (cleared on the first refusal).
    rename_whiteout_ok: AtomicBool,
    /// Fault injection for crash tests (see [`crate::hooks::FAULT_AFTER`]): abort before this
    /// mutation.
    fault_at: Option<u64>,
    /// Upper-layer mutations made so far (counted only when `fault_at` is set).
    mutations: AtomicU64,
    /// Size and inode limits (`--size-limit`, `--inode-limit`).
    pub quota: Option<crate::union::quota::Quota>,
    /// `WORK/index` (with `index=on`): copies of lower hard links, by origin handle.
    pub index: std::sync::OnceLock<Arc<OwnedFd>>,
    /// Removes what removed directories leave in the work dir, off the request path.
    reaper: reap::Reaper,
}

/// How long a mount waits for the upper and work dirs' locks held by another daemon.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Name of the directory inside the work dir that holds temporaries (the kernel's name).
pub const WORK_SUBDIR: &CStr = c"work";
/// Name of the directory inside the work dir that holds the index (the kernel's name).
pub const INDEX_SUBDIR: &CStr = c"index";

impl Upper {
    /// Opens and locks the upper and work directories, and empties `WORK/work`.
    pub fn open(upper: &Path, work: &Path, dialect: Dialect, durability: Durability) -> Result<Upper, Error> {
        let layer = Layer::open(upper, "upper dir")?;
        let work_layer = Layer::open(work, "work dir")?;
        if work_layer.dev != layer.dev {
            return Err(Error::msg(format!(
                "upper dir '{}' and work dir '{}' are on different filesystems",
                upper.display(),
                work.display()
            )));
        }
        // A daemon whose mount was just taken away keeps its locks until it has emptied its
        // reap queue and exited (an engine may mount the same layer again at once): wait
        // for that a little before calling the directory taken.
        let lock = |p: &Path, what: &str| -> Result<OwnedFd, Error> {
            let fd = open::open_plain(p, OFlags::RDONLY | OFlags::DIRECTORY, 0)
                .context(|| format!("cannot open {what} '{}'", p.display()))?;
            let deadline = std::time::Instant::now() + LOCK_WAIT;
            while !sio::try_lock_exclusive(&fd).context(|| format!("cannot lock {what} '{}'", p.display()))? {
                if std::time::Instant::now() >= deadline {
                    return Err(Error::msg(format!("{what} '{}' is in use by another unionfs mount", p.display())));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(fd)
        };
        let lock_upper = lock(upper, "upper dir")?;
        let lock_work = lock(work, "work dir")?;
        match sfs::mkdirat(&*work_layer.root, WORK_SUBDIR, 0o700) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(Error::io(format!("cannot create '{}/work'", work.display()), e));
            }
        }
        let workdir = open::openat(&*work_layer.root, WORK_SUBDIR, OFlags::PATH | OFlags::DIRECTORY, 0)
            .context(|| format!("cannot open '{}/work'", work.display()))?;
        let up = Upper {
            layer,
            work: workdir,
            _locks: [lock_upper, lock_work],
            tmp_seq: AtomicU64::new(0),
            dialect,
            durability,
            rename_whiteout_ok: AtomicBool::new(true),
            fault_at: crate::hooks::fault_after(),
            mutations: AtomicU64::new(0),
            quota: None,
            index: std::sync::OnceLock::new(),
            reaper: reap::Reaper::default(),
        };
        let left = up.clean_work().context(|| format!("cannot clean '{}/work'", work.display()))?;
        if left > 0 {
            tracing::info!("removed {left} leftover temporaries from '{}/work'", work.display());
        }
        Ok(up)
    }

    /// The work directory (`WORK/work`).
    pub fn work(&self) -> BorrowedFd<'_> {
        self.work.as_fd()
    }

    /// Removes everything in `WORK/work` (what a crash left behind); returns how many.
    pub fn clean_work(&self) -> Res<usize> {
        let rd = open::open_dir_for_read(&self.work)?;
        let entries = sdir::read_all(&rd)?;
        for e in &entries {
            let name = CString::new(e.name.clone()).map_err(|_| Errno::EINVAL)?;
            self.remove_tree(self.work(), &name)?;
        }
        Ok(entries.len())
    }

    /// A fresh name for a temporary in the work dir.
    pub fn temp_name(&self) -> CString {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        CString::new(format!("#u{:x}-{n:x}", std::process::id())).unwrap_or_default()
    }

    /// Whether fsync calls should be made.
    pub fn sync(&self) -> bool {
        self.durability == Durability::Sync
    }

    /// Counts one mutation; aborts the process at the injected fault point.
    pub(crate) fn step(&self) {
        if let Some(at) = self.fault_at
            && self.mutations.fetch_add(1, Ordering::Relaxed) + 1 >= at
        {
            eprintln!("unionfs: fault injected before upper mutation {at}");
            std::process::abort();
        }
    }

    /// Opens (creating it if needed) `WORK/index`, for `index=on`.
    pub fn open_index(&self, work: &Path) -> Result<(), Error> {
        let root = open::open_dir_path(work).context(|| format!("cannot open '{}'", work.display()))?;
        match sfs::mkdirat(&root, INDEX_SUBDIR, 0o700) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(Error::io(format!("cannot create '{}/index'", work.display()), e)),
        }
        let fd = open::openat(&root, INDEX_SUBDIR, OFlags::PATH | OFlags::DIRECTORY, 0)
            .context(|| format!("cannot open '{}/index'", work.display()))?;
        let _ = self.index.set(Arc::new(fd));
        Ok(())
    }

    /// Sets size and inode limits, counting what the upper holds now.
    pub fn set_quota(&mut self, size: Option<u64>, inodes: Option<u64>) -> Result<(), Error> {
        if size.is_some() || inodes.is_some() {
            let q = crate::union::quota::Quota::new(size, inodes, self.layer.root.as_fd())
                .context(|| format!("cannot measure upper dir '{}'", self.layer.path.display()))?;
            self.quota = Some(q);
        }
        Ok(())
    }

    /// Runs `f`, which makes one new object, within the inode limit.
    fn new_object<T>(&self, f: impl FnOnce() -> Res<T>) -> Res<T> {
        let Some(q) = &self.quota else { return f() };
        q.take_inode()?;
        let r = f();
        if r.is_err() {
            q.give_inode();
        }
        r
    }

    /// With limits: what is at `name` in `dir` (about to be removed or replaced).
    fn before_removal(&self, dir: BorrowedFd<'_>, name: &CStr) -> Option<Stat> {
        self.quota.as_ref().and_then(|_| crate::sys::stat::statat(dir, name).ok())
    }

    /// With limits: `st` is gone (its last name, for a file with several).
    fn removed(&self, st: Option<Stat>) {
        if let (Some(q), Some(st)) = (&self.quota, st)
            && (st.is_dir() || st.nlink <= 1)
        {
            q.give_inode();
            q.add_bytes(-crate::union::quota::allocated(&st));
        }
    }

    /// Runs `f`, which changes the data of open upper file `fd`, within the size limit:
    /// with limits, `EDQUOT` unless the bytes `need` asks for (given the file's status
    /// before; `None`: no check, for changes that cannot grow it) fit, and the change in
    /// allocated bytes is counted afterwards, whatever `f` returned.
    pub fn charged<T>(
        &self,
        fd: BorrowedFd<'_>,
        need: impl FnOnce(&Stat) -> Option<u64>,
        f: impl FnOnce() -> Res<T>,
    ) -> Res<T> {
        let Some(q) = &self.quota else { return f() };
        let before = crate::sys::stat::fstat(fd).ok();
        if let Some(more) = before.as_ref().and_then(need) {
            q.check_bytes(more)?;
        }
        let r = f();
        if let (Some(b), Ok(now)) = (&before, crate::sys::stat::fstat(fd)) {
            q.add_bytes(crate::union::quota::allocated(&now) - crate::union::quota::allocated(b));
        }
        r
    }

    // ---- the choke point: every upper-layer mutation below logs one line ----

    /// Creates a directory.
    pub fn mkdir(&self, dir: BorrowedFd<'_>, name: &CStr, perm: u32) -> Res<()> {
        self.step();
        let r = self.new_object(|| sfs::mkdirat(dir, name, perm));
        debug!(op = "mkdir", ?name, perm = format_args!("{perm:o}"), ?r);
        r
    }

    /// Creates a device, fifo or socket node.
    pub fn mknod(&self, dir: BorrowedFd<'_>, name: &CStr, kind: FileKind, perm: u32, rdev: u64) -> Res<()> {
        self.step();
        let r = self.new_object(|| sfs::mknodat(dir, name, kind, perm, rdev));
        debug!(op = "mknod", ?name, ?kind, perm = format_args!("{perm:o}"), rdev, ?r);
        r
    }

    /// Creates a symlink.
    pub fn symlink(&self, target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> Res<()> {
        self.step();
        let r = self.new_object(|| sfs::symlinkat(target, dir, name));
        debug!(op = "symlink", ?name, ?target, ?r);
        r
    }

    /// Creates and opens a new regular file (`O_CREAT | O_EXCL`).
    pub fn create(&self, dir: BorrowedFd<'_>, name: &CStr, flags: OFlags, perm: u32) -> Res<OwnedFd> {
        self.step();
        let r = self.new_object(|| open::openat(dir, name, flags | OFlags::CREATE | OFlags::EXCL, perm));
        debug!(op = "create", ?name, perm = format_args!("{perm:o}"), ok = r.is_ok());
        r
    }

    /// Opens a new unnamed regular file in `dir` (`O_TMPFILE`). Counted against an inode
    /// limit only when a link gives it a name ([`Upper::link`] of an empty name).
    pub fn tmpfile(&self, dir: BorrowedFd<'_>, flags: OFlags, perm: u32) -> Res<OwnedFd> {
        self.step();
        let r = open::open_tmpfile(dir, flags, perm);
        debug!(op = "tmpfile", perm = format_args!("{perm:o}"), ok = r.is_ok());
        r
    }

    /// Makes a hard link.
    pub fn link(&self, odir: BorrowedFd<'_>, oname: &CStr, ndir: BorrowedFd<'_>, nname: &CStr) -> Res<()> {
        self.step();
        let r = match oname.is_empty() {
            // An unnamed file gets its first name: a new object for the inode limit.
            true => self.new_object(|| sfs::linkat(odir, oname, ndir, nname)),
            false => sfs::linkat(odir, oname, ndir, nname),
        };
        debug!(op = "link", ?oname, ?nname, ?r);
        r
    }

    /// Renames, with the given target treatment.
    pub fn rename(
        &self,
        odir: BorrowedFd<'_>,
        oname: &CStr,
        ndir: BorrowedFd<'_>,
        nname: &CStr,
        mode: RenameMode,
    ) -> Res<()> {
        self.step();
        let replaced = match mode {
            RenameMode::Replace | RenameMode::Whiteout => self.before_removal(ndir, nname),
            _ => None,
        };
        let r = match mode {
            RenameMode::Whiteout => self.new_object(|| sfs::renameat2(odir, oname, ndir, nname, mode)),
            _ => sfs::renameat2(odir, oname, ndir, nname, mode),
        };
        if r.is_ok() {
            self.removed(replaced);
        }
        debug!(op = "rename", ?oname, ?nname, ?mode, ?r);
        r
    }

    /// Renames and leaves a whiteout at the source, atomically when the filesystem can
    /// (`RENAME_WHITEOUT`), else as a rename followed by a whiteout created through the work
    /// dir.
    pub fn rename_whiteout(&self, odir: BorrowedFd<'_>, oname: &CStr, ndir: BorrowedFd<'_>, nname: &CStr) -> Res<()> {
        if self.rename_whiteout_ok.load(Ordering::Relaxed) {
            match self.rename(odir, oname, ndir, nname, RenameMode::Whiteout) {
                Err(Errno::EINVAL) | Err(Errno::EPERM) | Err(Errno::EOPNOTSUPP) => {
                    self.rename_whiteout_ok.store(false, Ordering::Relaxed);
                }
                r => {
                    if r.is_ok() {
                        crate::stats::add(crate::stats::Counter::Whiteouts, 1);
                    }
                    return r;
                }
            }
        }
        self.rename(odir, oname, ndir, nname, RenameMode::Replace)?;
        self.whiteout(odir, oname, false)
    }

    /// Removes a non-directory.
    pub fn unlink(&self, dir: BorrowedFd<'_>, name: &CStr) -> Res<()> {
        self.step();
        let gone = self.before_removal(dir, name);
        let r = sfs::unlinkat(dir, name);
        if r.is_ok() {
            self.removed(gone);
        }
        debug!(op = "unlink", ?name, ?r);
        r
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, dir: BorrowedFd<'_>, name: &CStr) -> Res<()> {
        self.step();
        let gone = self.before_removal(dir, name);
        let r = sfs::rmdirat(dir, name);
        if r.is_ok() {
            self.removed(gone);
        }
        debug!(op = "rmdir", ?name, ?r);
        r
    }

    /// Puts a whiteout at `name` in `dir`: made there where the name is free, else (with
    /// `replace`) built in the work dir and renamed over the non-directory there.
    pub fn whiteout(&self, dir: BorrowedFd<'_>, name: &CStr, replace: bool) -> Res<()> {
        if !replace {
            // Where the upper has no such name, making the whiteout there is atomic already
            // (EEXIST if the name appeared meanwhile), without a detour through the work dir.
            return self.make_whiteout(dir, name);
        }
        let tmp = self.whiteout_temp()?;
        if let Err(e) = self.rename(self.work(), &tmp, dir, name, RenameMode::Replace) {
            self.discard(&tmp);
            return Err(e);
        }
        Ok(())
    }

    /// Creates a whiteout in the work dir and returns its name.
    pub fn whiteout_temp(&self) -> Res<CString> {
        let tmp = self.temp_name();
        self.make_whiteout(self.work(), &tmp)?;
        Ok(tmp)
    }

    /// Makes a whiteout (a 0/0 character device) at `name` in `dir`, counted.
    fn make_whiteout(&self, dir: BorrowedFd<'_>, name: &CStr) -> Res<()> {
        self.mknod(dir, name, FileKind::CharDev, 0, 0)?;
        crate::stats::add(crate::stats::Counter::Whiteouts, 1);
        Ok(())
    }

    /// Sets an xattr.
    pub fn set_xattr(&self, t: XTarget<'_>, name: &CStr, value: &[u8], mode: SetMode) -> Res<()> {
        self.step();
        let r = xattr::set(t, name, value, mode);
        debug!(op = "setxattr", ?name, len = value.len(), ?r);
        r
    }

    /// Removes an xattr.
    pub fn remove_xattr(&self, t: XTarget<'_>, name: &CStr) -> Res<()> {
        self.step();
        let r = xattr::remove(t, name);
        debug!(op = "removexattr", ?name, ?r);
        r
    }

    /// Changes owner of an entry (not following symlinks).
    pub fn chown(&self, dir: BorrowedFd<'_>, name: &CStr, uid: Option<u32>, gid: Option<u32>) -> Res<()> {
        self.step();
        let r = sfs::chownat(dir, name, uid, gid);
        debug!(op = "chown", ?name, ?uid, ?gid, ?r);
        r
    }

    /// Changes owner through an open descriptor.
    pub fn fchown(&self, fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> Res<()> {
        self.step();
        let r = sfs::fchown(fd, uid, gid);
        debug!(op = "fchown", ?uid, ?gid, ?r);
        r
    }

    /// Changes permission bits of an entry.
    pub fn chmod(&self, dir: BorrowedFd<'_>, name: &CStr, perm: u32) -> Res<()> {
        self.step();
        let r = sfs::chmodat(dir, name, perm);
        debug!(op = "chmod", ?name, perm = format_args!("{perm:o}"), ?r);
        r
    }

    /// Changes permission bits through an open descriptor.
    pub fn fchmod(&self, fd: BorrowedFd<'_>, perm: u32) -> Res<()> {
        self.step();
        let r = sfs::fchmod(fd, perm);
        debug!(op = "fchmod", perm = format_args!("{perm:o}"), ?r);
        r
    }

    /// Sets timestamps of an entry (not following symlinks).
    pub fn utimens(&self, dir: BorrowedFd<'_>, name: &CStr, atime: SetTime, mtime: SetTime) -> Res<()> {
        self.step();
        let r = sfs::utimensat(dir, name, atime, mtime);
        debug!(op = "utimens", ?name, ?atime, ?mtime, ?r);
        r
    }

    /// Sets the size of an open file.
    pub fn truncate(&self, fd: BorrowedFd<'_>, len: u64) -> Res<()> {
        self.step();
        let r = self.charged(fd, |_| None, || sio::ftruncate(fd, len));
        debug!(op = "truncate", len, ?r);
        r
    }

    /// Removes `name` in `dir` and everything below it (used only inside the work dir, on
    /// directories already renamed out of the upper's namespace), each removal counted.
    pub fn remove_tree(&self, dir: BorrowedFd<'_>, name: &CStr) -> Res<()> {
        reap::remove_tree(dir, name, &|d, n| self.unlink(d, n), &|d, n| self.rmdir(d, n))
    }

    /// Best-effort removal of a temporary after a failed operation; failures are logged (the
    /// next mount cleans the work dir anyway).
    pub fn discard(&self, tmp: &CStr) {
        if let Err(e) = self.remove_tree(self.work(), tmp) {
            tracing::warn!("cannot remove temporary {tmp:?} from the work dir: {e}");
        }
    }

    /// Removes temporary `tmp`, which nothing waits for (a removed directory's old upper
    /// part), on the reap thread where one runs ([`reap`]); else at once, as
    /// [`Upper::discard`].
    pub fn discard_later(&self, tmp: CString) {
        if let Err(tmp) = self.reaper.hand(tmp) {
            self.discard(&tmp);
        }
    }

    /// Starts the reap thread (not with size or inode limits, see [`reap`]).
    pub fn start_reaper(&self) -> std::io::Result<()> {
        if self.quota.is_some() {
            return Ok(());
        }
        self.reaper.start(self.work.try_clone()?)
    }

    /// Waits for the reap thread to empty its queue, and stops it.
    pub fn finish_reaper(&self) {
        self.reaper.finish();
    }
}

/// A volume: a host directory shown at a path of the merged view as a plain directory tree
/// (no layers, no copy-up, no whiteouts), like a container engine's bind-mounted volume.
#[derive(Debug)]
pub struct Volume {
    /// The host directory.
    pub layer: Layer,
    /// The mount point in the merged view, as components (`/var/lib/data` → `var`, `lib`,
    /// `data`).
    pub at: Vec<std::ffi::CString>,
}

/// Parses a volume mount point: absolute, normalised, not `/`.
pub fn volume_path(p: &str) -> Result<Vec<std::ffi::CString>, Error> {
    if !p.starts_with('/') {
        return Err(Error::msg(format!("volume path '{p}' must be absolute")));
    }
    let mut out = Vec::new();
    for c in p.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c == ".." {
            return Err(Error::msg(format!("volume path '{p}' must not contain '..'")));
        }
        crate::sys::name_ok(c.as_bytes())
            .map_err(|_| Error::msg(format!("bad component '{c}' in volume path '{p}'")))?;
        out.push(std::ffi::CString::new(c).map_err(|_| Error::msg(format!("bad volume path '{p}'")))?);
    }
    if out.is_empty() {
        return Err(Error::msg("a volume cannot be mounted at '/'"));
    }
    Ok(out)
}

/// The whole stack: an optional upper and the lowers, topmost first.
#[derive(Debug)]
pub struct Layers {
    /// The writable layer; `None` for a read-only mount.
    pub upper: Option<Upper>,
    /// Read-only layers, topmost first.
    pub lowers: Vec<Layer>,
    /// How real inode numbers become unique union inode numbers.
    pub xino: Xino,
    /// When every lower layer is on one filesystem: its index and magic (so an origin file
    /// handle names an inode of that filesystem without ambiguity).
    pub lower_fs: Option<(u8, i64)>,
    /// Volumes (node `vol` `i + 1` is `volumes[i]`).
    pub volumes: Vec<Volume>,
}

impl Layers {
    /// Opens the lower layers (topmost first) and volumes, and assembles the stack.
    pub fn open(lowers: &[PathBuf], upper: Option<Upper>, volumes: &[(PathBuf, String)]) -> Result<Layers, Error> {
        if lowers.is_empty() {
            return Err(Error::msg("no lower layer given"));
        }
        let mut ls = Vec::with_capacity(lowers.len());
        for p in lowers {
            ls.push(Layer::open(p, "lower layer")?);
        }
        if ls.len() > usize::from(LowerIdx::MAX) {
            return Err(Error::msg(format!("too many lower layers ({})", ls.len())));
        }
        let mut devs: Vec<u64> = Vec::new();
        let mut upper = upper;
        if let Some(u) = upper.as_mut() {
            devs.push(u.layer.dev);
            u.layer.fs = 0;
        }
        let mut vols = Vec::with_capacity(volumes.len());
        for (dir, at) in volumes {
            if upper.is_none() {
                return Err(Error::msg("volumes need an upper dir"));
            }
            let at = volume_path(at)?;
            if vols.iter().any(|v: &Volume| v.at.starts_with(&at) || at.starts_with(&v.at)) {
                return Err(Error::msg(format!("volume '{}' overlaps another volume", dir.display())));
            }
            vols.push(Volume { layer: Layer::open(dir, "volume")?, at });
        }
        let mut fs_of = |dev: u64| -> Result<u8, Error> {
            let idx = match devs.iter().position(|&d| d == dev) {
                Some(i) => i,
                None => {
                    devs.push(dev);
                    devs.len() - 1
                }
            };
            u8::try_from(idx).map_err(|_| Error::msg("layers span more than 255 filesystems"))
        };
        for l in &mut ls {
            l.fs = fs_of(l.dev)?;
        }
        for v in &mut vols {
            v.layer.fs = fs_of(v.layer.dev)?;
        }
        let lower_fs = match ls.iter().all(|l| l.fs == ls[0].fs) {
            true => Some((ls[0].fs, ls[0].magic)),
            false => None,
        };
        Ok(Layers { upper, lowers: ls, xino: Xino::new(devs.len()), lower_fs, volumes: vols })
    }

    /// The filesystem index and magic of the lower filesystem an origin handle recorded
    /// with `uuid` belongs to: the only lower filesystem, or the one lower filesystem with
    /// that (non-null) UUID.
    pub fn origin_fs(&self, uuid: &[u8]) -> Option<(u8, i64)> {
        if let Some(one) = self.lower_fs {
            return Some(one);
        }
        if uuid.iter().all(|b| *b == 0) {
            return None;
        }
        let mut hits = self.lowers.iter().filter(|l| l.uuid == uuid).map(|l| (l.fs, l.magic));
        let first = hits.next()?;
        hits.all(|h| h == first).then_some(first)
    }

    /// The upper layer, or `EROFS` for a read-only mount.
    pub fn upper(&self) -> Res<&Upper> {
        self.upper.as_ref().ok_or(Errno::EROFS)
    }

    /// A lower layer by index.
    pub fn lower(&self, idx: LowerIdx) -> Res<&Layer> {
        self.lowers.get(usize::from(idx)).ok_or(Errno::EIO)
    }

    /// Volume `vol` (1-based, as nodes number them).
    pub fn volume(&self, vol: u16) -> Res<&Volume> {
        usize::from(vol).checked_sub(1).and_then(|i| self.volumes.get(i)).ok_or(Errno::EIO)
    }

    /// Filesystem index of the place a node's upper object lives (union upper or volume).
    pub fn upper_fs(&self, vol: u16) -> u8 {
        match vol {
            0 => self.upper.as_ref().map_or(0, |u| u.layer.fs),
            v => self.volume(v).map_or(0, |v| v.layer.fs),
        }
    }
}

/// Composes unique inode numbers from (filesystem index, real inode number), in the spirit
/// of the kernel's `xino`: with one filesystem the real number is used as is; with several,
/// the filesystem index goes into the high bits. The top bit is reserved for synthetic
/// numbers (see [`crate::union::tables`]).
#[derive(Clone, Copy, Debug)]
pub struct Xino {
    /// Bit position of the filesystem index.
    shift: u32,
    /// Number of distinct filesystems.
    nfs: usize,
}

/// Inode numbers with this bit set are synthetic (handed out by the union).
pub const SYNTHETIC_BIT: u64 = 1 << 63;

impl Xino {
    /// For a stack spanning `nfs` filesystems.
    pub fn new(nfs: usize) -> Xino {
        let bits = if nfs <= 1 { 0 } else { usize::BITS - (nfs - 1).leading_zeros() };
        Xino { shift: 63 - bits, nfs }
    }

    /// The union inode number for a real one, or `None` if it does not fit (then a synthetic
    /// number is used) or would collide with the root's number 1.
    pub fn map(&self, fs: u8, ino: u64) -> Option<u64> {
        if ino >> self.shift != 0 {
            return None;
        }
        let v = if self.nfs <= 1 { ino } else { ino | (u64::from(fs) << self.shift) };
        (v > 1).then_some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xino_single_fs_is_identity() {
        let x = Xino::new(1);
        assert_eq!(x.map(0, 12345), Some(12345));
        assert_eq!(x.map(0, 1), None, "1 is the root's number");
        assert_eq!(x.map(0, SYNTHETIC_BIT | 5), None);
    }

    #[test]
    fn xino_several_fs_use_high_bits() {
        let x = Xino::new(3);
        let a = x.map(0, 77).unwrap();
        let b = x.map(1, 77).unwrap();
        let c = x.map(2, 77).unwrap();
        assert_eq!(a, 77);
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert_eq!(b & SYNTHETIC_BIT, 0);
        assert_eq!(c & SYNTHETIC_BIT, 0);
        assert_eq!(x.map(1, 1 << 62), None);
    }
}

//! Mounting a union from Rust: a throwaway writable view of a directory tree, for test
//! suites and tools. The mount is served by threads of the calling process and unmounted
//! when the [`UnionMount`] guard is dropped, also when a test fails.
//!
//! ```no_run
//! use unionfs::api::UnionMount;
//!
//! // In a #[test]: a private writable view of a fixture; the fixture itself never changes.
//! let view = UnionMount::builder().lower("tests/fixtures/project").mount()?;
//! std::fs::write(view.path().join("Cargo.toml"), "[package]\nname = \"changed\"\n")?;
//! std::fs::remove_file(view.path().join("README.md"))?;
//! for (change, path) in view.changes()? {
//!     println!("{} /{}", change.letter(), path.display()); // C /Cargo.toml, D /README.md
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `examples/throwaway_view.rs` is a runnable version (`cargo run --example throwaway_view`).

use std::path::{Path, PathBuf};

use crate::config::{MountConfig, MountOptions, MountRequest};
use crate::error::{Context, Error};
use crate::manager::changes::{Change, changes};
use crate::manager::layers::ImageView;

/// Builds a [`UnionMount`].
#[derive(Debug, Default, Clone)]
pub struct Builder {
    lowers: Vec<PathBuf>,
    upper: Option<PathBuf>,
    work: Option<PathBuf>,
    mountpoint: Option<PathBuf>,
    options: Vec<String>,
    read_only: bool,
}

impl Builder {
    /// Adds a lower (read-only) layer. The first one added is the topmost.
    pub fn lower(mut self, dir: impl AsRef<Path>) -> Builder {
        self.lowers.push(dir.as_ref().to_path_buf());
        self
    }

    /// Adds several lower layers, topmost first.
    pub fn lowers<I: IntoIterator<Item = P>, P: AsRef<Path>>(mut self, dirs: I) -> Builder {
        self.lowers.extend(dirs.into_iter().map(|d| d.as_ref().to_path_buf()));
        self
    }

    /// Keeps changes in this directory (default: a throwaway one, deleted with the guard).
    pub fn upper(mut self, dir: impl AsRef<Path>) -> Builder {
        self.upper = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The work directory (default: a throwaway one beside the throwaway upper, or the
    /// default beside a given upper).
    pub fn work(mut self, dir: impl AsRef<Path>) -> Builder {
        self.work = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Mounts here (default: a throwaway directory).
    pub fn mountpoint(mut self, dir: impl AsRef<Path>) -> Builder {
        self.mountpoint = Some(dir.as_ref().to_path_buf());
        self
    }

    /// A mount option, as `unionfs mount -o` takes them (`noatime`, `xattr_permissions=2`...).
    pub fn option(mut self, opt: impl Into<String>) -> Builder {
        self.options.push(opt.into());
        self
    }

    /// No upper layer: a read-only view (writes fail with `EROFS`).
    pub fn read_only(mut self) -> Builder {
        self.read_only = true;
        self
    }

    /// Mounts. The mount is live when this returns.
    pub fn mount(self) -> Result<UnionMount, Error> {
        if self.lowers.is_empty() {
            return Err(Error::msg("no lower layer given"));
        }
        let scratch = Scratch::new()?;
        let upper = match (&self.upper, self.read_only) {
            (_, true) => None,
            (Some(u), false) => Some(u.clone()),
            (None, false) => Some(scratch.path.join("upper")),
        };
        let work = match (&self.work, &self.upper) {
            (Some(w), _) => Some(w.clone()),
            (None, None) if !self.read_only => Some(scratch.path.join("work")),
            _ => None,
        };
        let mountpoint = match &self.mountpoint {
            Some(m) => m.clone(),
            None => {
                let m = scratch.path.join("mnt");
                std::fs::create_dir(&m).context(|| format!("cannot create '{}'", m.display()))?;
                m
            }
        };
        let mut options = MountOptions::default();
        for o in &self.options {
            options.apply(o);
        }
        let lower = self
            .lowers
            .iter()
            .map(|p| p.display().to_string().replace('\\', "\\\\").replace(':', "\\:"))
            .collect::<Vec<_>>();
        let req = MountRequest {
            lower: Some(lower.join(":")),
            upper: upper.clone(),
            work,
            mountpoint,
            options,
            foreground: true,
            debug: false,
            log: None,
            volumes: Vec::new(),
        };
        let mut cfg = MountConfig::validate(req)?;
        // The background session serves /dev/fuse only (no ring threads): accepting io_uring
        // at INIT would leave the kernel waiting for rings that never come.
        cfg.options.uring = Some(false);
        let mut prepared = crate::daemon::prepare(&cfg)?;
        // Known by identity from here on, the mount is unmounted only as itself (see
        // `finish`): fuser would unmount its path, and by then the path may hold another
        // filesystem mounted over it. (Should the mount table not show it, fuser keeps it.)
        let own = crate::mounts::OwnMount::at(&cfg.mountpoint);
        if own.is_some() {
            prepared.session.unmount_callable().disarm();
        }
        let session = prepared.session.spawn().context(|| "cannot start the mount's threads".into())?;
        Ok(UnionMount {
            own,
            path: cfg.mountpoint.clone(),
            upper: cfg.upper.as_ref().map(|u| u.upper.clone()),
            lowers: cfg.lowers.clone(),
            session: Some(session),
            scratch: Some(scratch),
        })
    }
}

/// A live union mount; unmounted (and its throwaway directories deleted) when dropped.
pub struct UnionMount {
    /// The mount by identity, read right after mounting.
    own: Option<crate::mounts::OwnMount>,
    path: PathBuf,
    upper: Option<PathBuf>,
    lowers: Vec<PathBuf>,
    session: Option<fuser::BackgroundSession>,
    scratch: Option<Scratch>,
}

impl std::fmt::Debug for UnionMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnionMount").field("path", &self.path).field("upper", &self.upper).finish()
    }
}

impl UnionMount {
    /// A builder.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Where the union is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The upper layer (where changes are), if any.
    pub fn upper(&self) -> Option<&Path> {
        self.upper.as_deref()
    }

    /// What changed so far, as `unionfs diff` reports it (paths relative to the mount).
    pub fn changes(&self) -> Result<Vec<(Change, PathBuf)>, Error> {
        let Some(upper) = &self.upper else { return Ok(Vec::new()) };
        let view = ImageView::open(&self.lowers)?;
        use std::os::unix::ffi::OsStrExt;
        Ok(changes(upper, &view)?
            .into_iter()
            .map(|(c, p)| (c, PathBuf::from(std::ffi::OsStr::from_bytes(&p))))
            .collect())
    }

    /// Unmounts now, reporting failures (dropping unmounts too, silently). A mount still in use
    /// (a file open, a working directory there) is waited for up to 2 s, then detached and
    /// reported.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), Error> {
        if let Err(e) = self.unmount_session() {
            // Still mounted in the throwaway directory: it stays, with what is in it.
            self.scratch = None;
            return Err(e);
        }
        if let Some(s) = self.scratch.take() {
            s.remove()?;
        }
        Ok(())
    }

    fn unmount_session(&mut self) -> Result<(), Error> {
        if let Some(s) = self.session.take() {
            match &self.own {
                Some(own) => match unmount_when_let_go(own) {
                    // Unmounted here, unused: the connection ends, and the session with it.
                    Ok(true) => {
                        s.join().context(|| format!("the mount at '{}' ended badly", self.path.display()))?;
                    }
                    // Gone already (unmounted, or detached, by someone else): its thread ends
                    // with the connection, which what still holds it may keep a while.
                    Ok(false) => drop(s),
                    // Left to serve what still holds it (its thread ends with the connection).
                    Err(e) => return Err(Error::msg(format!("cannot unmount '{}': {e}", self.path.display()))),
                },
                None => {
                    s.umount_and_join().context(|| format!("cannot unmount '{}'", self.path.display()))?;
                }
            }
        }
        Ok(())
    }
}

/// Unmounts `own` once nothing holds it, waiting up to [`LET_GO`]: a process another thread of
/// this program is starting holds copies of every descriptor open at its fork until it execs,
/// so a file closed here just before can keep the mount busy for that moment (a test suite's
/// threads mounting and running commands side by side). A mount still busy after that is
/// detached (gone from the tree now, from memory once let go) and reported busy; one with
/// another filesystem mounted over it is left, with the other, and reported.
/// `Ok(false)`: it was gone already.
fn unmount_when_let_go(own: &crate::mounts::OwnMount) -> Result<bool, crate::mounts::UnmountError> {
    let deadline = std::time::Instant::now() + LET_GO;
    loop {
        match own.unmount(false) {
            Err(crate::mounts::UnmountError::Busy) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(crate::mounts::UnmountError::Busy) => {
                if let Err(d) = own.unmount(true) {
                    tracing::debug!("detach of '{}' failed: {d}", own.path.display());
                }
                return Err(crate::mounts::UnmountError::Busy);
            }
            r => return r,
        }
    }
}

/// How long an unmount waits for a mount to be let go (see [`UnionMount::unmount`]).
const LET_GO: std::time::Duration = std::time::Duration::from_secs(2);

impl Drop for UnionMount {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!("{e}");
        }
    }
}

/// A throwaway directory for the upper, work dir and mount point.
#[derive(Debug)]
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> Result<Scratch, Error> {
        let path = std::env::temp_dir().join(format!(
            "unionfs-{}-{}",
            std::process::id(),
            crate::manager::store::random_hex(6)
        ));
        std::fs::create_dir(&path).context(|| format!("cannot create '{}'", path.display()))?;
        Ok(Scratch { path })
    }

    fn remove(self) -> Result<(), Error> {
        remove_here(&self.path)
    }
}

/// Removes directory `path` and what is in it, never what is mounted inside it (see
/// [`crate::union::reap::remove_dir_here`]).
pub(crate) fn remove_here(path: &Path) -> Result<(), Error> {
    crate::union::reap::remove_dir_here(path).map_err(|e| match e {
        crate::error::Errno::EBUSY => {
            Error::msg(format!("cannot remove '{}': a filesystem is mounted inside it; left as it is", path.display()))
        }
        e => Error::io(format!("cannot remove '{}'", path.display()), std::io::Error::from(e)),
    })
}

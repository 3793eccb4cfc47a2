//! A mount's life: starting in the background with a readiness handshake, serving, and
//! ending cleanly on `unionfs umount`, SIGTERM or SIGINT.
//!
//! Without `-f` the command re-executes itself as the daemon (in a new session, stdio on
//! `/dev/null` or the `--log` file) and waits on a pipe: the daemon writes `ok` once the
//! kernel has answered the FUSE handshake (the mount is live), or the one-line error that
//! stopped it. So the command exits 0 only when the mount works — what container engines
//! expect of a `mount_program`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionACL};

use crate::config::MountConfig;
use crate::error::{Context, Error};
use crate::fuse::{Fuse, NotifierInvalidator};
use crate::sys::proc as sproc;
use crate::union::layer::{Durability, Layers, Upper};
use crate::union::whiteout::Dialect;
use crate::union::{Options, UnionFs};

/// Most `/dev/fuse` threads a daemon runs (it starts with a few, and grows while every one is
/// stuck: see `Config::max_threads` in vendor/fuser).
const MAX_THREADS: usize = 128;

/// Environment variable carrying the readiness pipe to the re-executed daemon.
const READY_ENV: &str = "UNIONFS_READY_FD";

/// Environment variable carrying the mount point as the command resolved it to the daemon.
const MOUNTPOINT_ENV: &str = "UNIONFS_MOUNTPOINT";

/// Mounts as configured: in the background (returning once the mount is live), or in the
/// foreground until unmounted.
pub fn mount(mut cfg: MountConfig) -> Result<(), Error> {
    if let Some(ready) = crate::sys::inherit::take_fd_from_env(READY_ENV) {
        if let Err(e) = sproc::setsid() {
            tracing::debug!("setsid: {e}");
        }
        // Where the command resolved the mount point, not where this process would.
        if let Some(m) = std::env::var_os(MOUNTPOINT_ENV) {
            cfg.mountpoint = PathBuf::from(m);
        }
        return serve(cfg, Some(ready));
    }
    if cfg.foreground {
        return serve(cfg, None);
    }
    start_background(&cfg)
}

fn start_background(cfg: &MountConfig) -> Result<(), Error> {
    let (rd, wr) = crate::sys::inherit::pipe_for_child().context(|| "cannot create a pipe".into())?;
    let exe = std::env::current_exe().context(|| "cannot find the unionfs executable".into())?;
    let stderr = match &cfg.log {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .context(|| format!("cannot open log file '{}'", p.display()))?,
        ),
        None => Stdio::null(),
    };
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(READY_ENV, wr.as_raw_fd().to_string())
        .env(MOUNTPOINT_ENV, &cfg.mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context(|| "cannot start the mount daemon".into())?;
    drop(wr);
    let mut msg = String::new();
    let mut f = std::fs::File::from(rd);
    let read = f.read_to_string(&mut msg);
    if read.is_ok() && msg.starts_with("ok") {
        return Ok(());
    }
    let status = child.wait().context(|| "cannot wait for the mount daemon".into())?;
    let msg = msg.trim();
    if let Some(m) = msg.strip_prefix("error: ") {
        return Err(Error::msg(m.to_string()));
    }
    Err(Error::msg(format!("the mount daemon exited before the mount was live ({status})")))
}

/// Tells the waiting parent how the start went.
struct Ready(Option<OwnedFd>);

impl Ready {
    fn send(&mut self, msg: &str) {
        if let Some(fd) = self.0.take() {
            let mut f = std::fs::File::from(fd);
            if let Err(e) = f.write_all(msg.as_bytes()) {
                tracing::warn!("cannot report readiness: {e}");
            }
        }
    }
}

fn serve(cfg: MountConfig, ready: Option<OwnedFd>) -> Result<(), Error> {
    let mut ready = Ready(ready);
    match serve_inner(&cfg, &mut ready) {
        Ok(()) => Ok(()),
        Err(e) => {
            ready.send(&format!("error: {e}\n"));
            Err(e)
        }
    }
}

/// Descriptors the daemon's table is grown to hold before it serves (at most `nofile`): the
/// directory descriptor cache (at most 2,048, see `core_options`) and as many open files
/// and layers; 32 KiB of kernel memory. See [`sproc::reserve_fd_table`].
pub const FD_TABLE: u64 = 4096;

/// The core's options for mount `cfg`, whose markers are in `dialect`, in a process that may
/// open `nofile` descriptors; `has_upper`: the mount is writable.
fn core_options(cfg: &MountConfig, dialect: Dialect, nofile: u64, has_upper: bool) -> Options {
    let o = &cfg.options;
    let mut opts = Options::new(
        dialect,
        sproc::euid() == 0 || sproc::has_capability(sproc::CAP_CHOWN),
        // A quarter of the descriptor limit, at most 2048: enough for deep trees, small in memory.
        usize::try_from(nofile / 4).unwrap_or(2048).clamp(64, 2048),
    );
    opts.uids = o.uid_map();
    opts.gids = o.gid_map();
    opts.override_stat = o.override_xattr();
    opts.xattrs = !o.noxattrs;
    opts.static_nlink = o.static_nlink;
    opts.redirect_dir = o.redirect_dir.unwrap_or(opts.redirect_dir);
    opts.metacopy = o.metacopy;
    opts.index = o.index && has_upper;
    opts.max_nodes = o.max_nodes.unwrap_or(opts.max_nodes);
    opts.prefetch = o.prefetch.unwrap_or(opts.prefetch);
    opts.lean_listings = !o.full_listings;
    opts.page_cache_idle = match o.page_cache_idle {
        Some(0) => None,
        Some(n) => Some(std::time::Duration::from_secs(n)),
        None => opts.page_cache_idle,
    };
    opts
}

/// A mounted, not yet served union: the core and its FUSE session.
pub struct Prepared {
    /// The filesystem core.
    pub fs: Arc<UnionFs>,
    /// The FUSE session (mounted; the kernel's handshake is done).
    pub session: Session<Fuse>,
    /// The io_uring transport's state (the session starts its threads, if `INIT` accepted it).
    pub uring: Arc<crate::fuse::uring::UringState>,
    /// The read-ahead window (KiB) `INIT` chose for the mount (0: the kernel's).
    pub read_ahead: Arc<std::sync::atomic::AtomicU32>,
}

/// Opens the layers and builds the core a mount of `cfg` serves (creating the upper and work
/// directories if asked to), without mounting anything: the daemon mounts it, the tests drive
/// it by direct calls (tests/core.rs).
pub fn build_core(cfg: &MountConfig) -> Result<Arc<UnionFs>, Error> {
    let nofile = sproc::raise_nofile_limit();
    // Grown now, while the daemon is one thread: later each doubling would hold up the
    // request whose descriptor crossed it for an RCU grace period.
    let table = nofile.min(FD_TABLE);
    if let Err(e) = sproc::reserve_fd_table(table) {
        tracing::debug!("cannot reserve a table of {table} descriptors: {e}");
    }
    // As kernel overlayfs: `trusted.overlay.*` for root, `user.overlay.*` rootless or with
    // `userxattr`.
    let dialect = if sproc::privileged() && !cfg.options.userxattr { Dialect::Trusted } else { Dialect::User };
    let upper = match &cfg.upper {
        None => None,
        Some(u) => {
            use std::os::unix::fs::DirBuilderExt;
            if u.create_upper {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&u.upper)
                    .context(|| format!("cannot create upper dir '{}'", u.upper.display()))?;
            }
            if u.create_work {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&u.work)
                    .context(|| format!("cannot create work dir '{}'", u.work.display()))?;
            }
            let durability = if cfg.options.volatile { Durability::Volatile } else { Durability::Sync };
            let mut up = Upper::open(&u.upper, &u.work, dialect, durability)?;
            up.set_quota(cfg.options.size_limit, cfg.options.inode_limit)?;
            if cfg.options.index {
                up.open_index(&u.work)?;
            }
            Some(up)
        }
    };
    let layers = Layers::open(&cfg.lowers, upper, &cfg.volumes)?;
    let opts = core_options(cfg, dialect, nofile, layers.upper.is_some());
    let fs = Arc::new(UnionFs::new(layers, opts)?);
    for (host, at) in &cfg.volumes {
        fs.make_volume_parents(at).context(|| format!("cannot make the mount point of volume '{}'", host.display()))?;
    }
    Ok(fs)
}

/// Opens the layers, builds the core and mounts it (the mount is live once this returns,
/// requests wait until the session runs).
pub fn prepare(cfg: &MountConfig) -> Result<Prepared, Error> {
    sproc::limit_malloc_arenas(1);
    let root = sproc::euid() == 0;
    let fs = build_core(cfg)?;
    let mut mount_options = vec![
        MountOption::FSName("unionfs".into()),
        MountOption::CUSTOM("subtype=unionfs".into()),
        MountOption::DefaultPermissions,
    ];
    if cfg.options.ro || cfg.upper.is_none() {
        mount_options.push(MountOption::RO);
    }
    if cfg.options.noexec {
        mount_options.push(MountOption::NoExec);
    }
    if cfg.options.noatime {
        mount_options.push(MountOption::NoAtime);
    }
    if root {
        // Like kernel overlayfs, a root mount honours setuid binaries and device nodes
        // unless asked not to (containers need both).
        mount_options.push(if cfg.options.nosuid == Some(true) { MountOption::NoSuid } else { MountOption::Suid });
        mount_options.push(if cfg.options.nodev == Some(true) { MountOption::NoDev } else { MountOption::Dev });
    }
    let mut config = Config::default();
    config.mount_options = mount_options;
    config.acl = if root || cfg.options.allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(cfg.options.threads.unwrap_or((sproc::cpus() * 2).clamp(4, 16)));
    config.clone_fd = true;
    // Requests stuck on a layer (a hung network or FUSE lower) hold their threads; more are
    // started while every one is stuck, so the rest of the mount keeps being served.
    config.max_threads = Some(MAX_THREADS);
    let uring = cfg.options.wants_uring(root && sproc::idle_policy_reversible());

    // With a size limit every write must pass through the daemon to be counted.
    let passthrough = !cfg.options.nopassthrough && cfg.options.size_limit.is_none();
    let fuse = Fuse::new(fs.clone(), passthrough).context(|| "cannot start worker threads".into())?.with_uring(uring);
    let (uring, read_ahead) = (fuse.uring(), fuse.read_ahead());
    let session = Session::new(fuse, &cfg.mountpoint, &config).map_err(|e| {
        // A normal user's mount fails with "permission denied" for several reasons.
        match crate::preflight::explain(cfg.options.allow_other).filter(|_| !root) {
            Some(why) => Error::msg(format!("cannot mount on '{}': {why}", cfg.mountpoint.display())),
            None => Error::io(format!("cannot mount on '{}'", cfg.mountpoint.display()), e),
        }
    })?;
    let inval =
        NotifierInvalidator::start(session.notifier()).context(|| "cannot start the invalidation thread".into())?;
    fs.set_invalidator(Box::new(inval));
    fs.start_reclaimer().context(|| "cannot start the reclaim thread".into())?;
    fs.start_prefetch().context(|| "cannot start the prefetch threads".into())?;
    fs.start_idle_pages().context(|| "cannot start the idle page thread".into())?;
    if cfg.options.watch {
        fs.start_watch().context(|| "cannot start watching the layers".into())?;
    }
    Ok(Prepared { fs, session, uring, read_ahead })
}

fn serve_inner(cfg: &MountConfig, ready: &mut Ready) -> Result<(), Error> {
    // Before the mount: a SIGTERM right after it (a caller that sees the mount and stops it
    // at once) must unmount, not kill the daemon and leave a dead mount behind. Signals that
    // come before the signal thread runs wait for it.
    let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .context(|| "cannot install signal handlers".into())?;
    let Prepared { fs, mut session, uring, read_ahead } = prepare(cfg)?;
    fs.start_reaper().context(|| "cannot start the reap thread".into())?;
    crate::stats::start();
    // The mount is known by its id and connection from here on: fuser would unmount its
    // path when the session ends, and by then the path may hold whatever was beneath.
    let own = crate::mounts::OwnMount::at(&cfg.mountpoint);
    session.unmount_callable().disarm();
    let pidfile = own.as_ref().and_then(|m| write_pidfile(m.major, m.minor, &cfg.mountpoint));
    if let Some(m) = &own {
        raise_read_ahead(m, read_ahead.load(std::sync::atomic::Ordering::Relaxed));
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let own2 = own.clone();
    let (fs2, pidfile2) = (fs.clone(), pidfile.clone());
    let before_exit = move || {
        fs2.finish_reaper();
        if let Some(p) = pidfile2 {
            remove_own_pidfile(&p);
        }
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || on_signals(signals, own2, done_rx, before_exit))
        .context(|| "cannot start the signal thread".into())?;

    match cfg.options.shown() {
        o if o.is_empty() => tracing::info!("mounted on '{}'", cfg.mountpoint.display()),
        o => tracing::info!("mounted on '{}' with -o {o}", cfg.mountpoint.display()),
    }
    ready.send("ok\n");
    let r = session.run_with(|d| crate::fuse::uring::start(d, &uring, uring_threads_per_cpu()));
    drop(done_tx);
    if r.is_err()
        && let Some(m) = &own
        && let Err(e) = m.unmount(true)
    {
        tracing::warn!("cannot unmount '{}' after the session failed: {e:?}", m.path.display());
    }
    fs.finish_reaper();
    if let Some(p) = pidfile {
        remove_own_pidfile(&p);
    }
    r.context(|| "the FUSE session failed".into())?;
    tracing::info!("unmounted '{}'", cfg.mountpoint.display());
    Ok(())
}

/// Raises the read-ahead window of the mount's own backing device (`/sys/class/bdi/MAJ:MIN`,
/// named by the connection's device numbers) to `kib`: the kernel starts a FUSE mount at
/// 128 KiB and `INIT` can only lower it. Only root may write there; elsewhere the kernel's
/// window stays.
fn raise_read_ahead(m: &crate::mounts::OwnMount, kib: u32) {
    if kib == 0 {
        return;
    }
    let path = format!("/sys/class/bdi/{}:{}/read_ahead_kb", m.major, m.minor);
    let now = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u32>().ok());
    if now.is_none_or(|n| n >= kib) {
        return;
    }
    match std::fs::write(&path, kib.to_string()) {
        Ok(()) => tracing::debug!("read-ahead window {kib} KiB"),
        Err(e) => tracing::debug!("read-ahead window left at {} KiB ({e})", now.unwrap_or(0)),
    }
}

/// Ring threads per CPU for FUSE over io_uring: each keeps one free slot, so they are how
/// many requests a CPU's callers can have in the daemon at once before the kernel queues one
/// until some reply (slow requests do not hold threads: they keep a slot each).
fn uring_threads_per_cpu() -> usize {
    (32 / sproc::cpus().max(1)).clamp(4, 8)
}

fn on_signals(
    mut signals: signal_hook::iterator::Signals,
    own: Option<crate::mounts::OwnMount>,
    done: std::sync::mpsc::Receiver<()>,
    before_exit: impl FnOnce(),
) {
    if signals.forever().next().is_none() {
        return;
    }
    let Some(own) = own else {
        // The mount could not be identified: end the connection by exiting; never unmount
        // a path.
        before_exit();
        std::process::exit(0);
    };
    tracing::info!("signal received: unmounting '{}'", own.path.display());
    match own.unmount(false) {
        Ok(_) => {}
        Err(crate::mounts::UnmountError::Busy) => {
            tracing::info!("'{}' is busy; detaching it", own.path.display());
            if let Err(e) = own.unmount(true) {
                tracing::warn!("cannot detach '{}': {e:?}", own.path.display());
            }
        }
        Err(e) => tracing::warn!("cannot unmount '{}': {e:?}", own.path.display()),
    }
    // The session ends when the kernel ends the connection: at once, unless copies of the
    // mount in other mount namespaces keep it open. A stopped mount ends there too: abort
    // the connection (they get ENOTCONN), or, where the FUSE control filesystem is not
    // mounted, exit, which closes the device and so ends it.
    if done.recv_timeout(Duration::from_millis(300)).is_ok() {
        return;
    }
    tracing::info!("the mount lives on in other mount namespaces: ending its connection");
    let abort = format!("/sys/fs/fuse/connections/{}/abort", own.minor);
    if std::fs::write(&abort, b"1").is_ok() && done.recv_timeout(Duration::from_secs(3)).is_ok() {
        return;
    }
    before_exit();
    std::process::exit(0);
}

/// Where daemons record their pid, by FUSE connection.
pub fn rundir() -> PathBuf {
    if sproc::euid() == 0 {
        return PathBuf::from("/run/unionfs");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("unionfs"),
        _ => PathBuf::from(format!("/tmp/unionfs-{}", sproc::euid())),
    }
}

fn pidfile_path(major: u32, minor: u32) -> PathBuf {
    rundir().join(format!("{major}-{minor}.pid"))
}

fn write_pidfile(major: u32, minor: u32, mountpoint: &Path) -> Option<PathBuf> {
    let dir = rundir();
    if let Err(e) = private_dir(&dir) {
        tracing::debug!("no pid file: {e}");
        return None;
    }
    let path = pidfile_path(major, minor);
    let body = format!("{}\n{}\n", std::process::id(), mountpoint.display());
    let written = crate::outfile::OutFile::create(&path).and_then(|f| {
        let mut f = f.volatile();
        std::io::Write::write_all(&mut f, body.as_bytes()).map_err(|e| Error::io("cannot write the pid file", e))?;
        f.commit()
    });
    match written {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::debug!("cannot write {}: {e}", path.display());
            None
        }
    }
}

/// Removes pid file `p` if it is still this daemon's: the FUSE connection number it is named
/// by is free once the connection ended, and a new mount may have taken it (and the file)
/// since.
fn remove_own_pidfile(p: &Path) {
    let ours = std::fs::read_to_string(p)
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        .is_some_and(|pid| pid == std::process::id());
    if ours && let Err(e) = std::fs::remove_file(p) {
        tracing::debug!("cannot remove {}: {e}", p.display());
    }
}

/// Makes sure `dir` is a directory of this user's that no one else may write (the pid files'
/// directory may be under `/tmp`, where another user could have made it first).
fn private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).recursive(true).create(dir) {
        Ok(()) => {}
        Err(e) => return Err(Error::io(format!("cannot create '{}'", dir.display()), e)),
    }
    let m = std::fs::symlink_metadata(dir).context(|| format!("cannot read '{}'", dir.display()))?;
    if !m.is_dir() || m.uid() != sproc::euid() || m.mode() & 0o022 != 0 {
        return Err(Error::msg(format!("'{}' is not a private directory of this user", dir.display())));
    }
    Ok(())
}

/// The pid of the daemon serving a mount, if it recorded one.
pub fn daemon_pid(major: u32, minor: u32) -> Option<u32> {
    std::fs::read_to_string(pidfile_path(major, minor)).ok()?.lines().next()?.trim().parse().ok()
}

/// The absolute form of a mount point without touching the mount itself (a dead FUSE mount
/// answers every stat with `ENOTCONN`).
pub fn mountpoint_path(p: &Path) -> Result<PathBuf, Error> {
    let abs = std::path::absolute(p).context(|| format!("bad path '{}'", p.display()))?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Ok(abs);
    };
    let parent = std::fs::canonicalize(parent).context(|| format!("cannot resolve '{}'", parent.display()))?;
    Ok(parent.join(name))
}

/// `unionfs umount`: unmounts a union mount and waits for its daemon to exit, which ends
/// the mount everywhere (copies in other mount namespaces get `ENOTCONN`) and releases the
/// upper and work dirs. A busy mount is reported, not waited on (unless `lazy`, which
/// detaches it).
pub fn umount(path: &Path, lazy: bool) -> Result<(), Error> {
    let mnt = mountpoint_path(path)?;
    let entry = crate::mounts::at(&mnt)
        .filter(|m| m.fstype == crate::mounts::FSTYPE)
        .ok_or_else(|| Error::msg(format!("'{}' is not a unionfs mount", mnt.display())))?;
    let pid = daemon_pid(entry.major, entry.minor).filter(|&p| is_daemon(p));
    match crate::mounts::unmount_path(&mnt, lazy) {
        Ok(()) => {}
        Err(crate::mounts::UnmountError::Busy) => {
            let holders = sproc::holders(&mnt);
            let who = if holders.is_empty() {
                "a process has a file open or its working directory there".to_string()
            } else {
                let list: Vec<String> = holders.iter().take(5).map(|(p, c)| format!("{c} (pid {p})")).collect();
                let more = if holders.len() > 5 { format!(" and {} more", holders.len() - 5) } else { String::new() };
                format!("used by {}{more}", list.join(", "))
            };
            return Err(Error::msg(format!(
                "'{}' is busy ({who}); end those, or detach it anyway (umount --lazy, stop -f)",
                mnt.display()
            )));
        }
        Err(crate::mounts::UnmountError::Other(e)) => {
            return Err(Error::msg(format!("cannot unmount '{}': {e}", mnt.display())));
        }
    }
    let Some(pid) = pid else { return Ok(()) };
    // The daemon exits once the kernel ends the connection; copies of the mount in other
    // mount namespaces keep it open: then it is told to end it.
    if wait_exit(pid, Duration::from_secs(1)) {
        return Ok(());
    }
    if let Err(e) = sproc::terminate(pid) {
        tracing::debug!("cannot signal daemon {pid}: {e}");
    }
    if wait_exit(pid, Duration::from_secs(15)) {
        return Ok(());
    }
    Err(Error::msg(format!(
        "'{}' is unmounted here, but its daemon (pid {pid}) did not exit: the upper dir stays in use until it does",
        mnt.display()
    )))
}

/// Waits up to `limit` for process `pid` to exit; returns whether it did.
fn wait_exit(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while sproc::process_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Whether process `pid` is a unionfs daemon (a pid file may outlive its daemon, and the
/// number be reused).
fn is_daemon(pid: u32) -> bool {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
    let me = std::env::current_exe();
    match (exe, me) {
        (Ok(a), Ok(b)) => a == b || a.file_name() == b.file_name(),
        // Another user's process: /proc hides its executable.
        _ => sproc::process_alive(pid),
    }
}

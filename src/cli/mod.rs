//! The command line: clap definitions (their doc comments are the `--help` text) and the
//! dispatch from a parsed command to the code that runs it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub mod manager;

use crate::config::{MountConfig, MountOptions, MountRequest};
use crate::error::Error;

/// A userspace copy-on-write union filesystem with kernel overlayfs semantics.
///
/// unionfs merges read-only lower layers with one writable upper directory into a single
/// tree at a mount point. Reads fall through the layers; the first change to a lower file
/// copies it up; deletions leave whiteouts. The upper uses kernel overlayfs's on-disk
/// format, so `mount -t overlay` can mount it later and shows the same tree.
#[derive(Debug, Parser)]
#[command(name = "unionfs", version, propagate_version = true, arg_required_else_help = true)]
pub struct Cli {
    /// Log every operation (to stderr, or to --log for a background mount).
    #[arg(long, global = true, help_heading = "Global options")]
    pub debug: bool,

    /// State root of the container manager. Default: $UNIONFS_ROOT, else /var/lib/unionfs
    /// as root, else $XDG_DATA_HOME/unionfs (~/.local/share/unionfs).
    #[arg(long, global = true, value_name = "DIR", help_heading = "Global options")]
    pub root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Mount a union of lower layers and an optional upper dir.
    ///
    /// Layer order: in --lower L1:L2:L3 the LEFTMOST layer is the TOPMOST (L1 hides L2, which
    /// hides L3), as in kernel overlayfs's lowerdir=. A literal ':' in a path is written '\:'.
    /// Changes go to --upper; without --upper the mount is read-only.
    ///
    /// Without -f the command returns once the mount is live and the daemon keeps serving in
    /// the background; `unionfs umount MOUNTPOINT` (or SIGTERM to the daemon) ends it.
    Mount(MountArgs),
    /// Unmount a union mount and wait for its daemon to exit.
    ///
    /// A busy mount (open files, a working directory inside) is reported, not waited on.
    Umount(UmountArgs),
    /// Build layer directories from a fixture.
    ///
    /// A fixture is plain trees plus a `specials` file for what git cannot store:
    /// whiteouts, opaque markers, xattrs, modes, owners, links.
    BuildLayers(BuildLayersArgs),
    #[command(flatten)]
    Manager(manager::ManagerCmd),
    /// Print the version (as --version).
    #[command(hide = true)]
    Version,
    /// Run a command in a throwaway writable view of directories.
    ///
    /// Then print what it changed (A/C/D); the directories themselves are never changed.
    /// The exit code is the command's.
    Sandbox(SandboxArgs),
    /// Check an upper layer for what a crash or a foreign tool can leave.
    ///
    /// Temporaries in the work dir, whiteouts inside opaque directories, whiteouts that
    /// hide nothing (with --lower), markers in another dialect (OCI `.wh.` files, xattr
    /// whiteouts, the other xattr namespace), malformed origin and ownership xattrs.
    /// Changes nothing unless --repair. Exit status: 0 nothing (left) to fix, 1 problems
    /// remain.
    Check(CheckArgs),
    /// Show a live mount's counters without stopping it.
    ///
    /// Requests by type with mean and p50/p90/p99 latency, copy-ups and bytes copied,
    /// whiteouts written, cache hits.
    Stats(StatsArgs),
    /// Serve containerd's snapshots API, so containerd keeps containers on unionfs.
    ///
    /// containerd takes it as a proxy plugin: in its config.toml,
    /// `[proxy_plugins.unionfs] type = "snapshot" address = "SOCKET"`, then
    /// `--snapshotter unionfs` (ctr) or the CRI plugin's `snapshotter = "unionfs"`.
    /// --root is the snapshotter's state directory here (default /var/lib/unionfs/snapshotter
    /// as root, else $XDG_DATA_HOME/unionfs/snapshotter). Serves until SIGTERM or SIGINT.
    Snapshotter(SnapshotterArgs),
}

/// `unionfs snapshotter`.
#[derive(Debug, Args)]
pub struct SnapshotterArgs {
    /// The unix socket to serve (default /run/unionfs/snapshotter.sock as root, else
    /// $XDG_RUNTIME_DIR/unionfs/snapshotter.sock).
    #[arg(long, value_name = "SOCKET")]
    pub address: Option<PathBuf>,
}

/// `unionfs stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// A union mount point.
    pub mountpoint: PathBuf,
    /// Print the raw `name value` lines (stable, for scripts).
    #[arg(long)]
    pub raw: bool,
}

/// `unionfs check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The upper layer.
    pub upper: PathBuf,
    /// Its work dir (default: `.NAME.work` beside the upper dir, as for mount).
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
    /// The lower layers, LEFTMOST = TOPMOST, to find whiteouts that hide nothing.
    #[arg(long, short = 'l', value_name = "DIR[:DIR...]")]
    pub lower: Option<String>,
    /// Fix what is found.
    #[arg(long)]
    pub repair: bool,
    /// The upper uses user.overlay.* markers (a rootless upper; default: as a mount by this
    /// user would write them).
    #[arg(long)]
    pub userxattr: bool,
}

/// `unionfs sandbox`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// The directories to show, colon-separated, LEFTMOST = TOPMOST ('\:' escapes a colon).
    #[arg(long, short = 'l', value_name = "DIR[:DIR...]")]
    pub lower: String,
    /// Keep the changes in this directory (default: thrown away).
    #[arg(long, value_name = "UPPER")]
    pub keep: Option<PathBuf>,
    /// The command and its arguments (after `--`); it runs with the view as its working
    /// directory.
    #[arg(last = true, required = true)]
    pub command: Vec<std::ffi::OsString>,
}

/// `unionfs mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// Lower (read-only) layers, colon-separated, LEFTMOST = TOPMOST; '\:' escapes a colon.
    #[arg(long, short = 'l', value_name = "L1:L2:...")]
    pub lower: String,
    /// Writable upper directory (created if missing, its parent must exist). Omit for a
    /// read-only mount (writes fail with EROFS).
    #[arg(long, short = 'u', value_name = "DIR")]
    pub upper: Option<PathBuf>,
    /// Work directory for atomic copy-up; must be on the upper's filesystem and outside it.
    /// Default: '.NAME.work' beside the upper dir NAME.
    #[arg(long, short = 'w', value_name = "DIR")]
    pub work: Option<PathBuf>,
    /// Stay in the foreground (serve until unmounted).
    #[arg(long, short = 'f')]
    pub foreground: bool,
    /// Live layers: changes made directly in the upper or a lower directory while mounted
    /// show in the mount at once (inotify; also `-o watch`).
    #[arg(long)]
    pub watch: bool,
    /// Most bytes the upper may allocate (like 10M, 2G; also -o size_limit=): writes, new
    /// files and copy-ups past it fail with EDQUOT, and df shows the limit. Turns off
    /// passthrough (every write is counted by the daemon).
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    pub size_limit: Option<u64>,
    /// Most objects the upper may hold, whiteouts included (also -o inode_limit=).
    #[arg(long, value_name = "N")]
    pub inode_limit: Option<u64>,
    /// Mount options, comma-separated, may repeat (--help lists them).
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    /// Background daemon log file (default: none; errors at start-up are always printed).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Show host directory HOSTDIR at /path of the mount as a plain directory: writes go
    /// straight to it (no copy-up, no whiteouts). Needs --upper. May repeat.
    #[arg(long, short = 'v', value_name = "HOSTDIR:/path")]
    pub volume: Vec<String>,
    /// Where to mount (an existing directory).
    pub mountpoint: PathBuf,
}

/// `unionfs umount`.
#[derive(Debug, Args)]
pub struct UmountArgs {
    /// Detach a busy mount now and let it go away when no longer used.
    #[arg(long, short = 'l')]
    pub lazy: bool,
    /// The union mount point.
    pub mountpoint: PathBuf,
}

/// `unionfs build-layers`.
#[derive(Debug, Args)]
pub struct BuildLayersArgs {
    /// Fixture directory: one subdirectory per layer plus an optional `specials` manifest.
    pub fixture: PathBuf,
    /// Where to build the layers (created; must not exist or be empty).
    pub dest: PathBuf,
}

impl MountArgs {
    /// Turns the raw arguments into a request.
    pub fn request(&self, debug: bool) -> MountRequest {
        let mut options = MountOptions::default();
        for o in &self.options {
            options.apply(o);
        }
        options.watch |= self.watch;
        if let Some(s) = self.size_limit {
            options.size_limit = Some(s);
        }
        if let Some(n) = self.inode_limit {
            options.inode_limit = Some(n);
        }
        MountRequest {
            lower: Some(self.lower.clone()),
            upper: self.upper.clone(),
            work: self.work.clone(),
            mountpoint: self.mountpoint.clone(),
            options,
            foreground: self.foreground,
            debug,
            log: self.log.clone(),
            volumes: self.volume.clone(),
        }
    }
}

impl Cli {
    /// Parses the process's arguments; `unionfs mount --help` lists the mount options from
    /// their table ([`crate::options::help`]).
    pub fn parse_args() -> Result<Cli, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let cmd =
            Cli::command().mut_subcommand("mount", |m| m.mut_arg("options", |a| a.long_help(crate::options::help())));
        Cli::from_arg_matches(&cmd.try_get_matches()?)
    }
}

/// The names of the subcommands (to tell them from fuse-overlayfs-style arguments).
pub fn subcommand_names() -> Vec<String> {
    use clap::CommandFactory;
    let mut v: Vec<String> = Cli::command().get_subcommands().map(|s| s.get_name().to_string()).collect();
    v.push("help".into());
    v
}

/// Validates and performs a mount request (from `unionfs mount` or the compat form). Unknown
/// options are reported in one warning line, then ignored.
pub fn mount(req: MountRequest) -> Result<(), Error> {
    let cfg = MountConfig::validate(req)?;
    if !cfg.options.unknown.is_empty() && std::env::var_os("UNIONFS_READY_FD").is_none() {
        eprintln!("unionfs: warning: ignoring unknown mount options: {}", cfg.options.unknown.join(", "));
    }
    crate::daemon::mount(cfg)
}

/// `unionfs check`: prints the findings; returns the exit status.
pub fn check(a: &CheckArgs) -> Result<u8, Error> {
    use crate::union::whiteout::Dialect;
    let lowers = match &a.lower {
        Some(l) => crate::config::split_lower(l)?,
        None => Vec::new(),
    };
    let root = crate::sys::proc::privileged();
    let req = crate::check::CheckRequest {
        work: a.work.clone().unwrap_or_else(|| crate::config::default_work(&a.upper)),
        upper: a.upper.clone(),
        lowers,
        dialect: if a.userxattr || !root { Dialect::User } else { Dialect::Trusted },
        repair: a.repair,
    };
    let findings = crate::check::check(&req)?;
    Ok(crate::check::report(&findings, a.repair))
}

/// `unionfs sandbox`: mounts, runs the command in the view, unmounts, prints the changes;
/// returns the command's exit code (128 + signal if it was killed).
pub fn sandbox(a: &SandboxArgs) -> Result<u8, Error> {
    // The change report reads the upper directly, where a redirected directory would show
    // as new and empty: directory renames fall back to copies here (EXDEV, as in Docker).
    let mut b =
        crate::api::UnionMount::builder().lowers(crate::config::split_lower(&a.lower)?).option("redirect_dir=off");
    if let Some(k) = &a.keep {
        b = b.upper(k);
    }
    let view = b.mount()?;
    let (prog, args) = a.command.split_first().ok_or_else(|| Error::msg("no command given"))?;
    let status = std::process::Command::new(prog)
        .args(args)
        .current_dir(view.path())
        .status()
        .map_err(|e| Error::io(format!("cannot run '{}'", prog.to_string_lossy()), e));
    let changes = view.changes();
    view.unmount()?;
    let status = status?;
    for (c, p) in changes? {
        println!("{} /{}", c.letter(), p.display());
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        _ => 1,
    })
}

/// Runs a parsed command line; returns the exit code (`check` and `sandbox` have their own,
/// every other command 0, or an error).
pub fn run_code(cli: Cli) -> Result<u8, Error> {
    // Deep trees (layers, imports being cleaned up) are walked one descriptor per level.
    crate::sys::proc::raise_nofile_limit();
    let root = cli.root.as_deref();
    let out = match cli.command {
        Cmd::Mount(a) => return mount(a.request(cli.debug)).map(|()| 0),
        Cmd::Umount(u) => return crate::daemon::umount(&u.mountpoint, u.lazy).map(|()| 0),
        Cmd::BuildLayers(b) => return crate::fixture::build(&b.fixture, &b.dest).map(|_| 0),
        Cmd::Manager(m) => return manager::run(root, m),
        Cmd::Version => format!("unionfs {}\n", env!("CARGO_PKG_VERSION")),
        Cmd::Stats(a) => stats(&a)?,
        // 0 clean, 1 problems remain, 2 the check itself failed.
        Cmd::Check(a) => {
            return Ok(check(&a).unwrap_or_else(|e| {
                eprintln!("unionfs: {e}");
                2
            }));
        }
        Cmd::Sandbox(a) => return sandbox(&a),
        Cmd::Snapshotter(a) => {
            let opts = crate::snapshotter::Options::defaults(cli.root, a.address);
            return crate::snapshotter::run(&opts).map(|()| 0);
        }
    };
    print!("{out}");
    Ok(0)
}

/// `unionfs stats`: reads the counters the daemon serves on the mount's root.
fn stats(a: &StatsArgs) -> Result<String, Error> {
    let name = std::ffi::CString::new(crate::stats::XATTR).map_err(|_| Error::msg("bad attribute name"))?;
    let dir = std::fs::File::open(&a.mountpoint)
        .map_err(|e| Error::msg(format!("cannot open '{}': {e}", a.mountpoint.display())))?;
    let raw = match crate::sys::xattr::get(crate::sys::xattr::XTarget::Fd(std::os::fd::AsFd::as_fd(&dir)), &name) {
        Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
        _ => return Err(Error::msg(format!("'{}' is not a unionfs mount", a.mountpoint.display()))),
    };
    if a.raw {
        return Ok(raw);
    }
    Ok(format_stats(&raw))
}

/// The raw counters as two tables: events, then requests.
fn format_stats(raw: &str) -> String {
    let mut events = vec![vec!["COUNTER".to_string(), "VALUE".to_string()]];
    let mut ops = vec![["REQUEST", "COUNT", "MEAN", "P50", "P90", "P99"].map(String::from).to_vec()];
    for line in raw.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["op", name, "count", c, "mean_us", m, "p50_us", a, "p90_us", b, "p99_us", d] => {
                let us = |v: &str| format!("{v}µs");
                ops.push(vec![
                    name.to_string(),
                    c.to_string(),
                    us(m),
                    format!("<{}", us(a)),
                    format!("<{}", us(b)),
                    format!("<{}", us(d)),
                ]);
            }
            [name, value] => events.push(vec![name.to_string(), value.to_string()]),
            _ => {}
        }
    }
    format!("{}\n{}", crate::manager::report::table(&events), crate::manager::report::table(&ops))
}

/// Parses a `--size-limit` value.
pub(crate) fn size_arg(v: &str) -> Result<u64, String> {
    crate::config::parse_size(v).filter(|n| *n > 0).ok_or_else(|| format!("'{v}' is not a size (like 512M or 2G)"))
}

//! The command line: clap definitions (their doc comments are the `--help` text) and the
//! dispatch from a parsed command to the code that runs it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{MountConfig, MountOptions, MountRequest};
use crate::error::Error;

/// A userspace copy-on-write union filesystem with kernel overlayfs semantics.
///
/// unionfs merges read-only lower layers with one writable upper directory into a single
/// tree at a mount point. Reads fall through the layers; the first change to a lower file
/// copies it up; deletions leave whiteouts. The upper uses kernel overlayfs's on-disk
/// format, so `mount -t overlay` can mount it later and shows the same tree.
#[derive(Debug, Parser)]
#[command(name = "unionfs", version, propagate_version = true)]
pub struct Cli {
    /// Log every operation (to stderr, or to --log for a background mount).
    #[arg(long, global = true)]
    pub debug: bool,

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
    /// Build layer directories from a fixture manifest (plain trees plus a `specials` file
    /// for what git cannot store: whiteouts, opaque markers, xattrs, modes, owners, links).
    BuildLayers(BuildLayersArgs),
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
    /// Mount options, comma-separated, may repeat: ro, rw, nosuid, suid, nodev, dev, noexec,
    /// noatime, volatile / fsync=0 (skip fsync), allow_other. Unknown ones are warned about.
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

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Cmd::Mount(m) => {
            let cfg = MountConfig::validate(m.request(cli.debug))?;
            crate::daemon::mount(cfg)
        }
        Cmd::Umount(u) => crate::daemon::umount(&u.mountpoint, u.lazy),
        Cmd::BuildLayers(b) => crate::fixture::build(&b.fixture, &b.dest).map(|_| ()),
    }
}

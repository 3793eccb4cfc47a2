//! `unionfs snapshotter`: containerd's snapshots API (`containerd.services.snapshots.v1`)
//! over gRPC on a unix socket, so containerd (and a Kubernetes node's CRI) keeps its
//! container root filesystems on unionfs. containerd takes it as a proxy plugin.
//!
//! ```text
//!  containerd ──gRPC──► service (tonic, tokio)  ──► core (rules, values)  ──► meta (redb)
//!                                                                        └──► dirs (snapshots/<id>/{fs,work})
//!  containerd ──mount.fuse3 … -t /path/unionfs──► a unionfs FUSE daemon per mounted snapshot
//! ```
//!
//! The snapshotter mounts nothing itself: `Prepare`/`View`/`Mounts` return how to mount (a
//! bind mount, or a `fuse3.<this binary>` mount that containerd runs through `mount.fuse3`),
//! and each such mount is an ordinary unionfs daemon. tokio runs only in this command; the
//! FUSE daemon never starts a runtime.

pub mod core;
pub mod dirs;
pub mod error;
pub mod filter;
pub mod meta;
pub mod proto;
pub mod service;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Context, Error};

/// Where the snapshotter keeps its state, and the socket it serves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The root directory (metadata file, snapshot directories).
    pub root: PathBuf,
    /// The unix socket containerd connects to.
    pub address: PathBuf,
}

impl Options {
    /// `/var/lib/unionfs/snapshotter` and `/run/unionfs/snapshotter.sock` as root; for
    /// another user `$XDG_DATA_HOME/unionfs/snapshotter` (`~/.local/share/…`) and
    /// `$XDG_RUNTIME_DIR/unionfs/snapshotter.sock` (else the root directory holds it).
    pub fn defaults(root: Option<PathBuf>, address: Option<PathBuf>) -> Options {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let as_root = crate::sys::proc::euid() == 0;
        let root = root.unwrap_or_else(|| {
            if as_root {
                PathBuf::from("/var/lib/unionfs/snapshotter")
            } else {
                crate::manager::store::user_data_dir().join("unionfs/snapshotter")
            }
        });
        let address = address.unwrap_or_else(|| {
            if as_root {
                PathBuf::from("/run/unionfs/snapshotter.sock")
            } else {
                env("XDG_RUNTIME_DIR")
                    .map_or_else(|| root.join("snapshotter.sock"), |d| d.join("unionfs/snapshotter.sock"))
            }
        });
        Options { root, address }
    }
}

/// The program containerd is to run for FUSE mounts: this binary by absolute path (under
/// `mount.fuse3`'s cleared `PATH` a bare `unionfs` can be another program of that name).
fn program() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().context(|| "cannot find this program's own path".to_string())?;
    Ok(std::fs::canonicalize(&exe).unwrap_or(exe))
}

/// Binds `path`, replacing a socket no one serves; a socket that answers, or a file that is
/// not a socket, is an error.
fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).context(|| format!("cannot create '{}'", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::msg(format!(
                    "another process serves '{}'; stop it or choose another --address",
                    path.display()
                )));
            }
            std::fs::remove_file(path).context(|| format!("cannot remove the stale socket '{}'", path.display()))?;
        }
        Ok(_) => {
            return Err(Error::msg(format!(
                "'{}' exists and is not a socket; choose another --address",
                path.display()
            )));
        }
        Err(_) => {}
    }
    let l =
        std::os::unix::net::UnixListener::bind(path).context(|| format!("cannot listen on '{}'", path.display()))?;
    // Whoever can connect can remove snapshots: the owner only (containerd runs as the
    // same user).
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .context(|| format!("cannot restrict '{}' to its owner", path.display()))?;
    l.set_nonblocking(true).context(|| "cannot set up the socket".to_string())?;
    Ok(l)
}

/// The identity (device, inode) of the file at `path`, not following a symlink.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Serves until `SIGTERM` or `SIGINT`, then removes the socket.
pub fn run(opts: &Options) -> Result<(), Error> {
    let core = Arc::new(core::Snapshotter::open(&opts.root, program()?)?);
    let listener = bind(&opts.address)?;
    let ours = identity(&opts.address);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("snapshotter")
        .build()
        .context(|| "cannot start the snapshotter's threads".to_string())?;
    eprintln!(
        "unionfs snapshotter: serving containerd's snapshots API on '{}' (state in '{}').",
        opts.address.display(),
        opts.root.display()
    );
    let served = runtime.block_on(async {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let stop = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        tonic::transport::Server::builder()
            .add_service(proto::snapshots::snapshots_server::SnapshotsServer::new(service::Service::new(core)))
            .serve_with_incoming_shutdown(incoming, stop)
            .await
            .map_err(std::io::Error::other)
    });
    // The socket goes with the server, unless another file has taken its name since.
    if ours.is_some() && identity(&opts.address) == ours {
        let _ignored = std::fs::remove_file(&opts.address);
    }
    served.context(|| format!("serving on '{}' failed", opts.address.display()))
}

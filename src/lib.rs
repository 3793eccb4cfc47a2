//! unionfs: a userspace copy-on-write union filesystem with kernel overlayfs semantics.
//!
//! # Request flow
//! ```text
//!  kernel (FUSE) ──► fuse/ (adapter: args in, Reply out, errno mapping)
//!                        │
//!                        ▼
//!                   union/ (core: lookup, readdir, copy-up, namespace, attrs, files)
//!                        │           returns values or Errno, no FUSE types
//!                        ▼
//!                   sys/  (the only syscalls: safe wrappers, openat2 beneath layer roots)
//! ```
//!
//! # Module map
//! * [`cli`], [`config`]: command line → validated mount configuration; [`compat`]:
//!   fuse-overlayfs's command line (container engines, `mount -t fuse.unionfs`).
//! * [`daemon`]: background start with readiness handshake, signals, unmount.
//! * [`check`]: `unionfs check`: finds and repairs what crashes leave in an upper.
//! * [`fuse`]: the FUSE adapter.
//! * [`union`]: the filesystem core (see its docs for invariants and lock order).
//! * [`sys`]: system-call wrappers; the only `unsafe`.
//! * [`mounts`]: the kernel mount table.
//! * [`outfile`]: files commands write whole, never through a planted symlink.
//! * [`fixture`]: builds layer trees (with whiteouts, xattrs, modes) from a manifest.
//! * [`api`]: mounting from Rust (a throwaway writable view, unmounted on drop).
//! * [`manager`]: the container manager (images, containers, volumes).
//! * [`snapshotter`]: containerd's snapshots API over gRPC (`unionfs snapshotter`).
//! * [`error`]: `Errno` on the request path, `Error` at the edges.
#![deny(unsafe_code)]

pub mod api;
pub mod check;
pub mod cli;
pub mod compat;
pub mod config;
pub mod daemon;
pub mod error;
pub mod fixture;
pub mod fuse;
pub mod hooks;
pub mod manager;
pub mod mounts;
pub mod options;
pub mod outfile;
pub mod preflight;
pub mod snapshotter;
pub mod stats;
pub mod sys;
pub mod union;

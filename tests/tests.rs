//! Every integration test, in one binary (as ripgrep's): `tests/common` is compiled once.
//! Each module is the tests of one area; `cargo test --test tests MODULE::` runs one.
//! Tests that change what every mount does (FUSE over io_uring switched on for the whole
//! kernel, in `uring`) run alone: see `common::machine`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

mod adversarial;
mod api;
mod check;
mod cli;
mod compat;
mod containerd;
#[allow(unsafe_code)] // libc calls std does not wrap (seekdir, mmap, ioctl, truncate)
mod copy_up;
mod core;
mod crash;
mod differential;
mod difftest;
mod dir_ops;
mod docker;
#[allow(unsafe_code)] // libc calls std does not wrap (seekdir, mmap, ioctl, truncate)
mod full_disk;
mod hostile;
#[allow(unsafe_code)] // libc calls std does not wrap (seekdir, mmap, ioctl, truncate)
mod idle_pages;
mod images;
mod index;
mod inodes;
#[allow(unsafe_code)] // libc calls std does not wrap (seekdir, mmap, ioctl, truncate)
mod io;
mod kernel_equal;
mod lean;
mod lookup;
mod manager;
mod metacopy;
mod permissions;
mod podman;
mod prefetch;
mod proptest_ops;
mod quota;
#[allow(unsafe_code)] // libc calls std does not wrap (seekdir, mmap, ioctl, truncate)
mod readdir;
mod readme;
mod redirect;
mod rename;
mod rootless;
mod setup_errors;
mod snapshotter;
mod stats;
#[allow(unsafe_code)] // libc calls std does not wrap (seekdir, mmap, ioctl, truncate)
mod stress;
mod uring;
mod volumes;
mod watch;
mod xattr;

#!/usr/bin/env bash
# Runs every test: formatting, lints, docs, unit tests, integration tests that mount through
# FUSE (including the differential test against kernel overlayfs, as root), and pjdfstest
# against a unionfs mount compared with kernel overlayfs. Installs what it needs first.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step "system packages"
if [ "$(id -u)" = 0 ]; then
  scripts/deps.sh podman runc uidmap busybox-static libacl1-dev btrfs-progs zstd libcap2-bin e2fsprogs
else
  scripts/deps.sh
fi
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --locked --all-targets -- -D warnings
step "cargo doc -D warnings"
RUSTDOCFLAGS=-Dwarnings cargo doc --locked --no-deps --document-private-items --quiet
step "cargo build --release, install (for mount -t fuse.unionfs)"
cargo build --locked --release
if [ "$(id -u)" = 0 ]; then
  scripts/install.sh
  export UNIONFS_REQUIRE_INSTALL=1 UNIONFS_REQUIRE_PODMAN=1
fi
step "cargo test (real FUSE mounts; kernel overlayfs, rootless user and podman as root)"
UNIONFS_REQUIRE_FUSE=1 cargo test --locked --release
step "cargo package"
# --no-verify: the verify build would use crates.io's fuser, not the vendored one with the
# io_uring dispatch hook (vendor/fuser/UNIONFS.md); the ordinary build above covers it.
cargo package --locked --allow-dirty --no-verify --quiet
step "pjdfstest: unionfs versus kernel overlayfs"
scripts/pjdfstest.sh
step "all tests passed"

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
  scripts/deps.sh podman runc containerd docker.io uidmap busybox-static libacl1-dev btrfs-progs zstd libcap2-bin e2fsprogs
else
  scripts/deps.sh
fi
step "vendor/fuser is fuser 0.18.0 with vendor/fuser/patches"
scripts/fuser-fork.sh --check
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --locked --all-targets --all-features -- -D warnings
step "cargo doc -D warnings"
RUSTDOCFLAGS=-Dwarnings cargo doc --locked --no-deps --document-private-items --quiet
step "cargo build --release, install (for mount -t fuse.unionfs)"
cargo build --locked --release
# The binary that ships has no test hooks (src/hooks.rs): nothing in it reads their variables.
if grep -aq -e UNIONFS_FAULT_AFTER -e UNIONFS_FAULT_URING -e UNIONFS_REAP_DELAY_MS target/release/unionfs; then
  echo "target/release/unionfs contains a test hook" >&2
  exit 1
fi
# As root every test can run here, and a test that cannot (no io_uring, podman missing, …)
# fails instead of passing without having run; as a normal user those needing root are
# skipped, each saying so, and counted below.
require=
if [ "$(id -u)" = 0 ]; then
  scripts/install.sh
  require=all
fi
log=$(mktemp "${TMPDIR:-/tmp}/unionfs-test-log.XXXXXX")
# Machine settings the tests change (the test user needs /dev/fuse open to it; the io_uring
# tests switch fuse.enable_uring): put back as they were when this command ends.
fuse_mode=$(stat -c %a /dev/fuse 2>/dev/null || true)
uring_param=/sys/module/fuse/parameters/enable_uring
uring_was=$(cat "$uring_param" 2>/dev/null || true)
restore() {
  rm -f "$log"
  if [ "$(id -u)" = 0 ]; then
    [ -z "$fuse_mode" ] || chmod "$fuse_mode" /dev/fuse
    [ -z "$uring_was" ] || echo "$uring_was" > "$uring_param" 2>/dev/null || true
  fi
}
trap restore EXIT
step "cargo test (real FUSE mounts; kernel overlayfs, rootless user and podman as root)"
set +e
UNIONFS_TEST_REQUIRE=$require cargo test --locked --release --features test-hooks --no-fail-fast 2>&1 | tee "$log"
tests_rc=${PIPESTATUS[0]}
set -e
step "cargo package"
# --no-verify: the verify build would use crates.io's fuser, not the patched one
# (vendor/fuser/UNIONFS.md); the ordinary build above covers it.
cargo package --locked --allow-dirty --no-verify --quiet
step "pjdfstest: unionfs versus kernel overlayfs"
pjd=ok
[ "$(id -u)" = 0 ] || pjd="skipped (it needs root)"
scripts/pjdfstest.sh || pjd=failed
# The summary: every failure, then the totals.
sum() { grep -a '^test result:' "$log" | grep -o "[0-9]* $1" | awk '{n += $1} END {print n + 0}'; }
passed=$(sum passed) failed=$(sum failed) ignored=$(sum ignored)
skipped=$(grep -ac '^SKIPPED ' "$log" || true)
if [ "$failed" != 0 ] || [ "$tests_rc" != 0 ]; then
  step "failed tests"
  grep -a -E '^test .* FAILED$|^error: (test failed|could not compile)' "$log" || true
fi
[ "$skipped" = 0 ] || { step "skipped tests"; grep -a '^SKIPPED ' "$log"; }
echo
echo "$passed passed, $failed failed, $skipped skipped, $ignored ignored (run by their outer tests); pjdfstest against kernel overlayfs: $pjd"
[ "$tests_rc" = 0 ] && [ "$pjd" != failed ]

#!/usr/bin/env bash
# The benchmark (not a test): unionfs against ext4, kernel overlayfs, fuse-overlayfs 1.x and
# 2.0, and unionfs-fuse, on one layer stack in one run. Installs what it needs (fio, the
# peers; fuse-overlayfs 2.0 is built with cargo into a scratch directory and used only to
# measure), builds unionfs, and runs scripts/bench.py. Needs root.
#   scripts/bench.sh [--systems kernel,unionfs,...] [--reps N] [--only 'find cold,...'] [--out DIR]
#     [--layer-cache cold|warm]     (cold runs: every cache dropped, or only the union's: a fresh
#                                     mount over layers whose caches are warm)
#     [--base OTHER-UNIONFS-BINARY]   (measured as system unionfs-base, and unionfs-base-nopt without passthrough: e.g. a build of main)
#     [--containers N]                (then N containers of one image: scripts/bench-containers.sh;
#                                     default 20, 0: not; not with --only)
# The script switches fuse.enable_uring on for its run (and back), so `unionfs` runs on FUSE
# over io_uring, its default where the kernel offers it, and `unionfs-nouring` on /dev/fuse,
# what a kernel without it gives; UNIONFS_BENCH_URING=0 leaves the parameter as it is.
# Results: $UNIONFS_BENCH_DIR (default /var/tmp/unionfs-bench)/{results.md,results.json,bench.svg}.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench: needs root (kernel overlayfs, drop_caches)" >&2; exit 1; }
"$repo/scripts/deps.sh" fio fuse-overlayfs unionfs-fuse python3
fo2_root=${FO2_ROOT:-/var/tmp/unionfs-bench-fo2}
if [ ! -x "$fo2_root/bin/fuse-overlayfs" ]; then
  echo "bench: building fuse-overlayfs 2.0 into $fo2_root (a peer to measure, not a dependency)" >&2
  cargo install --quiet fuse-overlayfs --version 2.0.0 --root "$fo2_root"
fi
(cd "$repo" && cargo build --release --quiet)
# FUSE over io_uring (the kernel has it off by default): on for the run, then back.
param=/sys/module/fuse/parameters/enable_uring
if [ -w "$param" ] && [ "${UNIONFS_BENCH_URING:-1}" = 1 ]; then
  was=$(cat "$param")
  trap 'echo "$was" > "$param"' EXIT
  echo Y > "$param"
  echo "bench: FUSE over io_uring enabled for this run (fuse.enable_uring was $was)" >&2
fi
python3 "$repo/scripts/bench.py" --unionfs "$repo/target/release/unionfs" \
  --fo2 "$fo2_root/bin/fuse-overlayfs" "$@"

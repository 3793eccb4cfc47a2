#!/usr/bin/env bash
# Runs the differential test against kernel overlayfs (tests/difftest) with a budget of your
# choosing, as root:
#   scripts/difftest.sh [--seeds N] [--ops M] [--first S] [--variants default,redirect-off,...]
# Variants: default, redirect-off, index, metacopy, nopassthrough, rootless (all by default). Prints one
# line per variant: seeds x ops, failures, and each failure shrunk to a short reproduction.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
seeds=200 ops=400 first=1 variants="default,redirect-off,index,metacopy,nopassthrough,rootless"
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds=$2; shift 2 ;;
    --ops) ops=$2; shift 2 ;;
    --first) first=$2; shift 2 ;;
    --variants) variants=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "difftest.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$seeds" "$ops" "$first"; do
  case "$n" in ''|*[!0-9]*) echo "difftest.sh: '$n' is not a number" >&2; exit 2 ;; esac
done
[ "$(id -u)" = 0 ] || { echo "difftest.sh: kernel overlayfs needs root; run it as root" >&2; exit 2; }
filters=()
IFS=, read -ra wanted <<< "$variants"
for v in "${wanted[@]}"; do
  case "$v" in
    default|redirect-off|index|metacopy|nopassthrough|rootless) filters+=("difftest::random_sequences_match_kernel_overlayfs_${v//-/_}") ;;
    *) echo "difftest.sh: unknown variant '$v'" >&2; exit 2 ;;
  esac
done
UNIONFS_DIFF_SEEDS=$seeds UNIONFS_DIFF_OPS=$ops UNIONFS_DIFF_FIRST_SEED=$first \
  cargo test --release --test tests -- --include-ignored --exact --nocapture --test-threads "${#filters[@]}" \
  "${filters[@]}"

#!/usr/bin/env bash
# One command on a fresh Debian machine: install what unionfs needs (fuse3, attr), build it,
# and run the main job on layers-fixtures/ (scripts/demo.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
command -v cargo >/dev/null || { echo "setup: cargo (Rust >= 1.90) is required: https://rustup.rs" >&2; exit 1; }
scripts/deps.sh
[ -e /dev/fuse ] || { echo "setup: /dev/fuse is missing (modprobe fuse)" >&2; exit 1; }
cargo build --release --locked
echo "built $repo/target/release/unionfs"
# On the PATH: /usr/local/bin as root, ~/.local/bin otherwise (scripts/install.sh).
if [ "$(id -u)" = 0 ]; then scripts/install.sh; else PREFIX="$HOME/.local" scripts/install.sh; fi
exec scripts/demo.sh

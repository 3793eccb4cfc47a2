#!/usr/bin/env bash
# Installs unionfs as /usr/local/bin/unionfs (PREFIX=... to change), so that container engines
# can name it as mount_program and `mount -t fuse.unionfs` / fstab lines work: mount.fuse3
# runs the program named after the dot from a system bin directory.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${PREFIX:-/usr/local}
cd "$repo"
[ -x target/release/unionfs ] || cargo build --release --locked
install -D -m 0755 target/release/unionfs "$prefix/bin/unionfs"
echo "installed $prefix/bin/unionfs"
echo "mount -t fuse.unionfs none MNT -o lowerdir=L1:L2,upperdir=U,workdir=W   now works"

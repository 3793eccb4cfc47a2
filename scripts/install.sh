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
# Another program named unionfs (Debian's unionfs-fuse is /usr/bin/unionfs) may be the one a
# shell finds: say so, with the path to use.
found=$(command -v unionfs || true)
if [ -z "$found" ]; then
  echo "note: $prefix/bin is not on your PATH; run $prefix/bin/unionfs, or add $prefix/bin to PATH"
elif [ "$(readlink -f "$found")" != "$(readlink -f "$prefix/bin/unionfs")" ]; then
  echo "warning: 'unionfs' on your PATH is $found, another program (unionfs-fuse?); run $prefix/bin/unionfs, or put $prefix/bin first on PATH" >&2
fi
for other in /usr/bin/unionfs /bin/unionfs; do
  if [ -x "$other" ] && ! "$other" --version 2>/dev/null | grep -q '^unionfs [0-9]'; then
    echo "warning: $other is another program (unionfs-fuse); mount.fuse3 may run it for fuse.unionfs: in fstab write $prefix/bin/unionfs#none MNT fuse OPTIONS" >&2
  fi
done
echo "mount -t fuse.unionfs none MNT -o lowerdir=L1:L2,upperdir=U,workdir=W   now works"

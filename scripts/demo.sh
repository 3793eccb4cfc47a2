#!/usr/bin/env bash
# The main job on layers-fixtures/: build the demo layer stack, mount it, show a write being
# copied up and a delete leaving a whiteout, unmount. Uses the built binary (target/release
# or target/debug) or UNIONFS=/path/to/unionfs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${UNIONFS:-}
if [ -z "$bin" ]; then
  for b in "$repo/target/release/unionfs" "$repo/target/debug/unionfs"; do
    [ -x "$b" ] && { bin=$b; break; }
  done
fi
[ -n "$bin" ] || { echo "demo: build first (cargo build --release)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/unionfs-demo.XXXXXX")
mnt="$work/mnt"
cleanup() {
  if grep -q " $mnt fuse.unionfs " /proc/self/mounts 2>/dev/null; then "$bin" umount "$mnt" || "$bin" umount --lazy "$mnt"; fi
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Building the layers of layers-fixtures/basic (l1 is topmost)"
"$bin" build-layers "$repo/layers-fixtures/basic" "$work/layers"
mkdir "$mnt"
L="$work/layers/l1:$work/layers/l2:$work/layers/l3"

say "unionfs mount --lower l1:l2:l3 --upper upper mnt"
"$bin" mount --lower "$L" --upper "$work/upper" "$mnt"
ls -l "$mnt"

say "Reads fall through: foo comes from l2, bar from l1"
printf 'foo: %s' "$(cat "$mnt/foo")"; echo
printf 'bar: %s' "$(cat "$mnt/bar")"; echo

say "A write to a lower file copies it up; the lower layer is untouched"
echo "appended through the mount" >> "$mnt/foo"
echo "--- mnt/foo:";           cat "$mnt/foo"
echo "--- upper/foo:";         cat "$work/upper/foo"
echo "--- l2/foo (unchanged):"; cat "$work/layers/l2/foo"

say "A delete leaves a whiteout (a 0/0 character device) in the upper"
rm "$mnt/bar"
ls -l "$work/upper/bar"
[ ! -e "$mnt/bar" ] && echo "bar is gone from the mount; l1/bar still exists: $(cat "$work/layers/l1/bar")"

say "A directory deleted and made again is opaque"
rm -rf "$mnt/tree" && mkdir "$mnt/tree"
getfattr -n trusted.overlay.opaque "$work/upper/tree" 2>/dev/null || getfattr -n user.overlay.opaque "$work/upper/tree" 2>/dev/null || true
echo "tree is empty now: [$(ls "$mnt/tree")]"

say "unionfs umount mnt"
"$bin" umount "$mnt"
echo "upper layer after unmount:"
ls -la "$work/upper"
if command -v mount >/dev/null && [ "$(id -u)" = 0 ]; then
  say "Kernel overlayfs mounts the same upper and shows the same tree"
  mkdir "$work/k" "$work/kwork"
  mount -t overlay overlay -o "lowerdir=$L,upperdir=$work/upper,workdir=$work/kwork" "$work/k"
  ls "$work/k"; umount "$work/k"
fi
say "done"

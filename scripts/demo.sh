#!/usr/bin/env bash
# The main job on layers-fixtures/: (1) the union filesystem: build the basic layer stack,
# mount it, show a write being copied up and a delete leaving a whiteout, unmount; (2) the
# manager: import the demo image (layers-fixtures/springpetclinic), run two containers from
# it, show Docker's ps -s / diff / commit / volumes / df / info, remove everything. Uses the
# built binary (target/release or target/debug) or UNIONFS=/path/to/unionfs, and a throwaway
# state root.
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
  if [ -d "$work/root/containers" ]; then
    for c in "$work"/root/containers/*/; do [ -d "$c" ] && "$bin" --root "$work/root" rm -f "$(basename "$c")" >/dev/null 2>&1; done
  fi
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
say "The manager: the demo image (base system, Java runtime, application layers)"
m() { echo "\$ unionfs $*"; "$bin" --root "$work/root" "$@"; }
"$bin" build-layers "$repo/layers-fixtures/springpetclinic" "$work/pet" >/dev/null
( cd "$work/pet" && m image import springpetclinic:1.0 l3-base l2-runtime l1-app )
m images

say "Two containers from one image, each with its own writable layer and its own mount"
m run --name cont1 springpetclinic:1.0
m run --name cont2 -v petdata:/var/lib/petclinic springpetclinic:1.0
c1=$("$bin" --root "$work/root" mount-path cont1); c2=$("$bin" --root "$work/root" mount-path cont2)
echo "owners: vets and visits" >> "$c1/app/config/application.properties"
echo "hello" > "$c1/tmp/hello.txt"
rm "$c1/etc/os-release"
echo "visits table" > "$c2/var/lib/petclinic/visits.db"
echo "cont1 sees: $(tail -1 "$c1/app/config/application.properties")"
echo "cont2 sees: $(tail -1 "$c2/app/config/application.properties")"
m ps -s

say "What cont1 changed (read from its writable layer only)"
m diff cont1

say "Commit cont1 as a new image and run a container from it"
m commit cont1 springpetclinic:1.1
m run --name cont3 springpetclinic:1.1
echo "cont3 sees: $(cat "$("$bin" --root "$work/root" mount-path cont3)/tmp/hello.txt")"
m images
m df -v
m info

say "Remove the containers: writable layers go, the volume stays"
m rm -f cont1 cont2 cont3
m volume ls
echo "the volume still holds: $(cat "$work/root/volumes/petdata/_data/visits.db")"
m image rm springpetclinic:1.1 springpetclinic:1.0
say "done"

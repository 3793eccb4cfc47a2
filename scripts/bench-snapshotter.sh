#!/usr/bin/env bash
# containerd on unionfs against containerd's built-in overlayfs snapshotter, side by side in
# one run on one private containerd (root needed; containerd, runc and busybox-static
# installed): time to prepare a snapshot, to mount it, to run a container from start to
# exit; memory of the snapshotter and of the FUSE daemon each running container has.
# With FUSE_OVERLAYFS_SNAPSHOTTER=/path/to/containerd-fuse-overlayfs-grpc (and fuse-overlayfs
# installed), containerd's fuse-overlayfs snapshotter runs beside them (docs/kubernetes.md
# says how it was built here). Prints Markdown tables (docs/kubernetes.md shows them).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${UNIONFS:-$repo/target/release/unionfs}
[ -x "$bin" ] || (cd "$repo" && cargo build --release --quiet)
bin=$(readlink -f "$bin")
n=${N:-30}          # operations timed per row
running=${RUNNING:-10}  # containers kept running for the memory rows
[ "$(id -u)" = 0 ] || { echo "bench-snapshotter: run it as root (containerd needs root)" >&2; exit 1; }
for p in containerd ctr runc /bin/busybox mount.fuse3; do
  command -v "$p" >/dev/null || { echo "bench-snapshotter: '$p' is missing (apt-get install containerd runc busybox-static fuse3)" >&2; exit 1; }
done
fos=${FUSE_OVERLAYFS_SNAPSHOTTER:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/unionfs-bench-snap.XXXXXX")
ctd_pid= snap_pid= fos_pid=
cleanup() {
  [ -z "$ctd_pid" ] || kill -9 "$ctd_pid" 2>/dev/null || true
  [ -z "$snap_pid" ] || kill "$snap_pid" 2>/dev/null || true
  [ -z "$fos_pid" ] || kill "$fos_pid" 2>/dev/null || true
  pkill -9 -f "$work" 2>/dev/null || true
  grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
c() { ctr --address "$work/ctd.sock" "$@"; }
now() { date +%s%N; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# Proportional set size: pages shared by N processes (the daemons' program text) count 1/N.
pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }

echo "bench-snapshotter: an image, a snapshotter, a containerd (in $work)..." >&2
mkdir -p "$work/img/bin" "$work/img/etc"
cp /bin/busybox "$work/img/bin/"
for a in sh true sleep cat; do ln -s busybox "$work/img/bin/$a"; done
echo hi > "$work/img/etc/motd"
"$bin" --root "$work/ufs" image import localhost/bench:1 "$work/img" >/dev/null
"$bin" --root "$work/ufs" save --format docker-archive -o "$work/img.tar" localhost/bench:1
"$bin" --root "$work/snap" snapshotter --address "$work/snap.sock" 2>"$work/snap.log" &
snap_pid=$!
disown
snapshotters="overlayfs unionfs"
if [ -n "$fos" ]; then
  "$fos" "$work/fos.sock" "$work/fos" >"$work/fos.log" 2>&1 &
  # (fuse-overlayfs prints "unknown argument ignored: lazytime" for each mount: noise.)
  fos_pid=$!
  disown
  snapshotters="overlayfs fuse-overlayfs unionfs"
fi
cat > "$work/config.toml" <<CONF
version = 2
root = "$work/ctd-root"
state = "$work/ctd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
address = "$work/ctd.sock"
[ttrpc]
address = "$work/ctd-ttrpc.sock"
[proxy_plugins.unionfs]
type = "snapshot"
address = "$work/snap.sock"
[proxy_plugins.fuse-overlayfs]
type = "snapshot"
address = "$work/fos.sock"
CONF
unshare -m --propagation private containerd --config "$work/config.toml" 2>"$work/ctd.log" &
ctd_pid=$!
disown
for _ in $(seq 600); do c version >/dev/null 2>&1 && break; sleep 0.1; done
for sn in $snapshotters; do c images import --snapshotter "$sn" "$work/img.tar" >/dev/null; done
top=$(c snapshots --snapshotter unionfs ls | awk 'NR > 1 && $NF == "Committed" {print $1}' | head -1)

declare -A prep mnt run rmv
for sn in $snapshotters; do
  s=$(now); for i in $(seq "$n"); do c snapshots --snapshotter "$sn" prepare "p$i" "$top" >/dev/null; done; e=$(now)
  prep[$sn]=$(( (e - s) / n / 1000 ))
  # Mount and unmount, the way containerd does: the command Mounts gives, then umount.
  mkdir -p "$work/t"
  cmd=$(c snapshots --snapshotter "$sn" mounts "$work/t" p1)
  s=$(now)
  for i in $(seq "$n"); do
    if [[ $cmd == "mount -t fuse3."* ]]; then
      # mount -t fuse3.PROGRAM SOURCE TARGET -o OPTIONS: what containerd runs for it.
      read -r _ _ type src _ _ opts <<<"$cmd"
      mount.fuse3 "$src" "$work/t" -o "$opts" -t "${type#fuse3.}" 2>/dev/null
    else
      eval "$cmd"
    fi
    umount "$work/t"
  done
  e=$(now)
  mnt[$sn]=$(( (e - s) / n / 1000 ))
  s=$(now); for i in $(seq "$n"); do c snapshots --snapshotter "$sn" rm "p$i"; done; e=$(now)
  rmv[$sn]=$(( (e - s) / n / 1000 ))
  s=$(now); for i in $(seq "$n"); do c run --rm --snapshotter "$sn" localhost/bench:1 "r$i" true; done; e=$(now)
  run[$sn]=$(( (e - s) / n / 1000 ))
done

# Memory: containers kept running on each FUSE snapshotter, each with its own mount daemon.
declare -A per perp count snap_rss
snap_rss[unionfs]=$(rss_kib "$snap_pid")
[ -z "$fos_pid" ] || snap_rss[fuse-overlayfs]=$(rss_kib "$fos_pid")
ctd_rss=$(rss_kib "$ctd_pid")
for sn in $snapshotters; do
  [ "$sn" = overlayfs ] && continue
  for i in $(seq "$running"); do c run -d --snapshotter "$sn" localhost/bench:1 "m$i" sleep 600 >/dev/null; done
  # The mount daemons name the snapshot directories in their arguments.
  dir=$work/snap/snapshots
  [ "$sn" = unionfs ] || dir=$work/fos/snapshots
  total=0 totalp=0 n_d=0
  for p in $(pgrep -f -- "$dir" || true); do
    [ "$p" = "$snap_pid" ] || [ "$p" = "$fos_pid" ] && continue
    total=$(( total + $(rss_kib "$p") )); totalp=$(( totalp + $(pss_kib "$p") )); n_d=$(( n_d + 1 ))
  done
  count[$sn]=$n_d
  per[$sn]=$(( n_d > 0 ? total / n_d : 0 ))
  perp[$sn]=$(( n_d > 0 ? totalp / n_d : 0 ))
  for i in $(seq "$running"); do c tasks kill -s KILL "m$i" >/dev/null 2>&1 || true; done
  sleep 1
  for i in $(seq "$running"); do c tasks rm -f "m$i" >/dev/null 2>&1 || true; c containers rm "m$i" >/dev/null 2>&1 || true; done
done

cols=""; sep=""
for sn in $snapshotters; do cols="$cols | $sn"; sep="$sep|---"; done
echo
echo "| ($n operations each, µs per operation)$cols |"
echo "|---$sep|"
row() { # title array
  local -n a=$2
  printf '| %s' "$1"
  for sn in $snapshotters; do
    if [ "$sn" = overlayfs ]; then printf ' | %s' "${a[$sn]}"
    else printf ' | %s (%s×)' "${a[$sn]}" "$(awk -v a="${a[overlayfs]}" -v b="${a[$sn]}" 'BEGIN { printf "%.2f", b / a }')"; fi
  done
  echo " |"
}
row "Prepare (ctr snapshots prepare, through containerd)" prep
row "mount + umount of a prepared snapshot" mnt
row "Remove (ctr snapshots rm)" rmv
row "ctr run --rm IMAGE true, start to exit" run
echo
echo "| memory (KiB)$cols |"
echo "|---$sep|"
printf '| snapshotter process, RSS'
for sn in $snapshotters; do
  if [ "$sn" = overlayfs ]; then printf ' | in containerd (%s in all)' "$ctd_rss"; else printf ' | %s' "${snap_rss[$sn]}"; fi
done
echo " |"
printf '| mount daemon per running container, RSS (%s running, mean)' "$running"
for sn in $snapshotters; do
  if [ "$sn" = overlayfs ]; then printf ' | 0 (kernel)'; else printf ' | %s (%s daemons)' "${per[$sn]}" "${count[$sn]}"; fi
done
echo " |"
printf '| mount daemon per running container, PSS (shared program pages divided)'
for sn in $snapshotters; do
  if [ "$sn" = overlayfs ]; then printf ' | 0'; else printf ' | %s' "${perp[$sn]}"; fi
done
echo " |"

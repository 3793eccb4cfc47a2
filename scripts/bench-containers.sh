#!/usr/bin/env bash
# Many containers of one image (issue 22's row): N containers started by the manager, each
# reading the same MIB MiB of image files, against kernel overlayfs doing the same over the
# same layer directories, and unionfs mounts without passthrough (what a normal user's mount
# gets). Reports mount time, each daemon's RSS, the daemons' anonymous memory, the page cache
# the mounts and reads added (file data, and the program's pages once), and the total as a
# ratio to kernel overlayfs: right after the reads, and again once the files have been closed
# for IDLE seconds (past the daemon's page_cache_idle, 30 s by default: without passthrough
# each mount's own copy of a closed lower file's pages goes then). Root needed.
#   N=20 MIB=200 IDLE=35 scripts/bench-containers.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${UNIONFS:-$repo/target/release/unionfs}
[ -x "$bin" ] || (cd "$repo" && cargo build --release --quiet)
n=${N:-20}
mib=${MIB:-200}
idle=${IDLE:-35}
[ "$(id -u)" = 0 ] || { echo "bench-containers: run it as root (drop_caches, kernel overlayfs)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/var/tmp}/unionfs-bench-ctrs.XXXXXX")
u() { "$bin" --root "$work/ufs" "$@"; }
cleanup() {
  for i in $(seq "$n"); do u rm -f "c$i" >/dev/null 2>&1 || true; done
  grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s%N; }
cached_kib() { awk '/^Cached:/ {print $2}' /proc/meminfo; }
# A daemon's own memory: its anonymous pages (shared ones divided); its program's pages are
# page cache, counted once in the Cached delta.
pss_kib() { awk '/^Pss_Anon:/ {print $2}' "/proc/$1/smaps_rollup"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

echo "bench-containers: an image of $mib MiB in 2 MiB files (in $work)..." >&2
mkdir -p "$work/img/data"
for i in $(seq $(( mib / 2 ))); do head -c $(( 2 << 20 )) /dev/urandom > "$work/img/data/f$i"; done
u image import bench:1 "$work/img" >/dev/null
p=$(u run --name probe bench:1)
lower=$(u inspect probe | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["GraphDriver"]["Data"]["LowerDir"])')
u rm -f probe >/dev/null

declare -A mount_ms page_mib pss_mib rss_kib_mean total_mib idle_mib
measure() { # regime: start n mounts (timed), read everything in each, account
  local regime=$1 dirs=() pids=()
  drop
  local c0 s e
  c0=$(cached_kib)
  s=$(now)
  for i in $(seq "$n"); do
    case $regime in
      kernel)
        mkdir -p "$work/k$i/u" "$work/k$i/w" "$work/k$i/m"
        mount -t overlay overlay -o "lowerdir=$lower,upperdir=$work/k$i/u,workdir=$work/k$i/w" "$work/k$i/m"
        dirs+=("$work/k$i/m") ;;
      unionfs)
        dirs+=("$(u run --name "c$i" bench:1)") ;;
      unionfs-nopassthrough)
        mkdir -p "$work/n$i/u" "$work/n$i/m"
        "$bin" mount --lower "$lower" --upper "$work/n$i/u" -o nopassthrough "$work/n$i/m"
        dirs+=("$work/n$i/m") ;;
    esac
  done
  e=$(now)
  mount_ms[$regime]=$(awk -v t=$(( e - s )) -v n="$n" 'BEGIN { printf "%.1f", t / n / 1e6 }')
  for d in "${dirs[@]}"; do cat "$d"/data/* > /dev/null; done
  sync
  local c1 pss=0 rss=0 k=0
  c1=$(cached_kib)
  if [ "$regime" != kernel ]; then
    for d in "${dirs[@]}"; do
      local pid
      pid=$(pgrep -f -- " $d\$" | head -1 || true)
      [ -n "$pid" ] || pid=$(pgrep -f -- "$(basename "$(dirname "$d")")/" | head -1 || true)
      [ -n "$pid" ] || continue
      pss=$(( pss + $(pss_kib "$pid") )); rss=$(( rss + $(rss_kib "$pid") )); k=$(( k + 1 ))
    done
  fi
  page_mib[$regime]=$(( (c1 - c0) / 1024 ))
  pss_mib[$regime]=$(( pss / 1024 ))
  rss_kib_mean[$regime]=$(( k > 0 ? rss / k : 0 ))
  total_mib[$regime]=$(( (c1 - c0 + pss) / 1024 ))
  # The files closed for a while, the containers still running.
  sleep "$idle"
  idle_mib[$regime]=$(( ($(cached_kib) - c0 + pss) / 1024 ))
  for i in $(seq "$n"); do
    case $regime in
      kernel) umount "$work/k$i/m" ;;
      unionfs) u rm -f "c$i" >/dev/null ;;
      unionfs-nopassthrough) umount "$work/n$i/m" ;;
    esac
  done
}
for r in kernel unionfs unionfs-nopassthrough; do
  echo "bench-containers: $r..." >&2
  measure "$r"
done
echo
echo "| $n containers, each reading the same $mib MiB | mount, ms each | daemon RSS, KiB each | daemons' anonymous PSS, MiB | page cache added, MiB | total, MiB | × kernel | total $idle s after the reads, MiB | × kernel |"
echo "|---|---|---|---|---|---|---|---|---|"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }
for r in kernel unionfs unionfs-nopassthrough; do
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$r" "${mount_ms[$r]}" "${rss_kib_mean[$r]}" "${pss_mib[$r]}" \
    "${page_mib[$r]}" "${total_mib[$r]}" "$(ratio "${total_mib[kernel]}" "${total_mib[$r]}")" \
    "${idle_mib[$r]}" "$(ratio "${idle_mib[kernel]}" "${idle_mib[$r]}")"
done

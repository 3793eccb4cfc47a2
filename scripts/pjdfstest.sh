#!/usr/bin/env bash
# pjdfstest (the POSIX file system test suite, crates.io `pjdfstest`) against unionfs mounts
# (with and without passthrough) and, on the same machine, against kernel overlayfs. Fails if
# any case that passes on kernel overlayfs does not pass on unionfs. Needs root (the suite
# chowns and switches users). PJD_LOGS=DIR keeps the logs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
if [ "$(id -u)" != 0 ]; then echo "pjdfstest: needs root; skipped"; exit 0; fi
scripts/deps.sh libacl1-dev
tools="$repo/target/tools"
pjd=$(command -v pjdfstest || true)
if [ -z "$pjd" ]; then
  pjd="$tools/bin/pjdfstest"
  [ -x "$pjd" ] || cargo install pjdfstest --version 0.2.2 --locked --root "$tools" --quiet
fi
id pjdtest >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin pjdtest
bin="$repo/target/release/unionfs"
[ -x "$bin" ] || cargo build --release --locked --quiet

work=$(mktemp -d "${TMPDIR:-/tmp}/unionfs-pjd.XXXXXX")
chmod 755 "$work"  # the suite switches to other users, who must reach the mount
cleanup() {
  if [ -n "${PJD_LOGS:-}" ]; then mkdir -p "$PJD_LOGS" && cp "$work"/*.log "$PJD_LOGS"/ 2>/dev/null || true; fi
  umount "$work/k/m" 2>/dev/null || true
  "$bin" umount "$work/u/m" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/pjd.toml" <<'TOML'
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}
[settings]
naptime = 0.01
allow_remount = false
[dummy_auth]
entries = [["nobody", "nogroup"], ["pjdtest", "pjdtest"]]
TOML

cases() { # log: the result line of every case run
  grep -E '^[a-z_0-9:]+ +(ok|FAILED|skipped)$' "$1"
}

run() { # name mountpoint
  chmod 777 "$2"
  local rc=0
  (cd "$2" && "$pjd" -c "$work/pjd.toml" -p "$2" > "$work/$1.log" 2>&1) || rc=$?
  # Exit status 1 is "some cases failed"; anything else (101: the runner itself panicked,
  # which it does silently) means the suite stopped part-way and its results are not whole.
  if [ "$rc" -gt 1 ] || ! grep -q Summary "$work/$1.log"; then
    echo "pjdfstest on $1 stopped part-way (exit status $rc) after:" >&2
    cases "$work/$1.log" | tail -3 >&2
    exit 1
  fi
  cases "$work/$1.log" | awk '{print $1, $2}' | sort > "$work/$1.res"
  echo "$1: $(grep Summary "$work/$1.log")"
}

compare() { # name: every case that passes on kernel overlayfs passes on this run too
  if [ "$(wc -l < "$work/kernel-overlayfs.res")" != "$(wc -l < "$work/$1.res")" ]; then
    echo "pjdfstest ran $(wc -l < "$work/kernel-overlayfs.res") cases on kernel overlayfs but $(wc -l < "$work/$1.res") on $1" >&2
    exit 1
  fi
  local regressions better
  regressions=$(join "$work/kernel-overlayfs.res" "$work/$1.res" | awk '$2=="ok" && $3!="ok" {print $1}')
  better=$(join "$work/kernel-overlayfs.res" "$work/$1.res" | awk '$2!="ok" && $3=="ok" {print $1}' | wc -l)
  echo "cases passing on $1 but not on kernel overlayfs: $better"
  if [ -n "$regressions" ]; then
    echo "cases passing on kernel overlayfs but not on $1:"
    echo "$regressions"
    for t in $regressions; do grep -A3 "^$t " "$work/$1.log" | head -4; done
    exit 1
  fi
  echo "every case that passes on kernel overlayfs passes on $1"
}

mkdir -p "$work"/k/{l,u,w,m} "$work"/u/{l,m}
mount -t overlay overlay -o "lowerdir=$work/k/l,upperdir=$work/k/u,workdir=$work/k/w" "$work/k/m"
run kernel-overlayfs "$work/k/m"
umount "$work/k/m"
# As root with passthrough (reads and writes bypass the daemon), then without it (the data
# path a normal user's mount takes), each on a fresh upper.
"$bin" mount --lower "$work/u/l" --upper "$work/u/up" "$work/u/m"
run unionfs "$work/u/m"
"$bin" umount "$work/u/m"
compare unionfs
"$bin" mount -o nopassthrough --lower "$work/u/l" --upper "$work/u/up2" "$work/u/m"
run unionfs-nopassthrough "$work/u/m"
"$bin" umount "$work/u/m"
compare unionfs-nopassthrough

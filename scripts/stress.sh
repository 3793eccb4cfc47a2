#!/usr/bin/env bash
# The long form of tests/adversarial's identity churn: processes create, write, rename over,
# read back, list, stat and remove files in shared directories of a union whose upper is a
# fresh ext4 (which hands a freed inode number to the next file at once), and check every
# file they read is the one they wrote. Needs root (loop ext4).
#
#   scripts/stress.sh [SECONDS] [PROCESSES]      default: 180 s, 16 processes
#
# Prints operations and failures; exits 1 on any failure. Run it beside a load
# (stress-ng --cpu 4 --io 2) to stretch the races.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-180}
procs=${2:-16}
if [ "$(id -u)" != 0 ]; then echo "stress: needs root (a loop-mounted ext4 upper)" >&2; exit 2; fi
bin="$repo/target/release/unionfs"
[ -x "$bin" ] || cargo build --release --locked --quiet --manifest-path "$repo/Cargo.toml"
work=$(mktemp -d "${TMPDIR:-/tmp}/unionfs-stress.XXXXXX")
cleanup() {
  "$bin" umount "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true
  umount "$work/ext4" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/lower" "$work/mnt" "$work/ext4"
truncate -s 2G "$work/ext4.img"
mkfs.ext4 -q -F "$work/ext4.img"
mount -o loop "$work/ext4.img" "$work/ext4"
for d in 0 1 2 3; do mkdir -p "$work/lower/sub$d"; echo lower > "$work/lower/sub$d/keep"; done
"$bin" mount --lower "$work/lower" --upper "$work/ext4/upper" --work "$work/ext4/work" "$work/mnt"
python3 - "$work/mnt" "$secs" "$procs" <<'PY'
import os, sys, time, random, stat, multiprocessing as mp
root, secs, procs = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
def worker(w):
    rnd, bad, n, end = random.Random(w), 0, 0, time.time() + secs
    sub = os.path.join(root, f"sub{w % 4}")
    def fail(msg):
        nonlocal bad
        bad += 1
        if bad <= 5: print(f"worker {w}: {msg}", file=sys.stderr)
    while time.time() < end:
        a = os.path.join(sub, f"a{w}-{n}")
        data = f"{w}:{n}:".encode() * rnd.randint(1, 300)
        try:
            with open(a, "wb") as f: f.write(data)
            cur = a
            if rnd.random() < 0.5:
                cur = os.path.join(sub, f"b{w}-{n % 7}")
                os.rename(a, cur)
            with open(cur, "rb") as f: got = f.read()
            if got != data: fail(f"{cur}: read another file's data {got[:16]!r}")
            if not stat.S_ISREG(os.stat(cur).st_mode): fail(f"{cur}: not a regular file")
            if rnd.random() < 0.3: os.listdir(sub)
            if rnd.random() < 0.1:
                d = os.path.join(sub, f"d{w}-{n}")
                os.mkdir(d); open(os.path.join(d, "x"), "w").close()
                os.unlink(os.path.join(d, "x")); os.rmdir(d)
            if cur == a or rnd.random() < 0.5: os.unlink(cur)
        except OSError as e:
            fail(f"{a}: {e}")
        n += 1
    return n, bad
with mp.Pool(procs) as p:
    r = p.map(worker, range(procs))
ops, bad = sum(x[0] for x in r), sum(x[1] for x in r)
print(f"stress: {ops} rounds by {procs} processes in {secs:.0f} s, {bad} failures")
sys.exit(1 if bad else 0)
PY

#!/usr/bin/env bash
# Shows that `ps -s`, `diff` and `commit` cost what the writable layer holds, not what the
# image holds: images of 1k and 100k files, 10 changed files in a container of each; the
# median of 5 timed runs of each command, in milliseconds.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${UNIONFS:-$repo/target/release/unionfs}
[ -x "$bin" ] || (cd "$repo" && cargo build --release --quiet)
work=$(mktemp -d "${TMPDIR:-/tmp}/unionfs-bench-mgr.XXXXXX")
root="$work/root"
u() { "$bin" --root "$root" "$@"; }
cleanup() { for c in small big; do u rm -f "$c" >/dev/null 2>&1 || true; done; rm -rf "$work"; }
trap cleanup EXIT

make_tree() { # dir files
  local dirs=$(( $2 / 1000 ))
  for d in $(seq 0 $((dirs - 1))); do
    mkdir -p "$1/d$d"
    (cd "$1/d$d" && touch $(printf 'f%d ' $(seq 0 999)))
  done
}
ms() { # median wall time of a command in ms over 5 runs
  local t=()
  for _ in 1 2 3 4 5; do
    local s=$(date +%s%N); "$@" >/dev/null; local e=$(date +%s%N)
    t+=($(( (e - s) / 1000000 )))
  done
  printf '%s\n' "${t[@]}" | sort -n | sed -n 3p
}

echo "building images of 1,000 and 100,000 files..."
make_tree "$work/small" 1000
make_tree "$work/big" 100000
u image import small:1 "$work/small" >/dev/null
u image import big:1 "$work/big" >/dev/null
for c in small big; do
  p=$(u run --name "$c" "$c:1")
  for i in $(seq 0 9); do echo "changed $i" > "$p/d0/f$i"; done
done
printf '\n%-10s %10s %10s %10s\n' "image" "ps -s" "diff" "commit"
for c in small big; do
  ps=$(ms u ps -s)
  diff=$(ms u diff "$c")
  n=0
  commit() { n=$((n + 1)); u commit "$c" "$c-commit:$n$RANDOM" >/dev/null; }
  cm=$(ms commit)
  files=$([ "$c" = small ] && echo 1000 || echo 100000)
  printf '%-10s %8sms %8sms %8sms\n' "$files files" "$ps" "$diff" "$cm"
done
echo
echo "diff lines for the 100k-file image: $(u diff big | wc -l) (10 changed files and their parents)"

#!/usr/bin/env bash
# vendor/fuser is generated: fuser 0.18.0 as released on crates.io, plus the patches in
# vendor/fuser/patches/ applied in order (vendor/fuser/UNIONFS.md says what each does).
#
#   scripts/fuser-fork.sh          regenerate vendor/fuser from the released crate and the patches
#   scripts/fuser-fork.sh --check  fail if vendor/fuser is not exactly that (the test command runs it)
#
# To change the fork: edit the patches (or regenerate them with `git format-patch` from a git
# tree of the released crate with the series applied), run this script, commit both.
set -euo pipefail

VERSION=0.18.0
SHA256=b82b6597d216503555ead6b358f341ef748869bf5c6fbae6a0cb9dd231baecfd
# What the generated tree keeps of the released crate (the rest is its tests, examples and CI).
KEEP=(Cargo.toml LICENSE.md README.md build.rs src)

root=$(cd "$(dirname "$0")/.." && pwd)
fork=$root/vendor/fuser
check=0
case "${1:-}" in
    --check) check=1 ;;
    "") ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The released crate, through cargo (which knows the registry and any mirror configured).
crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/fuser-$VERSION.crate 2>/dev/null | head -n1 || true)
if [ -z "$crate" ]; then
    mkdir -p "$work/fetch/src"
    printf '[package]\nname = "fetch-fuser"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nfuser = "=%s"\n' \
        "$VERSION" > "$work/fetch/Cargo.toml"
    : > "$work/fetch/src/lib.rs"
    (cd "$work/fetch" && cargo fetch -q)
    crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/fuser-$VERSION.crate | head -n1)
fi
echo "$SHA256  $crate" | sha256sum --check --quiet - || {
    echo "fuser-$VERSION.crate does not have the released checksum: $crate" >&2
    exit 1
}

mkdir -p "$work/out"
tar -xzf "$crate" -C "$work"
for item in "${KEEP[@]}"; do
    cp -r "$work/fuser-$VERSION/$item" "$work/out/"
done
for p in "$fork"/patches/*.patch; do
    if ! (cd "$work/out" && git apply --whitespace=nowarn "$p"); then
        echo "$(basename "$p") does not apply to fuser $VERSION" >&2
        exit 1
    fi
done
cp -r "$fork/patches" "$fork/UNIONFS.md" "$work/out/"

if [ "$check" = 1 ]; then
    if ! diff -r "$work/out" "$fork" > "$work/diff"; then
        echo "vendor/fuser is not fuser $VERSION with vendor/fuser/patches applied (run scripts/fuser-fork.sh):" >&2
        head -n 40 "$work/diff" >&2
        exit 1
    fi
    echo "vendor/fuser is fuser $VERSION with $(ls "$fork"/patches/*.patch | wc -l) patches"
else
    rm -rf "$fork.new"
    cp -r "$work/out" "$fork.new"
    rm -rf "$fork"
    mv "$fork.new" "$fork"
    echo "vendor/fuser regenerated: fuser $VERSION with $(ls "$fork"/patches/*.patch | wc -l) patches"
fi

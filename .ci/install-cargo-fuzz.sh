#!/usr/bin/env bash
# Installs cargo-fuzz (the version below) from crates.io into the CI cache,
# outside the clone, for .ci/fuzz.sh. A later call that finds it (and that it
# reports the right version) returns at once.
#
# Usage: .ci/install-cargo-fuzz.sh        (progress on stderr)
# Last stdout line: the cargo-fuzz binary's path.
# Env: SIGIL_CI_CACHE (default /var/tmp/sigil-ci-cache) is the cache root;
#      SIGIL_CARGO_FUZZ_REBUILD=1 forces a reinstall even on a cache hit.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2

CACHE="${SIGIL_CI_CACHE:-/var/tmp/sigil-ci-cache}"
OUT="$CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION"
BIN="$OUT/bin/cargo-fuzz"

log() { echo "== install-cargo-fuzz $(date +%H:%M:%S) $*" >&2; }
die() { echo "install-cargo-fuzz: $*" >&2; exit 1; }

# `cargo-fuzz --version` prints "cargo-fuzz 0.13.2".
is_built() {
  [ -x "$1" ] || return 1
  [ "$("$1" --version 2>/dev/null)" = "cargo-fuzz $CARGO_FUZZ_VERSION" ] || return 1
}

if [ "${SIGIL_CARGO_FUZZ_REBUILD:-0}" != 1 ] && is_built "$BIN"; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$CACHE"
# CI and a developer may call this at the same time: one installs, the
# others wait and then take the cache hit.
exec 9>"$CACHE/install-cargo-fuzz.lock"
flock 9
if [ "${SIGIL_CARGO_FUZZ_REBUILD:-0}" != 1 ] && is_built "$BIN"; then
  echo "$BIN"
  exit 0
fi

command -v cargo >/dev/null 2>&1 || die "cargo not found"
START=$(date +%s)
log "installing cargo-fuzz $CARGO_FUZZ_VERSION (about a minute of CPU)"
# Its own target dir, so the install neither reuses nor disturbs the CI's.
CARGO_TARGET_DIR="$OUT/build" cargo install --locked --quiet \
  --root "$OUT" --version "=$CARGO_FUZZ_VERSION" cargo-fuzz >&2
rm -rf "$OUT/build"
is_built "$BIN" || die "installed cargo-fuzz does not report $CARGO_FUZZ_VERSION"
log "installed in $(($(date +%s) - START))s"
echo "$BIN"

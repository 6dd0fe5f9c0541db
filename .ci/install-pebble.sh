#!/usr/bin/env bash
# Builds pebble, Let's Encrypt's small ACME test server, and its companion
# pebble-challtestsrv (a DNS server we point pebble's validation lookups at)
# from the Go module proxy, for the tests of the bundle endpoint's `acme`
# option (tests/tests/bundle_endpoint_web.rs). The module's test
# certificates (pebble.minica.pem, the root that signs pebble's own HTTPS
# listener, and that listener's localhost cert/key) are copied beside the
# binaries. Cached outside the clone; a later call that finds the binaries
# returns at once.
#
# Usage: .ci/install-pebble.sh        (progress on stderr)
# Last stdout line: the directory holding pebble, pebble-challtestsrv and
#                   certs/{pebble.minica.pem,localhost/cert.pem,localhost/key.pem}.
# Env: SIGIL_CI_CACHE (default /var/tmp/sigil-ci-cache) is the cache root;
#      SIGIL_PEBBLE_REBUILD=1 forces a rebuild even on a cache hit.
#
# Why a wrapper module and not `go install ...@version`: as for helm, only
# the pinned version's own files are needed that way.
set -euo pipefail

PEBBLE_VERSION=2.10.3
GO_MIN=1.24.0

CACHE="${SIGIL_CI_CACHE:-/var/tmp/sigil-ci-cache}"
OUT="$CACHE/pebble-v$PEBBLE_VERSION"
BIN="$OUT/bin"

log() { echo "== install-pebble $(date +%H:%M:%S) $*" >&2; }
die() { echo "install-pebble: $*" >&2; exit 1; }

is_built() {
  local dir=$1
  [ -x "$dir/pebble" ] && [ -x "$dir/pebble-challtestsrv" ] \
    && [ -f "$dir/certs/pebble.minica.pem" ] \
    && [ -f "$dir/certs/localhost/cert.pem" ] \
    && [ -f "$dir/certs/localhost/key.pem" ] \
    && [ "$(cat "$dir/VERSION" 2>/dev/null)" = "$PEBBLE_VERSION" ]
}

if [ "${SIGIL_PEBBLE_REBUILD:-0}" != 1 ] && is_built "$BIN"; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/install-pebble.lock"
flock 9
if [ "${SIGIL_PEBBLE_REBUILD:-0}" != 1 ] && is_built "$BIN"; then
  echo "$BIN"
  exit 0
fi

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || die "go not found (need Go >= $GO_MIN)"
export GOTOOLCHAIN=local
GO_HAVE=$(go env GOVERSION | sed 's/^go//')
[ "$(printf '%s\n%s\n' "$GO_MIN" "$GO_HAVE" | sort -V | head -1)" = "$GO_MIN" ] \
  || die "Go $GO_HAVE is too old; pebble v$PEBBLE_VERSION needs Go >= $GO_MIN"

export GOPATH="$OUT/go"
export GOMODCACHE="$OUT/go/pkg/mod"
export GOCACHE="$OUT/go-build"
export CGO_ENABLED=0
export GOFLAGS=-mod=mod
export GOSUMDB=off
export GONOSUMDB='*'

START=$(date +%s)
TMPBIN="$OUT/bin.tmp.$$"
rm -rf "$TMPBIN"
mkdir -p "$TMPBIN"
trap 'rm -rf "$TMPBIN"' EXIT

WORK="$OUT/pebble-build"
mkdir -p "$WORK"
cat >"$WORK/go.mod" <<EOF
module sigil.test/pebblebuild

go $GO_MIN

require github.com/letsencrypt/pebble/v2 v$PEBBLE_VERSION
EOF
cat >"$WORK/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "github.com/letsencrypt/pebble/v2/cmd/pebble"
	_ "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv"
)
EOF
cd "$WORK"
log "resolving pebble v$PEBBLE_VERSION dependencies"
go mod tidy >&2
log "building pebble and pebble-challtestsrv"
go build -trimpath -ldflags "-s -w" -o "$TMPBIN/" \
  github.com/letsencrypt/pebble/v2/cmd/pebble \
  github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv >&2
SRC=$(go list -m -f '{{.Dir}}' github.com/letsencrypt/pebble/v2)
mkdir -p "$TMPBIN/certs/localhost"
cp "$SRC/test/certs/pebble.minica.pem" "$TMPBIN/certs/"
cp "$SRC/test/certs/localhost/cert.pem" "$SRC/test/certs/localhost/key.pem" "$TMPBIN/certs/localhost/"
chmod -R u+w "$TMPBIN/certs"
echo "$PEBBLE_VERSION" >"$TMPBIN/VERSION"
is_built "$TMPBIN" || die "pebble build is incomplete"
rm -rf "$BIN"
mv "$TMPBIN" "$BIN"
log "built in $(($(date +%s) - START))s"
echo "$BIN"

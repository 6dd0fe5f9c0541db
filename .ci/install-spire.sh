#!/usr/bin/env bash
# Builds SPIRE's spire-server and spire-agent (the version below) from the Go
# module proxy, for the interop tests that run sigil against real SPIRE.
# The binaries are cached outside the clone; a later call that finds them
# (and that they report the right version) returns at once.
#
# Usage: .ci/install-spire.sh        (progress on stderr)
# Last stdout line: the directory holding spire-server and spire-agent.
# Env: SIGIL_CI_CACHE (default /var/tmp/sigil-ci-cache) is the cache root;
#      SIGIL_SPIRE_REBUILD=1 forces a rebuild even on a cache hit.
#
# Why a wrapper module and not `go install ...@version`: the proxy refuses
# SPIRE's version list, which `go install` reads; a module that requires SPIRE
# at a fixed version only needs the version's own files. One dependency zip
# (the EJBCA client SDK, used only by SPIRE's EJBCA UpstreamAuthority plugin)
# is refused too, so it is replaced by our stub in tests/interop/spire-build.
set -euo pipefail

SPIRE_VERSION=1.15.2
# SPIRE's go.mod asks for this Go version at least.
GO_MIN=1.26.4

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE="${SIGIL_CI_CACHE:-/var/tmp/sigil-ci-cache}"
OUT="$CACHE/spire-$SPIRE_VERSION"
BIN="$OUT/bin"
STUB="$ROOT/tests/interop/spire-build/ejbca-stub"

log() { echo "== install-spire $(date +%H:%M:%S) $*" >&2; }
die() { echo "install-spire: $*" >&2; exit 1; }

# spire-server/agent print their version on stderr; release builds print the
# bare version, which our ldflags reproduce.
is_built() {
  local dir=$1 tool
  for tool in spire-server spire-agent; do
    [ -x "$dir/$tool" ] || return 1
    [ "$("$dir/$tool" --version 2>&1 | tail -1)" = "$SPIRE_VERSION" ] || return 1
  done
}

if [ "${SIGIL_SPIRE_REBUILD:-0}" != 1 ] && is_built "$BIN"; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$CACHE"
# CI and tests may call this at the same time: one builds, the others wait
# and then take the cache hit.
exec 9>"$CACHE/install-spire.lock"
flock 9
if [ "${SIGIL_SPIRE_REBUILD:-0}" != 1 ] && is_built "$BIN"; then
  echo "$BIN"
  exit 0
fi

# ---- toolchain: Go from the machine (no other source can be reached), and
# a C compiler because SPIRE's sqlite3 datastore driver uses cgo.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || die "go not found (need Go >= $GO_MIN)"
export GOTOOLCHAIN=local
GO_HAVE=$(go env GOVERSION | sed 's/^go//')
[ "$(printf '%s\n%s\n' "$GO_MIN" "$GO_HAVE" | sort -V | head -1)" = "$GO_MIN" ] \
  || die "Go $GO_HAVE is too old; SPIRE $SPIRE_VERSION needs Go >= $GO_MIN"
if ! command -v cc >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "no C compiler (cc) and not root to install one"
  log "installing gcc from Debian (cgo for sqlite3)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null
fi
[ -f "$STUB/go.mod" ] || die "EJBCA stub module missing at $STUB"

# ---- the build, with every Go cache under $CACHE
export GOPATH="$CACHE/go"
export GOMODCACHE="$CACHE/go/pkg/mod"
export GOCACHE="$CACHE/go-build"
export CGO_ENABLED=1
export GOFLAGS=-mod=mod
# The checksum database cannot be reached from here; go.sum is filled from
# what the proxy serves.
export GOSUMDB=off
export GONOSUMDB='*'

WORK="$CACHE/spire-build"
mkdir -p "$WORK"
# Rewritten every build: the stub's absolute path follows the clone.
cat >"$WORK/go.mod" <<EOF
module sigil.test/spirebuild

go $GO_MIN

require github.com/spiffe/spire v$SPIRE_VERSION

replace github.com/Keyfactor/ejbca-go-client-sdk => $STUB
EOF
cat >"$WORK/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "github.com/spiffe/spire/cmd/spire-agent"
	_ "github.com/spiffe/spire/cmd/spire-server"
)
EOF

START=$(date +%s)
cd "$WORK"
log "resolving SPIRE v$SPIRE_VERSION dependencies"
go mod tidy >&2
log "building spire-server and spire-agent (several minutes on 2 cores)"
TMPBIN="$OUT/bin.tmp.$$"
rm -rf "$TMPBIN"
mkdir -p "$TMPBIN"
trap 'rm -rf "$TMPBIN"' EXIT
go build -trimpath \
  -ldflags "-s -w -X github.com/spiffe/spire/pkg/common/version.gittag=$SPIRE_VERSION" \
  -o "$TMPBIN/" \
  github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent >&2
is_built "$TMPBIN" || die "built binaries do not report version $SPIRE_VERSION"
rm -rf "$BIN"
mv "$TMPBIN" "$BIN"
log "built in $(($(date +%s) - START))s"
echo "$BIN"

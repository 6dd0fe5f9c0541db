#!/usr/bin/env bash
# Builds helm (the version below) from the Go module proxy, for the tests
# that lint and render sigil's Helm chart (deploy/helm/sigil). The binary is
# cached outside the clone; a later call that finds it (and that it reports
# the right version) returns at once.
#
# Usage: .ci/install-helm.sh        (progress on stderr)
# Last stdout line: the directory holding helm.
# Env: SIGIL_CI_CACHE (default /var/tmp/sigil-ci-cache) is the cache root;
#      SIGIL_HELM_REBUILD=1 forces a rebuild even on a cache hit.
#
# Why a wrapper module and not `go install ...@version`: `go install` reads
# the module's version list and checksums, neither of which can be relied on
# from here; a module that requires helm at a fixed version only needs that
# version's own files, and the build is reproducible from its go.mod.
set -euo pipefail

HELM_VERSION=4.3.2
# helm v4's go.mod asks for this Go version at least.
GO_MIN=1.25.0

CACHE="${SIGIL_CI_CACHE:-/var/tmp/sigil-ci-cache}"
OUT="$CACHE/helm-v$HELM_VERSION"
BIN="$OUT/bin"

log() { echo "== install-helm $(date +%H:%M:%S) $*" >&2; }
die() { echo "install-helm: $*" >&2; exit 1; }

# `helm version --template '{{.Version}}'` prints "v4.3.2".
is_built() {
  local dir=$1
  [ -x "$dir/helm" ] || return 1
  [ "$(HELM_CONFIG_HOME=/nonexistent "$dir/helm" version --template '{{.Version}}' 2>/dev/null)" = "v$HELM_VERSION" ] || return 1
}

if [ "${SIGIL_HELM_REBUILD:-0}" != 1 ] && is_built "$BIN"; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$CACHE"
# CI and tests may call this at the same time: one builds, the others wait
# and then take the cache hit.
exec 9>"$CACHE/install-helm.lock"
flock 9
if [ "${SIGIL_HELM_REBUILD:-0}" != 1 ] && is_built "$BIN"; then
  echo "$BIN"
  exit 0
fi

# ---- toolchain: Go from the machine (no other source can be reached).
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || die "go not found (need Go >= $GO_MIN)"
export GOTOOLCHAIN=local
GO_HAVE=$(go env GOVERSION | sed 's/^go//')
[ "$(printf '%s\n%s\n' "$GO_MIN" "$GO_HAVE" | sort -V | head -1)" = "$GO_MIN" ] \
  || die "Go $GO_HAVE is too old; helm v$HELM_VERSION needs Go >= $GO_MIN"

# ---- the build, with every Go cache under $OUT (kept between runs, so a
# rebuild after a cache wipe of bin/ is quick)
export GOPATH="$OUT/go"
export GOMODCACHE="$OUT/go/pkg/mod"
export GOCACHE="$OUT/go-build"
# helm is pure Go.
export CGO_ENABLED=0
export GOFLAGS=-mod=mod
# The checksum database cannot be reached from here; go.sum is filled from
# what the proxy serves.
export GOSUMDB=off
export GONOSUMDB='*'

START=$(date +%s)
TMPBIN="$OUT/bin.tmp.$$"
rm -rf "$TMPBIN"
mkdir -p "$TMPBIN"
trap 'rm -rf "$TMPBIN"' EXIT

WORK="$OUT/helm-build"
mkdir -p "$WORK"
cat >"$WORK/go.mod" <<EOF
module sigil.test/helmbuild

go $GO_MIN

require helm.sh/helm/v4 v$HELM_VERSION
EOF
cat >"$WORK/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
EOF
cd "$WORK"
log "resolving helm v$HELM_VERSION dependencies"
go mod tidy >&2
log "building helm (a few minutes of CPU on 2 cores)"
# helm's release builds set the version through these variables; without
# them `helm version` reports a development version.
go build -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
  -o "$TMPBIN/helm" helm.sh/helm/v4/cmd/helm >&2

is_built "$TMPBIN" || die "built helm does not report v$HELM_VERSION"
rm -rf "$BIN"
mv "$TMPBIN" "$BIN"
log "built in $(($(date +%s) - START))s"
echo "$BIN"

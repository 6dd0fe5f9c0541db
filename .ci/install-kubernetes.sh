#!/usr/bin/env bash
# Builds a Kubernetes control plane without a kubelet: kube-apiserver and
# etcd (the versions below), from the Go module proxy, for the tests that
# run sigil's Kubernetes plugins against a real API server
# (sigil-testkit's KubeControlPlane). The binaries are cached outside the
# clone; a later call that finds them (and that they report the right
# versions) returns at once.
#
# Usage: .ci/install-kubernetes.sh        (progress on stderr)
# Last stdout line: the directory holding kube-apiserver and etcd.
# Env: SIGIL_CI_CACHE (default /var/tmp/sigil-ci-cache) is the cache root;
#      SIGIL_KUBE_REBUILD=1 forces a rebuild even on a cache hit.
#
# Why wrapper modules and not `go install ...@version`: k8s.io/kubernetes
# replaces its k8s.io/* staging modules with local paths, which `go install`
# refuses. A module that requires k8s.io/kubernetes and points every staging
# module at its published v0.<minor>.<patch> tag builds it. Two staging
# modules (the sample CLI plugin and sample controller) are not served at
# that tag by the proxy and nothing needs them, so they are left out.
# etcd gets its own wrapper (a main calling etcdmain.Main), so the two
# dependency graphs do not raise each other's versions.
set -euo pipefail

KUBE_VERSION=1.37.2
# The k8s.io/* staging modules are tagged v0.<minor>.<patch>.
STAGING_VERSION=0.${KUBE_VERSION#*.}
ETCD_VERSION=3.7.3
# k8s.io/kubernetes' go.mod asks for this Go version at least.
GO_MIN=1.26.0

CACHE="${SIGIL_CI_CACHE:-/var/tmp/sigil-ci-cache}"
OUT="$CACHE/kubernetes-v$KUBE_VERSION-etcd-v$ETCD_VERSION"
BIN="$OUT/bin"

log() { echo "== install-kubernetes $(date +%H:%M:%S) $*" >&2; }
die() { echo "install-kubernetes: $*" >&2; exit 1; }

# `kube-apiserver --version` prints "Kubernetes v1.37.2"; `etcd --version`
# prints "etcd Version: 3.7.3" among other lines.
is_built() {
  local dir=$1
  [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ] || return 1
  [ "$("$dir/kube-apiserver" --version 2>&1 | tail -1)" = "Kubernetes v$KUBE_VERSION" ] || return 1
  "$dir/etcd" --version 2>&1 | grep -qx "etcd Version: $ETCD_VERSION" || return 1
}

if [ "${SIGIL_KUBE_REBUILD:-0}" != 1 ] && is_built "$BIN"; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$CACHE"
# CI and tests may call this at the same time: one builds, the others wait
# and then take the cache hit.
exec 9>"$CACHE/install-kubernetes.lock"
flock 9
if [ "${SIGIL_KUBE_REBUILD:-0}" != 1 ] && is_built "$BIN"; then
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
  || die "Go $GO_HAVE is too old; Kubernetes v$KUBE_VERSION needs Go >= $GO_MIN"

# ---- the build, with every Go cache under $OUT (kept between runs, so a
# rebuild after a cache wipe of bin/ is quick)
export GOPATH="$OUT/go"
export GOMODCACHE="$OUT/go/pkg/mod"
export GOCACHE="$OUT/go-build"
# Both programs are pure Go.
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

# ---- kube-apiserver
KWORK="$OUT/kube-apiserver-build"
mkdir -p "$KWORK"
log "reading k8s.io/kubernetes v$KUBE_VERSION's go.mod for its staging modules"
KGOMOD=$(cd "$KWORK" && go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[ -f "$KGOMOD" ] || die "could not download k8s.io/kubernetes v$KUBE_VERSION's go.mod"
# Lines like "k8s.io/api => ./staging/src/k8s.io/api" (inside a replace block).
STAGING=$(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$KGOMOD" \
  | grep -v -x -e k8s.io/sample-cli-plugin -e k8s.io/sample-controller)
[ -n "$STAGING" ] || die "no staging modules found in $KGOMOD"
{
  cat <<EOF
module sigil.test/kubebuild

go $GO_MIN

require k8s.io/kubernetes v$KUBE_VERSION

EOF
  echo "replace ("
  for m in $STAGING; do
    echo "	$m => $m v$STAGING_VERSION"
  done
  echo ")"
} >"$KWORK/go.mod"
cat >"$KWORK/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
EOF
cd "$KWORK"
log "resolving kube-apiserver v$KUBE_VERSION dependencies ($(echo "$STAGING" | wc -l) staging modules)"
go mod tidy >&2
log "building kube-apiserver (about 5 minutes of CPU on 2 cores, 3 GB of memory)"
go build -trimpath \
  -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION" \
  -o "$TMPBIN/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2

# ---- etcd
EWORK="$OUT/etcd-build"
mkdir -p "$EWORK"
cat >"$EWORK/go.mod" <<EOF
module sigil.test/etcdbuild

go $GO_MIN

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
EOF
cat >"$EWORK/main.go" <<'EOF'
// Command etcd runs etcd's own entry point, so that the server can be
// built from the module proxy at a fixed version.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
EOF
cd "$EWORK"
log "resolving etcd v$ETCD_VERSION dependencies"
go mod tidy >&2
log "building etcd"
go build -trimpath -ldflags "-s -w" -o "$TMPBIN/etcd" . >&2

is_built "$TMPBIN" || die "built binaries do not report Kubernetes v$KUBE_VERSION and etcd $ETCD_VERSION"
rm -rf "$BIN"
mv "$TMPBIN" "$BIN"
log "built in $(($(date +%s) - START))s"
echo "$BIN"

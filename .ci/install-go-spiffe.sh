#!/usr/bin/env bash
# Builds tests/interop/go-spiffe (a go-spiffe v2 client/server used by
# tests/tests/clients_go.rs) into the CI cache, outside the repository, and
# prints the binary's path on the last stdout line:
#   SIGIL_TEST_GO_SPIFFE=$(.ci/install-go-spiffe.sh | tail -1)
# Everything Go writes (GOPATH, module and build caches) lives under
# $SIGIL_CI_CACHE/go-spiffe (default /var/tmp/sigil-ci-cache). A repeat run
# is a no-op unless the module's sources or the Go version changed (a hash of
# them is kept beside the binary). Uses the machine's Go (GOTOOLCHAIN=local:
# no toolchain download); modules come from the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="$(pwd)/tests/interop/go-spiffe"
CACHE="${SIGIL_CI_CACHE:-/var/tmp/sigil-ci-cache}"
WORK="$CACHE/go-spiffe"
BIN="$WORK/bin/go-spiffe-check"
STAMP="$WORK/bin/go-spiffe-check.inputs"
log() { echo "install-go-spiffe: $*" >&2; }

if ! command -v go >/dev/null 2>&1; then
  log "no 'go' on PATH; install Go >= the go directive in $SRC/go.mod"
  exit 1
fi
export GOTOOLCHAIN=local
export GOPATH="$WORK/gopath"
export GOMODCACHE="$WORK/gopath/pkg/mod"
export GOCACHE="$WORK/gocache"
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0

mkdir -p "$WORK/bin"
exec 9>"$WORK/.lock"
flock 9

inputs() {
  go version
  (cd "$SRC" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | LC_ALL=C sort |
    while read -r f; do echo "$f"; cat "$f"; done)
}
want=$(inputs | sha256sum | cut -d' ' -f1)
if [ -x "$BIN" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  log "up to date"
  echo "$BIN"
  exit 0
fi

log "building $SRC ($(go version))"
rm -f "$STAMP"
(cd "$SRC" && go build -trimpath -o "$BIN.tmp" .)
mv -f "$BIN.tmp" "$BIN"
echo "$want" >"$STAMP"
echo "$BIN"

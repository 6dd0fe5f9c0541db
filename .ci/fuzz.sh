#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time over its committed
# corpus (fuzz/corpus/<target>/), and fails on any crash, printing the
# crashing input's path and base64. See fuzz/README.md.
#
# cargo-fuzz comes from .ci/install-cargo-fuzz.sh (cached); the targets are
# built without a sanitizer (coverage-guided libFuzzer only: sigil forbids
# unsafe code, so AddressSanitizer buys little and costs build time) into a
# target dir in the cache, outside the clone. RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept the -Z flags cargo-fuzz passes.
#
# Env: SIGIL_CI_CACHE (default /var/tmp/sigil-ci-cache) is the cache root;
#      SIGIL_FUZZ_SECONDS (default 12) is each target's run time;
#      SIGIL_FUZZ_TARGETS (default: all) limits the run to some targets;
#      SIGIL_FUZZ_BUILD_ONLY=1 builds the targets and stops (.ci/run builds
#      them while the Go-built test programs install).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE="${SIGIL_CI_CACHE:-/var/tmp/sigil-ci-cache}"
SECONDS_EACH="${SIGIL_FUZZ_SECONDS:-12}"
log() { echo "== fuzz $(date +%H:%M:%S) $*"; }

CARGO_FUZZ=$(SIGIL_CI_CACHE="$CACHE" .ci/install-cargo-fuzz.sh | tail -1)
export RUSTC_BOOTSTRAP=1
# The fuzz crate is its own workspace: keep its build apart from the main
# one's and from any CARGO_BUILD_BUILD_DIR the caller set.
unset CARGO_BUILD_BUILD_DIR
TARGET_DIR="$CACHE/fuzz-target"
# Inputs libFuzzer finds are kept between runs (the committed corpus is only
# read), so coverage grows from run to run on the same machine.
WORK="$CACHE/fuzz-work"
mkdir -p "$TARGET_DIR" "$WORK"
FUZZ_FLAGS=(--sanitizer none --target-dir "$TARGET_DIR")

cd "$ROOT/fuzz"
START=$(date +%s)
log "building the fuzz targets (cached after the first run)"
if ! "$CARGO_FUZZ" build "${FUZZ_FLAGS[@]}" >"$WORK/build.log" 2>&1; then
  grep -v '^ *Compiling ' "$WORK/build.log" | tail -60
  echo "fuzz: the build failed (log: $WORK/build.log)" >&2
  exit 1
fi
tail -1 "$WORK/build.log"
log "built in $(($(date +%s) - START))s"
if [ "${SIGIL_FUZZ_BUILD_ONLY:-}" = 1 ]; then
  exit 0
fi

if [ -n "${SIGIL_FUZZ_TARGETS:-}" ]; then
  read -r -a TARGETS <<<"$SIGIL_FUZZ_TARGETS"
else
  mapfile -t TARGETS < <("$CARGO_FUZZ" list)
fi

failed=()
for t in "${TARGETS[@]}"; do
  [ -d "corpus/$t" ] || { echo "fuzz: no committed corpus fuzz/corpus/$t" >&2; exit 1; }
  scratch="$WORK/corpus/$t"
  artifacts="$WORK/artifacts/$t"
  mkdir -p "$scratch" "$artifacts"
  rm -f "$artifacts"/*
  log "$t for ${SECONDS_EACH}s"
  if ! "$CARGO_FUZZ" run "${FUZZ_FLAGS[@]}" "$t" "$scratch" "corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$artifacts/" -print_final_stats=1 >"$WORK/$t.log" 2>&1; then
    tail -40 "$WORK/$t.log"
    for f in "$artifacts"/*; do
      [ -f "$f" ] || continue
      echo "fuzz: $t crashed on $f; its base64:"
      base64 -w0 "$f"
      echo
    done
    failed+=("$t")
  else
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$WORK/$t.log" | tail -1 || true
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: crashes in: ${failed[*]} (keep each input in fuzz/corpus/<target>/ and as a unit test once fixed)" >&2
  exit 1
fi
log "all ${#TARGETS[@]} targets ran ${SECONDS_EACH}s each without a crash ($(($(date +%s) - START))s in all)"

#!/usr/bin/env bash
# Builds tests/interop/java-spiffe (java-spiffe from Maven Central, used by
# tests/tests/clients_java.rs) into one runnable jar with its dependencies,
# in the CI cache outside the repository, and prints the jar's path on the
# last stdout line (run it as `java -jar <path>`):
#   SIGIL_TEST_JAVA_SPIFFE=$(.ci/install-java-spiffe.sh | tail -1)
# Maven's local repository and the build directory live under
# $SIGIL_CI_CACHE/java-spiffe (default /var/tmp/sigil-ci-cache). A repeat
# run is a no-op unless the project's sources or the Java/Maven versions
# changed (a hash of them is kept beside the jar).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="$(pwd)/tests/interop/java-spiffe"
CACHE="${SIGIL_CI_CACHE:-/var/tmp/sigil-ci-cache}"
WORK="$CACHE/java-spiffe"
BUILD="$WORK/build"
JAR="$BUILD/java-spiffe-check.jar"
STAMP="$WORK/java-spiffe-check.inputs"
log() { echo "install-java-spiffe: $*" >&2; }

if ! command -v mvn >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
  log "installing Maven and a JDK from Debian"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven openjdk-17-jdk-headless >&2
fi

mkdir -p "$WORK"
exec 9>"$WORK/.lock"
flock 9

inputs() {
  java -version 2>&1
  mvn -v 2>&1
  (cd "$SRC" && find pom.xml src -type f | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done)
}
want=$(inputs | sha256sum | cut -d' ' -f1)
if [ -f "$JAR" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  log "up to date"
  echo "$JAR"
  exit 0
fi

log "building $SRC"
rm -f "$STAMP"
# Maven's output (only escape codes when all is well) is shown on failure.
if ! mvn -B -q -f "$SRC/pom.xml" \
  -Dmaven.repo.local="$WORK/m2" -Dsigil.build.dir="$BUILD" \
  clean package >"$WORK/mvn.log" 2>&1; then
  cat "$WORK/mvn.log" >&2
  log "maven build failed"
  exit 1
fi
test -f "$JAR"
echo "$want" >"$STAMP"
echo "$JAR"

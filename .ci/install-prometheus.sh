#!/usr/bin/env bash
# Installs Prometheus and promtool from Debian's `prometheus` package, for
# the telemetry tests (tests/tests/telemetry.rs): a real Prometheus scrapes
# sigil-server and sigil-agent, and promtool checks the shipped alert rules
# (deploy/prometheus/sigil-alerts.yaml). The package is installed into the
# system (apt caches it); a later call that finds both binaries returns at
# once. The package's own service is not started (the tests run their own
# Prometheus on a free port).
#
# Usage: .ci/install-prometheus.sh        (progress on stderr)
# Last stdout line: the directory holding prometheus and promtool.
set -euo pipefail

log() { echo "== install-prometheus $(date +%H:%M:%S) $*" >&2; }

have() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }

if ! have; then
  log "installing Debian's prometheus package"
  START=$(date +%s)
  apt-get update -qq >&2
  # --no-install-recommends: no node exporter, no web console extras.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
  log "installed in $(($(date +%s) - START))s"
fi
have || { echo "install-prometheus: prometheus or promtool missing after install" >&2; exit 1; }
# Debian's package may start its service where an init system runs; the
# tests do not need it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus >&2 || true
fi
dirname "$(command -v prometheus)"

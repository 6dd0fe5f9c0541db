#!/usr/bin/env bash
# Side-by-side Workload API benchmark: sigil (release) vs SPIRE, same client,
# same shape of config, one system at a time on the same machine.
#
#   bench/run.sh                          # defaults below
#   DURATION=10 CONCS="1 16" bench/run.sh
#
# Env: SIGIL_BIN (dir with sigil-server, sigil-agent; default target/release),
#      SPIRE_BIN (dir with spire-server, spire-agent),
#      DURATION (s per RPC per concurrency), CONCS, LOG_LEVEL (both systems),
#      UNIQUE_DURATION (s of cache-miss JWT load at concurrency 1; 0 skips),
#      SYSTEMS ("sigil spire"; one of them to debug), ENTRY_SETTLE (s between entry creation and agent start).
# Prints a Markdown table on stdout; logs and configs stay in $WORK (kept
# when KEEP=1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIGIL_BIN=${SIGIL_BIN:-$ROOT/target/release}
SPIRE_BIN=${SPIRE_BIN:-/var/tmp/sigil-ci-cache/spire-1.15.2/bin}
DURATION=${DURATION:-10}
CONCS=${CONCS:-"1 16"}
LOG_LEVEL=${LOG_LEVEL:-INFO}
UNIQUE_DURATION=${UNIQUE_DURATION:-5}
# Seconds between creating the entry and starting the agent, so the server's
# entry cache (SPIRE reloads it every 5 s) already holds it and the figure is
# agent startup, not registration propagation.
ENTRY_SETTLE=${ENTRY_SETTLE:-6}
SYSTEMS=${SYSTEMS:-"sigil spire"}
TD=example.org
UID_NOW=$(id -u)

for sys in $SYSTEMS; do
    dir=SIGIL_BIN; [[ $sys == spire ]] && dir=SPIRE_BIN
    for b in "${!dir}/$sys-server" "${!dir}/$sys-agent"; do
        [[ -x $b ]] || { echo "missing binary: $b" >&2; exit 1; }
    done
done

cargo build --quiet --release --manifest-path "$ROOT/bench/Cargo.toml" >&2
LOADGEN=$ROOT/bench/target/release/sigil-bench

WORK=$(mktemp -d /tmp/sigil-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

wait_healthy() { # bin socket what
    local i
    for i in $(seq 1 600); do
        if "$1" healthcheck -socketPath "$2" >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    echo "$3 never became healthy; logs in $WORK" >&2
    KEEP=1
    exit 1
}

stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

declare -A R # R[<sys>.<metric>]

field() { sed -E "s/.* $1=([^ ]+).*/\\1/" <<<" $2"; }

record() { # sys concurrency load-line
    echo "[$1] $3" >&2
    local rpc; rpc=$(field rpc "$3")
    R[$1.$rpc.$2.rps]=$(field rps "$3")
    R[$1.$rpc.$2.lat]="$(field p50_us "$3") / $(field p90_us "$3") / $(field p99_us "$3")"
    R[$1.$rpc.$2.err]=$(field err "$3")
}

bench_system() { # sys server_bin agent_bin
    local sys=$1 sbin=$2 abin=$3
    local dir=$WORK/$sys
    mkdir -p "$dir/server-data" "$dir/agent-data"
    local port; port=$(free_port)
    local ssock=$dir/server.sock asock=$dir/agent.sock
    cat >"$dir/server.conf" <<EOF
server {
    bind_address = "127.0.0.1"
    bind_port = "$port"
    socket_path = "$ssock"
    trust_domain = "$TD"
    data_dir = "$dir/server-data"
    log_level = "$LOG_LEVEL"
    ca_key_type = "ec-p256"
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "$dir/server-data/datastore.sqlite3"
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
EOF
    local t0 t1
    t0=$(now_ms)
    "$sbin" run -config "$dir/server.conf" >"$dir/server.log" 2>&1 &
    local spid=$!
    PIDS+=("$spid")
    wait_healthy "$sbin" "$ssock" "$sys server"
    t1=$(now_ms)
    R[$sys.server_ready_ms]=$((t1 - t0))

    local token
    token=$("$sbin" token generate -socketPath "$ssock" | awk '/^Token: / {print $2}')
    "$sbin" bundle show -socketPath "$ssock" >"$dir/bootstrap.pem"
    "$sbin" entry create -socketPath "$ssock" \
        -parentID "spiffe://$TD/spire/agent/join_token/$token" \
        -spiffeID "spiffe://$TD/bench" -selector "unix:uid:$UID_NOW" >/dev/null
    sleep "$ENTRY_SETTLE"

    cat >"$dir/agent.conf" <<EOF
agent {
    server_address = "127.0.0.1"
    server_port = "$port"
    socket_path = "$asock"
    trust_domain = "$TD"
    data_dir = "$dir/agent-data"
    trust_bundle_path = "$dir/bootstrap.pem"
    log_level = "$LOG_LEVEL"
    workload_x509_svid_key_type = "ec-p256"
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
EOF
    t0=$(now_ms)
    "$abin" run -config "$dir/agent.conf" -joinToken "$token" >"$dir/agent.log" 2>&1 &
    local apid=$!
    PIDS+=("$apid")
    if ! "$LOADGEN" wait -socket "$asock" -timeout 120 >/dev/null; then
        echo "$sys agent served no SVID; logs in $WORK" >&2
        KEEP=1
        exit 1
    fi
    t1=$(now_ms)
    R[$sys.first_svid_ms]=$((t1 - t0))
    R[$sys.agent_rss_idle]=$(rss_kb "$apid")
    R[$sys.server_rss_idle]=$(rss_kb "$spid")

    # Short warm-up so neither side is measured on cold code paths.
    "$LOADGEN" load -socket "$asock" -duration 1 -concurrency 4 -rpc both >/dev/null

    local c line
    for c in $CONCS; do
        while read -r line; do
            record "$sys" "$c" "$line"
        done < <("$LOADGEN" load -socket "$asock" -duration "$DURATION" -concurrency "$c" -rpc both)
    done
    R[$sys.agent_rss_load]=$(rss_kb "$apid")
    R[$sys.agent_hwm]=$(hwm_kb "$apid")
    R[$sys.server_rss_load]=$(rss_kb "$spid")
    R[$sys.server_hwm]=$(hwm_kb "$spid")

    if [[ $UNIQUE_DURATION -gt 0 ]]; then
        record "$sys" 1 "$("$LOADGEN" load -socket "$asock" -duration "$UNIQUE_DURATION" -concurrency 1 -rpc jwt-unique)"
    fi

    stop_pid "$apid"
    stop_pid "$spid"
}

for sys in $SYSTEMS; do
    case $sys in
        sigil) bench_system sigil "$SIGIL_BIN/sigil-server" "$SIGIL_BIN/sigil-agent" ;;
        spire) bench_system spire "$SPIRE_BIN/spire-server" "$SPIRE_BIN/spire-agent" ;;
        *) echo "unknown system $sys" >&2; exit 1 ;;
    esac
done

mb() { [[ -e $1 ]] || { echo n/a; return; }; awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MB", b / 1048576 }'; }
# Size as shipped and after `strip` (sigil's release profile keeps symbols,
# the SPIRE build here is already stripped).
size() {
    local s; s=$(mb "$1")
    if command -v strip >/dev/null && strip -o "$WORK/stripped" "$1" 2>/dev/null; then
        s="$s ($(mb "$WORK/stripped") stripped)"
    fi
    echo "$s"
}
kbmb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }

echo "Workload API benchmark, $(nproc) cores, ${DURATION}s per RPC per concurrency, log_level $LOG_LEVEL, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| RPC (concurrency) | sigil req/s | sigil p50 / p90 / p99 µs | SPIRE req/s | SPIRE p50 / p90 / p99 µs | errors sigil / SPIRE |"
echo "|---|--:|--:|--:|--:|--:|"
row() { # label rpc concurrency
    echo "| $1 | ${R[sigil.$2.$3.rps]:-} | ${R[sigil.$2.$3.lat]:-} | ${R[spire.$2.$3.rps]:-} | ${R[spire.$2.$3.lat]:-} | ${R[sigil.$2.$3.err]:-} / ${R[spire.$2.$3.err]:-} |"
}
for c in $CONCS; do
    row "FetchJWTSVID ($c)" jwt "$c"
    row "FetchX509SVID, first message ($c)" x509 "$c"
done
if [[ $UNIQUE_DURATION -gt 0 ]]; then
    row "FetchJWTSVID, new audience each call (1)" jwt-unique 1
fi
echo
echo "| metric | sigil | SPIRE 1.15.2 |"
echo "|---|---|---|"
echo "| server: start to healthy | ${R[sigil.server_ready_ms]:-0} ms | ${R[spire.server_ready_ms]:-0} ms |"
echo "| agent: start to first X509-SVID served | ${R[sigil.first_svid_ms]:-0} ms | ${R[spire.first_svid_ms]:-0} ms |"
echo "| agent RSS idle / after load / peak | $(kbmb "${R[sigil.agent_rss_idle]:-0}") / $(kbmb "${R[sigil.agent_rss_load]:-0}") / $(kbmb "${R[sigil.agent_hwm]:-0}") | $(kbmb "${R[spire.agent_rss_idle]:-0}") / $(kbmb "${R[spire.agent_rss_load]:-0}") / $(kbmb "${R[spire.agent_hwm]:-0}") |"
echo "| server RSS idle / after load / peak | $(kbmb "${R[sigil.server_rss_idle]:-0}") / $(kbmb "${R[sigil.server_rss_load]:-0}") / $(kbmb "${R[sigil.server_hwm]:-0}") | $(kbmb "${R[spire.server_rss_idle]:-0}") / $(kbmb "${R[spire.server_rss_load]:-0}") / $(kbmb "${R[spire.server_hwm]:-0}") |"
echo "| agent binary size | $(size "$SIGIL_BIN/sigil-agent") | $(size "$SPIRE_BIN/spire-agent") |"
echo "| server binary size | $(size "$SIGIL_BIN/sigil-server") | $(size "$SPIRE_BIN/spire-server") |"

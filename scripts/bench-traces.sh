#!/usr/bin/env bash
# What traces cost: manifest GET requests/s through the split gateway and storage (gRPC on
# loopback) with traces off, with traces on, and optionally with another build (the one before
# traces) for comparison. A benchmark, not a test.
#
#   scripts/bench-traces.sh                             # builds trow --release
#   TROW_BIN=target/release/trow BASE_BIN=/tmp/trow-before scripts/bench-traces.sh
#
# Environment:
#   TROW_BIN        the trow binary to measure (skips `cargo build --release -p trow`)
#   BASE_BIN        another trow binary, measured with the same load (e.g. built before traces)
#   BENCH_RUNS      rounds; each measures every variant once, in turn (default 3)
#   BENCH_SECONDS   wrk's duration per measurement (default 5)
#   BENCH_CONC      wrk's connections (default 50)
#   BENCH_KEEP      1: keep the temp dir (logs, data)
#   BENCH_START_TIMEOUT  seconds to wait for a server (default 60)
#
# "on" exports to an OTLP/HTTP endpoint where nothing listens (127.0.0.1:9): every span is built,
# batched and its export fails fast, which is what a tracing process pays whatever its collector.
# Needs wrk and curl.

set -euo pipefail

BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_SECONDS=${BENCH_SECONDS:-5}
BENCH_CONC=${BENCH_CONC:-50}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_START_TIMEOUT=${BENCH_START_TIMEOUT:-60}
export RUST_LOG=${RUST_LOG:-warn}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

die() { echo "bench-traces: error: $*" >&2; exit 1; }
log() { echo "bench-traces: $*" >&2; }
# shellcheck source=scripts/bench-lib.sh
source "$SCRIPT_DIR/bench-lib.sh"

command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
release_trow_bin

PIDS=()
WORK=$(mktemp -d)
cleanup() { stop_all_servers; remove_work; }
trap cleanup EXIT
trap 'exit 130' INT TERM


# measure BIN [VAR=VALUE...] : starts storage and gateway with that environment, pushes a small
# image, sets RESULT to wrk's requests/s for GETs of its manifest by tag (not in a subshell, so
# that the exit trap knows the servers)
measure() {
    local bin=$1
    shift
    local dir sport gport url
    dir=$(mktemp -d "$WORK/run.XXXX")
    sport=$(free_port 127.0.0.1)
    start_server storage "$dir/storage.log" env "$@" "$bin" storage \
        --listen "127.0.0.1:$sport" --data-dir "$dir/data"
    local spid=$LAST_PID
    wait_tcp storage "$spid" "$dir/storage.log" "$sport"
    gport=$(free_port 127.0.0.1)
    start_server gateway "$dir/gateway.log" env "$@" "$bin" gateway \
        --bind "127.0.0.1:$gport" --storage "http://127.0.0.1:$sport"
    local gpid=$LAST_PID
    url="http://127.0.0.1:$gport"
    wait_v2 gateway "$dir/gateway.log" "$url" "$gpid" "$spid"
    push_tiny_image "$url"
    wrk_manifest_gets "$url" "$*"
    stop_server "$gpid"
    stop_server "$spid"
}

declare -A results
variants=(off on)
[[ -n ${BASE_BIN:-} ]] && variants=(base off on)
for ((run = 1; run <= BENCH_RUNS; run++)); do
    for v in "${variants[@]}"; do
        case $v in
        base) measure "$BASE_BIN" ;;
        off) measure "$TROW_BIN" ;;
        on) measure "$TROW_BIN" OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9 ;;
        esac
        log "run $run, $v: $RESULT requests/s"
        results[$v]+="$RESULT "
    done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-6s %12s   %s\n' variant "median req/s" "all runs"
for v in "${variants[@]}"; do
    printf '%-6s %12s   %s\n' "$v" "$(median "${results[$v]}")" "${results[$v]}"
done

#!/usr/bin/env bash
# What authentication, authorization rules and the audit log cost: manifest GET requests/s in
# the one-process default (or the split gateway + storage) without users, with users (a Bearer
# token from /v2/token, as clients send after login; and Basic on every request), with 20
# `authorization` rules, and with the audit log's relaxed sync; optionally beside another build
# (e.g. the one before the audit log). A benchmark, not a test.
#
#   scripts/bench-auth.sh                                  # builds trow --release
#   TROW_BIN=target/release/trow BASE_BIN=/tmp/trow-before scripts/bench-auth.sh
#   BENCH_SPLIT=1 scripts/bench-auth.sh                    # gateway + storage, gRPC on loopback
#
# Environment:
#   TROW_BIN        the trow binary to measure (skips `cargo build --release -p trow`)
#   BASE_BIN        another trow binary, measured without users (e.g. built before the audit log)
#   BENCH_SPLIT     1: `trow storage` + `trow gateway` instead of one process
#   BENCH_RUNS      rounds; each measures every variant once, in turn (default 3)
#   BENCH_SECONDS   wrk's duration per measurement (default 5)
#   BENCH_CONC      wrk's connections (default 50)
#   BENCH_KEEP      1: keep the temp dir (logs, data)
#   BENCH_START_TIMEOUT  seconds to wait for a server (default 60)
#
# Variants (every one records each manifest GET in the audit log, except `base` if it predates it):
#   base    BASE_BIN, no users
#   open    no users (the audit log with its default --audit-sync changes: a pull's event is
#           written before the answer and fdatasync'd within 1 s)
#   open-all no users, --audit-sync all (every batch fdatasync'd before its answers)
#   open-1s no users, --audit-sync 1s (written before the answer, fdatasync'd at most every 1 s)
#   bearer  users; wrk sends a token from /v2/token (HS256 verified once, then kept)
#   basic   users; wrk sends Basic credentials (a SHA-256 compared per request)
#   rules   as bearer, with 20 `authorization` rules (the one that grants the pull last)
# Needs wrk, curl and jq.

set -euo pipefail

BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_SECONDS=${BENCH_SECONDS:-5}
BENCH_CONC=${BENCH_CONC:-50}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_START_TIMEOUT=${BENCH_START_TIMEOUT:-60}
BENCH_SPLIT=${BENCH_SPLIT:-0}
export RUST_LOG=${RUST_LOG:-warn}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

die() { echo "bench-auth: error: $*" >&2; exit 1; }
log() { echo "bench-auth: $*" >&2; }
# shellcheck source=scripts/bench-lib.sh
source "$SCRIPT_DIR/bench-lib.sh"

for cmd in wrk curl jq; do command -v "$cmd" >/dev/null || die "$cmd is not installed"; done
release_trow_bin

PIDS=()
WORK=$(mktemp -d)
cleanup() { stop_all_servers; remove_work; }
trap cleanup EXIT
trap 'exit 130' INT TERM

PASSWORD=bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')

# rules_file PATH : 19 rules that do not match bench/app, then the one that does
rules_file() {
    {
        echo "authorization:"
        echo "  rules:"
        for i in $(seq 1 19); do
            printf '    - subjects: [user:other%s]\n      repositories: [team%s/]\n      actions: [pull, push]\n' "$i" "$i"
        done
        printf '    - subjects: [user:bench]\n      repositories: [bench]\n      actions: [pull, push]\n'
    } >"$1"
}

# measure BIN VARIANT : starts Trow as VARIANT says, pushes a small image, sets RESULT to wrk's
# requests/s for GETs of its manifest by tag (not in a subshell, so the exit trap knows the
# servers)
measure() {
    local bin=$1 variant=$2
    local dir url auth=() users=() extra=() header=()
    dir=$(mktemp -d "$WORK/run.XXXX")
    case $variant in
    bearer | basic | rules) users=(--user bench --password "$PASSWORD" --token-lifetime 1h) ;;
    esac
    if [[ $variant == rules ]]; then
        rules_file "$dir/config.yaml"
        users+=(--config-file "$dir/config.yaml")
    fi
    [[ $variant == open-1s ]] && extra=(--audit-sync 1s)
    [[ $variant == open-all ]] && extra=(--audit-sync all)
    local gpid spid=""
    local gport
    gport=$(free_port 127.0.0.1)
    if [[ $BENCH_SPLIT == 1 ]]; then
        local sport
        sport=$(free_port 127.0.0.1)
        start_server storage "$dir/storage.log" "$bin" storage \
            --listen "127.0.0.1:$sport" --data-dir "$dir/data" "${extra[@]}"
        spid=$LAST_PID
        wait_tcp storage "$spid" "$dir/storage.log" "$sport"
        start_server gateway "$dir/gateway.log" "$bin" gateway \
            --bind "127.0.0.1:$gport" --storage "http://127.0.0.1:$sport" "${users[@]}"
        gpid=$LAST_PID
    else
        start_server trow "$dir/trow.log" "$bin" --bind "127.0.0.1:$gport" \
            --data-dir "$dir/data" "${users[@]}" "${extra[@]}"
        gpid=$LAST_PID
    fi
    url="http://127.0.0.1:$gport"
    ((${#users[@]})) && auth=(-u "bench:$PASSWORD")
    local deadline=$((SECONDS + BENCH_START_TIMEOUT))
    until curl -s -o /dev/null "${auth[@]}" "$url/healthz"; do
        kill -0 "$gpid" 2>/dev/null || die "trow exited: $(tail -5 "$dir"/*.log)"
        ((SECONDS < deadline)) || die "trow not ready"
        sleep 0.1
    done
    push_tiny_image "$url" "${auth[@]}"
    case $variant in
    bearer | rules)
        local token
        token=$(curl -sf -u "bench:$PASSWORD" \
            "$url/v2/token?service=trow&scope=repository:bench/app:pull" | jq -r .token)
        header=(-H "Authorization: Bearer $token")
        ;;
    basic)
        header=(-H "Authorization: Basic $(printf 'bench:%s' "$PASSWORD" | base64 -w0)")
        ;;
    esac
    wrk_manifest_gets "$url" "$variant" "${header[@]}"
    stop_server "$gpid"
    [[ -n $spid ]] && stop_server "$spid"
    return 0
}

declare -A results
variants=(open open-all open-1s bearer basic rules)
[[ -n ${BASE_BIN:-} ]] && variants=(base "${variants[@]}")
for ((run = 1; run <= BENCH_RUNS; run++)); do
    for v in "${variants[@]}"; do
        case $v in
        base) measure "$BASE_BIN" base ;;
        *) measure "$TROW_BIN" "$v" ;;
        esac
        log "run $run, $v: $RESULT requests/s"
        results[$v]+="$RESULT "
    done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
topology=one-process
[[ $BENCH_SPLIT == 1 ]] && topology="split"
echo "manifest GET by tag, wrk -t1 -c$BENCH_CONC -d${BENCH_SECONDS}s, $topology, $BENCH_RUNS runs"
printf '%-8s %12s   %s\n' variant "median req/s" "all runs"
for v in "${variants[@]}"; do
    printf '%-8s %12s   %s\n' "$v" "$(median "${results[$v]}")" "${results[$v]}"
done

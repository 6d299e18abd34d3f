#!/usr/bin/env bash
# One benchmark command: Trow (one process), Trow (split: gateway + storage), CNCF distribution
# 2.8 (Debian's docker-registry) and distribution 3.1.1 (pinned in scripts/go-tools.sh), one at a
# time on loopback, the same workload for each; prints the machine's limits, one table of
# medians and the targets of issue 26 as ratios computed from the same run.
#
# This is a benchmark, not a test. Usage:
#   scripts/bench.sh                                  # builds trow --release; ~20 minutes
#   BENCH_QUICK=1 TROW_BIN=target/release/trow scripts/bench.sh   # small sizes, 1 run: ~3 minutes
#   BENCH_ONLY=one,dist3 scripts/bench.sh             # some columns only
#
# Environment (defaults in brackets; BENCH_QUICK=1 changes the ones marked q):
#   TROW_BIN        a trow binary (skips `cargo build --release -p trow`)
#   BENCH_ONLY      comma list of: one, split, dist (= distribution, dist2), dist3; trow = one,split;
#                   all [all]
#   BENCH_QUICK     1: the smoke-check sizes below, for CI
#   BENCH_RUNS      repetitions of each measurement, the table shows the median or best [3, q 1]
#   BENCH_STAT      median | best [median]
#   BENCH_MB        blob size of the push/pull rows, MiB [256, q 16]
#   BENCH_BIG_MB    the big blob (pull MB/s, peak RSS while moving it), MiB [1024, q 64]
#   BENCH_CHUNK_MB  PATCH size of the chunked push, MiB [8, q 4]
#   BENCH_SECONDS   wrk/hey duration of each load measurement [3, q 1]
#   BENCH_CONC      concurrent clients of the load measurements [50]
#   BENCH_REQS      0: skip the manifest load rows [1]
#   BENCH_SERIAL_REQS  manifest GETs from one client, one at a time (latency of one call) [500, q 50]
#   BENCH_PUTS      manifest PUTs to new tags, from 4 clients [1000, q 100]
#   BENCH_IMAGES    clients pushing one small image each, all at once [20, q 5]
#   BENCH_IMAGE_KB  size of each of the 2 layers of those images, KiB [512, q 64]
#   BENCH_TAGS      tags of the tags/list repository [10000, q 300]
#   BENCH_REPOS     repositories of the _catalog [10000, q 300]
#   BENCH_STARTS    start-ups timed (fresh data dir each) [5, q 2]
#   BENCH_AUTH      1: also Trow with users, manifest GET with a Bearer token [1]
#   BENCH_PROXY     1: also the pull-through cache rows (trow one process) [1]
#   BENCH_LIMITS    1: measure the machine's limits first [1]
#   BENCH_VERIFY    1: pull each blob once more untimed and check its sha256 [1]
#   BENCH_KEEP      1: keep the temp dir (logs, data) [0]
#   BENCH_SAMPLE_MS RSS sampling interval [50]
#   BENCH_START_TIMEOUT  seconds a server may take to start [60]
#   BENCH_IP        loopback address the servers listen on [127.0.0.1]
#   DIST_BIN        distribution 2.8 [/usr/bin/docker-registry]
#   DIST3_BIN       distribution 3 [built by scripts/go-tools.sh]
#   RUST_LOG        for trow [warn]
#
# Per server (started just before its measurements, stopped right after, by PID, own temp dir):
#   start-up   BENCH_STARTS starts on empty data dirs: ms from exec to the first GET /v2/ 200
#              (split: storage started, listening, then the gateway), polled every ms;
#   RSS idle   VmRSS 0.5 s after readiness (split: gateway + storage);
#   push       a fresh unique BENCH_MB blob per run (no run can be deduplicated): POST, one PATCH of
#              the whole body, PUT ?digest= (curl, times summed); chunked: POST, PATCHes of
#              BENCH_CHUNK_MB with Content-Range, PUT ?digest=; pull = GET, status + bytes checked;
#   big blob   a BENCH_BIG_MB blob pushed once and pulled BENCH_RUNS times; peak RSS = max VmRSS
#              sampled every BENCH_SAMPLE_MS during that push and the pulls (split: sum of maxima);
#   manifests  a tiny OCI image; its manifest read back and hashed first; GET by tag and by digest
#              with wrk (req/s, p99), HEAD by tag with hey (wrk cannot HEAD); any non-2xx or
#              socket error fails the run; 1-client mean latency with hey -c1; one process also
#              its bare GET /v2/ (the HTTP layer's ceiling, a machine limit);
#   PUTs       BENCH_PUTS manifest PUTs to new tags from 4 keep-alive clients, every answer 201
#              with the right digest; durability as each server has it (Trow fsyncs,
#              distribution does not);
#   images     BENCH_IMAGES `crane push` of as many fresh OCI layouts at once, images/s, then each
#              manifest checked by HEAD (digest);
#   listings   a store with BENCH_TAGS tags in one repository and BENCH_REPOS repositories
#              (on tmpfs when /dev/shm is writable), populated by concurrent PUTs under eatmydata
#              (untimed: populating is not what is measured) by the same server kind, then served
#              by a fresh normal process: GET tags/list and _catalog as a client does, following
#              Link headers; counts checked (Trow one process and split share one store format,
#              distribution 2.8 and 3 another: the second of a pair is served a copy);
#   auth       Trow with --user: GET by tag with a Bearer token from /v2/token (issue 21's flow);
#   proxy      Trow one process with registry_proxies naming a distribution 2.8 upstream on
#              127.0.0.163: per run a fresh BENCH_MB blob pushed upstream, then GET straight from
#              upstream, cold through /v2/f/up/... (Trow-Cache: miss) and warm (hit), and the
#              same blob pushed to Trow and pulled as a local blob by the same client: first byte
#              and total.
# The exit status is 0 when every check passed, whatever the numbers; the targets' PASS/FAIL
# lines are for reading, not for failing a build (the machine's noise would make that flaky).

set -euo pipefail
BENCH_T0=$SECONDS

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
CLIENT="$SCRIPT_DIR/bench_client.py"

die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }
# shellcheck source=scripts/bench-lib.sh
source "$SCRIPT_DIR/bench-lib.sh"

BENCH_QUICK=${BENCH_QUICK:-0}
q() { if [[ $BENCH_QUICK == 1 ]]; then echo "$2"; else echo "$1"; fi; } # FULL QUICK
BENCH_RUNS=${BENCH_RUNS:-$(q 3 1)}
BENCH_STAT=${BENCH_STAT:-median}
BENCH_MB=${BENCH_MB:-$(q 256 16)}
BENCH_BIG_MB=${BENCH_BIG_MB:-$(q 1024 64)}
BENCH_CHUNK_MB=${BENCH_CHUNK_MB:-$(q 8 4)}
BENCH_SECONDS=${BENCH_SECONDS:-$(q 3 1)}
BENCH_CONC=${BENCH_CONC:-50}
BENCH_REQS=${BENCH_REQS:-1}
BENCH_SERIAL_REQS=${BENCH_SERIAL_REQS:-$(q 500 50)}
BENCH_PUTS=${BENCH_PUTS:-$(q 1000 100)}
BENCH_IMAGES=${BENCH_IMAGES:-$(q 20 5)}
BENCH_IMAGE_KB=${BENCH_IMAGE_KB:-$(q 512 64)}
BENCH_TAGS=${BENCH_TAGS:-$(q 10000 300)}
BENCH_REPOS=${BENCH_REPOS:-$(q 10000 300)}
BENCH_STARTS=${BENCH_STARTS:-$(q 5 2)}
BENCH_AUTH=${BENCH_AUTH:-1}
BENCH_PROXY=${BENCH_PROXY:-1}
BENCH_LIMITS=${BENCH_LIMITS:-1}
BENCH_ONLY=${BENCH_ONLY:-all}
BENCH_VERIFY=${BENCH_VERIFY:-1}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_SAMPLE_MS=${BENCH_SAMPLE_MS:-50}
BENCH_START_TIMEOUT=${BENCH_START_TIMEOUT:-60}
BENCH_IP=${BENCH_IP:-127.0.0.1}
DIST_BIN=${DIST_BIN:-/usr/bin/docker-registry}
export RUST_LOG=${RUST_LOG:-warn}
export LC_ALL=C
UPSTREAM_IP=127.0.0.163 # the proxy rows' upstream
IPERF_IP=127.0.0.162    # the loopback TCP limit

for v in BENCH_RUNS BENCH_MB BENCH_BIG_MB BENCH_CHUNK_MB BENCH_SECONDS BENCH_CONC BENCH_SERIAL_REQS \
    BENCH_PUTS BENCH_IMAGES BENCH_IMAGE_KB BENCH_TAGS BENCH_REPOS BENCH_STARTS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $BENCH_STAT == median || $BENCH_STAT == best ]] || die "BENCH_STAT must be median or best"
for tool in curl python3 sha256sum dd head wrk hey; do
    command -v "$tool" >/dev/null || die "'$tool' is required but not on PATH (apt-get install curl wrk hey ...)"
done

# ---------------------------------------------------------------- what to run
DO_ONE=0 DO_SPLIT=0 DO_DIST=0 DO_DIST3=0
IFS=',' read -r -a _only <<<"$BENCH_ONLY"
for w in "${_only[@]}"; do
    case "${w// /}" in
        one | trow-one) DO_ONE=1 ;;
        split | trow-split) DO_SPLIT=1 ;;
        trow) DO_ONE=1 DO_SPLIT=1 ;;
        dist | distribution | dist2) DO_DIST=1 ;;
        dist3) DO_DIST3=1 ;;
        all) DO_ONE=1 DO_SPLIT=1 DO_DIST=1 DO_DIST3=1 ;;
        '') ;;
        *) die "unknown BENCH_ONLY entry '$w' (use one, split, trow, dist, dist3, all)" ;;
    esac
done
((DO_ONE + DO_SPLIT + DO_DIST + DO_DIST3 > 0)) || die "BENCH_ONLY selects nothing"

# ---------------------------------------------------------------- temp + cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/trow-bench.XXXXXX")
PIDS=()        # every server we started
CLIENT_PIDS=() # crane pushes running in the background
SAMPLER_PID=""
LIST_ROOT=""

cleanup() {
    local rc=$? pid
    set +e
    [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null
    for pid in "${CLIENT_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    stop_all_servers
    [[ $LIST_ROOT == /dev/shm/* ]] && rm -rf "$LIST_ROOT"
    remove_work
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

RESULTS="$WORK/results.tsv" # server  metric  value   (one line per run)
: >"$RESULTS"
rec() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; } # SERVER METRIC VALUE
mbps() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.1f", b / 1e6 / s}'; } # BYTES SECONDS -> MB/s

# ---------------------------------------------------------------- binaries
TROW="" DIST3_BIN=${DIST3_BIN:-}
if ((DO_ONE || DO_SPLIT)); then
    release_trow_bin
    TROW=$TROW_BIN
    [[ -x $TROW ]] || die "TROW_BIN=$TROW is not an executable file"
    TROW=$(cd "$(dirname "$TROW")" && pwd)/$(basename "$TROW")
fi
if ((DO_DIST)) && [[ ! -x $DIST_BIN ]]; then
    log "$DIST_BIN missing; installing debian package docker-registry"
    SUDO=""
    [[ $(id -u) == 0 ]] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y docker-registry >&2 ||
        die "could not install docker-registry (or set DIST_BIN, or leave dist out of BENCH_ONLY)"
    # the package enables a system service on :5000; we don't need it
    $SUDO systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
if ((DO_DIST3)) && [[ -z $DIST3_BIN ]]; then DIST3_BIN=$(go_tool registry); fi
CRANE=${CRANE:-$(go_tool crane)}
if command -v eatmydata >/dev/null; then
    EATMYDATA=(eatmydata)
else
    EATMYDATA=()
    log "eatmydata missing (apt-get install eatmydata): the listing stores are populated with every fsync kept (slow for Trow)"
fi
if ((DO_ONE && BENCH_PROXY)) && [[ ! -x $DIST_BIN ]]; then
    die "the proxy rows need distribution 2.8 as upstream: $DIST_BIN missing (or BENCH_PROXY=0)"
fi

# ---------------------------------------------------------------- RSS sampler
cat >"$WORK/rss_sampler.py" <<'PY'
import signal, sys, time
out, interval, pids = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
peak = {p: 0 for p in pids}
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
def rss(p):
    try:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
while True:
    for p in pids:
        peak[p] = max(peak[p], rss(p))
    if stop:
        break
    time.sleep(interval)
with open(out, "w") as f:
    f.write(f"{sum(peak.values())}\n")
PY
start_sampler() { # OUTFILE PID...
    local out=$1
    shift
    python3 "$WORK/rss_sampler.py" "$out" "$(awk -v ms="$BENCH_SAMPLE_MS" 'BEGIN{print ms/1000}')" "$@" &
    SAMPLER_PID=$!
    sleep 0.2 # let python start and take its first sample
}
stop_sampler() {
    kill -TERM "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
}

# ---------------------------------------------------------------- servers
# srv_start KIND DIR [ARGS...] : starts server KIND (one, split, dist, dist3) on the store DIR/data
# (ARGS: extra trow flags; for split the gateway's); waits for it: with users (--user in ARGS)
# until /healthz answers, else until GET /v2/ answers 200. Sets SRV_URL, SRV_PIDS, SRV_LOGS.
# srv_start_cmd KIND DIR HOST:PORT [ARGS...] prints nothing; it sets START_SPEC, the
# `-- READY HOST:PORT CMD...` groups of bench_client.py startup, which srv_start reuses.
srv_spec() { # KIND DIR PORT [ARGS...] -> sets START_SPEC
    local kind=$1 dir=$2 port=$3
    shift 3
    mkdir -p "$dir/data"
    case $kind in
        one) START_SPEC=(-- /v2/ "$BENCH_IP:$port" "$TROW" --bind "$BENCH_IP:$port" --data-dir "$dir/data" "$@") ;;
        split)
            local sport
            sport=$(free_port "$BENCH_IP")
            while [[ $sport == "$port" ]]; do sport=$(free_port "$BENCH_IP"); done
            START_SPEC=(-- tcp "$BENCH_IP:$sport" "$TROW" storage --listen "$BENCH_IP:$sport" --data-dir "$dir/data"
                -- /v2/ "$BENCH_IP:$port" "$TROW" gateway --bind "$BENCH_IP:$port" --storage "http://$BENCH_IP:$sport" "$@")
            ;;
        dist | dist3)
            dist_config "$dir/config.yml" "$BENCH_IP:$port" "$dir/data"
            local bin=$DIST_BIN
            [[ $kind == dist3 ]] && bin=$DIST3_BIN
            START_SPEC=(-- /v2/ "$BENCH_IP:$port" "$bin" serve "$dir/config.yml")
            ;;
    esac
}
srv_start() { # KIND DIR [ARGS...]
    local kind=$1 dir=$2 port i=0 ready target wrap=()
    shift 2
    if [[ ${1:-} == --eatmydata ]]; then wrap=("${EATMYDATA[@]}"); shift; fi
    port=$(free_port "$BENCH_IP")
    srv_spec "$kind" "$dir" "$port" "$@"
    SRV_PIDS=() SRV_LOGS="" SRV_URL="http://$BENCH_IP:$port"
    # walk the `-- READY HOST:PORT CMD...` groups; start each, wait for it
    local spec=("${START_SPEC[@]}" --) cmd=()
    for a in "${spec[@]:1}"; do
        if [[ $a != -- ]]; then cmd+=("$a"); continue; fi
        ready=${cmd[0]} target=${cmd[1]}
        i=$((i + 1))
        start_server "$kind#$i" "$dir/server$i.log" "${wrap[@]}" "${cmd[@]:2}"
        SRV_PIDS+=("$LAST_PID")
        SRV_LOGS+="${SRV_LOGS:+|}$dir/server$i.log"
        if [[ $ready == tcp ]]; then
            wait_tcp_on "$kind" "$LAST_PID" "$dir/server$i.log" "${target%:*}" "${target##*:}"
        elif [[ " $* " == *" --user "* ]]; then
            local deadline=$((SECONDS + BENCH_START_TIMEOUT))
            until [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$target/healthz") == 200 ]]; do
                kill -0 "$LAST_PID" 2>/dev/null || { show_log "$kind" "$SRV_LOGS"; die "$kind exited during startup"; }
                ((SECONDS < deadline)) || { show_log "$kind" "$SRV_LOGS"; die "$kind not healthy in time"; }
                sleep 0.05
            done
        else
            wait_v2 "$kind" "$SRV_LOGS" "http://$target" "${SRV_PIDS[@]}"
        fi
        cmd=()
    done
}
srv_stop() { # stops the servers of the last srv_start, the last started first
    local i
    for ((i = ${#SRV_PIDS[@]} - 1; i >= 0; i--)); do
        kill -0 "${SRV_PIDS[i]}" 2>/dev/null || { show_log server "$SRV_LOGS"; die "a server (pid ${SRV_PIDS[i]}) died during the run"; }
        stop_server "${SRV_PIDS[i]}"
    done
    SRV_PIDS=()
}
srv_rss() { local p s=0; for p in "${SRV_PIDS[@]}"; do s=$((s + $(proc_kb "$p" VmRSS))); done; echo "$s"; }

# ---------------------------------------------------------------- blob helpers
# header_value FILE NAME -> last value of header NAME (case-insensitive), CR stripped
header_value() {
    awk -v want="$(tr '[:upper:]' '[:lower:]' <<<"$2")" '
        { sub(/\r$/, "") }
        { i = index($0, ":"); if (i == 0) next
          n = tolower(substr($0, 1, i - 1))
          if (n == want) { v = substr($0, i + 1); sub(/^[ \t]+/, "", v); val = v } }
        END { print val }' "$1"
}
absolute_url() { # BASE LOCATION
    case "$2" in
        http://* | https://*) echo "$2" ;;
        /*) echo "$1$2" ;;
        *) echo "$1/$2" ;;
    esac
}
fail_req() { show_log server "$SRV_LOGS"; die "$*"; }

# push_blob BASE REPO FILE DIGEST -> seconds: POST, one PATCH of the whole file, PUT ?digest=
push_blob() {
    local base=$1 repo=$2 file=$3 digest=$4 hdr="$WORK/headers" out code t1 t2 t3 loc loc2
    out=$(curl -sS -X POST -D "$hdr" -o "$WORK/body" -w '%{http_code} %{time_total}' "$base/v2/$repo/blobs/uploads/") ||
        fail_req "POST upload failed (curl)"
    read -r code t1 <<<"$out"
    [[ $code == 202 ]] || fail_req "POST /v2/$repo/blobs/uploads/ answered $code, want 202: $(head -c 300 "$WORK/body")"
    loc=$(header_value "$hdr" location)
    [[ -n $loc ]] || fail_req "POST upload response has no Location header"
    loc=$(absolute_url "$base" "$loc")
    out=$(curl -sS -X PATCH -T "$file" -H 'Content-Type: application/octet-stream' -H 'Expect:' \
        -D "$hdr" -o "$WORK/body" -w '%{http_code} %{time_total}' "$loc") || fail_req "PATCH upload failed (curl)"
    read -r code t2 <<<"$out"
    [[ $code == 202 ]] || fail_req "PATCH answered $code, want 202: $(head -c 300 "$WORK/body")"
    loc2=$(header_value "$hdr" location)
    [[ -n $loc2 ]] && loc=$(absolute_url "$base" "$loc2")
    [[ $loc == *\?* ]] && loc="$loc&digest=$digest" || loc="$loc?digest=$digest"
    out=$(curl -sS -X PUT -H 'Content-Length: 0' -H 'Content-Type: application/octet-stream' \
        -D "$hdr" -o "$WORK/body" -w '%{http_code} %{time_total}' "$loc") || fail_req "PUT commit failed (curl)"
    read -r code t3 <<<"$out"
    [[ $code == 201 ]] || fail_req "PUT ...digest= answered $code, want 201: $(head -c 300 "$WORK/body")"
    awk -v a="$t1" -v b="$t2" -v c="$t3" 'BEGIN{printf "%.6f\n", a + b + c}'
}
# pull_blob BASE REPO DIGEST SIZE -> seconds (status and byte count checked)
pull_blob() {
    local out code n t
    out=$(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "$1/v2/$2/blobs/$3") ||
        fail_req "GET blob failed (curl)"
    read -r code n t <<<"$out"
    [[ $code == 200 ]] || fail_req "GET /v2/$2/blobs/$3 answered $code, want 200"
    [[ $n == "$4" ]] || fail_req "GET /v2/$2/blobs/$3 returned $n bytes, want $4"
    echo "$t"
}
verify_blob() { # BASE REPO DIGEST: the pulled bytes hash to DIGEST
    [[ $BENCH_VERIFY == 1 ]] || return 0
    local got
    got="sha256:$(curl -sS --fail "$1/v2/$2/blobs/$3" | sha256sum | cut -d' ' -f1)"
    [[ $got == "$3" ]] || fail_req "GET /v2/$2/blobs/$3 hashes to $got"
}

BLOB="$WORK/blob.bin" SIZE=$((BENCH_MB * 1048576))
BIG="$WORK/big.bin" BIG_SIZE=$((BENCH_BIG_MB * 1048576))
log "creating random blobs: $BENCH_MB MiB and $BENCH_BIG_MB MiB"
head -c "$SIZE" /dev/urandom >"$BLOB"
head -c "$BIG_SIZE" /dev/urandom >"$BIG"
# make_unique FILE TAG -> the new digest of FILE, its first 64 bytes made run-unique
make_unique() {
    printf '%-64.64s' "trow-bench $2 $(date +%s%N) $RANDOM$RANDOM" | dd of="$1" bs=64 count=1 conv=notrunc status=none
    echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"
}

# ---------------------------------------------------------------- machine limits
limits() {
    local n=$((BENCH_BIG_MB < 256 ? 256 : BENCH_BIG_MB)) secs v
    log "machine limits: disk write+fdatasync of $n MiB in $WORK"
    secs=$(dd if=/dev/zero of="$WORK/disk.test" bs=1M count="$n" conv=fdatasync 2>&1 |
        awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) print $(i - 1) }')
    rm -f "$WORK/disk.test"
    [[ -n $secs ]] || die "could not read dd's time"
    rec machine disk "$(mbps $((n * 1048576)) "$secs")"
    if command -v iperf3 >/dev/null; then
        local port
        port=$(free_port "$IPERF_IP")
        start_server iperf3 "$WORK/iperf3.log" iperf3 -s -B "$IPERF_IP" -p "$port"
        local ip=$LAST_PID
        wait_tcp_on iperf3 "$ip" "$WORK/iperf3.log" "$IPERF_IP" "$port"
        v=$(iperf3 -c "$IPERF_IP" -p "$port" -t "$(q 3 1)" -J |
            python3 -c 'import json, sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8e6))')
        stop_server "$ip"
        rec machine tcp "$v"
        TCP_HOW="iperf3, 1 stream"
    else
        rec machine tcp "$(python3 "$CLIENT" tcp-rate "$IPERF_IP" "$(q 4096 512)")"
        TCP_HOW="python socket, 1 stream (no iperf3)"
    fi
    rec machine sha "$(python3 "$CLIENT" sha256-rate "$(q 1024 256)")"
}
TCP_HOW="-"

# ---------------------------------------------------------------- measurements
# timed_starts KIND : BENCH_STARTS start-ups on fresh data dirs, ms each
timed_starts() {
    local kind=$1 i port dir ms
    for ((i = 1; i <= BENCH_STARTS; i++)); do
        dir="$WORK/$kind/start$i"
        port=$(free_port "$BENCH_IP")
        srv_spec "$kind" "$dir" "$port"
        ms=$(python3 "$CLIENT" startup "$dir/start.log" "$BENCH_START_TIMEOUT" "${START_SPEC[@]}") ||
            { show_log "$kind" "$dir/start.log"; die "$kind: timed start-up failed"; }
        rec "$kind" start "$ms"
        rm -rf "$dir"
    done
}

blobs() { # KIND : push (monolithic, chunked) and pull of fresh BENCH_MB blobs; the big blob
    local kind=$1 base=$SRV_URL i d s
    for ((i = 1; i <= BENCH_RUNS; i++)); do
        d=$(make_unique "$BLOB" "$kind-mono-$i")
        s=$(push_blob "$base" "bench/mono$i" "$BLOB" "$d")
        rec "$kind" push "$(mbps "$SIZE" "$s")"
        s=$(pull_blob "$base" "bench/mono$i" "$d" "$SIZE")
        rec "$kind" pull "$(mbps "$SIZE" "$s")"
        verify_blob "$base" "bench/mono$i" "$d"
        d=$(make_unique "$BLOB" "$kind-chunked-$i")
        s=$(python3 "$CLIENT" push-chunked "$base" "bench/chunked$i" "$BLOB" "$d" $((BENCH_CHUNK_MB * 1048576))) ||
            fail_req "chunked push failed"
        rec "$kind" push_chunked "$(mbps "$SIZE" "$s")"
        verify_blob "$base" "bench/chunked$i" "$d"
        log "$kind run $i: push $(tail -3 "$RESULTS" | awk -F'\t' '$2 == "push" {print $3}') MB/s, pull $(tail -2 "$RESULTS" | awk -F'\t' '$2 == "pull" {print $3}') MB/s, chunked $(tail -1 "$RESULTS" | cut -f3) MB/s"
    done
    d=$(make_unique "$BIG" "$kind-big")
    start_sampler "$WORK/peak" "${SRV_PIDS[@]}"
    s=$(push_blob "$base" bench/big "$BIG" "$d")
    rec "$kind" push_big "$(mbps "$BIG_SIZE" "$s")"
    for ((i = 1; i <= BENCH_RUNS; i++)); do
        s=$(pull_blob "$base" bench/big "$d" "$BIG_SIZE")
        rec "$kind" pull_big "$(mbps "$BIG_SIZE" "$s")"
    done
    stop_sampler
    rec "$kind" rss_peak "$(cat "$WORK/peak")"
    verify_blob "$base" bench/big "$d"
    log "$kind: $BENCH_BIG_MB MiB blob pulled at $(tail -2 "$RESULTS" | awk -F'\t' '$2 == "pull_big" {print $3}') MB/s, peak RSS $(($(cat "$WORK/peak") / 1024)) MiB"
}

# manifest_setup BASE [CURL_ARGS...] : pushes bench/app:1.0 (bench-lib.sh) and checks that GET
# by tag and by digest return the very bytes pushed; sets APP_DIGEST
manifest_setup() {
    local base=$1 got
    shift
    push_tiny_image "$base" "$@" || fail_req "pushing the tiny image bench/app:1.0 failed"
    APP_DIGEST=$(curl -sSf "$@" -I -H "Accept: $BENCH_MANIFEST_TYPE" "$base/v2/bench/app/manifests/1.0" |
        tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" {print $2}')
    [[ $APP_DIGEST == sha256:* ]] || fail_req "HEAD bench/app:1.0 has no Docker-Content-Digest"
    for ref in 1.0 "$APP_DIGEST"; do
        got="sha256:$(curl -sSf "$@" -H "Accept: $BENCH_MANIFEST_TYPE" "$base/v2/bench/app/manifests/$ref" | sha256sum | cut -d' ' -f1)"
        [[ $got == "$APP_DIGEST" ]] || fail_req "GET bench/app:$ref returns bytes hashing to $got, want $APP_DIGEST"
    done
}

manifests() { # KIND : GET by tag / digest, HEAD by tag, 1-client latency, (one) bare /v2/
    local kind=$1 base=$SRV_URL i out
    ((BENCH_REQS > 0)) || return 0
    manifest_setup "$base"
    for ((i = 1; i <= BENCH_RUNS; i++)); do
        wrk_manifest_gets "$base" "$kind GET by tag"
        rec "$kind" get_tag "$RESULT"; rec "$kind" get_tag_p99 "$RESULT_P99"
        wrk_rate "$base/v2/bench/app/manifests/$APP_DIGEST" "$kind GET by digest" -H "Accept: $BENCH_MANIFEST_TYPE"
        rec "$kind" get_digest "$RESULT"; rec "$kind" get_digest_p99 "$RESULT_P99"
        out=$(hey -z "${BENCH_SECONDS}s" -c "$BENCH_CONC" -m HEAD -H "Accept: $BENCH_MANIFEST_TYPE" "$base/v2/bench/app/manifests/1.0")
        hey_check "$kind HEAD by tag" "$out"
        rec "$kind" head_tag "$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")"
        rec "$kind" head_tag_p99 "$(awk '/99% in/ {printf "%.2f", $3 * 1000}' <<<"$out")"
        if [[ $kind == one ]]; then
            wrk_rate "$base/v2/" "$kind GET /v2/"
            rec "$kind" get_v2 "$RESULT"
        fi
        log "$kind run $i: manifest GET by tag $(grep -P "^$kind\tget_tag\t" "$RESULTS" | tail -1 | cut -f3)/s"
    done
    out=$(hey -n "$BENCH_SERIAL_REQS" -c 1 -H "Accept: $BENCH_MANIFEST_TYPE" "$base/v2/bench/app/manifests/1.0")
    hey_check "$kind 1-client GET" "$out" "$BENCH_SERIAL_REQS"
    rec "$kind" serial_ms "$(awk '/Average:/ {printf "%.3f", $2 * 1000; exit}' <<<"$out")"
}
hey_check() { # WHAT OUTPUT [N] : every answer 200 (and N of them), no errors
    local codes
    codes=$(grep -E '^\s+\[[0-9]+\]\s+[0-9]+ responses' <<<"$2" || true)
    if [[ -z $codes ]] || grep -vqE '^\s+\[200\]' <<<"$codes" || grep -q 'Error distribution' <<<"$2"; then
        die "$1: answers other than 200, or errors:"$'\n'"$2"
    fi
    [[ -z ${3:-} ]] || grep -qE "\[200\]\s+$3 responses" <<<"$codes" || die "$1: not $3 answers of 200:"$'\n'"$2"
}

puts() { # KIND : BENCH_PUTS manifest PUTs to new tags from 4 clients
    local s
    s=$(python3 "$CLIENT" puts "$SRV_URL" bench/puts "$BENCH_PUTS" 4 "t-" 1) || fail_req "manifest PUTs failed"
    rec "$1" puts "$(awk -v n="$BENCH_PUTS" -v s="$s" 'BEGIN{printf "%.1f", n / s}')"
    log "$1: $(tail -1 "$RESULTS" | cut -f3) manifest PUTs/s"
}

images() { # KIND : BENCH_IMAGES crane pushes of fresh small images at once, BENCH_RUNS times
    local kind=$1 run i t0 t1 rc failed host=${SRV_URL#http://} dir
    for ((run = 1; run <= BENCH_RUNS; run++)); do
        dir="$WORK/images"
        rm -rf "$dir"
        mkdir -p "$dir"
        python3 "$CLIENT" make-images "$dir" "$BENCH_IMAGES" "$BENCH_IMAGE_KB" "$kind-$run" >"$dir/digests"
        CLIENT_PIDS=() rc=0 failed=""
        t0=$(date +%s%N)
        for ((i = 0; i < BENCH_IMAGES; i++)); do
            "$CRANE" push --insecure "$dir/img$i" "$host/bench/img$run-$i:1" >"$dir/push$i.log" 2>&1 &
            CLIENT_PIDS+=($!)
        done
        for i in "${!CLIENT_PIDS[@]}"; do wait "${CLIENT_PIDS[i]}" || { rc=1; failed+=" $i"; }; done
        t1=$(date +%s%N)
        CLIENT_PIDS=()
        if ((rc)); then
            for i in $failed; do cat "$dir/push$i.log" >&2; done
            fail_req "$kind: crane push(es)$failed failed"
        fi
        python3 "$CLIENT" check-manifests "$SRV_URL" "bench/img$run-%d" 1 "$dir/digests" >/dev/null ||
            fail_req "$kind: a pushed image is not there"
        rec "$kind" images "$(awk -v n="$BENCH_IMAGES" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", n / ((b - a) / 1e9)}')"
        log "$kind run $run: $BENCH_IMAGES concurrent image pushes at $(tail -1 "$RESULTS" | cut -f3) images/s"
    done
    rm -rf "$dir"
}

# listings KIND : a store with BENCH_TAGS tags and BENCH_REPOS repositories. Trow one process and
# split share a store format, and so do distribution 2.8 and 3: the first of a pair populates it
# (under eatmydata, by the same server kind), the second gets a copy. The stores live in LIST_ROOT,
# on tmpfs when there is one: the listings are served from the page cache either way, and tens of
# thousands of small files cost minutes to write and delete on a busy disk, not what is measured.
declare -A LIST_STORE=()
if [[ -d /dev/shm && -w /dev/shm ]]; then
    LIST_ROOT=$(mktemp -d /dev/shm/trow-bench-list.XXXXXX)
else
    LIST_ROOT="$WORK/list"
fi
listings() {
    local kind=$1 fmt=trow dir="$LIST_ROOT/$1" s out i n pages
    [[ $kind == dist* ]] && fmt=dist
    if [[ -n ${LIST_STORE[$fmt]:-} ]]; then
        mkdir -p "$dir"
        cp -a "${LIST_STORE[$fmt]}" "$dir/data"
    else
        log "$kind: populating $BENCH_TAGS tags and $BENCH_REPOS repositories in $LIST_ROOT (untimed${EATMYDATA:+, under eatmydata})"
        srv_start "$kind" "$dir" --eatmydata
        s=$(python3 "$CLIENT" puts "$SRV_URL" bench/tags "$BENCH_TAGS" 16 "tag-" 1) || fail_req "populating tags failed"
        log "$kind: $BENCH_TAGS tags in ${s}s"
        s=$(python3 "$CLIENT" repos "$SRV_URL" "cat-" "$BENCH_REPOS" 16 bench/tags) || fail_req "populating repositories failed"
        log "$kind: $BENCH_REPOS repositories in ${s}s"
        srv_stop
        LIST_STORE[$fmt]="$dir/data"
    fi
    srv_start "$kind" "$dir"
    for ((i = 1; i <= BENCH_RUNS; i++)); do
        out=$(python3 "$CLIENT" list "$SRV_URL" /v2/bench/tags/tags/list tags tag-) || fail_req "tags/list failed"
        read -r s _ n pages <<<"$out"
        ((n == BENCH_TAGS)) || fail_req "tags/list returned $n of the $BENCH_TAGS tags"
        rec "$kind" tags_ms "$(awk -v s="$s" 'BEGIN{printf "%.1f", s * 1000}')"
        rec "$kind" tags_pages "$pages"
        out=$(python3 "$CLIENT" list "$SRV_URL" /v2/_catalog repositories cat-) || fail_req "_catalog failed"
        read -r s _ n pages <<<"$out"
        ((n == BENCH_REPOS)) || fail_req "_catalog returned $n of the $BENCH_REPOS repositories"
        rec "$kind" catalog_ms "$(awk -v s="$s" 'BEGIN{printf "%.1f", s * 1000}')"
        rec "$kind" catalog_pages "$pages"
    done
    log "$kind: tags/list $(grep -P "^$kind\ttags_ms\t" "$RESULTS" | tail -1 | cut -f3) ms, _catalog $(grep -P "^$kind\tcatalog_ms\t" "$RESULTS" | tail -1 | cut -f3) ms ($pages pages)"
    srv_stop
    # the first of a pair keeps its store for the second
    [[ ${LIST_STORE[$fmt]} == "$dir/data" ]] || rm -rf "$dir"
}

auth() { # KIND : Trow with a user; manifest GET by tag with a Bearer token
    local kind=$1 pw token i
    pw=bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    srv_start "$kind" "$WORK/$kind/auth" --user bench --password "$pw" --token-lifetime 1h
    manifest_setup "$SRV_URL" -u "bench:$pw"
    token=$(curl -sSf -u "bench:$pw" "$SRV_URL/v2/token?service=trow&scope=repository:bench/app:pull" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])') || fail_req "no token from /v2/token"
    [[ $(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $BENCH_MANIFEST_TYPE" "$SRV_URL/v2/bench/app/manifests/1.0") == 401 ]] ||
        fail_req "$kind with --user answers a manifest GET without credentials with something else than 401"
    for ((i = 1; i <= BENCH_RUNS; i++)); do
        wrk_manifest_gets "$SRV_URL" "$kind GET by tag, bearer" -H "Authorization: Bearer $token"
        rec "$kind" get_tag_auth "$RESULT"; rec "$kind" get_tag_auth_p99 "$RESULT_P99"
    done
    log "$kind: manifest GET by tag with a bearer token $RESULT/s"
    srv_stop
    rm -rf "$WORK/$kind/auth"
}

proxy() { # Trow one process as pull-through cache of a distribution 2.8 upstream on UPSTREAM_IP
    local up_port up_pid trow_dir="$WORK/proxy/trow" i d out
    mkdir -p "$WORK/proxy/up/data"
    up_port=$(free_port "$UPSTREAM_IP")
    dist_config "$WORK/proxy/up/config.yml" "$UPSTREAM_IP:$up_port" "$WORK/proxy/up/data"
    start_server "upstream distribution" "$WORK/proxy/up/registry.log" "$DIST_BIN" serve "$WORK/proxy/up/config.yml"
    up_pid=$LAST_PID
    wait_v2 upstream "$WORK/proxy/up/registry.log" "http://$UPSTREAM_IP:$up_port" "$up_pid"
    mkdir -p "$trow_dir"
    cat >"$trow_dir/config.yaml" <<EOF
registry_proxies:
  registries:
    - host: "$UPSTREAM_IP:$up_port"
      alias: up
      insecure: true
EOF
    srv_start one "$trow_dir" --config-file "$trow_dir/config.yaml"
    local upstream="http://$UPSTREAM_IP:$up_port"
    SRV_LOGS+="|$WORK/proxy/up/registry.log"
    for ((i = 1; i <= BENCH_RUNS; i++)); do
        d=$(make_unique "$BLOB" "proxy-$i")
        push_blob "$upstream" bench/px "$BLOB" "$d" >/dev/null
        out=$(python3 "$CLIENT" fetch "$upstream/v2/bench/px/blobs/$d" "$SIZE") || fail_req "GET from the upstream failed"
        rec proxy direct_first "$(cut -d' ' -f2 <<<"$out")"; rec proxy direct_total "$(cut -d' ' -f3 <<<"$out")"
        out=$(python3 "$CLIENT" fetch "$SRV_URL/v2/f/up/bench/px/blobs/$d" "$SIZE" miss) || fail_req "cold GET through the cache failed"
        rec proxy cold_first "$(cut -d' ' -f2 <<<"$out")"; rec proxy cold_total "$(cut -d' ' -f3 <<<"$out")"
        out=$(python3 "$CLIENT" fetch "$SRV_URL/v2/f/up/bench/px/blobs/$d" "$SIZE" hit) || fail_req "warm GET through the cache failed"
        rec proxy warm_first "$(cut -d' ' -f2 <<<"$out")"; rec proxy warm_total "$(cut -d' ' -f3 <<<"$out")"
        verify_blob "$SRV_URL" f/up/bench/px "$d"
        # The same blob pushed to Trow and pulled by the same client: what "warm = local" compares.
        push_blob "$SRV_URL" bench/local "$BLOB" "$d" >/dev/null
        out=$(python3 "$CLIENT" fetch "$SRV_URL/v2/bench/local/blobs/$d" "$SIZE") || fail_req "local GET failed"
        rec proxy local_first "$(cut -d' ' -f2 <<<"$out")"; rec proxy local_total "$(cut -d' ' -f3 <<<"$out")"
        log "proxy run $i: direct $(grep -P '^proxy\tdirect_total' "$RESULTS" | tail -1 | cut -f3)s, cold $(grep -P '^proxy\tcold_total' "$RESULTS" | tail -1 | cut -f3)s, warm $(grep -P '^proxy\twarm_total' "$RESULTS" | tail -1 | cut -f3)s, local $(grep -P '^proxy\tlocal_total' "$RESULTS" | tail -1 | cut -f3)s"
    done
    srv_stop
    stop_server "$up_pid"
    rm -rf "$WORK/proxy"
}

bench_server() { # KIND
    local kind=$1
    log "=== $kind"
    timed_starts "$kind"
    srv_start "$kind" "$WORK/$kind/main"
    sleep 0.5 # settle after readiness
    rec "$kind" rss_idle "$(srv_rss)"
    blobs "$kind"
    manifests "$kind"
    puts "$kind"
    images "$kind"
    srv_stop
    rm -rf "$WORK/$kind/main"
    listings "$kind"
    if [[ $kind == one || $kind == split ]]; then
        ((BENCH_AUTH)) && auth "$kind"
        [[ $kind == one ]] && ((BENCH_PROXY)) && proxy
    fi
    return 0
}

# ---------------------------------------------------------------- run
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
((BENCH_LIMITS)) && limits
((DO_ONE)) && bench_server one
((DO_SPLIT)) && bench_server split
((DO_DIST)) && bench_server dist
((DO_DIST3)) && bench_server dist3
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
export BENCH_QUICK BENCH_RUNS BENCH_STAT BENCH_MB BENCH_BIG_MB BENCH_CHUNK_MB BENCH_CONC BENCH_IMAGES \
    BENCH_TAGS BENCH_REPOS UPSTREAM_IP TCP_HOW LOAD_BEFORE LOAD_AFTER
BENCH_TOOK=$((SECONDS - BENCH_T0)) python3 "$SCRIPT_DIR/bench_report.py" "$RESULTS"
if [[ $BENCH_KEEP == 1 ]]; then
    echo "results: $RESULTS (show again: BENCH_MB=$BENCH_MB BENCH_BIG_MB=$BENCH_BIG_MB ... $SCRIPT_DIR/bench_report.py $RESULTS)"
fi

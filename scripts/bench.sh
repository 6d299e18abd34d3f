#!/usr/bin/env bash
# Blob push/pull throughput + memory benchmark on loopback:
#   Trow (one process)  vs  Trow (split gateway + storage)  vs  CNCF distribution 2.8.
#
# This is a benchmark, not a test. Usage:
#   scripts/bench.sh                                  # builds trow --release, 256 MiB, 3 runs
#   TROW_BIN=target/release/trow BENCH_MB=64 scripts/bench.sh
#   BENCH_ONLY=distribution scripts/bench.sh          # skip trow entirely
#
# Environment:
#   TROW_BIN        path to a trow binary (skips `cargo build --release -p trow`)
#   BENCH_MB        blob size in MiB (default 256)
#   BENCH_RUNS      push+pull repetitions per registry (default 3)
#   BENCH_STAT      median | best  (how the runs are summarised, default median)
#   BENCH_ONLY      comma list of: one, split, distribution (aliases: trow = one,split;
#                   dist = distribution). Default: all three.
#   BENCH_VERIFY    1 (default): after the timed runs, pull once more (untimed) and check sha256
#   BENCH_KEEP      1: keep the temp dir (logs, data) instead of deleting it
#   BENCH_SAMPLE_MS RSS sampling interval in ms (default 50)
#   BENCH_START_TIMEOUT  seconds to wait for GET /v2/ == 200 (default 60)
#   DIST_BIN        distribution binary (default /usr/bin/docker-registry)
#   RUST_LOG        passed to trow (default: warn, so logging does not skew numbers)
#   BENCH_REQS      manifest GETs in the load phase (default 20000; 0 skips it)
#   BENCH_CONC      concurrent clients in the load phase (default 50)
#   BENCH_SERIAL_REQS  manifest GETs from one client, one at a time, for the latency of one
#                   request (default 500)
#
# Method, per registry and per run i:
#   - a fresh unique blob: the 64-byte head of the random file is overwritten with a
#     run-unique tag and the sha256 recomputed (untimed), so no run can be deduplicated;
#   - push  = POST /v2/bench<i>/blobs/uploads/ -> 202 Location; one PATCH with the whole
#             body (application/octet-stream, Content-Length, streamed from the file);
#             PUT <Location>&digest=sha256:... -> 201.   Time = sum of the three curl
#             time_total values;
#   - pull  = GET /v2/bench<i>/blobs/sha256:... -> /dev/null, time = curl time_total,
#             status and byte count checked;
#   - RSS: VmRSS sampled every BENCH_SAMPLE_MS during all pushes/pulls, max kept
#     ("RSS peak"); "RSS idle" is VmRSS after startup + readiness, before any traffic.
#   - load: a small manifest is pushed, then `hey` sends BENCH_REQS GETs for it with
#     BENCH_CONC concurrent clients (what a cluster pulling one image from many nodes does);
#     requests/s and the 99th-percentile latency are reported, all answers must be 200.
# Registries are run one after another (each started just before its runs and stopped
# right after), so they never compete for CPU or page cache with each other.

set -euo pipefail

BENCH_MB=${BENCH_MB:-256}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_STAT=${BENCH_STAT:-median}
BENCH_ONLY=${BENCH_ONLY:-one,split,distribution}
BENCH_VERIFY=${BENCH_VERIFY:-1}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_SAMPLE_MS=${BENCH_SAMPLE_MS:-50}
BENCH_START_TIMEOUT=${BENCH_START_TIMEOUT:-60}
DIST_BIN=${DIST_BIN:-/usr/bin/docker-registry}
export RUST_LOG=${RUST_LOG:-warn}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }
# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

[[ $BENCH_MB =~ ^[1-9][0-9]*$ ]] || die "BENCH_MB must be a positive integer (got '$BENCH_MB')"
[[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer (got '$BENCH_RUNS')"
[[ $BENCH_STAT == median || $BENCH_STAT == best ]] || die "BENCH_STAT must be median or best"
for tool in curl python3 sha256sum dd head; do
    command -v "$tool" >/dev/null || die "'$tool' is required but not on PATH"
done

# ---------------------------------------------------------------- what to run
DO_ONE=0 DO_SPLIT=0 DO_DIST=0
IFS=',' read -r -a _only <<<"$BENCH_ONLY"
for w in "${_only[@]}"; do
    case "${w// /}" in
        one | trow-one) DO_ONE=1 ;;
        split | trow-split) DO_SPLIT=1 ;;
        trow) DO_ONE=1 DO_SPLIT=1 ;;
        dist | distribution) DO_DIST=1 ;;
        all) DO_ONE=1 DO_SPLIT=1 DO_DIST=1 ;;
        '') ;;
        *) die "unknown BENCH_ONLY entry '$w' (use one, split, trow, distribution, all)" ;;
    esac
done
((DO_ONE + DO_SPLIT + DO_DIST > 0)) || die "BENCH_ONLY selects nothing"

# ---------------------------------------------------------------- temp + cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/trow-bench.XXXXXX")
PIDS=()        # every server we started
SAMPLER_PID=""

cleanup() {
    local rc=$?
    set +e
    [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null
    stop_all_servers
    remove_work
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

rss_kb() { # pid -> VmRSS in kB
    local k v _
    while read -r k v _; do
        [[ $k == VmRSS: ]] && { echo "$v"; return; }
    done <"/proc/$1/status"
    echo 0
}
hwm_kb() { # pid -> VmHWM in kB
    local k v _
    while read -r k v _; do
        [[ $k == VmHWM: ]] && { echo "$v"; return; }
    done <"/proc/$1/status"
    echo 0
}

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
    for p in pids:
        f.write(f"{p} {peak[p]}\n")
PY

start_sampler() { # outfile pid...
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

# header_value FILE NAME -> last value of header NAME (case-insensitive), CR stripped
header_value() {
    awk -v want="$(tr '[:upper:]' '[:lower:]' <<<"$2")" '
        { sub(/\r$/, "") }
        { i = index($0, ":"); if (i == 0) next
          n = tolower(substr($0, 1, i - 1))
          if (n == want) { v = substr($0, i + 1); sub(/^[ \t]+/, "", v); val = v } }
        END { print val }' "$1"
}

absolute_url() { # base location
    case "$2" in
        http://* | https://*) echo "$2" ;;
        /*) echo "$1$2" ;;
        *) echo "$1/$2" ;;
    esac
}

# push_blob NAME BASE REPO FILE DIGEST LOG -> prints seconds (float)
push_blob() {
    local name=$1 base=$2 repo=$3 file=$4 digest=$5 logf=$6
    local hdr="$WORK/headers" out code t1 t2 t3 loc put_url
    # 1. POST: start upload
    out=$(curl -sS -X POST -D "$hdr" -o "$WORK/body" -w '%{http_code} %{time_total}' \
        "$base/v2/$repo/blobs/uploads/") || { show_log "$name" "$logf"; die "$name: POST upload failed (curl)"; }
    read -r code t1 <<<"$out"
    [[ $code == 202 ]] || { cat "$WORK/body" >&2; show_log "$name" "$logf"; die "$name: POST /v2/$repo/blobs/uploads/ returned $code, want 202"; }
    loc=$(header_value "$hdr" location)
    [[ -n $loc ]] || die "$name: POST upload response has no Location header"
    loc=$(absolute_url "$base" "$loc")
    # 2. PATCH: the whole blob in one request, streamed from the file (-T), no Expect: 100-continue
    out=$(curl -sS -X PATCH -T "$file" -H 'Content-Type: application/octet-stream' -H 'Expect:' \
        -D "$hdr" -o "$WORK/body" -w '%{http_code} %{time_total}' "$loc") ||
        { show_log "$name" "$logf"; die "$name: PATCH upload failed (curl)"; }
    read -r code t2 <<<"$out"
    [[ $code == 202 ]] || { cat "$WORK/body" >&2; show_log "$name" "$logf"; die "$name: PATCH returned $code, want 202"; }
    # the PATCH response Location supersedes the old one (distribution encodes state in it)
    local loc2
    loc2=$(header_value "$hdr" location)
    [[ -n $loc2 ]] && loc=$(absolute_url "$base" "$loc2")
    # 3. PUT ?digest= with empty body: commit
    if [[ $loc == *\?* ]]; then put_url="$loc&digest=$digest"; else put_url="$loc?digest=$digest"; fi
    out=$(curl -sS -X PUT -H 'Content-Length: 0' -H 'Content-Type: application/octet-stream' \
        -D "$hdr" -o "$WORK/body" -w '%{http_code} %{time_total}' "$put_url") ||
        { show_log "$name" "$logf"; die "$name: PUT commit failed (curl)"; }
    read -r code t3 <<<"$out"
    [[ $code == 201 ]] || { cat "$WORK/body" >&2; show_log "$name" "$logf"; die "$name: PUT ...digest= returned $code, want 201"; }
    awk -v a="$t1" -v b="$t2" -v c="$t3" 'BEGIN{printf "%.6f\n", a + b + c}'
}

# pull_blob NAME BASE REPO DIGEST SIZE LOG -> prints seconds
pull_blob() {
    local name=$1 base=$2 repo=$3 digest=$4 size=$5 logf=$6 out code n t
    out=$(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}' \
        "$base/v2/$repo/blobs/$digest") || { show_log "$name" "$logf"; die "$name: GET blob failed (curl)"; }
    read -r code n t <<<"$out"
    [[ $code == 200 ]] || { show_log "$name" "$logf"; die "$name: GET /v2/$repo/blobs/$digest returned $code, want 200"; }
    [[ $n == "$size" ]] || die "$name: GET blob returned $n bytes, want $size"
    echo "$t"
}

# ---------------------------------------------------------------- the blob
BLOB="$WORK/blob.bin"
SIZE=$((BENCH_MB * 1024 * 1024))
log "creating ${BENCH_MB} MiB random blob"
head -c "$SIZE" /dev/urandom >"$BLOB"
BASE_DIGEST="sha256:$(sha256sum "$BLOB" | cut -d' ' -f1)"
log "base blob $BASE_DIGEST (each run rewrites its first 64 bytes to get a unique digest)"

# make_unique TAG -> prints the new digest of $BLOB
make_unique() {
    printf '%-64.64s' "trow-bench $1 $(date +%s%N) $RANDOM$RANDOM" |
        dd of="$BLOB" bs=64 count=1 conv=notrunc status=none
    echo "sha256:$(sha256sum "$BLOB" | cut -d' ' -f1)"
}

BENCH_REQS=${BENCH_REQS:-20000}
BENCH_CONC=${BENCH_CONC:-50}
BENCH_SERIAL_REQS=${BENCH_SERIAL_REQS:-500}
if ((BENCH_REQS > 0)) && ! command -v hey >/dev/null; then
    log "hey missing; installing debian package hey"
    SUDO=""
    [[ $(id -u) == 0 ]] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y hey >&2 ||
        { $SUDO apt-get update >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y hey >&2; } ||
        die "could not install hey (set BENCH_REQS=0 to skip the load phase)"
fi

LOAD="$WORK/load.tsv"       # key  requests/s  p99 seconds  serial mean seconds
: >"$LOAD"

# load_manifest NAME BASE LOG KEY: push a small image manifest, then GET it under load.
load_manifest() {
    local name=$1 base=$2 logf=$3 key=$4 cfg="$WORK/config.json" out="$WORK/hey.$4"
    printf '{}' >"$cfg"
    local cd loc m code
    cd="sha256:$(sha256sum "$cfg" | cut -d' ' -f1)"
    loc=$(curl -sS -D - -o /dev/null -X POST "$base/v2/benchm/blobs/uploads/" | header_value /dev/stdin location)
    loc=$(absolute_url "$base" "$loc")
    [[ $loc == *\?* ]] && loc="$loc&digest=$cd" || loc="$loc?digest=$cd"
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$cfg" "$loc")
    [[ $code == 201 ]] || { show_log "$name" "$logf"; die "$name: config push answered $code"; }
    m="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$cd\",\"size\":2},\"layers\":[]}"
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data "$m" "$base/v2/benchm/manifests/v1")
    [[ $code == 201 ]] || { show_log "$name" "$logf"; die "$name: manifest push answered $code"; }
    hey -n "$BENCH_REQS" -c "$BENCH_CONC" -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "$base/v2/benchm/manifests/v1" >"$out"
    grep -q "\[200\].*$BENCH_REQS responses" "$out" || { cat "$out" >&2; die "$name: not every manifest GET answered 200"; }
    # One client, one request at a time: the per-call latency a gRPC hop adds shows here
    # (Nagle's algorithm on a gRPC server's sockets once cost the split topology 44 ms a call).
    hey -n "$BENCH_SERIAL_REQS" -c 1 -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "$base/v2/benchm/manifests/v1" >"$out.serial"
    grep -q "\[200\].*$BENCH_SERIAL_REQS responses" "$out.serial" || { cat "$out.serial" >&2; die "$name: not every serial manifest GET answered 200"; }
    printf '%s\t%s\t%s\t%s\n' "$key" "$(awk '/Requests\/sec/ {print $2}' "$out")" "$(awk '/99% in/ {print $3}' "$out")" \
        "$(awk '/Average:/ {print $2; exit}' "$out.serial")" >>"$LOAD"
    log "$name: $(awk '/Requests\/sec/ {print $2}' "$out") manifest GETs/s"
}

RESULTS="$WORK/results.tsv" # key  kind  run  seconds
MEM="$WORK/mem.tsv"         # key  component  idle_kb  peak_kb  hwm_kb
: >"$RESULTS"
: >"$MEM"

# bench_registry KEY NAME BASEURL LOG COMPONENT=PID...
bench_registry() {
    local key=$1 name=$2 base=$3 logf=$4
    shift 4
    local comps=("$@") pids=() c i digest s peakf="$WORK/peak.$key"
    for c in "${comps[@]}"; do pids+=("${c#*=}"); done

    sleep 0.5 # settle after readiness
    declare -A idle=()
    for c in "${comps[@]}"; do idle[${c%%=*}]=$(rss_kb "${c#*=}"); done

    local last_repo="" last_digest=""
    for ((i = 1; i <= BENCH_RUNS; i++)); do
        # new unique blob (hashing is untimed and not sampled)
        digest=$(make_unique "$key-$i")
        start_sampler "$peakf.$i" "${pids[@]}"
        s=$(push_blob "$name" "$base" "bench$i" "$BLOB" "$digest" "$logf")
        printf '%s\tpush\t%d\t%s\n' "$key" "$i" "$s" >>"$RESULTS"
        local ps=$s
        s=$(pull_blob "$name" "$base" "bench$i" "$digest" "$SIZE" "$logf")
        stop_sampler
        printf '%s\tpull\t%d\t%s\n' "$key" "$i" "$s" >>"$RESULTS"
        log "$name run $i/$BENCH_RUNS: push $(awk -v s="$ps" -v b="$SIZE" 'BEGIN{printf "%.1f", b/1048576/s}') MiB/s, pull $(awk -v s="$s" -v b="$SIZE" 'BEGIN{printf "%.1f", b/1048576/s}') MiB/s"
        last_repo="bench$i" last_digest=$digest
    done

    if ((BENCH_REQS > 0)); then
        load_manifest "$name" "$base" "$logf" "$key"
    fi

    if [[ $BENCH_VERIFY == 1 ]]; then
        local got
        got="sha256:$(curl -sS --fail "$base/v2/$last_repo/blobs/$last_digest" | sha256sum | cut -d' ' -f1)"
        [[ $got == "$last_digest" ]] || die "$name: pulled blob hashes to $got, pushed $last_digest"
        log "$name: verified pulled blob sha256"
    fi

    # per component: idle, max over all sampled windows, VmHWM
    local name_c pid_c peak f v
    for c in "${comps[@]}"; do
        name_c=${c%%=*} pid_c=${c#*=} peak=0
        for f in "$peakf".*; do
            v=$(awk -v p="$pid_c" '$1 == p {print $2}' "$f")
            if ((${v:-0} > peak)); then peak=$v; fi
        done
        printf '%s\t%s\t%s\t%s\t%s\n' "$key" "$name_c" "${idle[$name_c]}" "$peak" "$(hwm_kb "$pid_c")" >>"$MEM"
    done
    rm -f "$peakf"*
}

# ---------------------------------------------------------------- trow binary
TROW=""
if ((DO_ONE || DO_SPLIT)); then
    if [[ -n ${TROW_BIN:-} ]]; then
        TROW=$TROW_BIN
        [[ -x $TROW ]] || die "TROW_BIN=$TROW_BIN is not an executable file"
    else
        command -v cargo >/dev/null || die "cargo not found (or set TROW_BIN=/path/to/trow)"
        log "building trow (cargo build --release -p trow)"
        (cd "$REPO_ROOT" && cargo build --release -p trow) || die "cargo build --release -p trow failed"
        TROW="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/trow"
        [[ -x $TROW ]] || die "build succeeded but $TROW does not exist"
    fi
    TROW=$(cd "$(dirname "$TROW")" && pwd)/$(basename "$TROW")
fi

# ---------------------------------------------------------------- distribution binary
if ((DO_DIST)); then
    if [[ ! -x $DIST_BIN ]]; then
        log "$DIST_BIN missing; installing debian package docker-registry"
        SUDO=""
        [[ $(id -u) == 0 ]] || SUDO=sudo
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get install -y docker-registry >&2 ||
            { $SUDO apt-get update >&2 && $SUDO apt-get install -y docker-registry >&2; } ||
            die "could not install docker-registry (set BENCH_ONLY=trow to skip distribution)"
        # the package enables a system service on :5000; we don't need it
        $SUDO systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
    [[ -x $DIST_BIN ]] || die "$DIST_BIN not found after install"
fi

# ---------------------------------------------------------------- run
if ((DO_ONE)); then
    port=$(free_port)
    dir="$WORK/trow-one"
    mkdir -p "$dir/data"
    start_server "trow (one process)" "$dir/trow.log" "$TROW" --bind "127.0.0.1:$port" --data-dir "$dir/data"
    pid=$LAST_PID
    wait_v2 "trow (one process)" "$dir/trow.log" "http://127.0.0.1:$port" "$pid"
    bench_registry one "trow (one process)" "http://127.0.0.1:$port" "$dir/trow.log" "trow=$pid"
    stop_server "$pid"
    rm -rf "$dir/data"
fi

if ((DO_SPLIT)); then
    port=$(free_port)
    gport=$(free_port)
    while [[ $gport == "$port" ]]; do gport=$(free_port); done
    dir="$WORK/trow-split"
    mkdir -p "$dir/data"
    start_server "trow storage" "$dir/storage.log" "$TROW" storage --listen "127.0.0.1:$gport" --data-dir "$dir/data"
    spid=$LAST_PID
    wait_tcp "trow storage" "$spid" "$dir/storage.log" "$gport"
    start_server "trow gateway" "$dir/gateway.log" "$TROW" gateway --bind "127.0.0.1:$port" --storage "http://127.0.0.1:$gport"
    gpid=$LAST_PID
    logs="$dir/gateway.log|$dir/storage.log"
    wait_v2 "trow (split)" "$logs" "http://127.0.0.1:$port" "$gpid" "$spid"
    bench_registry split "trow (split)" "http://127.0.0.1:$port" "$logs" "gateway=$gpid" "storage=$spid"
    stop_server "$gpid"
    stop_server "$spid"
    rm -rf "$dir/data"
fi

if ((DO_DIST)); then
    port=$(free_port)
    dir="$WORK/distribution"
    mkdir -p "$dir/data"
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: trow-bench-not-secret
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    start_server "distribution" "$dir/registry.log" "$DIST_BIN" serve "$dir/config.yml"
    pid=$LAST_PID
    wait_v2 "distribution" "$dir/registry.log" "http://127.0.0.1:$port" "$pid"
    bench_registry dist "distribution 2.8" "http://127.0.0.1:$port" "$dir/registry.log" "registry=$pid"
    stop_server "$pid"
    rm -rf "$dir/data"
fi

# ---------------------------------------------------------------- report
python3 - "$RESULTS" "$MEM" "$SIZE" "$BENCH_STAT" "$BENCH_RUNS" "$LOAD" "$BENCH_REQS" "$BENCH_CONC" <<'PY'
import statistics, sys
results, mem, size, stat, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
load, reqs, conc = sys.argv[6], sys.argv[7], sys.argv[8]
names = {"one": "trow (one process)", "split": "trow (split)", "dist": "distribution 2.8"}
order = [k for k in ("one", "split", "dist")]
speeds = {}
for line in open(results):
    key, kind, _run, secs = line.split("\t")
    speeds.setdefault(key, {}).setdefault(kind, []).append(size / 1048576 / float(secs))
memrows = {}
for line in open(mem):
    key, comp, idle, peak, hwm = line.rstrip("\n").split("\t")
    memrows.setdefault(key, []).append((comp, int(idle), int(peak), int(hwm)))
keys = [k for k in order if k in speeds]
summ = lambda xs: (statistics.median(xs) if stat == "median" else max(xs))
mib = lambda kb: f"{kb / 1024:.1f}M"
dist = {kind: summ(speeds["dist"][kind]) for kind in ("push", "pull")} if "dist" in speeds else None

print()
print(f"blob {size // 1048576} MiB, {runs} run(s) each, throughput = {stat} of runs, MiB/s; "
      "RSS in MiB (peak = max VmRSS sampled during push+pull)")
hdr = f"{'registry':<20}{'push MiB/s':>11}{'pull MiB/s':>11}{'push vs dist':>14}{'pull vs dist':>14}{'RSS idle':>10}{'RSS peak':>10}"
print(hdr)
print("-" * len(hdr))
for k in keys:
    push, pull = summ(speeds[k]["push"]), summ(speeds[k]["pull"])
    rp = f"{push / dist['push']:.2f}x" if dist else "-"
    rl = f"{pull / dist['pull']:.2f}x" if dist else "-"
    rows = memrows.get(k, [])
    idle = sum(r[1] for r in rows)
    peak = sum(r[2] for r in rows)   # sum of per-process maxima (upper bound for split)
    print(f"{names[k]:<20}{push:>11.1f}{pull:>11.1f}{rp:>14}{rl:>14}{mib(idle):>10}{mib(peak):>10}")
    if len(rows) > 1:
        for comp, i, p, h in rows:
            print(f"{'  ' + comp:<20}{'':>11}{'':>11}{'':>14}{'':>14}{mib(i):>10}{mib(p):>10}")
print()
print("per-run MiB/s (push / pull), VmHWM:")
for k in keys:
    runs_s = ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(speeds[k]["push"], speeds[k]["pull"]))
    hwm = " ".join(f"{c}={mib(h)}" for c, _, _, h in memrows.get(k, []))
    print(f"  {names[k]:<20} {runs_s}   HWM {hwm}")
loads = {}
for line in open(load):
    key, rps, p99, serial = line.rstrip("\n").split("\t")
    loads[key] = (float(rps), float(p99), float(serial))
if loads:
    print()
    print(f"manifest GET under load: {reqs} requests, {conc} concurrent clients (hey)")
    print("  (1-client ms: mean latency of one request at a time; split/one shows what the gRPC hop costs)")
    hdr = f"{'registry':<20}{'requests/s':>12}{'vs dist':>10}{'p99 ms':>10}{'1-client ms':>13}{'vs one':>9}"
    print(hdr)
    print("-" * len(hdr))
    base = loads.get("dist", (None,))[0]
    one = loads.get("one", (None, None, None))[2]
    for k in [k for k in order if k in loads]:
        rps, p99, serial = loads[k]
        ratio = f"{rps / base:.2f}x" if base else "-"
        vs_one = f"{serial / one:.2f}x" if one else "-"
        print(f"{names[k]:<20}{rps:>12.0f}{ratio:>10}{p99 * 1000:>10.1f}{serial * 1000:>13.2f}{vs_one:>9}")
PY

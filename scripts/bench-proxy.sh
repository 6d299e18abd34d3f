#!/usr/bin/env bash
# Pull-through cache benchmark on loopback: pulling an image through Trow's `/v2/f/<alias>/...`
# versus pulling it straight from the upstream, both through one bandwidth-limited link.
#
# This is a benchmark, not a test. Usage:
#   scripts/bench-proxy.sh                                # builds trow --release, 3 runs
#   TROW_BIN=target/release/trow BENCH_RATE_MIB=100 scripts/bench-proxy.sh
#
# Environment:
#   TROW_BIN             path to a trow binary (skips `cargo build --release --bin trow`)
#   BENCH_RUNS           repetitions of every measurement; the table shows the median (default 3)
#   BENCH_RATE_MIB       bandwidth of the link in front of the upstream, MiB/s, shared by every
#                        connection through it (default 200; 0 = unlimited)
#   BENCH_LAYERS_MB      comma list of layer sizes in MiB, random bytes (default 24,30,35,40)
#   BENCH_CLIENTS        concurrent pulls in row 4 (default 10)
#   BENCH_BIG_MB         size in MiB of the layer of row 5, a cold fill whose peak RSS is measured
#                        (default 1024; 0 skips the row)
#   BENCH_KEEP           1: keep the temp dirs (logs) instead of deleting them
#   BENCH_START_TIMEOUT  seconds to wait for GET /v2/ == 200 (default 60)
#   DIST_BIN             CNCF distribution binary (default /usr/bin/docker-registry)
#   CRANE                crane binary (default: on PATH, else built by scripts/go-tools.sh)
#   RUST_LOG             passed to trow (default: warn, so logging does not skew numbers)
#
# Set-up (untimed):
#   - upstream: CNCF distribution on 127.0.0.1:<port> (own temp dir, access log on), seeded with
#     `crane append` with one image bench/app:1 of BENCH_LAYERS_MB layers (each a tarball of one
#     file of /dev/urandom bytes, so incompressible) plus its config;
#   - the link: a small asyncio TCP relay (python3, written below) on 127.0.0.2:<port> in front of
#     that distribution. Everything that reads the upstream, Trow and the direct clients alike,
#     goes through it; it paces all bytes it sends towards clients, summed over every connection,
#     to BENCH_RATE_MIB (like a WAN link or a registry's per-client cap), and counts them.
#     (A relay rather than `tc` on lo: lo is shared with everything else on the machine.)
#   - trow: one process (the default mode), `--config-file` listing the relay as upstream
#     `127.0.0.2:<port>` with `alias: up` and `insecure: true`; a fresh process and data dir
#     for every cold measurement.
# Rows, each measured BENCH_RUNS times, trow = `127.0.0.1:<trow>/f/up/bench/app:1`,
# direct = `127.0.0.2:<relay>/bench/app:1`:
#   1. cold pull of the whole image: `crane pull --format=oci` into an empty dir (on /dev/shm),
#      wall time;
#   2. the largest layer on a cold cache, one GET by a small python http client: time to the
#      response headers (what curl calls time_starttransfer), to the first body byte, and to the
#      last byte (for trow: about when the layer is verified and cached);
#   3. warm pull: the same crane pull again on the trow that just did the cold pull (served from
#      the cache, the tag revalidated with one HEAD upstream); direct: a second direct pull;
#   4. BENCH_CLIENTS crane pulls started at once (trow: fresh data dir): wall time until the last
#      one finishes, bytes the relay sent (HTTP headers included) and blob GETs in distribution's
#      access log, against the image size (manifest + config + layers).
#   Every pulled layout is checked (untimed): blob count and total size equal the image's; crane
#   verifies every digest while it pulls. Trow's VmRSS is read after rows 3 and 4, VmHWM after 4.
#   5. once, after the runs: a cold fill of one layer of BENCH_BIG_MB MiB (image bench/big:1,
#      pushed like the other) on a fresh trow, read by one GET that hashes and discards the body;
#      the upstream is configured a second time as `127.0.0.1:<distribution port>` (alias `fast`),
#      so this fill skips the relay and goes as fast as loopback and distribution allow: the
#      worst case for a fill's memory (an upstream faster than the disk). Trow's VmHWM after it is
#      the peak RSS of a cold fill; target: under 64 MiB whatever the layer's size.
# Direct and trow measurements alternate within each run, so slow drift hits both.

set -euo pipefail

BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_RATE_MIB=${BENCH_RATE_MIB:-200}
BENCH_LAYERS_MB=${BENCH_LAYERS_MB:-24,30,35,40}
BENCH_CLIENTS=${BENCH_CLIENTS:-10}
BENCH_BIG_MB=${BENCH_BIG_MB:-1024}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_START_TIMEOUT=${BENCH_START_TIMEOUT:-60}
DIST_BIN=${DIST_BIN:-/usr/bin/docker-registry}
export RUST_LOG=${RUST_LOG:-warn}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

die() { echo "bench-proxy: error: $*" >&2; exit 1; }
log() { echo "bench-proxy: $*" >&2; }
# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

[[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer (got '$BENCH_RUNS')"
[[ $BENCH_RATE_MIB =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_RATE_MIB must be a number (got '$BENCH_RATE_MIB')"
[[ $BENCH_CLIENTS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CLIENTS must be a positive integer (got '$BENCH_CLIENTS')"
[[ $BENCH_BIG_MB =~ ^[0-9]+$ ]] || die "BENCH_BIG_MB must be a non-negative integer (got '$BENCH_BIG_MB')"
[[ $BENCH_LAYERS_MB =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "BENCH_LAYERS_MB must be a comma list of positive integers (got '$BENCH_LAYERS_MB')"
for tool in curl python3 sha256sum tar head find awk date; do
    command -v "$tool" >/dev/null || die "'$tool' is required but not on PATH"
done
[[ -x $DIST_BIN ]] || die "$DIST_BIN not found (apt-get install docker-registry, or set DIST_BIN)"

BENCH_T0=$SECONDS

# ---------------------------------------------------------------- temp + cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/trow-bench-proxy.XXXXXX")
# pulled layouts go to RAM when possible, so the client's disk writes do not blur the numbers
if [[ -d /dev/shm && -w /dev/shm ]]; then
    OUT=$(mktemp -d /dev/shm/trow-bench-proxy.XXXXXX)
else
    OUT="$WORK/out"
    mkdir -p "$OUT"
fi
PIDS=()        # every server we started
CLIENT_PIDS=() # crane pulls running in the background

cleanup() {
    local rc=$?
    set +e
    for pid in "${CLIENT_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${CLIENT_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    stop_all_servers
    rm -rf "$OUT"
    remove_work
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

cpu_ticks() { # PID -> utime + stime of the whole process (all threads), in clock ticks
    local stat f
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) } # fields after "(comm)": state is field 3
    read -r -a f <<<"$stat"
    echo $((f[11] + f[12]))
}
CLK_TCK=$(getconf CLK_TCK)
cpu_secs() { awk -v a="$1" -v b="$2" -v hz="$CLK_TCK" 'BEGIN{printf "%.3f\n", (b - a) / hz}'; } # TICKS0 TICKS1

secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.6f\n", (b - a) / 1e9}'; } # NS_START NS_END

RESULTS="$WORK/results.tsv" # metric  path  run  value
: >"$RESULTS"
RUN=0
rec() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$RUN" "$3" >>"$RESULTS"; } # METRIC PATH VALUE

# ---------------------------------------------------------------- tools
if [[ -z ${CRANE:-} ]]; then
    if command -v crane >/dev/null; then
        CRANE=$(command -v crane)
    else
        gobin=${TROW_GO_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/trow-tests/go}/bin
        if [[ ! -x $gobin/crane ]]; then
            log "crane missing; building the pinned Go tools (scripts/go-tools.sh)"
            gobin=$("$SCRIPT_DIR/go-tools.sh") || die "scripts/go-tools.sh failed (or set CRANE=/path/to/crane)"
        fi
        CRANE=$gobin/crane
    fi
fi
[[ -x $CRANE ]] || die "crane not found at '$CRANE'"

if [[ -n ${TROW_BIN:-} ]]; then
    TROW=$TROW_BIN
    [[ -x $TROW ]] || die "TROW_BIN=$TROW_BIN is not an executable file"
else
    command -v cargo >/dev/null || die "cargo not found (or set TROW_BIN=/path/to/trow)"
    log "building trow (cargo build --release --bin trow)"
    (cd "$REPO_ROOT" && cargo build --release --bin trow) || die "cargo build --release --bin trow failed"
    TROW="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/trow"
    [[ -x $TROW ]] || die "build succeeded but $TROW does not exist"
fi
TROW=$(cd "$(dirname "$TROW")" && pwd)/$(basename "$TROW")

# ---------------------------------------------------------------- python helpers
# The link: TCP relay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT RATE_MIB CONTROL_PORT.
# Bytes towards the client are paced on one virtual clock shared by all connections (so the
# rate is the link's, however many connections share it), with 5 ms of burst so that the
# event loop's ~1 ms timer granularity costs no throughput. Requests are not paced. A connection
# to 127.0.0.1:CONTROL_PORT gets "bytes_to_clients bytes_to_upstream connections\n".
cat >"$WORK/relay.py" <<'PY'
import asyncio, signal, socket, sys, time

lhost, lport, thost, tport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rate = float(sys.argv[5]) * 1048576
ctl_port = int(sys.argv[6])
CHUNK = 256 * 1024
LIMIT = 4 * 1048576
BURST = 0.005
stats = {"down": 0, "up": 0, "conns": 0}
next_free = 0.0

async def pace(n):
    global next_free
    if rate <= 0:
        return
    now = time.monotonic()
    next_free = max(now, next_free) + n / rate
    delay = next_free - now - BURST
    if delay > 0:
        await asyncio.sleep(delay)

async def pipe(reader, writer, key, paced):
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            if paced:
                await pace(len(data))
            writer.write(data)
            stats[key] += len(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            pass

async def handle(cr, cw):
    stats["conns"] += 1
    try:
        ur, uw = await asyncio.open_connection(thost, tport, limit=LIMIT)
    except OSError:
        cw.close()
        return
    for w in (cw, uw):
        s = w.get_extra_info("socket")
        if s is not None:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.gather(pipe(cr, uw, "up", False), pipe(ur, cw, "down", True))
    finally:
        for w in (cw, uw):
            w.close()

async def control(r, w):
    w.write(f"{stats['down']} {stats['up']} {stats['conns']}\n".encode())
    try:
        await w.drain()
    finally:
        w.close()

async def main():
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.start_server(handle, lhost, lport, limit=LIMIT, reuse_address=True)
    await asyncio.start_server(control, "127.0.0.1", ctl_port, reuse_address=True)
    print(f"relay {lhost}:{lport} -> {thost}:{tport} at {sys.argv[5]} MiB/s", flush=True)
    await stop.wait()

asyncio.run(main())
PY

# One blob GET, timed: URL OUTFILE -> "status size t_headers t_first_body t_total trow_cache"
# (seconds from before connect; t_headers is what curl reports as time_starttransfer, t_first_body
# is when the first byte of the layer itself arrived).
cat >"$WORK/fetch.py" <<'PY'
import http.client, sys, time, urllib.parse

url, out = sys.argv[1], sys.argv[2]
u = urllib.parse.urlsplit(url)
t0 = time.perf_counter()
c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
c.request("GET", u.path, headers={"User-Agent": "trow-bench-proxy"})
r = c.getresponse()
t_head = time.perf_counter() - t0
t_body, n = None, 0
with open(out, "wb") as f:
    while True:
        b = r.read1(1 << 20)
        if not b:
            break
        if t_body is None:
            t_body = time.perf_counter() - t0
        n += len(b)
        f.write(b)
t_total = time.perf_counter() - t0
print(r.status, n, f"{t_head:.6f}", f"{t_body if t_body is not None else t_total:.6f}", f"{t_total:.6f}",
      r.getheader("Trow-Cache") or "-")
PY

# One blob GET that hashes the body and drops it: URL -> "status bytes sha256:<hex> trow_cache"
cat >"$WORK/fetch_hash.py" <<'PY'
import hashlib, http.client, sys, urllib.parse

u = urllib.parse.urlsplit(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
c.request("GET", u.path, headers={"User-Agent": "trow-bench-proxy"})
r = c.getresponse()
h, n = hashlib.sha256(), 0
while True:
    b = r.read1(1 << 20)
    if not b:
        break
    h.update(b)
    n += len(b)
print(r.status, n, "sha256:" + h.hexdigest(), r.getheader("Trow-Cache") or "-")
PY

# ---------------------------------------------------------------- upstream + link
DIST_PORT=$(free_port 127.0.0.1)
DIST_DIR="$WORK/distribution"
mkdir -p "$DIST_DIR/data"
cat >"$DIST_DIR/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $DIST_DIR/data
http:
  addr: 127.0.0.1:$DIST_PORT
  secret: trow-bench-proxy-not-secret
EOF
DIST_LOG="$DIST_DIR/registry.log" # the access log goes to stdout, i.e. here
start_server "distribution (upstream)" "$DIST_LOG" "$DIST_BIN" serve "$DIST_DIR/config.yml"
DIST_PID=$LAST_PID
wait_v2 "distribution" "$DIST_LOG" "http://127.0.0.1:$DIST_PORT" "$DIST_PID"

RELAY_HOST=127.0.0.2
RELAY_PORT=$(free_port "$RELAY_HOST")
CTL_PORT=$(free_port 127.0.0.1)
start_server "relay ($BENCH_RATE_MIB MiB/s)" "$WORK/relay.log" \
    python3 "$WORK/relay.py" "$RELAY_HOST" "$RELAY_PORT" 127.0.0.1 "$DIST_PORT" "$BENCH_RATE_MIB" "$CTL_PORT"
RELAY_PID=$LAST_PID
wait_tcp_on relay "$RELAY_PID" "$WORK/relay.log" 127.0.0.1 "$CTL_PORT"
wait_v2 "relay" "$WORK/relay.log" "http://$RELAY_HOST:$RELAY_PORT" "$RELAY_PID"

relay_down() { # -> bytes the relay has sent towards clients so far
    local down _
    exec 3<>"/dev/tcp/127.0.0.1/$CTL_PORT"
    read -r down _ <&3
    exec 3<&-
    echo "$down"
}
blob_gets() { # -> blob GETs distribution has answered so far (200 or 206)
    grep -cE '"GET /v2/[^ ]+/blobs/sha256:[0-9a-f]{64} HTTP/[0-9.]+" 20[06] ' "$DIST_LOG" || true
}
MARK_BYTES=0 MARK_GETS=0
mark() { MARK_BYTES=$(relay_down); MARK_GETS=$(blob_gets); }
since_mark() { UP_BYTES=$(($(relay_down) - MARK_BYTES)); UP_GETS=$(($(blob_gets) - MARK_GETS)); }

# ---------------------------------------------------------------- the image
IFS=',' read -r -a LAYER_MB <<<"$BENCH_LAYERS_MB"
log "creating ${#LAYER_MB[@]} layers of random bytes (${BENCH_LAYERS_MB// /} MiB) and pushing bench/app:1"
append_args=()
for i in "${!LAYER_MB[@]}"; do
    d="$WORK/layer$i"
    mkdir -p "$d"
    head -c $((LAYER_MB[i] * 1048576)) /dev/urandom >"$d/random$i.bin"
    tar -C "$d" -cf "$WORK/layer$i.tar" "random$i.bin"
    rm -rf "$d"
    append_args+=(-f "$WORK/layer$i.tar")
done
"$CRANE" append --insecure --oci-empty-base -t "127.0.0.1:$DIST_PORT/bench/app:1" "${append_args[@]}" \
    >"$WORK/append.log" 2>&1 || { cat "$WORK/append.log" >&2; die "crane append to distribution failed"; }
rm -f "$WORK"/layer*.tar
curl -sS --fail -o "$WORK/manifest.json" \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
    "http://127.0.0.1:$DIST_PORT/v2/bench/app/manifests/1" || die "could not read back the manifest"
# -> blobs(layers+config) image_bytes largest_digest largest_size "sizes in MiB"
read -r NBLOBS IMAGE_BYTES BIG_DIGEST BIG_SIZE LAYER_DESC < <(python3 - "$WORK/manifest.json" <<'PY'
import json, os, sys
path = sys.argv[1]
m = json.load(open(path))
layers = m["layers"]
big = max(layers, key=lambda l: l["size"])
total = os.path.getsize(path) + m["config"]["size"] + sum(l["size"] for l in layers)
print(len(layers) + 1, total, big["digest"], big["size"], "+".join(f"{l['size'] / 1048576:.1f}" for l in layers))
PY
)
[[ -n ${BIG_DIGEST:-} ]] || die "could not parse the pushed manifest"
log "image: $((NBLOBS - 1)) layers ($LAYER_DESC MiB) + config + manifest = $IMAGE_BYTES bytes; largest layer $BIG_DIGEST"

# ---------------------------------------------------------------- trow
cat >"$WORK/trow.yaml" <<EOF
registry_proxies:
  registries:
    - host: "$RELAY_HOST:$RELAY_PORT"
      alias: up
      insecure: true
    - host: "127.0.0.1:$DIST_PORT"
      alias: fast
      insecure: true
EOF
TROW_N=0
start_trow() { # a fresh process on a fresh data dir; sets TROW_PID TROW_PORT TROW_LOG TROW_DIR
    TROW_N=$((TROW_N + 1))
    TROW_DIR="$WORK/trow.$TROW_N"
    mkdir -p "$TROW_DIR/data"
    TROW_PORT=$(free_port 127.0.0.1)
    TROW_LOG="$TROW_DIR/trow.log"
    start_server "trow #$TROW_N" "$TROW_LOG" "$TROW" --bind "127.0.0.1:$TROW_PORT" \
        --data-dir "$TROW_DIR/data" --config-file "$WORK/trow.yaml"
    TROW_PID=$LAST_PID
    wait_v2 "trow" "$TROW_LOG" "http://127.0.0.1:$TROW_PORT" "$TROW_PID"
    sleep 0.3 # settle after readiness
}
stop_trow() {
    kill -0 "$TROW_PID" 2>/dev/null || { show_log trow "$TROW_LOG"; die "trow (pid $TROW_PID) died during the run"; }
    stop_server "$TROW_PID"
    rm -rf "$TROW_DIR/data"
}

DIRECT_REF="$RELAY_HOST:$RELAY_PORT/bench/app:1"
trow_ref() { echo "127.0.0.1:$TROW_PORT/f/up/bench/app:1"; }

# check_layout DIR NAME: the pulled OCI layout holds exactly the image's blobs
check_layout() {
    local n bytes
    read -r n bytes < <(find "$1/blobs" -type f -printf '%s\n' | awk '{ n++; s += $1 } END { print n + 0, s + 0 }')
    ((n == NBLOBS + 1 && bytes == IMAGE_BYTES)) ||
        die "$2: pulled layout has $n blobs, $bytes bytes; want $((NBLOBS + 1)) blobs, $IMAGE_BYTES bytes"
}

# pull NAME REF : one timed crane pull into a fresh dir; sets RESULT (seconds)
pull() {
    local name=$1 ref=$2 dest="$OUT/pull" t0 t1
    rm -rf "$dest"
    t0=$(date +%s%N)
    if ! "$CRANE" pull --insecure --format=oci "$ref" "$dest" >"$WORK/crane.log" 2>&1; then
        cat "$WORK/crane.log" >&2
        [[ $name == trow* ]] && show_log trow "$TROW_LOG"
        die "$name: crane pull $ref failed"
    fi
    t1=$(date +%s%N)
    RESULT=$(secs "$t0" "$t1")
    check_layout "$dest" "$name"
    rm -rf "$dest"
}

# pull_many NAME REF : BENCH_CLIENTS crane pulls at once; sets RESULT (seconds until the last ends)
pull_many() {
    local name=$1 ref=$2 t0 t1 i rc=0 failed=""
    rm -rf "$OUT"/many.*
    CLIENT_PIDS=()
    t0=$(date +%s%N)
    for ((i = 1; i <= BENCH_CLIENTS; i++)); do
        "$CRANE" pull --insecure --format=oci "$ref" "$OUT/many.$i" >"$WORK/crane.many.$i.log" 2>&1 &
        CLIENT_PIDS+=($!)
    done
    for i in "${!CLIENT_PIDS[@]}"; do
        wait "${CLIENT_PIDS[i]}" || { rc=$?; failed+=" $((i + 1))"; }
    done
    t1=$(date +%s%N)
    CLIENT_PIDS=()
    if ((rc != 0)); then
        for i in $failed; do cat "$WORK/crane.many.$i.log" >&2; done
        [[ $name == trow* ]] && show_log trow "$TROW_LOG"
        die "$name: concurrent crane pull(s)$failed of $BENCH_CLIENTS failed"
    fi
    RESULT=$(secs "$t0" "$t1")
    for ((i = 1; i <= BENCH_CLIENTS; i++)); do check_layout "$OUT/many.$i" "$name (client $i)"; done
    rm -rf "$OUT"/many.*
}

# fetch_big NAME URL WANT_CACHE : GET the largest layer; sets T_HEAD T_BODY T_TOTAL
fetch_big() {
    local name=$1 url=$2 want=$3 status n cache got
    read -r status n T_HEAD T_BODY T_TOTAL cache < <(python3 "$WORK/fetch.py" "$url" "$OUT/layer" || echo "error")
    [[ $status == 200 ]] || { [[ $name == trow* ]] && show_log trow "$TROW_LOG"; die "$name: GET $url answered '$status', want 200"; }
    [[ $n == "$BIG_SIZE" ]] || die "$name: GET $url returned $n bytes, want $BIG_SIZE"
    [[ $cache == "$want" ]] || die "$name: GET $url has Trow-Cache '$cache', want '$want' (is the cache cold?)"
    got="sha256:$(sha256sum "$OUT/layer" | cut -d' ' -f1)"
    [[ $got == "$BIG_DIGEST" ]] || die "$name: the layer from $url hashes to $got, want $BIG_DIGEST"
    rm -f "$OUT/layer"
}

# ---------------------------------------------------------------- runs
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for ((RUN = 1; RUN <= BENCH_RUNS; RUN++)); do
    log "run $RUN/$BENCH_RUNS"

    # 1 + 3: cold pull, then warm pull on the same trow; direct twice
    mark; pull direct "$DIRECT_REF"; since_mark
    rec cold direct "$RESULT"; rec cold_bytes direct "$UP_BYTES"; rec cold_gets direct "$UP_GETS"
    start_trow
    rec rss_idle trow "$(proc_kb "$TROW_PID" VmRSS)"
    c0=$(cpu_ticks "$TROW_PID")
    mark; pull trow "$(trow_ref)"; since_mark
    c1=$(cpu_ticks "$TROW_PID")
    rec cold trow "$RESULT"; rec cold_bytes trow "$UP_BYTES"; rec cold_gets trow "$UP_GETS"
    rec cold_cpu trow "$(cpu_secs "$c0" "$c1")"
    mark; pull "trow (warm)" "$(trow_ref)"; since_mark
    rec warm trow "$RESULT"; rec warm_bytes trow "$UP_BYTES"; rec warm_gets trow "$UP_GETS"
    rec warm_cpu trow "$(cpu_secs "$c1" "$(cpu_ticks "$TROW_PID")")"
    rec rss_pull trow "$(proc_kb "$TROW_PID" VmRSS)"
    stop_trow
    mark; pull "direct (2nd)" "$DIRECT_REF"; since_mark
    rec warm direct "$RESULT"; rec warm_bytes direct "$UP_BYTES"; rec warm_gets direct "$UP_GETS"
    log "  cold pull: direct $(awk -F'\t' -v r="$RUN" '$1=="cold"&&$2=="direct"&&$3==r{print $4}' "$RESULTS")s, trow $(awk -F'\t' -v r="$RUN" '$1=="cold"&&$2=="trow"&&$3==r{print $4}' "$RESULTS")s; warm trow $(awk -F'\t' -v r="$RUN" '$1=="warm"&&$2=="trow"&&$3==r{print $4}' "$RESULTS")s"

    # 2: the largest layer on a cold cache
    fetch_big direct "http://$RELAY_HOST:$RELAY_PORT/v2/bench/app/blobs/$BIG_DIGEST" -
    rec head direct "$T_HEAD"; rec body direct "$T_BODY"; rec layer direct "$T_TOTAL"
    start_trow
    fetch_big trow "http://127.0.0.1:$TROW_PORT/v2/f/up/bench/app/blobs/$BIG_DIGEST" miss
    rec head trow "$T_HEAD"; rec body trow "$T_BODY"; rec layer trow "$T_TOTAL"
    stop_trow
    log "  largest layer cold: trow first byte ${T_BODY}s, whole ${T_TOTAL}s"

    # 4: BENCH_CLIENTS pulls at once
    mark; pull_many "direct x$BENCH_CLIENTS" "$DIRECT_REF"; since_mark
    rec conc direct "$RESULT"; rec conc_bytes direct "$UP_BYTES"; rec conc_gets direct "$UP_GETS"
    start_trow
    c0=$(cpu_ticks "$TROW_PID")
    mark; pull_many "trow x$BENCH_CLIENTS" "$(trow_ref)"; since_mark
    rec conc_cpu trow "$(cpu_secs "$c0" "$(cpu_ticks "$TROW_PID")")"
    rec conc trow "$RESULT"; rec conc_bytes trow "$UP_BYTES"; rec conc_gets trow "$UP_GETS"
    rec rss_conc trow "$(proc_kb "$TROW_PID" VmRSS)"
    rec hwm_conc trow "$(proc_kb "$TROW_PID" VmHWM)"
    stop_trow
    log "  $BENCH_CLIENTS concurrent: direct $(awk -F'\t' -v r="$RUN" '$1=="conc"&&$2=="direct"&&$3==r{print $4}' "$RESULTS")s, trow ${RESULT}s, trow upstream bytes $UP_BYTES"
done

# 5: the peak RSS of one cold fill of a big layer, straight from distribution
BIG_LINE=""
if ((BENCH_BIG_MB > 0)); then
    log "creating a layer of $BENCH_BIG_MB MiB and pushing bench/big:1"
    mkdir -p "$WORK/big"
    head -c $((BENCH_BIG_MB * 1048576)) /dev/urandom >"$WORK/big/big.bin"
    tar -C "$WORK/big" -cf "$WORK/big.tar" big.bin
    rm -rf "$WORK/big"
    "$CRANE" append --insecure --oci-empty-base -t "127.0.0.1:$DIST_PORT/bench/big:1" -f "$WORK/big.tar" \
        >"$WORK/append-big.log" 2>&1 || { cat "$WORK/append-big.log" >&2; die "crane append of bench/big:1 failed"; }
    rm -f "$WORK/big.tar"
    read -r BIGL_DIGEST BIGL_SIZE < <(curl -sS --fail \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
        "http://127.0.0.1:$DIST_PORT/v2/bench/big/manifests/1" |
        python3 -c 'import json,sys; l=json.load(sys.stdin)["layers"][0]; print(l["digest"], l["size"])')
    [[ -n ${BIGL_DIGEST:-} ]] || die "could not read back bench/big:1"
    start_trow
    hwm0=$(proc_kb "$TROW_PID" VmHWM)
    t0=$(date +%s%N)
    read -r status n got cache < <(python3 "$WORK/fetch_hash.py" \
        "http://127.0.0.1:$TROW_PORT/v2/f/fast/bench/big/blobs/$BIGL_DIGEST" || echo error)
    t1=$(date +%s%N)
    [[ $status == 200 && ${n:-} == "$BIGL_SIZE" && ${got:-} == "$BIGL_DIGEST" && ${cache:-} == miss ]] ||
        { show_log trow "$TROW_LOG"; die "cold GET of the big layer: status '$status', ${n:-?} bytes, ${got:-?}, Trow-Cache ${cache:-?}; want 200, $BIGL_SIZE bytes, $BIGL_DIGEST, miss"; }
    hwm=$(proc_kb "$TROW_PID" VmHWM)
    stop_trow
    BIG_LINE=$(awk -v hwm="$hwm" -v hwm0="$hwm0" -v size="$BIGL_SIZE" -v s="$(secs "$t0" "$t1")" 'BEGIN {
        ok = hwm / 1024 < 64 ? "ok" : "MISSED"
        printf "5 cold fill of a %.0f MiB layer, upstream unthrottled: %.2f s; trow peak RSS (VmHWM) %.1f MiB (%.1f MiB before it); target < 64 MiB  %s\n", size / 1048576, s, hwm / 1024, hwm0 / 1024, ok }')
    log "  $BIG_LINE"
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
python3 - "$RESULTS" "$IMAGE_BYTES" "$NBLOBS" "$LAYER_DESC" "$BENCH_RATE_MIB" "$BENCH_RUNS" "$BENCH_CLIENTS" \
    "$LOAD_BEFORE" "$LOAD_AFTER" "$(nproc)" "$((SECONDS - BENCH_T0))" "$(dirname "$OUT")" <<'PY'
import statistics, sys

results, image, nblobs, layers, rate, runs, clients, load0, load1, ncpu, took, outdir = sys.argv[1:]
image, nblobs, clients = int(image), int(nblobs), int(clients)
vals = {}
for line in open(results):
    metric, path, _run, v = line.rstrip("\n").split("\t")
    vals.setdefault((metric, path), []).append(float(v))
med = lambda m, p: statistics.median(vals[(m, p)])
MiB = 1048576

def size(b):
    return f"{b / MiB:.1f} MiB" if b >= MiB / 10 else f"{b / 1024:.1f} KiB"

rate_s = "no cap (BENCH_RATE_MIB=0)" if float(rate) == 0 else f"a cap of {float(rate):g} MiB/s"
print()
print(f"image bench/app:1: {nblobs - 1} layers ({layers} MiB, random bytes) + config + manifest = "
      f"{image / MiB:.1f} MiB ({image} bytes)")
print(f"upstream: CNCF distribution 2.8 behind a TCP relay with {rate_s} on the bytes it sends, summed "
      f"over all connections (Trow's and the direct clients' alike)")
print(f"pulls: crane pull --format=oci into {outdir}; every time is the median of {runs} run(s)")
print(f"trow = one process, /v2/f/up/... ; direct = the same upstream through the same relay, no cache")
print()
W = (42, 6, 13, 13, 12)
hdr = f"{'':<{W[0]}}{'':<{W[1]}}{'trow':>{W[2]}}{'direct':>{W[3]}}{'trow/direct':>{W[4]}}  target"
print(hdr)
print("-" * (len(hdr) + 24))

def row(label, unit, t, d, ratio=None, note=""):
    r = "" if ratio is None else f"{ratio:.2f}x"
    print(f"{label:<{W[0]}}{unit:<{W[1]}}{t:>{W[2]}}{d:>{W[3]}}{r:>{W[4]}}  {note}".rstrip())

def check(ok):
    return "ok" if ok else "MISSED"

t, d = med("cold", "trow"), med("cold", "direct")
row("1 cold pull, whole image", "s", f"{t:.3f}", f"{d:.3f}", t / d, f"<= 1.10x  {check(t / d <= 1.10)}")
row("    upstream bytes", "", size(med("cold_bytes", "trow")), size(med("cold_bytes", "direct")))
h, b, l = med("head", "trow"), med("body", "trow"), med("layer", "trow")
dh, db, dl = med("head", "direct"), med("body", "direct"), med("layer", "direct")
row("2 largest layer, cold: response headers", "s", f"{h:.4f}", f"{dh:.4f}", None, "(curl's time_starttransfer)")
row("  largest layer, cold: first body byte", "s", f"{b:.4f}", f"{db:.4f}", None,
    f"well before the last  {check(b < l / 10)}")
row("  largest layer, cold: whole layer", "s", f"{l:.3f}", f"{dl:.3f}", l / dl, "(trow: ~ when it is cached)")
row("  first body byte / whole layer", "", f"{100 * b / l:.1f}%", f"{100 * db / dl:.1f}%")
t, d = med("warm", "trow"), med("warm", "direct")
row("3 warm pull (2nd pull; trow: from cache)", "s", f"{t:.3f}", f"{d:.3f}", t / d, f"< 1x  {check(t < d)}")
row("    upstream bytes", "", size(med("warm_bytes", "trow")), size(med("warm_bytes", "direct")), None,
    "(trow: the tag's HEAD only)")
t, d = med("conc", "trow"), med("conc", "direct")
row(f"4 {clients} concurrent cold pulls, wall", "s", f"{t:.3f}", f"{d:.3f}", t / d)
tb, db_ = med("conc_bytes", "trow"), med("conc_bytes", "direct")
row("    upstream bytes", "", size(tb), size(db_), tb / db_, f"= image  {check(tb <= image * 1.01)}")
row("    upstream bytes / image size", "", f"{tb / image:.3f}x", f"{db_ / image:.3f}x")
tg, dg = med("conc_gets", "trow"), med("conc_gets", "direct")
row("    upstream blob GETs", "", f"{tg:.0f}", f"{dg:.0f}", None, f"{nblobs} = each blob once  {check(tg == nblobs)}")
print()
kb = lambda m: f"{med(m, 'trow') / 1024:.1f} MiB"
print(f"trow RSS (median): idle {kb('rss_idle')}, after cold+warm pull {kb('rss_pull')}, "
      f"after {clients} concurrent pulls {kb('rss_conc')}; peak (VmHWM) during them {kb('hwm_conc')}, "
      f"max over runs {max(vals[('hwm_conc', 'trow')]) / 1024:.1f} MiB")
print(f"trow CPU time (user+sys, median): cold pull {med('cold_cpu', 'trow'):.2f} s, warm pull "
      f"{med('warm_cpu', 'trow'):.2f} s, {clients} concurrent pulls {med('conc_cpu', 'trow'):.2f} s")
print()
print("per run (trow / direct, seconds):")
for name, m in (("cold pull", "cold"), ("first body byte", "body"), ("whole layer", "layer"),
                ("warm pull", "warm"), (f"{clients} concurrent", "conc")):
    pairs = ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(vals[(m, "trow")], vals[(m, "direct")]))
    print(f"  {name:<16} {pairs}")
print()
print(f"load average (1/5/15 min) before: {load0}, after: {load1}, on {ncpu} CPUs; "
      f"the benchmark took {took} s (build and set-up included)")
PY
if [[ -n $BIG_LINE ]]; then
    echo
    echo "$BIG_LINE"
fi

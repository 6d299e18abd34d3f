# shellcheck shell=bash
# Helpers the benchmark scripts share (sourced by bench.sh, bench-proxy.sh, bench-gc.sh,
# bench-traces.sh, bench-auth.sh):
# starting and stopping servers by PID, waiting for them to listen, showing their logs, free
# ports and /proc readings. The sourcing script defines `die` and `log`, the array `PIDS`
# (every server it started, which its exit trap stops) and BENCH_START_TIMEOUT (seconds).

# free_port [HOST] : a free TCP port on HOST (default 127.0.0.1)
free_port() {
    python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1]); s.close()' "${1:-127.0.0.1}"
}

# start_server NAME LOGFILE CMD... : starts CMD in the background; sets LAST_PID
start_server() {
    local name=$1 logf=$2
    shift 2
    "$@" >"$logf" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    log "started $name (pid $LAST_PID)"
}

# stop_server PID : SIGTERM, then SIGKILL after 5 s; forgets the PID
stop_server() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

# stop_all_servers : what an exit trap does: SIGTERM to every server in PIDS at once, then
# up to 5 s for each to exit before SIGKILL
stop_all_servers() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
}

# remove_work : deletes the temp dir WORK, or keeps it (and says where) when BENCH_KEEP=1
remove_work() {
    if [[ $BENCH_KEEP == 1 ]]; then
        log "kept temp dir $WORK"
    else
        rm -rf "$WORK"
    fi
}

# show_log NAME LOGFILE[|LOGFILE...] : the last 60 lines of each, on stderr
show_log() {
    local f files
    IFS='|' read -r -a files <<<"$2"
    for f in "${files[@]}"; do
        echo "----- log of $1: $f (last 60 lines) -----" >&2
        tail -n 60 "$f" >&2 || true
    done
    echo "----- end of log -----" >&2
}

exit_status() { local rc=0; wait "$1" 2>/dev/null || rc=$?; echo "$rc"; }

# wait_tcp_on NAME PID LOG HOST PORT : wait for HOST:PORT to accept TCP connections; dies
# (showing LOG) if PID exits first or BENCH_START_TIMEOUT passes
wait_tcp_on() {
    local name=$1 pid=$2 logf=$3 host=$4 port=$5 deadline=$((SECONDS + BENCH_START_TIMEOUT))
    while ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            show_log "$name" "$logf"
            die "$name (pid $pid) exited with status $(exit_status "$pid") before listening on $host:$port"
        fi
        ((SECONDS < deadline)) || { show_log "$name" "$logf"; die "$name did not listen on $host:$port within ${BENCH_START_TIMEOUT}s"; }
        sleep 0.05
    done
}

# wait_tcp NAME PID LOG PORT : wait_tcp_on on 127.0.0.1
wait_tcp() { wait_tcp_on "$1" "$2" "$3" 127.0.0.1 "$4"; }

# wait_v2 NAME LOG BASEURL PID... : poll GET /v2/ until 200, all PIDs must stay alive
wait_v2() {
    local name=$1 logf=$2 base=$3
    shift 3
    local deadline=$((SECONDS + BENCH_START_TIMEOUT)) code=000 pid
    while :; do
        for pid in "$@"; do
            if ! kill -0 "$pid" 2>/dev/null; then
                show_log "$name" "$logf"
                die "$name (pid $pid) exited with status $(exit_status "$pid") during startup"
            fi
        done
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$base/v2/" || true)
        [[ $code == 200 ]] && return 0
        if ((SECONDS >= deadline)); then
            show_log "$name" "$logf"
            die "$name: GET $base/v2/ did not return 200 within ${BENCH_START_TIMEOUT}s (last status $code)"
        fi
        sleep 0.05
    done
}

# proc_kb PID FIELD : the value in kB of FIELD (VmRSS, VmHWM) from /proc/PID/status
proc_kb() {
    local k v _
    while read -r k v _; do
        [[ $k == "$2:" ]] && { echo "$v"; return; }
    done <"/proc/$1/status"
    echo 0
}

# release_trow_bin : sets TROW_BIN to a release build of trow unless it is set already
# (needs REPO_ROOT)
release_trow_bin() {
    if [[ -z ${TROW_BIN:-} ]]; then
        log "building trow --release"
        (cd "$REPO_ROOT" && cargo build --release -p trow >&2)
        TROW_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/trow"
    fi
}

BENCH_MANIFEST_TYPE='application/vnd.oci.image.manifest.v1+json'

# push_tiny_image URL [CURL_ARGS...] : pushes bench/app:1.0, an OCI manifest with the empty
# config `{}` and no layers, to the registry at URL (CURL_ARGS: e.g. -u user:password)
push_tiny_image() {
    local url=$1 cfg='{}' cd loc man
    shift
    cd=$(printf '%s' "$cfg" | sha256sum | cut -d' ' -f1)
    loc=$(curl -sf "$@" -D - -o /dev/null -X POST "$url/v2/bench/app/blobs/uploads/" |
        tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
    [[ $loc == http* ]] || loc=$url$loc
    [[ $loc == *\?* ]] && loc="$loc&" || loc="$loc?"
    curl -sf "$@" -X PUT -H 'Content-Type: application/octet-stream' --data-binary "$cfg" \
        "${loc}digest=sha256:$cd" >/dev/null
    man="{\"schemaVersion\":2,\"mediaType\":\"$BENCH_MANIFEST_TYPE\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cd\",\"size\":2},\"layers\":[]}"
    curl -sf "$@" -X PUT -H "Content-Type: $BENCH_MANIFEST_TYPE" --data-binary "$man" \
        "$url/v2/bench/app/manifests/1.0" >/dev/null
}

# wrk_rate URL WHAT [WRK_ARGS...] : wrk -t1 -c$BENCH_CONC -d$BENCH_SECONDS --latency GETs of URL;
# sets RESULT (requests/s) and RESULT_P99 (ms); dies on any non-2xx answer or socket error, so a
# failing server cannot post a fast number
wrk_rate() {
    local url=$1 what=$2 out
    shift 2
    out=$(wrk -t1 -c"$BENCH_CONC" -d"${BENCH_SECONDS}s" --latency "$@" "$url")
    grep -qE 'Non-2xx|Socket errors' <<<"$out" && die "wrong answers or socket errors ($what):"$'\n'"$out"
    RESULT=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
    # shellcheck disable=SC2034 # read by the sourcing script
    RESULT_P99=$(awk '$1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
        printf "%.2f", v * (u == "us" ? 0.001 : u == "s" ? 1000 : u == "m" ? 60000 : 1) }' <<<"$out")
    [[ -n $RESULT && $RESULT != 0 ]] || die "wrk measured nothing ($what):"$'\n'"$out"
}

# wrk_manifest_gets URL WHAT [WRK_ARGS...] : sets RESULT to the requests/s of wrk
# (-t1 -c$BENCH_CONC -d$BENCH_SECONDS) GETting bench/app:1.0 at URL; dies on any non-2xx answer
wrk_manifest_gets() {
    local url=$1 what=$2
    shift 2
    wrk_rate "$url/v2/bench/app/manifests/1.0" "$what" -H "Accept: $BENCH_MANIFEST_TYPE" "$@"
}

# go_tool NAME : the path of pinned Go tool NAME (crane, registry, ...), building the pinned
# set with scripts/go-tools.sh the first time (needs SCRIPT_DIR)
go_tool() {
    local bin=${TROW_GO_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/trow-tests/go}/bin
    if [[ ! -x $bin/$1 ]]; then
        log "$1 missing; building the pinned Go tools (scripts/go-tools.sh)"
        bin=$("$SCRIPT_DIR/go-tools.sh") || die "scripts/go-tools.sh failed"
    fi
    [[ -x $bin/$1 ]] || die "$1 not found in $bin after scripts/go-tools.sh"
    echo "$bin/$1"
}

# dist_config FILE ADDR ROOTDIR : a CNCF distribution (2.x or 3.x) config serving ADDR from the
# filesystem at ROOTDIR, logging errors only (no access log, so logging does not skew numbers)
dist_config() {
    cat >"$1" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $3
  delete:
    enabled: true
http:
  addr: $2
  secret: trow-bench-not-secret
EOF
}

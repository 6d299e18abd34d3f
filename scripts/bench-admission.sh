#!/usr/bin/env bash
# Admission webhook benchmark: requests/s and latency of POST /validate-image and
# POST /mutate-image at BENCH_CONC concurrent clients (hey), over plain HTTP and HTTPS, next to
# GET /v2/ on the same server (the floor: what any request costs).
#
# This is a benchmark, not a test. Usage:
#   scripts/bench-admission.sh                        # builds trow --release
#   TROW_BIN=target/release/trow BENCH_REQS=50000 scripts/bench-admission.sh
#
# Environment:
#   TROW_BIN     path to a trow binary (skips `cargo build --release --bin trow`)
#   BENCH_REQS   requests per row (default 20000)
#   BENCH_CONC   concurrent clients (default 50)
#   BENCH_KEEP   1: keep the temp dir (logs)
#   RUST_LOG     passed to trow (default: warn)
#
# Method: one `trow` (one process) with a policy of 6 prefixes and mutation for Docker Hub and
# ghcr.io,
# pre-warm off (it would go to the network; what is measured is the webhook's answer). The
# review is a Pod CREATE with 3 containers (an app image that is allowed and rewritten, an init
# container from a denied registry, a sidecar by digest), as the API server sends it, so
# validation answers a denial listing one image and mutation a 2-operation patch. Every answer
# must be 200; hey's requests/s and its 50th and 99th percentile latency are reported.

set -euo pipefail

BENCH_REQS=${BENCH_REQS:-20000}
BENCH_CONC=${BENCH_CONC:-50}
BENCH_KEEP=${BENCH_KEEP:-0}
export RUST_LOG=${RUST_LOG:-warn}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
die() { echo "bench-admission: error: $*" >&2; exit 1; }
log() { echo "bench-admission: $*" >&2; }

command -v curl >/dev/null || die "curl missing"
command -v openssl >/dev/null || die "openssl missing"
if ! command -v hey >/dev/null; then
    log "hey missing; installing debian package hey"
    SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y hey >&2 ||
        { $SUDO apt-get update >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y hey >&2; } ||
        die "could not install hey"
fi
if [[ -z ${TROW_BIN:-} ]]; then
    log "building trow (release)"
    (cd "$REPO_ROOT" && cargo build --release --bin trow >&2)
    TROW_BIN="$REPO_ROOT/target/release/trow"
fi
[[ -x $TROW_BIN ]] || die "$TROW_BIN is not executable"

WORK=$(mktemp -d /tmp/trow-bench-admission.XXXXXX)
TROW_PID=
cleanup() {
    [[ -n $TROW_PID ]] && kill "$TROW_PID" 2>/dev/null && wait "$TROW_PID" 2>/dev/null
    if [[ $BENCH_KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cat >"$WORK/trow.yaml" <<'EOF'
registry_proxies:
  registries:
    - host: registry-1.docker.io
    - host: ghcr.io
image_validation:
  default: Deny
  allow: [trow.example.com/, registry.k8s.io/, docker.io/library/, ghcr.io/team/]
  deny: [docker.io/library/busybox, quay.io/]
image_mutation:
  prewarm: false
EOF
cat >"$WORK/review.json" <<'EOF'
{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{
 "uid":"0f4e7e2c-8d0b-4a64-9d3c-5a9e0b1f2c3d",
 "kind":{"group":"","version":"v1","kind":"Pod"},
 "resource":{"group":"","version":"v1","resource":"pods"},
 "requestKind":{"group":"","version":"v1","kind":"Pod"},
 "requestResource":{"group":"","version":"v1","resource":"pods"},
 "name":"web","namespace":"team","operation":"CREATE",
 "userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller","uid":"a1","groups":["system:serviceaccounts","system:authenticated"]},
 "object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"team","labels":{"app":"web"}},
  "spec":{"initContainers":[{"name":"init","image":"quay.io/team/init:1.0"}],
   "containers":[{"name":"app","image":"nginx:1.27","ports":[{"containerPort":80}]},
    {"name":"side","image":"ghcr.io/team/side@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}]}},
 "oldObject":null,"dryRun":false,"options":{"apiVersion":"meta.k8s.io/v1","kind":"CreateOptions"}}}
EOF

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" >/dev/null 2>&1 || die "openssl could not make a certificate"

# hey sends the URL's host *with its port* as TLS SNI, which rustls (rightly) refuses as an
# illegal server name; so HTTPS is measured at https://localhost on port 443 (SNI "localhost"),
# which needs root and a free port 443, and is skipped otherwise.
HTTPS_OK=0
if [[ $(id -u) == 0 ]] && python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",443))' 2>/dev/null; then
    HTTPS_OK=1
fi

start_trow() { # scheme extra-args... -> sets TROW_PID BASE
    local scheme=$1; shift
    local port
    if [[ $scheme == https ]]; then port=443; else port=$(free_port); fi
    "$TROW_BIN" --bind "127.0.0.1:$port" --data-dir "$WORK/data.$scheme" --hostname trow.example.com \
        --config-file "$WORK/trow.yaml" "$@" >"$WORK/trow.$scheme.log" 2>&1 &
    TROW_PID=$!
    BASE="$scheme://127.0.0.1:$port"
    [[ $scheme == https ]] && BASE="https://localhost"
    for _ in $(seq 100); do
        [[ $(curl -ks -o /dev/null -w '%{http_code}' "$BASE/v2/") == 200 ]] && return
        kill -0 "$TROW_PID" 2>/dev/null || { cat "$WORK/trow.$scheme.log" >&2; die "trow exited"; }
        sleep 0.1
    done
    die "trow did not come up"
}
stop_trow() { kill "$TROW_PID"; wait "$TROW_PID" 2>/dev/null || true; TROW_PID=; }

ROWS=()
run() { # label method url [body]
    local label=$1 method=$2 url=$3 body=${4:-} out="$WORK/hey.out"
    local args=(-n "$BENCH_REQS" -c "$BENCH_CONC" -m "$method")
    [[ -n $body ]] && args+=(-D "$body" -T application/json)
    hey "${args[@]}" "$url" >"$out" 2>&1 || { cat "$out" >&2; die "hey failed for $label"; }
    local ok rps p50 p99
    ok=$(awk '/\[200\]/ {print $2}' "$out")
    [[ ${ok:-0} == "$BENCH_REQS" ]] || { cat "$out" >&2; die "$label: not every answer was 200"; }
    rps=$(awk '/Requests\/sec/ {print $2}' "$out")
    p50=$(awk '/ 50% in / {print $3}' "$out")
    p99=$(awk '/ 99% in / {print $3}' "$out")
    ROWS+=("$(printf '%-34s %12.0f %10.2f %10.2f' "$label" "$rps" "$(echo "$p50 * 1000" | bc -l)" "$(echo "$p99 * 1000" | bc -l)")")
}

SCHEMES=(http)
if ((HTTPS_OK)); then SCHEMES+=(https); else log "not root or port 443 taken: HTTPS rows skipped"; fi
for scheme in "${SCHEMES[@]}"; do
    if [[ $scheme == https ]]; then start_trow https --tls "$WORK/tls.crt,$WORK/tls.key"; else start_trow http; fi
    # The answers are what the benchmark claims: a denial of one image, a 2-operation patch.
    v=$(curl -ks -XPOST --data-binary @"$WORK/review.json" "$BASE/validate-image")
    [[ $v == *'"allowed":false'* && $v == *'quay.io/team/init'* ]] || die "unexpected validation answer: $v"
    m=$(curl -ks -XPOST --data-binary @"$WORK/review.json" "$BASE/mutate-image")
    [[ $m == *'"patchType":"JSONPatch"'* ]] || die "unexpected mutation answer: $m"
    log "$scheme: measuring ($BENCH_REQS requests per row, $BENCH_CONC concurrent)"
    run "GET /v2/ ($scheme, the floor)" GET "$BASE/v2/"
    run "POST /validate-image ($scheme)" POST "$BASE/validate-image" "$WORK/review.json"
    run "POST /mutate-image ($scheme)" POST "$BASE/mutate-image" "$WORK/review.json"
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$TROW_PID/status")
    ROWS+=("$(printf '%-34s %s MiB' "  trow peak RSS ($scheme)" "$((rss / 1024))")")
    stop_trow
done

echo
echo "admission webhooks: one trow process, $BENCH_REQS requests per row, $BENCH_CONC concurrent clients (hey, keep-alive)"
echo "review: Pod CREATE, 3 containers; validation denies 1 image, mutation patches 2"
echo
printf '%-34s %12s %10s %10s\n' "" "requests/s" "p50 ms" "p99 ms"
printf '%s\n' "----------------------------------------------------------------------"
printf '%s\n' "${ROWS[@]}"
echo
echo "load average (1/5/15 min) at the end: $(cut -d' ' -f1-3 /proc/loadavg), on $(nproc) CPUs"

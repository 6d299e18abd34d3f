#!/usr/bin/env bash
# Writes trow/link/symbol-order.txt: the functions a running Trow executes (start-up, idle, the
# common requests), which trow/build.rs hands to the linker (lld's --symbol-ordering-file) for
# release builds, so they sit together at the front of .text.
#
# Why: an idle Trow's memory is mostly its code's mapped pages, and the kernel maps a binary's
# pages 64 KiB around each page touched (fault-around). Spread over a 16 MiB .text, the ~2,000
# functions start-up touches pull in ~11 MiB; packed together they take a few. It also keeps the
# serving path's code in fewer pages and TLB entries.
#
# Not a test and not run by CI. Give it release binaries: a function's mangled name carries a
# hash of its crate's build settings (the profile among them) and, for generic code, of its type
# arguments, so names from another profile do not match, and code or dependency changes move
# some. Run it again after such changes (stale names are skipped silently; a missing file only
# loses the ordering): the file from an older build left idle RSS at 14.7 MiB where the file from
# the same build gave 8.8. Needs valgrind, curl, python3.
#
#   scripts/symbol-order.sh                      # builds trow --release first
#   TROW_BIN="target/release/trow target/fast/trow" scripts/symbol-order.sh
#
# Each binary runs under callgrind (--demangle=no, so the names are the linker's): started and
# left idle a second; then in one process and split (storage + gateway), serving
# scripts/bench_client.py's `exercise` twice. Every function executed that the binary defines
# goes into the file, those of start-up and idle first, in the order callgrind lists them.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
OUT=$REPO_ROOT/trow/link/symbol-order.txt
IP=${SYMBOL_ORDER_IP:-127.0.0.1}

command -v valgrind >/dev/null || { echo "symbol-order: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
if [[ -z ${TROW_BIN:-} ]]; then
    (cd "$REPO_ROOT" && cargo build --release -p trow)
    TROW_BIN=$REPO_ROOT/target/release/trow
fi
WORK=$(mktemp -d /tmp/trow-symbol-order.XXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$IP"; }

# cg NAME ARGS... : starts ARGS under callgrind in the background, PID appended to PIDS
cg() {
    local name=$1
    shift
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$WORK/$name.cg" "$@" \
        >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
}

wait_for() { # URL
    for _ in $(seq 1 600); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.2
    done
    echo "symbol-order: $1 never answered" >&2
    exit 1
}

stop_all() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

n=0
for bin in $TROW_BIN; do
    n=$((n + 1))
    # Start-up and idle alone first: listed first, they share the fewest pages.
    port=$(free_port)
    cg "0-idle$n" "$bin" --bind "$IP:$port" --data-dir "$WORK/idle$n"
    wait_for "http://$IP:$port/v2/"
    sleep 1
    stop_all
    port=$(free_port)
    cg "one$n" "$bin" --bind "$IP:$port" --data-dir "$WORK/one$n"
    wait_for "http://$IP:$port/v2/"
    python3 "$SCRIPT_DIR/bench_client.py" exercise "http://$IP:$port" 2 >/dev/null
    sleep 1
    stop_all
    sport=$(free_port)
    gport=$(free_port)
    cg "storage$n" "$bin" storage --listen "$IP:$sport" --data-dir "$WORK/split$n"
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/$IP/$sport") 2>/dev/null && break
        sleep 0.2
    done
    cg "gateway$n" "$bin" gateway --bind "$IP:$gport" --storage "http://$IP:$sport"
    wait_for "http://$IP:$gport/v2/"
    python3 "$SCRIPT_DIR/bench_client.py" exercise "http://$IP:$gport" 2 >/dev/null
    sleep 1
    stop_all
done

mkdir -p "$(dirname "$OUT")"
python3 - "$OUT" "$WORK" $TROW_BIN <<'EOF'
import glob, re, subprocess, sys
out, work, bins = sys.argv[1], sys.argv[2], sys.argv[3:]
defined = set()
for b in bins:
    nm = subprocess.run(["nm", "--defined-only", b], capture_output=True, text=True, check=True).stdout
    defined.update(p[2] for p in (l.split() for l in nm.splitlines()) if len(p) == 3 and p[1] in "tTwW")
seen, order = set(), []
for f in sorted(glob.glob(f"{work}/*.cg")):
    for line in open(f, errors="replace"):
        m = re.match(r"c?fn=\(\d+\) (\S+)", line)
        if m and m.group(1) in defined and m.group(1) not in seen:
            seen.add(m.group(1))
            order.append(m.group(1))
with open(out, "w") as o:
    o.write("# Written by scripts/symbol-order.sh: functions a running Trow executes, for lld's\n")
    o.write("# --symbol-ordering-file (see trow/build.rs). Generated; do not edit.\n")
    o.write("\n".join(order) + "\n")
print(f"symbol-order: {len(order)} functions -> {out}")
EOF

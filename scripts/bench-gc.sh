#!/usr/bin/env bash
# Garbage collection and cache eviction benchmark on loopback:
#   Trow's online GC (one process, and split storage + gateway)  vs  CNCF distribution 2.8's
#   offline `garbage-collect`, then Trow's pull-through cache evicting to stay within max_size.
#
# This is a benchmark, not a test (but it exits non-zero when a correctness check fails). Usage:
#   scripts/bench-gc.sh                                   # builds trow --release, defaults below
#   TROW_BIN=target/release/trow BENCH_GC_IMAGES=60 BENCH_RUNS=1 scripts/bench-gc.sh
#   BENCH_ONLY=one,distribution scripts/bench-gc.sh      # skip split and eviction
#
# Environment:
#   TROW_BIN             path to a trow binary (skips `cargo build --release -p trow`)
#   BENCH_ONLY           comma list of: one, split, idle, distribution (dist), evict;
#                        trow = one,idle,split; gc = one,idle,split,distribution. Default: all.
#                        one / split: trow's GC under load, one process / storage + gateway;
#                        idle: one process, the same collection with no load (what
#                        distribution's offline GC compares with, time for time).
#   BENCH_RUNS           repetitions of every measurement; the table shows the median (default 3)
#   BENCH_GC_IMAGES      images pushed before a collection, half of them then deleted (default 200)
#   BENCH_GC_REPOS       repositories they are spread over, round-robin (default 10)
#   BENCH_GC_LAYER       bytes of each image's own layer, random (default 1048576)
#   BENCH_GC_BASES       shared base layers (same size as the own layer), image i uses base
#                        i mod BENCH_GC_BASES (default 4; 0: none)
#   BENCH_GC_GRACE       trow --gc-grace, seconds (default 5). The benchmark waits this long after
#                        the deletes before it collects, so the deleted images are all garbage.
#                        Not 0 by default: with no grace, a blob a concurrent push uploaded just
#                        before the collection started, and has not referenced by its manifest
#                        yet, is garbage too, and that push may fail (rarely: the window is the
#                        gap between its last blob and its manifest). The grace period is what
#                        keeps a push in progress safe (docs/ARCHITECTURE.md).
#   BENCH_GC_PULLERS     threads pulling a kept image (manifest + layer, each checked against its
#                        digest) while Trow collects (default 4)
#   BENCH_EVICT_IMAGES   images in the upstream for the eviction run (default 60)
#   BENCH_EVICT_LAYER    bytes of each one's own layer, random (default 1048576)
#   BENCH_EVICT_MAX      registry_proxies.max_size in bytes (default: half of all the images' bytes)
#   BENCH_EVICT_WAIT     seconds the cache may stay over max_size after the last pull (default 60)
#   BENCH_EVICT_SETTLE   seconds between trow's start and the first pull (default 6): at start-up
#                        trow's evictor counts the (empty) cache, then rests 5 s before it looks
#                        again, so pulls in those first seconds are not evicted before it wakes;
#                        waiting shows the steady state. 0: a cold start.
#   BENCH_KEEP           1: keep the temp dir (logs, data, gc output) instead of deleting it
#   BENCH_START_TIMEOUT  seconds to wait for GET /v2/ == 200 (default 60)
#   DIST_BIN             CNCF distribution binary (default /usr/bin/docker-registry)
#   RUST_LOG             passed to trow (default: warn, so logging does not skew numbers)
#
# Method. Every server runs on 127.0.0.1 with its own temp dir and is stopped by PID on exit.
# Images are pushed and pulled over HTTP by a small python3 client written below (stdlib only):
# an image = a unique small config + a shared base layer (pushed once per repository) + its own
# layer of random bytes, as an OCI manifest tagged v<i>. "bytes" of a store are the sizes of the
# files under its blob directory (trow: <data>/blobs, distribution:
# <data>/docker/registry/v2/blobs), i.e. `du -sb` without the directory entries.
#
# GC, per run and per registry, on a fresh data dir:
#   1. push BENCH_GC_IMAGES images to BENCH_GC_REPOS repositories; DELETE every second one's
#      manifest by digest (/v2/<repo>/manifests/<digest>); the rest are "kept".
#   2. trow (started with --gc-grace BENCH_GC_GRACE --gc-every 0, so only `trow gc` collects):
#      wait out the grace period; `trow gc --dry-run` (timed; must delete nothing); then, while
#      BENCH_GC_PULLERS threads pull a kept image (manifest by tag + its layer, sha256 checked)
#      and one pusher pushes new images (fresh config + fresh layer of BENCH_GC_LAYER bytes) in
#      a loop, `trow gc --storage http://<storage gRPC>` (timed). Reported: wall time of
#      `trow gc` and the time its summary gives, bytes freed from the summary and from the blob
#      dir (before + bytes the pusher added - after; they must match), pulls served while the
#      collection ran (requests that overlapped it) and their errors (must be 0), pushes
#      completed while it ran (every push must succeed), the storage process's VmHWM.
#      "trow, no load" (BENCH_ONLY idle): the same on a fresh one-process trow, `trow gc` alone.
#      distribution: the same data and deletes; it is stopped (its GC requires that), then
#      `docker-registry garbage-collect --dry-run --delete-untagged` and
#      `docker-registry garbage-collect --delete-untagged` are timed, then it is started again.
#      --delete-untagged: Trow's GC deletes manifests no tag reaches, so this is the same
#      semantics (here every kept image is tagged and DELETE by digest removes the deleted
#      images' revisions and tags, so the set freed is the same with or without the flag).
#      Pulls served during its GC: 0 by construction; "downtime" = stop + GC + start + ready.
#   3. afterwards, on every registry: every kept image (and every image the pusher pushed) pulls
#      whole and byte-identical (manifest by tag and by digest, every blob checked against its
#      digest and size); every deleted manifest answers 404; every deleted image's own layer
#      file is gone from the blob dir.
# Eviction, once per run, on a fresh trow:
#   an upstream distribution holding BENCH_EVICT_IMAGES images (config + own layer, no shared
#   base); trow with the upstream configured as alias `up` and registry_proxies.max_size =
#   BENCH_EVICT_MAX, --pull-guard 0s, --min-free-space 0 (so only max_size evicts); after
#   BENCH_EVICT_SETTLE seconds, every image pulled through /v2/f/up/... in sequence (manifest +
#   blobs, checked). Reported: time of the pulls, peak cache bytes during them (sampled every
#   50 ms), the time from the end of the last pull until the blob dir is <= max_size (polled
#   every 50 ms; must happen within BENCH_EVICT_WAIT seconds) and until the bytes of the images
#   still cached are, the final cache bytes (1 s later; must be <= max_size) and how much of
#   them `trow gc --dry-run` lists (left behind by eviction), images evicted (own layer file
#   gone), whether they are the least recently pulled ones and whether the image pulled last is
#   still cached (must be), trow's VmHWM.
# Registries run one after another, never at the same time. Other load on the machine (see the
# load average printed) makes the numbers noisy: that is what the medians are for.

set -euo pipefail

BENCH_ONLY=${BENCH_ONLY:-all}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_GC_IMAGES=${BENCH_GC_IMAGES:-200}
BENCH_GC_REPOS=${BENCH_GC_REPOS:-10}
BENCH_GC_LAYER=${BENCH_GC_LAYER:-1048576}
BENCH_GC_BASES=${BENCH_GC_BASES:-4}
BENCH_GC_GRACE=${BENCH_GC_GRACE:-5}
BENCH_GC_PULLERS=${BENCH_GC_PULLERS:-4}
BENCH_EVICT_IMAGES=${BENCH_EVICT_IMAGES:-60}
BENCH_EVICT_LAYER=${BENCH_EVICT_LAYER:-1048576}
BENCH_EVICT_MAX=${BENCH_EVICT_MAX:-}
BENCH_EVICT_WAIT=${BENCH_EVICT_WAIT:-60}
BENCH_EVICT_SETTLE=${BENCH_EVICT_SETTLE:-6}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_START_TIMEOUT=${BENCH_START_TIMEOUT:-60}
DIST_BIN=${DIST_BIN:-/usr/bin/docker-registry}
export RUST_LOG=${RUST_LOG:-warn}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

die() { echo "bench-gc: error: $*" >&2; exit 1; }
log() { echo "bench-gc: $*" >&2; }
# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer (got '$2')"; }
posint BENCH_RUNS "$BENCH_RUNS"
posint BENCH_GC_IMAGES "$BENCH_GC_IMAGES"
posint BENCH_GC_REPOS "$BENCH_GC_REPOS"
posint BENCH_GC_LAYER "$BENCH_GC_LAYER"
posint BENCH_GC_PULLERS "$BENCH_GC_PULLERS"
posint BENCH_EVICT_IMAGES "$BENCH_EVICT_IMAGES"
posint BENCH_EVICT_LAYER "$BENCH_EVICT_LAYER"
posint BENCH_EVICT_WAIT "$BENCH_EVICT_WAIT"
[[ $BENCH_GC_BASES =~ ^[0-9]+$ ]] || die "BENCH_GC_BASES must be a non-negative integer (got '$BENCH_GC_BASES')"
[[ $BENCH_EVICT_SETTLE =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_EVICT_SETTLE must be a number of seconds (got '$BENCH_EVICT_SETTLE')"
[[ $BENCH_GC_GRACE =~ ^[0-9]+$ ]] || die "BENCH_GC_GRACE must be a number of seconds (got '$BENCH_GC_GRACE')"
[[ -z $BENCH_EVICT_MAX || $BENCH_EVICT_MAX =~ ^[1-9][0-9]*$ ]] || die "BENCH_EVICT_MAX must be a number of bytes (got '$BENCH_EVICT_MAX')"
((BENCH_GC_IMAGES >= 2)) || die "BENCH_GC_IMAGES must be at least 2 (half of them are deleted)"
for tool in curl python3 find awk date; do
    command -v "$tool" >/dev/null || die "'$tool' is required but not on PATH"
done

DO_ONE=0 DO_IDLE=0 DO_SPLIT=0 DO_DIST=0 DO_EVICT=0
IFS=',' read -r -a _only <<<"$BENCH_ONLY"
for w in "${_only[@]}"; do
    case "${w// /}" in
        one | trow-one) DO_ONE=1 ;;
        idle | one-idle) DO_IDLE=1 ;;
        split | trow-split) DO_SPLIT=1 ;;
        trow) DO_ONE=1 DO_IDLE=1 DO_SPLIT=1 ;;
        dist | distribution) DO_DIST=1 ;;
        gc) DO_ONE=1 DO_IDLE=1 DO_SPLIT=1 DO_DIST=1 ;;
        evict | eviction) DO_EVICT=1 ;;
        all) DO_ONE=1 DO_IDLE=1 DO_SPLIT=1 DO_DIST=1 DO_EVICT=1 ;;
        '') ;;
        *) die "unknown BENCH_ONLY entry '$w' (use one, idle, split, trow, distribution, gc, evict, all)" ;;
    esac
done
((DO_ONE + DO_IDLE + DO_SPLIT + DO_DIST + DO_EVICT > 0)) || die "BENCH_ONLY selects nothing"
if ((DO_DIST || DO_EVICT)); then
    [[ -x $DIST_BIN ]] || die "$DIST_BIN not found (apt-get install docker-registry, or set DIST_BIN)"
fi

BENCH_T0=$SECONDS

# ---------------------------------------------------------------- temp + cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/trow-bench-gc.XXXXXX")
PIDS=()        # every server we started
CLIENT_PIDS=() # load generators and pushers running in the background

cleanup() {
    local rc=$?
    set +e
    for pid in "${CLIENT_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${CLIENT_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    stop_all_servers
    remove_work
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

# start_client LOGFILE CMD... : a background client (load, pusher); sets LAST_PID
start_client() {
    local logf=$1
    shift
    "$@" >"$logf" 2>&1 &
    LAST_PID=$!
    CLIENT_PIDS+=("$LAST_PID")
}

# stop_client PID : SIGTERM (the python clients finish their request, write their records and
# exit), then wait; prints nothing, returns the client's status
stop_client() {
    local pid=$1 rc=0
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || rc=$?
    local keep=()
    for p in "${CLIENT_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    CLIENT_PIDS=("${keep[@]+"${keep[@]}"}")
    return "$rc"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.6f\n", b - a}'; } # T0 T1 -> seconds

# file_bytes DIR -> total size of the files under DIR (0 if it does not exist)
file_bytes() {
    [[ -d $1 ]] || { echo 0; return; }
    find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d\n", s }'
}

# blob_file STOREKIND DIR DIGEST -> path of the blob's bytes (trow | dist)
blob_file() {
    local hex=${3#sha256:}
    case $1 in
        trow) echo "$2/sha256/${hex:0:2}/$hex" ;;
        dist) echo "$2/sha256/${hex:0:2}/$hex/data" ;;
    esac
}

RESULTS="$WORK/results.tsv" # metric  target  run  value
: >"$RESULTS"
RUN=0
rec() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$RUN" "$3" >>"$RESULTS"; } # METRIC TARGET VALUE
FAILURES="$WORK/failures"
: >"$FAILURES"
# fail MESSAGE : a correctness check failed; the run goes on, the script exits 1 at the end
fail() { log "FAILED: $*"; echo "run $RUN: $*" >>"$FAILURES"; }

# ---------------------------------------------------------------- python helpers
cat >"$WORK/regtool.py" <<'PY'
# HTTP client for scripts/bench-gc.sh (stdlib only). Subcommands:
#   seed BASE OUT REPOS IMAGES SIZE BASES PREFIX   push IMAGES images round-robin into REPOS
#        repositories PREFIX<i>; each: a small unique config, one of BASES shared base layers
#        (0: none) of SIZE bytes, its own layer of SIZE bytes (random bytes). Writes one TSV
#        line per image (see FIELDS).
#   delete BASE ALL KEPT DELETED   DELETE every second image's manifest by digest
#   verify BASE TSV [PATHPREFIX]   pull every image (manifest by tag and by digest, every blob),
#        check each against its digest and size; prints "images blobs bytes seconds"
#   load BASE TSV OUT THREADS      pull the first image of TSV (manifest by tag + own layer) in a
#        loop until SIGTERM; writes "start end kind ok" per request to OUT
#   pusher BASE OUT REPOS SIZE PREFIX  push new images (fresh config + fresh layer) until SIGTERM;
#        writes image lines (with start/end times and status) to OUT
#   gone BASE TSV                  every manifest of TSV answers 404 by digest
#   pullseq BASE TSV PATHPREFIX    pull every image in order (through a cache); prints start and
#        end time
#   watch BLOBDIR TSV LIMIT T_LAST WAIT  how long after T_LAST the cache got within LIMIT
import hashlib, http.client, json, os, signal, socket, sys, threading, time, urllib.parse

FIELDS = "repo tag manifest msize config csize base bsize own osize".split()
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
ACCEPT = OCI_MANIFEST + ", application/vnd.docker.distribution.manifest.v2+json"

def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

class Client:
    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.conn = None

    def req(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                self.conn.connect()
                # headers and body go in separate writes: without this, Nagle's algorithm and
                # delayed ACKs add ~40 ms to every request with a body
                self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, r.headers, data
            except (ConnectionError, http.client.HTTPException, OSError):
                # a keep-alive connection the server closed between requests: one retry on a
                # fresh connection (only before any answer arrived)
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise

    def push_blob(self, repo, data):
        d = sha(data)
        st, h, body = self.req("POST", f"/v2/{repo}/blobs/uploads/", b"", {"Content-Length": "0"})
        if st != 202:
            raise RuntimeError(f"POST /v2/{repo}/blobs/uploads/: {st} {body[:200]!r}")
        loc = h.get("Location", "")
        u = urllib.parse.urlsplit(loc)
        path = u.path + ("?" + u.query if u.query else "")
        path += ("&" if "?" in path else "?") + "digest=" + d
        st, _, body = self.req("PUT", path, data,
                               {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
        if st != 201:
            raise RuntimeError(f"PUT blob {d} to {repo}: {st} {body[:200]!r}")
        return d

    def push_manifest(self, repo, tag, m):
        st, _, body = self.req("PUT", f"/v2/{repo}/manifests/{tag}", m, {"Content-Type": OCI_MANIFEST})
        if st != 201:
            raise RuntimeError(f"PUT manifest {repo}:{tag}: {st} {body[:300]!r}")
        return sha(m)

    def get(self, path, want=None):
        st, h, data = self.req("GET", path, None, {"Accept": ACCEPT})
        return st, data

def config_bytes(ident, diff_ids):
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"bench": ident}},
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}, separators=(",", ":")).encode()

def push_manifest_for(c, repo, tag, descs, ident):
    """Pushes a unique config and the manifest of descs (layers already pushed)."""
    cfg = config_bytes(ident, [x["digest"] for x in descs])
    cd = c.push_blob(repo, cfg)
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd,
                               "size": len(cfg)},
                    "layers": descs}, separators=(",", ":")).encode()
    md = c.push_manifest(repo, tag, m)
    return md, len(m), cd, len(cfg)

def push_image(c, repo, tag, layers, ident):
    """Uploads every layer (bytes), a unique config and the manifest."""
    descs = [{"mediaType": LAYER, "digest": c.push_blob(repo, d), "size": len(d)} for d in layers]
    md, msize, cd, csize = push_manifest_for(c, repo, tag, descs, ident)
    return md, msize, cd, csize, descs

def image_line(repo, tag, md, msize, cd, csize, descs):
    base = descs[0] if len(descs) > 1 else {"digest": "-", "size": 0}
    own = descs[-1]
    return "\t".join(map(str, [repo, tag, md, msize, cd, csize, base["digest"], base["size"],
                               own["digest"], own["size"]]))

def read_tsv(path):
    out = []
    for line in open(path):
        if line.strip():
            out.append(dict(zip(FIELDS, line.rstrip("\n").split("\t"))))
    return out

def cmd_seed(base, out, repos, images, size, bases, prefix):
    repos, images, size, bases = int(repos), int(images), int(size), int(bases)
    c = Client(base)
    base_layers = [os.urandom(size) for _ in range(bases)]
    in_repo = set()  # (repository, base index) already uploaded
    run = os.urandom(4).hex()
    with open(out, "w") as f:
        for i in range(images):
            repo = f"{prefix}{i % repos}"
            descs = []
            if bases:
                b = i % bases
                if (repo, b) not in in_repo:
                    c.push_blob(repo, base_layers[b])
                    in_repo.add((repo, b))
                descs.append({"mediaType": LAYER, "digest": sha(base_layers[b]), "size": size})
            own = os.urandom(size)
            descs.append({"mediaType": LAYER, "digest": c.push_blob(repo, own), "size": size})
            md, msize, cd, csize = push_manifest_for(c, repo, f"v{i}", descs, f"{run}-{i}")
            f.write(image_line(repo, f"v{i}", md, msize, cd, csize, descs) + "\n")

def cmd_delete(base, all_tsv, kept, deleted):
    c = Client(base)
    imgs = read_tsv(all_tsv)
    with open(kept, "w") as fk, open(deleted, "w") as fd:
        for i, im in enumerate(imgs):
            line = "\t".join(im[k] for k in FIELDS) + "\n"
            if i % 2 == 1:
                st, _, body = c.req("DELETE", f"/v2/{im['repo']}/manifests/{im['manifest']}")
                if st != 202:
                    raise RuntimeError(f"DELETE {im['repo']}@{im['manifest']}: {st} {body[:200]!r}")
                fd.write(line)
            else:
                fk.write(line)

def check_image(c, im, prefix=""):
    """Pulls one image whole; returns (blobs, bytes) or raises."""
    repo = prefix + im["repo"]
    st, m = c.get(f"/v2/{repo}/manifests/{im['tag']}")
    if st != 200 or sha(m) != im["manifest"]:
        raise RuntimeError(f"GET {repo}:{im['tag']}: {st}, {sha(m) if st == 200 else m[:200]!r}, want {im['manifest']}")
    st, m2 = c.get(f"/v2/{repo}/manifests/{im['manifest']}")
    if st != 200 or m2 != m:
        raise RuntimeError(f"GET {repo}@{im['manifest']}: {st}")
    doc = json.loads(m)
    n, total = 0, len(m)
    for d in [doc["config"]] + doc["layers"]:
        st, b = c.get(f"/v2/{repo}/blobs/{d['digest']}")
        if st != 200 or len(b) != d["size"] or sha(b) != d["digest"]:
            raise RuntimeError(f"GET {repo} blob {d['digest']}: {st}, {len(b)} bytes, want {d['size']}")
        n += 1
        total += len(b)
    return n, total

def cmd_verify(base, tsv, prefix=""):
    c = Client(base)
    t0 = time.time()
    n = b = 0
    imgs = read_tsv(tsv)
    for im in imgs:
        x, y = check_image(c, im, prefix)
        n += x
        b += y
    print(len(imgs), n, b, f"{time.time() - t0:.3f}")

def cmd_gone(base, tsv):
    """Every manifest of TSV answers 404 by digest (it was deleted)."""
    c = Client(base)
    for im in read_tsv(tsv):
        st, _ = c.get(f"/v2/{im['repo']}/manifests/{im['manifest']}")
        if st != 404:
            raise RuntimeError(f"deleted {im['repo']}@{im['manifest']} answers {st}, want 404")

def cmd_pullseq(base, tsv, prefix):
    c = Client(base)
    t0 = time.time()
    for im in read_tsv(tsv):
        check_image(c, im, prefix)
    t1 = time.time()
    print(f"{t0:.6f} {t1:.6f}")

def cmd_watch(blobs, tsv, limit, t_last, wait):
    """After the last pull through the cache: polls the blob dir every 50 ms until its files
    total <= limit, or for `wait` seconds. Prints the seconds from t_last until the blob dir was
    <= limit and until the bytes of the images still cached (own layer present: its manifest,
    config and layer) were, "-" for never, then both byte counts at the end."""
    limit, t_last, deadline = int(limit), float(t_last), float(t_last) + float(wait)
    imgs = read_tsv(tsv)

    def path(d):
        h = d.split(":", 1)[1]
        return os.path.join(blobs, "sha256", h[:2], h)

    def size(d):
        try:
            return os.stat(path(d)).st_size
        except OSError:
            return 0

    def dir_bytes():
        total = 0
        for d, _, files in os.walk(blobs):
            for f in files:
                try:
                    total += os.stat(os.path.join(d, f)).st_size
                except OSError:
                    pass
        return total

    under_dir = under_img = None
    while True:
        now = time.time()
        img = sum(size(i["manifest"]) + size(i["config"]) + size(i["own"]) for i in imgs
                  if os.path.exists(path(i["own"])))
        total = dir_bytes()
        if under_img is None and img <= limit:
            under_img = now - t_last
        if total <= limit:
            under_dir = now - t_last
            break
        if now > deadline:
            break
        time.sleep(0.05)
    f = lambda x: "-" if x is None else f"{x:.3f}"
    print(f(under_dir), f(under_img), total, img)

STOP = threading.Event()

def on_term(*_):
    STOP.set()

def cmd_load(base, tsv, out, threads):
    im = read_tsv(tsv)[0]
    recs = []
    lock = threading.Lock()
    paths = [("manifest", f"/v2/{im['repo']}/manifests/{im['tag']}", im["manifest"]),
             ("layer", f"/v2/{im['repo']}/blobs/{im['own']}", im["own"])]

    def worker():
        c = Client(base)
        mine = []
        while not STOP.is_set():
            for kind, path, want in paths:
                t0 = time.time()
                try:
                    st, data = c.get(path)
                    ok = st == 200 and sha(data) == want
                    why = "" if ok else f"status {st} ({len(data)} bytes)"
                except Exception as e:  # noqa: BLE001 - a failed pull is what we count
                    ok, why = False, repr(e)
                mine.append((t0, time.time(), kind, 1 if ok else 0, why))
        with lock:
            recs.extend(mine)

    signal.signal(signal.SIGTERM, on_term)
    ts = [threading.Thread(target=worker) for _ in range(int(threads))]
    for t in ts:
        t.start()
    while any(t.is_alive() for t in ts):
        for t in ts:
            t.join(0.2)
    with open(out, "w") as f:
        for r in sorted(recs):
            f.write(f"{r[0]:.6f}\t{r[1]:.6f}\t{r[2]}\t{r[3]}\t{r[4]}\n")

def cmd_pusher(base, out, repos, size, prefix):
    signal.signal(signal.SIGTERM, on_term)
    c = Client(base)
    repos, size = int(repos), int(size)
    run = os.urandom(4).hex()
    i = 0
    with open(out, "w") as f:
        while not STOP.is_set():
            repo = f"{prefix}{i % repos}"
            tag = f"live-{run}-{i}"
            t0 = time.time()
            try:
                md, msize, cd, csize, descs = push_image(c, repo, tag, [os.urandom(size)], f"live-{run}-{i}")
                line, ok, why = image_line(repo, tag, md, msize, cd, csize, descs), 1, ""
            except Exception as e:  # noqa: BLE001 - a failed push is what we count
                line, ok, why = "\t".join([repo, tag] + ["-"] * 8), 0, repr(e)[:300]
                c = Client(base)
            f.write(f"{t0:.6f}\t{time.time():.6f}\t{ok}\t{line}\t{why}\n")
            f.flush()
            i += 1

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"seed": cmd_seed, "delete": cmd_delete, "verify": cmd_verify, "load": cmd_load,
     "pusher": cmd_pusher, "gone": cmd_gone, "watch": cmd_watch, "pullseq": cmd_pullseq}[cmd](*args)
PY

cat >"$WORK/sampler.py" <<'PY'
# sampler.py OUT INTERVAL DIR PID: peak bytes of the files under DIR and peak VmRSS of PID,
# sampled every INTERVAL seconds until SIGTERM; writes "peak_bytes peak_rss_kb" to OUT.
import os, signal, sys, time

out, interval, root, pid = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
stop = False

def on_term(*_):
    global stop
    stop = True

signal.signal(signal.SIGTERM, on_term)

def dir_bytes():
    total = 0
    for d, _, files in os.walk(root):
        for f in files:
            try:
                total += os.stat(os.path.join(d, f)).st_size
            except OSError:
                pass  # deleted while we walked
    return total

def rss():
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

peak_b = peak_r = 0
while True:
    peak_b = max(peak_b, dir_bytes())
    peak_r = max(peak_r, rss())
    if stop:
        break
    time.sleep(interval)
with open(out, "w") as f:
    f.write(f"{peak_b} {peak_r}\n")
PY

# ---------------------------------------------------------------- trow binary
TROW=""
if ((DO_ONE || DO_IDLE || DO_SPLIT || DO_EVICT)); then
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

RT="$WORK/regtool.py"
# regtool.py and sampler.py are written above

# seed_and_delete NAME BASE DIR LOGS : push the images, delete half; writes DIR/{all,kept,deleted}.tsv
seed_and_delete() {
    local name=$1 base=$2 dir=$3 logs=$4 t0
    t0=$(now)
    python3 "$RT" seed "$base" "$dir/all.tsv" "$BENCH_GC_REPOS" "$BENCH_GC_IMAGES" "$BENCH_GC_LAYER" \
        "$BENCH_GC_BASES" gc/r >"$dir/seed.log" 2>&1 || { cat "$dir/seed.log" >&2; show_log "$name" "$logs"; die "$name: pushing the images failed"; }
    python3 "$RT" delete "$base" "$dir/all.tsv" "$dir/kept.tsv" "$dir/deleted.tsv" >"$dir/delete.log" 2>&1 ||
        { cat "$dir/delete.log" >&2; show_log "$name" "$logs"; die "$name: deleting the images failed"; }
    SEED_END=$(now)
    log "  $name: pushed $BENCH_GC_IMAGES images, deleted $(wc -l <"$dir/deleted.tsv") ($(elapsed "$t0" "$SEED_END") s)"
}

# after_gc_checks NAME BASE DIR STOREKIND BLOBDIR LOGS VERIFY_TSV : every image of VERIFY_TSV
# pulls whole and byte-identical, the deleted ones are gone
after_gc_checks() {
    local name=$1 base=$2 dir=$3 kind=$4 blobs=$5 logs=$6 verify=$7 out own left=0
    if out=$(python3 "$RT" verify "$base" "$verify" 2>&1); then
        rec verified "$KEY" "${out%% *}"
    else
        echo "$out" >&2
        show_log "$name" "$logs"
        fail "$name: an image that should be kept does not pull byte-identical after GC"
        rec verified "$KEY" 0
    fi
    out=$(python3 "$RT" gone "$base" "$dir/deleted.tsv" 2>&1) || { echo "$out" >&2; fail "$name: a deleted manifest is still served"; }
    while IFS=$'\t' read -r _ _ _ _ _ _ _ _ own _; do
        if [[ -e $(blob_file "$kind" "$blobs" "$own") ]]; then left=$((left + 1)); fi
    done <"$dir/deleted.tsv"
    ((left == 0)) || fail "$name: $left deleted images' own layers are still on disk after GC"
}

# gc_summary FILE -> "manifests links blobs bytes ms repositories kept" from trow gc's last line
gc_summary() {
    local line
    line=$(grep "^gc: " "$1" | tail -n 1 || true)
    [[ -n $line ]] || { echo ""; return; }
    tr -c '0-9\n' ' ' <<<"$line" | awk '{ print $1, $2, $3, $4, $5, $6, $7 }'
}

# gc_trow KEY : one run of the online GC benchmark on a fresh trow (KEY: one | split)
gc_trow() {
    KEY=$1
    local dir="$WORK/$KEY.$RUN" port sport name pids logs spid surl base blobs
    mkdir -p "$dir/data"
    port=$(free_port)
    sport=$(free_port)
    while [[ $sport == "$port" ]]; do sport=$(free_port); done
    local gcflags=(--gc-grace "${BENCH_GC_GRACE}s" --gc-every 0)
    if [[ $KEY == one || $KEY == idle ]]; then
        name="trow (one process)"
        [[ $KEY == one ]] || name="trow (one process, no load)"
        start_server "$name" "$dir/trow.log" "$TROW" --bind "127.0.0.1:$port" --data-dir "$dir/data" \
            --storage-listen "127.0.0.1:$sport" "${gcflags[@]}"
        spid=$LAST_PID pids=("$LAST_PID") logs="$dir/trow.log"
    else
        name="trow (split)"
        start_server "trow storage" "$dir/storage.log" "$TROW" storage --listen "127.0.0.1:$sport" \
            --data-dir "$dir/data" "${gcflags[@]}"
        spid=$LAST_PID
        wait_tcp "trow storage" "$spid" "$dir/storage.log" "$sport"
        start_server "trow gateway" "$dir/gateway.log" "$TROW" gateway --bind "127.0.0.1:$port" \
            --storage "http://127.0.0.1:$sport"
        pids=("$LAST_PID" "$spid") logs="$dir/gateway.log|$dir/storage.log"
    fi
    base="http://127.0.0.1:$port" surl="http://127.0.0.1:$sport" blobs="$dir/data/blobs"
    wait_v2 "$name" "$logs" "$base" "${pids[@]}"

    seed_and_delete "$name" "$base" "$dir" "$logs"
    # everything the deleted images held must be older than the grace period
    sleep "$(awk -v g="$BENCH_GC_GRACE" -v a="$SEED_END" -v b="$(now)" 'BEGIN { w = g + 1 - (b - a); printf "%.3f\n", (w > 0 ? w : 0) }')"

    local before t0 t1 s
    before=$(file_bytes "$blobs")
    rec before "$KEY" "$before"

    # the dry run, alone
    t0=$(now)
    "$TROW" gc --storage "$surl" --dry-run >"$dir/gc-dry.out" 2>&1 || { cat "$dir/gc-dry.out" >&2; show_log "$name" "$logs"; die "$name: trow gc --dry-run failed"; }
    t1=$(now)
    rec dry_wall "$KEY" "$(elapsed "$t0" "$t1")"
    read -r _ _ _ s _ < <(gc_summary "$dir/gc-dry.out") || true
    rec dry_bytes "$KEY" "${s:-0}"
    [[ $(file_bytes "$blobs") == "$before" ]] || fail "$name: trow gc --dry-run changed the blob dir"

    # the collection, under pulls and pushes (idle: alone)
    local lpid="" ppid="" gc_rc=0
    if [[ $KEY != idle ]]; then
        start_client "$dir/load.log" python3 "$RT" load "$base" "$dir/kept.tsv" "$dir/load.tsv" "$BENCH_GC_PULLERS"
        lpid=$LAST_PID
        start_client "$dir/pusher.log" python3 "$RT" pusher "$base" "$dir/pushed.tsv" "$BENCH_GC_REPOS" "$BENCH_GC_LAYER" gc/r
        ppid=$LAST_PID
        sleep 1 # both are under way
    fi
    t0=$(now)
    "$TROW" gc --storage "$surl" >"$dir/gc.out" 2>&1 || gc_rc=$?
    t1=$(now)
    if [[ $KEY != idle ]]; then
        sleep 0.5 # some traffic after it too
        stop_client "$ppid" || fail "$name: the pusher exited with an error ($(tail -n 3 "$dir/pusher.log"))"
        stop_client "$lpid" || fail "$name: the pull load exited with an error ($(tail -n 3 "$dir/load.log"))"
    else
        : >"$dir/load.tsv"
        : >"$dir/pushed.tsv"
    fi
    ((gc_rc == 0)) || { cat "$dir/gc.out" >&2; show_log "$name" "$logs"; die "$name: trow gc failed (status $gc_rc)"; }
    local after m l b bytes ms
    after=$(file_bytes "$blobs")
    read -r m l b bytes ms _ < <(gc_summary "$dir/gc.out") || true
    [[ -n ${ms:-} ]] || { cat "$dir/gc.out" >&2; die "$name: no summary line in trow gc's output"; }
    local wall
    wall=$(elapsed "$t0" "$t1")
    rec wall "$KEY" "$wall"
    rec reported_ms "$KEY" "$ms"
    rec manifests "$KEY" "$m"
    rec links "$KEY" "$l"
    rec blobs "$KEY" "$b"
    rec bytes_reported "$KEY" "$bytes"
    rec after "$KEY" "$after"
    rec down "$KEY" 0
    rec hwm "$KEY" "$(proc_kb "$spid" VmHWM)"

    # pulls: requests that overlapped the collection; errors over the whole load
    local n e d de dl
    read -r n e d de dl < <(awk -F'\t' -v a="$t0" -v b="$t1" '
        { n++; if (!$4) e++
          if ($1 < b && $2 > a) { d++; if (!$4) de++; if ($3 == "layer") dl++ } }
        END { print n + 0, e + 0, d + 0, de + 0, dl + 0 }' "$dir/load.tsv")
    if [[ $KEY != idle ]]; then
        rec pulls_during "$KEY" "$d"
        rec layer_pulls_during "$KEY" "$dl"
        rec pull_rate "$KEY" "$(awk -v d="$d" -v w="$wall" 'BEGIN{printf "%.1f\n", d / w}')"
        rec pulls_total "$KEY" "$n"
        rec pull_errors "$KEY" "$e"
        ((n > 0)) || fail "$name: the pull load made no request"
    fi
    if ((e > 0)); then
        awk -F'\t' '!$4' "$dir/load.tsv" | head -n 5 >&2
        fail "$name: $e of $n pulls failed during the load ($de while the collection ran)"
    fi

    # pushes: completed (successfully) while the collection ran; failures over the whole loop
    local pushed pf pd pbytes
    read -r pushed pf pd pbytes < <(awk -F'\t' -v a="$t0" -v b="$t1" '
        { if ($3 == 1) { ok++; bytes += $7 + $9 + $13; if ($1 < b && $2 > a) d++ } else f++ }
        END { printf "%d %d %d %d\n", ok, f, d, bytes }' "$dir/pushed.tsv")
    if [[ $KEY != idle ]]; then
        rec pushes_during "$KEY" "$pd"
        rec pushes_total "$KEY" "$pushed"
        rec push_failures "$KEY" "$pf"
    fi
    if ((pf > 0)); then
        awk -F'\t' '$3 != 1 { print $NF }' "$dir/pushed.tsv" | head -n 5 >&2
        fail "$name: $pf of $((pushed + pf)) pushes failed during the load"
    fi
    local freed=$((before + pbytes - after))
    rec bytes_du "$KEY" "$freed"
    ((freed == bytes)) || fail "$name: the blob dir shrank by $freed bytes (pusher's $pbytes bytes accounted), trow gc reported $bytes"
    ((bytes > 0)) || fail "$name: trow gc freed nothing"

    awk -F'\t' '$3 == 1' "$dir/pushed.tsv" | cut -f4-13 >"$dir/pushed-ok.tsv"
    cat "$dir/kept.tsv" "$dir/pushed-ok.tsv" >"$dir/verify.tsv"
    after_gc_checks "$name" "$base" "$dir" trow "$blobs" "$logs" "$dir/verify.tsv"
    if [[ $KEY == idle ]]; then
        log "  $name: gc ${wall}s (${ms} ms reported), freed $bytes bytes"
    else
        log "  $name: gc ${wall}s (${ms} ms reported), freed $bytes bytes; $d pulls ($e errors) and $pd pushes ($pf failed) during it"
    fi

    for p in "${pids[@]}"; do
        kill -0 "$p" 2>/dev/null || { show_log "$name" "$logs"; die "$name (pid $p) died during the run"; }
    done
    for p in "${pids[@]}"; do stop_server "$p"; done
    [[ $BENCH_KEEP == 1 ]] || rm -rf "$dir/data"
}

# gc_dist : one run of the offline GC of CNCF distribution on a fresh data dir
gc_dist() {
    KEY=dist
    local dir="$WORK/dist.$RUN" port name="distribution" pid base blobs
    mkdir -p "$dir/data"
    port=$(free_port)
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: trow-bench-not-secret
EOF
    base="http://127.0.0.1:$port" blobs="$dir/data/docker/registry/v2/blobs"
    start_server "$name" "$dir/registry.log" "$DIST_BIN" serve "$dir/config.yml"
    pid=$LAST_PID
    wait_v2 "$name" "$dir/registry.log" "$base" "$pid"
    seed_and_delete "$name" "$base" "$dir" "$dir/registry.log"

    # its GC needs the registry stopped
    local t_stop t_stopped t0 t1 before after wall t_start t_ready
    t_stop=$(now)
    stop_server "$pid"
    t_stopped=$(now)
    before=$(file_bytes "$blobs")
    rec before "$KEY" "$before"
    t0=$(now)
    "$DIST_BIN" garbage-collect --dry-run --delete-untagged "$dir/config.yml" >"$dir/gc-dry.out" 2>&1 ||
        { tail -n 20 "$dir/gc-dry.out" >&2; die "$name: garbage-collect --dry-run failed"; }
    t1=$(now)
    rec dry_wall "$KEY" "$(elapsed "$t0" "$t1")"
    [[ $(file_bytes "$blobs") == "$before" ]] || fail "$name: garbage-collect --dry-run changed the blob dir"
    t0=$(now)
    "$DIST_BIN" garbage-collect --delete-untagged "$dir/config.yml" >"$dir/gc.out" 2>&1 ||
        { tail -n 20 "$dir/gc.out" >&2; die "$name: garbage-collect failed"; }
    t1=$(now)
    wall=$(elapsed "$t0" "$t1")
    after=$(file_bytes "$blobs")
    rec wall "$KEY" "$wall"
    rec after "$KEY" "$after"
    rec bytes_du "$KEY" "$((before - after))"
    rec blobs "$KEY" "$(grep -c 'blob eligible for deletion' "$dir/gc.out" || true)"
    rec manifests "$KEY" "$(grep -c 'manifest eligible for deletion' "$dir/gc.out" || true)"
    ((before > after)) || fail "$name: garbage-collect freed nothing"

    t_start=$(now)
    start_server "$name" "$dir/registry.log" "$DIST_BIN" serve "$dir/config.yml"
    pid=$LAST_PID
    wait_v2 "$name" "$dir/registry.log" "$base" "$pid"
    t_ready=$(now)
    rec down "$KEY" "$(awk -v a="$(elapsed "$t_stop" "$t_stopped")" -v w="$wall" -v b="$(elapsed "$t_start" "$t_ready")" 'BEGIN{printf "%.6f\n", a + w + b}')"
    rec pulls_during "$KEY" 0
    rec pushes_during "$KEY" 0
    after_gc_checks "$name" "$base" "$dir" dist "$blobs" "$dir/registry.log" "$dir/kept.tsv"
    log "  $name: garbage-collect ${wall}s, freed $((before - after)) bytes (registry stopped)"
    stop_server "$pid"
    [[ $BENCH_KEEP == 1 ]] || rm -rf "$dir/data"
}

# ---------------------------------------------------------------- eviction
UP_PORT="" UP_PID="" EVICT_TOTAL=0 EVICT_MAX=0
evict_setup() {
    local dir="$WORK/upstream"
    mkdir -p "$dir/data"
    UP_PORT=$(free_port)
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: 127.0.0.1:$UP_PORT
  secret: trow-bench-not-secret
EOF
    start_server "upstream distribution" "$dir/registry.log" "$DIST_BIN" serve "$dir/config.yml"
    UP_PID=$LAST_PID
    wait_v2 "upstream distribution" "$dir/registry.log" "http://127.0.0.1:$UP_PORT" "$UP_PID"
    local repos=$((BENCH_EVICT_IMAGES < 6 ? BENCH_EVICT_IMAGES : 6))
    python3 "$RT" seed "http://127.0.0.1:$UP_PORT" "$WORK/evict.tsv" "$repos" "$BENCH_EVICT_IMAGES" \
        "$BENCH_EVICT_LAYER" 0 ev/app >"$dir/seed.log" 2>&1 || { cat "$dir/seed.log" >&2; die "pushing the upstream's images failed"; }
    EVICT_TOTAL=$(awk -F'\t' '{ s += $4 + $6 + $10 } END { printf "%d\n", s }' "$WORK/evict.tsv")
    EVICT_MAX=${BENCH_EVICT_MAX:-$((EVICT_TOTAL / 2))}
    log "upstream: $BENCH_EVICT_IMAGES images, $EVICT_TOTAL bytes; trow max_size $EVICT_MAX bytes"
    cat >"$WORK/evict.yaml" <<EOF
registry_proxies:
  max_size: $EVICT_MAX
  registries:
    - host: "127.0.0.1:$UP_PORT"
      alias: up
      insecure: true
EOF
}

evict_run() {
    KEY=evict
    local dir="$WORK/evict.$RUN" port sport name="trow (cache)" pid base blobs
    mkdir -p "$dir/data"
    port=$(free_port)
    sport=$(free_port)
    while [[ $sport == "$port" ]]; do sport=$(free_port); done
    base="http://127.0.0.1:$port" blobs="$dir/data/blobs"
    start_server "$name" "$dir/trow.log" "$TROW" --bind "127.0.0.1:$port" --data-dir "$dir/data" \
        --storage-listen "127.0.0.1:$sport" --config-file "$WORK/evict.yaml" --pull-guard 0s \
        --min-free-space 0 --gc-every 0 --gc-grace 0s
    pid=$LAST_PID
    wait_v2 "$name" "$dir/trow.log" "$base" "$pid"
    sleep "$BENCH_EVICT_SETTLE"

    local spid t0 t1 out cache
    python3 "$WORK/sampler.py" "$dir/peak" 0.05 "$blobs" "$pid" &
    spid=$!
    CLIENT_PIDS+=("$spid")
    out=$(python3 "$RT" pullseq "$base" "$WORK/evict.tsv" f/up/ 2>&1) ||
        { echo "$out" >&2; show_log "$name" "$dir/trow.log"; stop_client "$spid" || true; fail "$name: a pull through the cache failed"; stop_server "$pid"; return; }
    read -r t0 t1 <<<"$out"
    rec pull_wall "$KEY" "$(elapsed "$t0" "$t1")"
    local under under_img
    read -r under under_img cache _ < <(python3 "$RT" watch "$blobs" "$WORK/evict.tsv" "$EVICT_MAX" "$t1" "$BENCH_EVICT_WAIT") ||
        die "$name: watching the cache's size failed"
    [[ $under_img == - ]] || rec under_images "$KEY" "$under_img"
    sleep 1
    stop_client "$spid" || true
    local final evicted=0 i=0 own prefix_ok=1 newest_kept=1 n=$BENCH_EVICT_IMAGES left=""
    final=$(file_bytes "$blobs")
    rec final "$KEY" "$final"
    # what eviction left for garbage collection to free (informational: nothing collects here)
    if "$TROW" gc --storage "http://127.0.0.1:$sport" --dry-run >"$dir/gc-dry.out" 2>&1; then
        read -r _ _ _ left _ < <(gc_summary "$dir/gc-dry.out") || true
        rec left_for_gc "$KEY" "${left:-0}"
    else
        log "  $name: trow gc --dry-run failed: $(tail -n 1 "$dir/gc-dry.out")"
    fi
    local why=""
    [[ ${left:-0} == 0 ]] || why=" ($left bytes of it are what \`trow gc --dry-run\` lists, $(grep -c '^would delete blob' "$dir/gc-dry.out") blobs left behind by eviction)"
    if [[ $under != - ]]; then
        rec under "$KEY" "$under"
    else
        fail "$name: the blob dir holds $cache bytes ${BENCH_EVICT_WAIT}s after the last pull, max_size is $EVICT_MAX$why"
    fi
    ((final <= EVICT_MAX)) || fail "$name: the blob dir holds $final bytes at the end, over max_size $EVICT_MAX$why"
    # evicted = own layer file gone; least recently pulled first = the evicted ones are 0..E-1
    local seen_kept=0
    while IFS=$'\t' read -r _ _ _ _ _ _ _ _ own _; do
        if [[ -e $(blob_file trow "$blobs" "$own") ]]; then
            seen_kept=1
        else
            evicted=$((evicted + 1))
            if ((seen_kept)); then prefix_ok=0; fi
            if ((i == n - 1)); then newest_kept=0; fi
        fi
        i=$((i + 1))
    done <"$WORK/evict.tsv"
    rec evicted "$KEY" "$evicted"
    rec lru "$KEY" "$prefix_ok"
    rec newest_kept "$KEY" "$newest_kept"
    ((newest_kept == 1)) || fail "$name: the image pulled last was evicted"
    local peak_cache=0
    read -r peak_cache _ <"$dir/peak" || true
    rec peak_cache "$KEY" "$peak_cache"
    rec hwm "$KEY" "$(proc_kb "$pid" VmHWM)"
    kill -0 "$pid" 2>/dev/null || { show_log "$name" "$dir/trow.log"; die "$name (pid $pid) died during the run"; }
    log "  $name: $evicted of $n images evicted; cache $final bytes (max $EVICT_MAX), under it ${under/-/never}s after the last pull (its images' bytes ${under_img/-/never}s)"
    stop_server "$pid"
    [[ $BENCH_KEEP == 1 ]] || rm -rf "$dir/data"
}

# ---------------------------------------------------------------- runs
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if ((DO_EVICT)); then evict_setup; fi
for ((RUN = 1; RUN <= BENCH_RUNS; RUN++)); do
    log "run $RUN/$BENCH_RUNS"
    if ((DO_ONE)); then gc_trow one; fi
    if ((DO_IDLE)); then gc_trow idle; fi
    if ((DO_SPLIT)); then gc_trow split; fi
    if ((DO_DIST)); then gc_dist; fi
    if ((DO_EVICT)); then evict_run; fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
python3 - "$RESULTS" "$BENCH_RUNS" "$BENCH_GC_IMAGES" "$BENCH_GC_REPOS" "$BENCH_GC_LAYER" "$BENCH_GC_BASES" \
    "$BENCH_GC_GRACE" "$BENCH_GC_PULLERS" "$BENCH_EVICT_IMAGES" "$BENCH_EVICT_LAYER" "$EVICT_TOTAL" "$EVICT_MAX" \
    "$BENCH_EVICT_SETTLE" "$LOAD_BEFORE" "$LOAD_AFTER" "$(nproc)" "$((SECONDS - BENCH_T0))" "$("$DIST_BIN" --version 2>/dev/null | head -n 1 || echo '?')" <<'PY'
import statistics, sys

(results, runs, images, repos, layer, bases, grace, pullers, ev_images, ev_layer, ev_total, ev_max, settle,
 load0, load1, ncpu, took, dist_version) = sys.argv[1:]
vals = {}
for line in open(results):
    metric, key, _run, v = line.rstrip("\n").split("\t")
    vals.setdefault((metric, key), []).append(float(v))
MiB = 1048576
med = lambda m, k: statistics.median(vals[(m, k)]) if (m, k) in vals else None
keys = [k for k in ("one", "split", "idle", "dist") if ("wall", k) in vals]
names = {"one": "trow (one proc)", "split": "trow (split)", "idle": "trow, no load", "dist": "distribution"}

def fmt(v, kind):
    if v is None:
        return "-"
    if kind == "MiB":
        return f"{v / MiB:.1f}"
    if kind == "s":
        return f"{v:.3f}"
    if kind == "ms":
        return f"{v:.0f}"
    if kind == "KiB>MiB":
        return f"{v / 1024:.1f}"
    if kind == "yes":
        return "yes" if v >= 1 else "no"
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"

print()
print(f"parameters: {runs} run(s), every number the median over runs; {ncpu} CPUs, load average "
      f"(1/5/15 min) before {load0}, after {load1}; the benchmark took {took} s")
if keys:
    print(f"GC: {images} images (config + one of {bases} shared base layers + own layer of {int(layer)} bytes) "
          f"in {repos} repositories, every second one deleted by digest; trow --gc-grace {grace}s, "
          f"collected by `trow gc` while {pullers} threads pull a kept image and one pusher pushes new ones; "
          f"distribution ({dist_version}) stopped, then `garbage-collect --delete-untagged`")
    print("      bytes = sizes of the files in the blob dir; trow's 'after' includes what the pusher added")
    W = 44
    hdr = f"{'GC':<{W}}{'unit':<6}" + "".join(f"{names[k]:>17}" for k in keys)
    print()
    print(hdr)
    print("-" * len(hdr))
    rows = [
        ("blob dir before GC", "MiB", "before", "MiB"),
        ("blob dir after GC", "MiB", "after", "MiB"),
        ("bytes freed (du: before + pushed - after)", "MiB", "bytes_du", "MiB"),
        ("bytes freed (as trow gc reports)", "MiB", "bytes_reported", "MiB"),
        ("blobs deleted", "n", "blobs", "n"),
        ("manifest records deleted", "n", "manifests", "n"),
        ("links deleted", "n", "links", "n"),
        ("GC wall time", "s", "wall", "s"),
        ("GC time as reported", "ms", "reported_ms", "ms"),
        ("dry run wall time", "s", "dry_wall", "s"),
        ("registry down for GC (stop+GC+start)", "s", "down", "s"),
        ("pulls served during GC (manifest+layer)", "n", "pulls_during", "n"),
        ("  pulls/s during GC", "1/s", "pull_rate", "n"),
        ("pull errors (whole load; must be 0)", "n", "pull_errors", "n"),
        ("pushes completed during GC", "n", "pushes_during", "n"),
        ("push failures (whole load; must be 0)", "n", "push_failures", "n"),
        ("images verified byte-identical after GC", "n", "verified", "n"),
        ("storage peak RSS (VmHWM)", "MiB", "hwm", "KiB>MiB"),
    ]
    for label, unit, metric, kind in rows:
        print(f"{label:<{W}}{unit:<6}" + "".join(f"{fmt(med(metric, k), kind):>17}" for k in keys))
    print()
    print("per run, GC wall time s (bytes freed MiB):")
    for k in keys:
        pairs = ", ".join(f"{w:.3f} ({b / MiB:.1f})" for w, b in zip(vals[("wall", k)], vals[("bytes_du", k)]))
        print(f"  {names[k]:<16} {pairs}")
if ("final", "evict") in vals or ("pull_wall", "evict") in vals:
    k = "evict"
    ev_total, ev_max = int(ev_total), int(ev_max)
    print()
    print(f"eviction: {ev_images} images (config + own layer of {int(ev_layer)} bytes) in an upstream distribution, "
          f"{ev_total / MiB:.1f} MiB in all; trow one process, registry_proxies.max_size = {ev_max} bytes "
          f"({ev_max / MiB:.1f} MiB), --pull-guard 0s --min-free-space 0; {settle} s after its start, each image "
          f"pulled once through /v2/f/up/..., in order")
    W = 56
    hdr = f"{'eviction':<{W}}{'unit':<6}{'trow':>12}"
    print()
    print(hdr)
    print("-" * len(hdr))
    rows = [
        ("all images pulled through the cache, wall", "s", "pull_wall", "s"),
        ("peak cache bytes during the pulls (50 ms samples)", "MiB", "peak_cache", "MiB"),
        ("last pull -> blob dir <= max_size", "s", "under", "s"),
        ("last pull -> cached images' bytes <= max_size", "s", "under_images", "s"),
        ("final cache bytes (1 s later; blob dir)", "B", "final", "n"),
        ("max_size", "B", None, "n"),
        ("  of the final bytes, what `trow gc --dry-run` lists", "B", "left_for_gc", "n"),
        ("images evicted", "n", "evicted", "n"),
        ("evicted ones = least recently pulled", "", "lru", "yes"),
        ("image pulled last still cached", "", "newest_kept", "yes"),
        ("trow peak RSS (VmHWM)", "MiB", "hwm", "KiB>MiB"),
    ]
    for label, unit, metric, kind in rows:
        v = ev_max if metric is None else med(metric, k)
        print(f"{label:<{W}}{unit:<6}{fmt(v, kind):>12}")
        if metric == "peak_cache" and v is not None:
            print(f"{'  peak / max_size':<{W}}{'x':<6}{v / ev_max:>12.2f}")
    print("per run, final cache bytes (images evicted): " + ", ".join(
        f"{int(b)} ({int(e)})" for b, e in zip(vals.get(("final", k), []), vals.get(("evicted", k), []))))
    for metric, what in (("under", "blob dir"), ("under_images", "cached images' bytes")):
        if (metric, k) in vals:
            print(f"per run, last pull -> {what} <= max_size, s: " + ", ".join(f"{x:.3f}" for x in vals[(metric, k)]))
PY

if [[ -s $FAILURES ]]; then
    echo
    echo "CORRECTNESS CHECKS FAILED:"
    cat "$FAILURES"
    exit 1
fi
echo
echo "all correctness checks passed"

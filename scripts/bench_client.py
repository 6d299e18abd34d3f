#!/usr/bin/env python3
"""Registry client pieces scripts/bench.sh times: chunked pushes, concurrent manifest PUTs,
listings that follow Link headers, timed GETs, start-up to the first /v2/ 200, and small OCI
layouts to push. Standard library only. Every answer is checked (status, byte counts, digests):
a server that answers wrongly makes the command fail instead of looking fast.

Usage: bench_client.py COMMAND ARGS...  (see the functions below; each prints one line)
"""

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"


def fail(msg):
    print(f"bench_client: {msg}", file=sys.stderr)
    sys.exit(1)


class Conn:
    """One keep-alive connection to BASE (http://host:port), reopened after a close."""

    def __init__(self, base, token=None):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.c = None

    def req(self, method, path, body=None, headers=None, read=True):
        h = dict(self.headers)
        h.update(headers or {})
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=300, blocksize=1 << 20)
            try:
                self.c.request(method, path, body=body, headers=h)
                r = self.c.getresponse()
                data = r.read() if read else None
                if r.getheader("Connection", "").lower() == "close":
                    self.c.close()
                    self.c = None
                return r, data
            except (ConnectionError, http.client.RemoteDisconnected, BrokenPipeError):
                # a server may close an idle keep-alive connection: retry once on a new one
                self.c.close()
                self.c = None
                if attempt or body is not None and not isinstance(body, (bytes, str)):
                    raise
        raise AssertionError("unreachable")


def path_of(base, location):
    """The path+query of an upload Location (absolute or relative)."""
    u = urllib.parse.urlsplit(location)
    p = u.path if u.path.startswith("/") else "/" + u.path
    return p + ("?" + u.query if u.query else "")


def with_digest(path, digest):
    return path + ("&" if "?" in path else "?") + "digest=" + digest


def push_chunked(base, repo, file, digest, chunk):
    """POST, then PATCHes of CHUNK bytes with Content-Range, then PUT ?digest= -> seconds."""
    chunk = int(chunk)
    size = os.path.getsize(file)
    c = Conn(base)
    t0 = time.perf_counter()
    r, body = c.req("POST", f"/v2/{repo}/blobs/uploads/", body=b"", headers={"Content-Length": "0"})
    if r.status != 202:
        fail(f"POST upload answered {r.status}: {body[:300]!r}")
    loc = path_of(base, r.getheader("Location"))
    with open(file, "rb") as f:
        off = 0
        while off < size:
            data = f.read(chunk)
            end = off + len(data) - 1
            r, body = c.req("PATCH", loc, body=data, headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{off}-{end}",
                "Content-Length": str(len(data))})
            if r.status != 202:
                fail(f"PATCH {off}-{end} answered {r.status}: {body[:300]!r}")
            rng = r.getheader("Range")
            if rng and rng != f"0-{end}":
                fail(f"PATCH {off}-{end}: server reports Range {rng}")
            loc = path_of(base, r.getheader("Location") or loc)
            off = end + 1
    r, body = c.req("PUT", with_digest(loc, digest), body=b"", headers={"Content-Length": "0"})
    if r.status != 201:
        fail(f"PUT ?digest= answered {r.status}: {body[:300]!r}")
    got = r.getheader("Docker-Content-Digest")
    if got and got != digest:
        fail(f"PUT ?digest= returned Docker-Content-Digest {got}, want {digest}")
    print(f"{time.perf_counter() - t0:.6f}")


def run_threads(n, clients, work):
    """work(i, conn_state) for i in 0..n-1 spread over CLIENTS threads -> seconds."""
    lock = threading.Lock()
    nxt = [0]
    errors = []

    def worker():
        state = {}
        while not errors:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= n:
                return
            try:
                work(i, state)
            except Exception as e:  # report the first failure, stop the rest
                errors.append(f"{type(e).__name__}: {e}")
                return

    ts = [threading.Thread(target=worker) for _ in range(int(clients))]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        fail(errors[0])
    return time.perf_counter() - t0


def tiny_manifest(config_digest):
    m = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
         "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": 2}, "layers": []}
    return json.dumps(m, separators=(",", ":")).encode()


def put_manifest(conn, repo, ref, man, digest):
    r, body = conn.req("PUT", f"/v2/{repo}/manifests/{ref}", body=man,
                       headers={"Content-Type": MANIFEST_TYPE})
    if r.status != 201:
        raise RuntimeError(f"PUT /v2/{repo}/manifests/{ref} answered {r.status}: {body[:300]!r}")
    got = r.getheader("Docker-Content-Digest")
    if got and got != digest:
        raise RuntimeError(f"PUT {repo}:{ref} returned digest {got}, want {digest}")


def push_config(conn, repo, cfg, cd):
    """The config blob `{}` into REPO: a monolithic POST+PUT (an existing blob is kept)."""
    r, body = conn.req("POST", f"/v2/{repo}/blobs/uploads/", body=b"", headers={"Content-Length": "0"})
    if r.status != 202:
        raise RuntimeError(f"POST /v2/{repo}/blobs/uploads/ answered {r.status}: {body[:300]!r}")
    loc = path_of("", r.getheader("Location"))
    r, body = conn.req("PUT", with_digest(loc, cd), body=cfg,
                       headers={"Content-Type": "application/octet-stream"})
    if r.status != 201:
        raise RuntimeError(f"PUT config blob into {repo} answered {r.status}: {body[:300]!r}")


def puts(base, repo, n, clients, prefix, with_config="0"):
    """N manifest PUTs of one tiny manifest to new tags PREFIX<i> of REPO from CLIENTS keep-alive
    connections (WITH_CONFIG=1: push its config blob first, untimed) -> seconds for the PUTs."""
    cfg = b"{}"
    cd = "sha256:" + hashlib.sha256(cfg).hexdigest()
    man = tiny_manifest(cd)
    md = "sha256:" + hashlib.sha256(man).hexdigest()
    if with_config == "1":
        try:
            push_config(Conn(base), repo, cfg, cd)
        except RuntimeError as e:
            fail(str(e))

    def work(i, st):
        c = st.setdefault("c", Conn(base))
        put_manifest(c, repo, f"{prefix}{i}", man, md)

    print(f"{run_threads(int(n), clients, work):.6f}")


def repos(base, prefix, n, clients, from_repo):
    """N repositories PREFIX<i>, each with the config blob (mounted from FROM_REPO, which holds
    it; pushed if the server does not mount) and the tiny manifest tagged `1` (what populates a
    catalog) -> seconds."""
    cfg = b"{}"
    cd = "sha256:" + hashlib.sha256(cfg).hexdigest()
    man = tiny_manifest(cd)
    md = "sha256:" + hashlib.sha256(man).hexdigest()

    def work(i, st):
        c = st.setdefault("c", Conn(base))
        repo = f"{prefix}{i:05d}"
        r, body = c.req("POST", f"/v2/{repo}/blobs/uploads/?mount={cd}&from={from_repo}", body=b"",
                        headers={"Content-Length": "0"})
        if r.status == 202:  # no mount: an upload session, finish it with the bytes
            r, body = c.req("PUT", with_digest(path_of("", r.getheader("Location")), cd), body=cfg,
                            headers={"Content-Type": "application/octet-stream"})
        if r.status != 201:
            raise RuntimeError(f"mount/push of the config into {repo} answered {r.status}: {body[:300]!r}")
        put_manifest(c, repo, "1", man, md)

    print(f"{run_threads(int(n), clients, work):.6f}")


def listing(base, path, key, prefix, token=""):
    """GET PATH and every page its Link headers name -> "seconds total matching pages", where
    matching counts the names that start with PREFIX (each name must appear once)."""
    c = Conn(base, token or None)
    names = []
    pages = 0
    t0 = time.perf_counter()
    nxt = path
    while nxt:
        r, body = c.req("GET", nxt)
        if r.status != 200:
            fail(f"GET {nxt} answered {r.status}: {body[:300]!r}")
        names.extend(json.loads(body).get(key) or [])
        pages += 1
        link = r.getheader("Link")
        nxt = None
        if link:
            nxt = path_of(base, link.split(";")[0].strip().strip("<>"))
    secs = time.perf_counter() - t0
    if len(set(names)) != len(names):
        fail(f"GET {path}: {len(names) - len(set(names))} names appear twice across pages")
    print(f"{secs:.6f} {len(names)} {sum(1 for x in names if x.startswith(prefix))} {pages}")


def fetch(url, want_size, want_cache="-", token=""):
    """One timed GET, body discarded -> "t_headers t_first_body t_total" in seconds. Status 200,
    byte count and (WANT_CACHE != -) the Trow-Cache header checked."""
    u = urllib.parse.urlsplit(url)
    t0 = time.perf_counter()
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    c.request("GET", u.path, headers={"Authorization": f"Bearer {token}"} if token else {})
    r = c.getresponse()
    t_head = time.perf_counter() - t0
    t_body, n = None, 0
    buf = bytearray(1 << 20)
    while True:
        k = r.readinto(buf)
        if not k:
            break
        if t_body is None:
            t_body = time.perf_counter() - t0
        n += k
    t_total = time.perf_counter() - t0
    if r.status != 200:
        fail(f"GET {url} answered {r.status}")
    if n != int(want_size):
        fail(f"GET {url} returned {n} bytes, want {want_size}")
    cache = r.getheader("Trow-Cache") or "-"
    if want_cache != "-" and cache != want_cache:
        fail(f"GET {url}: Trow-Cache {cache}, want {want_cache}")
    print(f"{t_head:.6f} {t_body if t_body is not None else t_total:.6f} {t_total:.6f}")


def ready(host, port, path):
    """True once GET PATH on HOST:PORT answers 200 (one raw request, no keep-alive)."""
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
            return head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200")
    except OSError:
        return False


def listening(host, port):
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def startup(log, timeout, *spec):
    """SPEC is `-- READY HOST:PORT CMD... [-- READY HOST:PORT CMD...]`: starts each CMD (output
    appended to LOG) once the one before is ready; READY `tcp`: HOST:PORT accepts connections,
    else a path that must answer 200 (`/v2/`). Polls every millisecond -> the milliseconds from
    the first exec to the last ready. Then stops them all (SIGTERM, last first) and reaps them,
    so the caller never sees them. Exits 1 if one exits first or TIMEOUT seconds pass."""
    groups, cur = [], None
    for a in spec:
        if a == "--":
            cur = []
            groups.append(cur)
        else:
            cur.append(a)
    procs = []
    deadline = time.monotonic() + float(timeout)
    err = None
    with open(log, "ab") as f:
        t0 = time.perf_counter()
        for kind, target, *cmd in groups:
            host, port = target.rsplit(":", 1)
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            procs.append(p)
            while not (listening(host, port) if kind == "tcp" else ready(host, port, kind)):
                if p.poll() is not None:
                    err = f"{cmd[0]} exited with status {p.returncode} before it was ready (log: {log})"
                elif time.monotonic() > deadline:
                    err = f"{cmd[0]} not ready on {target} within {timeout}s (log: {log})"
                if err:
                    break
                time.sleep(0.001)
            if err:
                break
        ms = (time.perf_counter() - t0) * 1000
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    if err:
        fail(err)
    print(f"{ms:.1f}")


def make_images(out, n, layer_kb, seed):
    """N OCI image layouts OUT/img<i>, each a config and two layers of LAYER_KB KiB of fresh
    random bytes (so no blob is shared with another image or run) -> one manifest digest a line."""
    for i in range(int(n)):
        d = os.path.join(out, f"img{i}")
        os.makedirs(os.path.join(d, "blobs", "sha256"), exist_ok=True)

        def blob(data):
            h = hashlib.sha256(data).hexdigest()
            with open(os.path.join(d, "blobs", "sha256", h), "wb") as f:
                f.write(data)
            return "sha256:" + h, len(data)

        layers = []
        for _ in range(2):
            dg, sz = blob(os.urandom(int(layer_kb) * 1024))
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": dg, "size": sz})
        cfg = json.dumps({"architecture": "amd64", "os": "linux", "bench": f"{seed}-{i}",
                          "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()
        cd, cs = blob(cfg)
        man = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                          "config": {"mediaType": CONFIG_TYPE, "digest": cd, "size": cs},
                          "layers": layers}).encode()
        md, ms = blob(man)
        with open(os.path.join(d, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        with open(os.path.join(d, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [
                {"mediaType": MANIFEST_TYPE, "digest": md, "size": ms}]}, f)
        print(md)


def check_manifests(base, repo_fmt, ref, digests_file):
    """HEAD REPO_FMT % i : REF for each digest in DIGESTS_FILE: 200 and that digest."""
    c = Conn(base)
    for i, want in enumerate(open(digests_file).read().split()):
        repo = repo_fmt % i
        r, _ = c.req("HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_TYPE}, read=False)
        r.read()
        got = r.getheader("Docker-Content-Digest")
        if r.status != 200 or got != want:
            fail(f"HEAD {repo}:{ref} answered {r.status} digest {got}, want 200 {want}")
    print("ok")


def sha256_rate(mib):
    """MB/s of hashlib.sha256 on one core over MIB MiB (in 1 MiB updates)."""
    buf = os.urandom(1 << 20)
    h = hashlib.sha256()
    t0 = time.perf_counter()
    for _ in range(int(mib)):
        h.update(buf)
    print(f"{int(mib) * 1048576 / (time.perf_counter() - t0) / 1e6:.0f}")


def tcp_rate(host, mib):
    """MB/s of one loopback TCP stream (fallback when iperf3 is missing)."""
    srv = socket.socket()
    srv.bind((host, 0))
    srv.listen(1)
    total = int(mib) << 20

    def sink():
        s, _ = srv.accept()
        buf = bytearray(1 << 20)
        while s.recv_into(buf):
            pass
        s.close()

    t = threading.Thread(target=sink)
    t.start()
    c = socket.create_connection(srv.getsockname())
    buf = b"\0" * (1 << 20)
    t0 = time.perf_counter()
    for _ in range(total >> 20):
        c.sendall(buf)
    c.shutdown(socket.SHUT_WR)
    t.join()
    print(f"{total / (time.perf_counter() - t0) / 1e6:.0f}")


def exercise(base, rounds="2"):
    """The common requests of a registry's life, ROUNDS times, every answer checked: a chunked
    and a monolithic blob push, manifest PUTs from 2 clients, GET/HEAD by tag and digest, a blob
    GET whole and by range, tags/list, _catalog, DELETE and a few errors. scripts/symbol-order.sh
    runs it to see which code serving takes -> "ok"."""
    import tempfile
    c = Conn(base)
    for rnd in range(int(rounds)):
        repo = f"exercise/r{rnd}"
        data = os.urandom(2 << 20)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            out = sys.stdout
            sys.stdout = open(os.devnull, "w")
            try:
                push_chunked(base, repo, f.name, digest, str(512 << 10))
                puts(base, repo, "20", "2", "t", "1")
            finally:
                sys.stdout.close()
                sys.stdout = out
        cfg = b"{}"
        cd = "sha256:" + hashlib.sha256(cfg).hexdigest()
        man = tiny_manifest(cd)
        md = "sha256:" + hashlib.sha256(man).hexdigest()
        checks = [("GET", f"/v2/{repo}/manifests/t1", 200), ("GET", f"/v2/{repo}/manifests/{md}", 200),
                  ("HEAD", f"/v2/{repo}/manifests/t2", 200), ("HEAD", f"/v2/{repo}/blobs/{digest}", 200),
                  ("GET", f"/v2/{repo}/tags/list?n=5", 200), ("GET", "/v2/_catalog", 200),
                  ("GET", f"/v2/{repo}/manifests/nope", 404), ("GET", f"/v2/{repo}/blobs/sha256:00", 400),
                  ("DELETE", f"/v2/{repo}/manifests/t3", 202), ("GET", f"/v2/{repo}/manifests/t3", 404),
                  ("GET", "/v2/", 200)]
        for method, path, want in checks:
            r, body = c.req(method, path)
            if r.status != want:
                fail(f"{method} {path} answered {r.status}, want {want}: {body[:200]!r}")
        r, body = c.req("GET", f"/v2/{repo}/blobs/{digest}")
        if r.status != 200 or body != data:
            fail(f"GET blob answered {r.status} with {len(body or b'')} bytes")
        r, body = c.req("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=10-19"})
        if r.status != 206 or body != data[10:20]:
            fail(f"GET blob by range answered {r.status}: {body[:40]!r}")
    print("ok")


COMMANDS = {"exercise": exercise, "push-chunked": push_chunked, "puts": puts, "repos": repos, "list": listing,
            "fetch": fetch, "startup": startup, "make-images": make_images,
            "check-manifests": check_manifests, "sha256-rate": sha256_rate, "tcp-rate": tcp_rate}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        fail(f"usage: {sys.argv[0]} {'|'.join(COMMANDS)} ARGS...")
    COMMANDS[sys.argv[1]](*sys.argv[2:])

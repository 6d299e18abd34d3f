#!/usr/bin/env python3
"""The report of scripts/bench.sh: the machine's limits, one table (servers as columns, medians
or best of the runs), the pull-through cache rows and issue 26's targets as ratio lines, from the
results file bench.sh writes (server, metric, value; one line per run). The run's parameters come
from the environment bench.sh exports (BENCH_MB, BENCH_RUNS, ...), so a kept results file
(BENCH_KEEP=1) can be shown again: `BENCH_MB=256 ... scripts/bench_report.py results.tsv`.

Usage: bench_report.py RESULTS_TSV
"""
import os
import statistics
import sys


def E(name, default="-"):
    return os.environ.get(name, default)


results, stat = sys.argv[1], E("BENCH_STAT", "median")
SIZE = int(E("BENCH_MB", "0")) * 1048576
vals = {}
for line in open(results):
    k, m, v = line.rstrip("\n").split("\t")
    vals.setdefault((k, m), []).append(float(v))
lower_better = {"start", "rss_idle", "rss_peak", "tags_ms", "catalog_ms", "serial_ms"}
def get(k, m):
    xs = vals.get((k, m))
    if not xs:
        return None
    if stat == "median" or m.endswith("_p99") or m.endswith("_pages"):
        return statistics.median(xs)
    return min(xs) if m in lower_better or m.endswith(("_total", "_first")) else max(xs)
MB, KB = 1e6, 1024

print()
quick = " (BENCH_QUICK=1)" if E("BENCH_QUICK") == "1" else ""
print(f"Trow benchmark, scripts/bench.sh{quick}: {E('BENCH_RUNS')} run(s) each, {stat} shown; {os.cpu_count()} CPUs, "
      f"load average before {E('LOAD_BEFORE')}, after {E('LOAD_AFTER')}; took {E('BENCH_TOOK')} s")
lim = {m: get("machine", m) for m in ("disk", "tcp", "sha")}
one_v2 = get("one", "get_v2")
f = lambda x, fmt: "-" if x is None else fmt.format(x)
disk, tcp, sha, v2 = (f(x, "{:.0f}") for x in (lim["disk"], lim["tcp"], lim["sha"], one_v2))
if any(x is not None for x in (lim["disk"], lim["tcp"], lim["sha"], one_v2)):
    print(f"machine limits: disk write+fdatasync {disk} MB/s; loopback TCP {tcp} MB/s ({E('TCP_HOW')}); "
          f"sha256 one core {sha} MB/s; trow GET /v2/ at {E('BENCH_CONC')} clients {v2} req/s")
print()
cols = [("one", "trow one"), ("split", "trow split"), ("dist", "dist 2.8"), ("dist3", "dist 3.1.1")]
cols = [c for c in cols if any(k == c[0] for k, _ in vals)]
rows = [
    (f"push {E('BENCH_MB')} MiB, one PATCH", "MB/s", "push", "{:.0f}"),
    (f"push {E('BENCH_MB')} MiB, {E('BENCH_CHUNK_MB')} MiB PATCHes", "MB/s", "push_chunked", "{:.0f}"),
    (f"pull {E('BENCH_MB')} MiB", "MB/s", "pull", "{:.0f}"),
    (f"push {E('BENCH_BIG_MB')} MiB (once)", "MB/s", "push_big", "{:.0f}"),
    (f"pull {E('BENCH_BIG_MB')} MiB", "MB/s", "pull_big", "{:.0f}"),
    (f"manifest GET by tag, c{E('BENCH_CONC')}", "req/s", "get_tag", "{:.0f}"),
    ("  p99", "ms", "get_tag_p99", "{:.2f}"),
    (f"manifest GET by digest, c{E('BENCH_CONC')}", "req/s", "get_digest", "{:.0f}"),
    ("  p99", "ms", "get_digest_p99", "{:.2f}"),
    (f"manifest HEAD by tag, c{E('BENCH_CONC')} (hey)", "req/s", "head_tag", "{:.0f}"),
    ("  p99", "ms", "head_tag_p99", "{:.2f}"),
    ("manifest GET by tag, auth on (bearer)", "req/s", "get_tag_auth", "{:.0f}"),
    ("  p99", "ms", "get_tag_auth_p99", "{:.2f}"),
    ("manifest GET, 1 client, mean", "ms", "serial_ms", "{:.2f}"),
    ("manifest PUT to new tags, 4 clients", "/s", "puts", "{:.0f}"),
    (f"{E('BENCH_IMAGES')} clients push {E('BENCH_IMAGES')} images", "img/s", "images", "{:.1f}"),
    (f"tags/list, {E('BENCH_TAGS')} tags", "ms", "tags_ms", "{:.0f}"),
    ("  pages (Link)", "", "tags_pages", "{:.0f}"),
    (f"_catalog, {E('BENCH_REPOS')} repositories", "ms", "catalog_ms", "{:.0f}"),
    ("  pages (Link)", "", "catalog_pages", "{:.0f}"),
    ("RSS idle", "MiB", "rss_idle", "{:.1f}"),
    (f"RSS peak moving {E('BENCH_BIG_MB')} MiB", "MiB", "rss_peak", "{:.1f}"),
    ("start to first /v2/ 200", "ms", "start", "{:.0f}"),
]
W0, W1, WC = 42, 7, 12
hdr = f"{'':<{W0}}{'':<{W1}}" + "".join(f"{n:>{WC}}" for _, n in cols)
print(hdr)
print("-" * len(hdr))
for label, unit, m, fmt in rows:
    cells = []
    for k, _ in cols:
        v = get(k, m)
        if v is not None and m.startswith("rss"):
            v /= KB
        cells.append(f(v, fmt))
    if all(c == "-" for c in cells):
        continue
    print(f"{label:<{W0}}{unit:<{W1}}" + "".join(f"{c:>{WC}}" for c in cells))

if vals.get(("proxy", "cold_total")):
    print()
    print(f"pull-through cache, trow one process, {E('BENCH_MB')} MiB blob, upstream distribution 2.8 on {E('UPSTREAM_IP')} (s):")
    print(f"{'':<22}{'first byte':>12}{'total':>10}{'MB/s':>8}")
    for name, p in (("straight from upstream", "direct"), ("cold through trow", "cold"), ("warm through trow", "warm"),
                    ("local pull from trow", "local")):
        t = get("proxy", p + "_total")
        if t is None:
            continue
        print(f"{name:<22}{get('proxy', p + '_first'):>12.4f}{t:>10.3f}{SIZE / MB / t:>8.0f}")

print()
print("targets (issue 26), from this run:")
def ratio(label, a, b, target, ge=True, unit="x"):
    if a is None or b is None or b == 0:
        return
    r = a / b
    ok = r >= target if ge else r <= target
    shown = f"{r:.2f}{unit}" if unit == "x" else f"{r * 100:.0f}%"
    tgt = f"{target:g}x" if unit == "x" else f"{target * 100:.0f}%"
    op, verdict = (">=" if ge else "<="), ("PASS" if ok else "FAIL")
    print(f"  {label:<46} = {shown:>7}  (target {op} {tgt})  {verdict}")
def absolute(label, v, target, unit, fmt="{:.1f}"):
    if v is None:
        return
    shown = fmt.format(v) + " " + unit
    verdict = "PASS" if v <= target else "FAIL"
    print(f"  {label:<46} = {shown:>7}  (target <= {target:g} {unit})  {verdict}")
g = get
ratio("manifest GET by tag one/dist3", g("one", "get_tag"), g("dist3", "get_tag"), 4)
ratio("manifest GET by tag one (auth on)/dist3", g("one", "get_tag_auth"), g("dist3", "get_tag"), 4)
ratio("manifest GET by tag one / trow GET /v2/", g("one", "get_tag"), one_v2, 0.5, unit="%")
ratio("manifest GET by tag split/one", g("split", "get_tag"), g("one", "get_tag"), 0.9, unit="%")
ratio("manifest GET by tag split/one (auth on)", g("split", "get_tag_auth"), g("one", "get_tag_auth"), 0.9, unit="%")
ratio("push split/one", g("split", "push"), g("one", "push"), 0.9, unit="%")
ratio("pull split/one", g("split", "pull"), g("one", "pull"), 0.9, unit="%")
ratio("pull one/dist3", g("one", "pull"), g("dist3", "pull"), 1.3)
ratio("pull split/dist3", g("split", "pull"), g("dist3", "pull"), 1.3)
ratio("pull one / loopback TCP", g("one", "pull"), lim["tcp"], 0.4, unit="%")
ratio("push one / disk write+fdatasync", g("one", "push"), lim["disk"], 0.8, unit="%")
ratio("manifest PUT one/dist3", g("one", "puts"), g("dist3", "puts"), 2)
ratio(f"{E('BENCH_IMAGES')} concurrent image pushes one/dist3", g("one", "images"), g("dist3", "images"), 2)
absolute("RSS idle one", None if g("one", "rss_idle") is None else g("one", "rss_idle") / KB, 13, "MiB")
absolute(f"RSS peak one moving {E('BENCH_BIG_MB')} MiB", None if g("one", "rss_peak") is None else g("one", "rss_peak") / KB, 64, "MiB")
absolute("start to first /v2/ 200, one", g("one", "start"), 50, "ms", "{:.0f}")
ratio("cold pull through cache / straight (total)", g("proxy", "cold_total"), g("proxy", "direct_total"), 1.1, ge=False)
if g("proxy", "warm_total") and g("proxy", "local_total"):
    # The same blob, the same client: the pull's own cost, not two clients' difference.
    ratio("warm pull through cache / local pull (same client)", g("proxy", "local_total"), g("proxy", "warm_total"), 0.9, unit="%")
print()
print("per run:")
for (k, m), xs in sorted(vals.items()):
    if len(xs) > 1:
        print(f"  {k:<8}{m:<18}" + " ".join(f"{x:g}" for x in xs))


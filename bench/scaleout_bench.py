"""`kvctl migrate --executor dask://...` on a latency-bound pair: throughput at 1/2/4/8 Dask
workers against one, and the driver's peak memory at 1M and 10M keys.

Latency-bound pair: a SQLite source and an empty SQLite destination, both reached through
``slow://`` (tests/outside_plugin: every batch call first sleeps ``--delay-ms``, the cost of a far
server), with few records per page, so the cost of a page is waiting on both ends and the CPU
per key is small beside it (a 2-core machine shared with other jobs cannot show CPU scaling).
Every Dask run uses the same split (``--slices``), so the work is the same and only the number
of workers changes; the slices are sized to hold many pages each, so a slice's last, partial
page and its fixed cost (a task, opening both stores, the fenced checkpoints) are a small share
of its time (the table lists the pages read: one scan's against the slices' sum).  Each run: a
fresh ``LocalCluster`` of W single-threaded worker processes started by this script (not timed)
with kvctl imported on the workers, then the kvctl driver as a child process pointed at it
(``--executor dask://127.0.0.1:PORT --shared-fs``); the figure is the copy's own
``copy_seconds``.  ``--executor local --workers 1`` (one process, no Dask, no split) is the
baseline for the executor's overhead.  The load average is taken before and after each run.

Driver memory: a plain SQLite -> SQLite copy (no delay, 2 workers) of each ``--rss-keys``; the
driver's peak RSS (``ru_maxrss`` of the child) shows that records never pass through it.  The
sources are generated in SQLite (the cheapest store here); the generation time is listed.

Needs ``pip install -e '.[dask]' -e tests/outside_plugin``.  Usage::

    python bench/scaleout_bench.py [--keys 32768] [--batch 64] [--delay-ms 100] [--slices 16]
        [--rss-keys 1000000,10000000] [--sources DIR] [--write bench/results/scaleout_RESULTS.md]
"""

from __future__ import annotations

import argparse
import bisect
import importlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _harness import Report, load, parser, run_process, table

TARGETS = {1: 0.9, 2: 1.8, 4: 3.4, 8: 6.0}
LOCAL_TARGET = 0.95  # one Dask worker against one local process
RSS_LIMIT_MB = 150


@dataclass
class Row:
    name: str
    workers: int
    seconds: float
    rate: float
    rss_mb: float
    load_before: float
    load_after: float


def fill(url: str, n: int, value_size: int) -> float:
    """``n`` keys ``<hex digit>:<9 digits>`` (16 equal key ranges) of random values; seconds taken."""
    from kvctl.adapt import to_sync
    from kvctl.registry import open_url
    from kvctl.store import Record

    t0 = time.perf_counter()
    store = to_sync(open_url(url))
    try:
        for start in range(0, n, 50_000):
            end = min(n, start + 50_000)
            store.set_many([Record(b"%x:%09d" % (i % 16, i), os.urandom(value_size)) for i in range(start, end)])
    finally:
        store.close()
    return time.perf_counter() - t0


def source(where: Path, n: int) -> tuple[float, bool]:
    """The SQLite source of ``n`` keys in ``where``: made now, or kept from an earlier run (its
    ``.seconds`` file holds how long making it took); the seconds, and whether it was earlier."""
    db, took = where / f"m{n}.db", where / f"m{n}.seconds"
    if db.exists() and took.exists():
        return float(took.read_text()), True
    db.unlink(missing_ok=True)
    seconds = fill(f"sqlite://{db}", n, 50)
    took.write_text(f"{seconds:.1f}\n")
    return seconds, False


def run_driver(args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """Run a kvctl migrate child; its JSON summary and its own peak RSS in MB (``wait4``)."""
    proc = run_process([sys.executable, "-m", "kvctl", "migrate", *args, "--json", "--no-progress"], env=env)
    return json.loads(proc.stdout), proc.rss_mb


def on_cluster(workers: int, args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(importlib.import_module, "kvctl.engines.distributed.migrate")  # imports are not the copy
        client.run(importlib.import_module, "kvctl_outside_example.slow")
        address = client.scheduler.address.removeprefix("tcp://")
        return run_driver([*args, "--executor", f"dask://{address}", "--shared-fs"], env)


def pages_read(src: str, plan_path: Path, batch: int) -> tuple[int, int]:
    """Pages one scan of the source reads, and pages the plan's slices read in all."""
    from kvctl.adapt import to_sync
    from kvctl.registry import open_url

    store = to_sync(open_url(src, access="read"))
    try:
        keys = [r.key for page in store.scan(batch_size=10_000, keys_only=True) for r in page.records]
    finally:
        store.close()
    slices = json.loads(plan_path.read_text())["slices"]
    total = 0
    for spec in slices:
        a, b = spec["range"]
        lo = 0 if a is None else bisect.bisect_right(keys, bytes.fromhex(a))
        hi = len(keys) if b is None else bisect.bisect_right(keys, bytes.fromhex(b))
        total += max(1, math.ceil((hi - lo) / batch))
    return math.ceil(len(keys) / batch), total


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--keys", type=int, default=32_768)
    ap.add_argument("--value-size", type=int, default=200)
    ap.add_argument("--delay-ms", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--rss-keys", default="1000000,10000000")
    ap.add_argument("--sources", help="keep the driver-memory sources in this directory and reuse them")
    opts = ap.parse_args()
    report = Report("scale-out benchmark: migrate --executor dask")
    import logging

    logging.getLogger("distributed").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="kvctl-scaleout-"))
    env = {**os.environ, "XDG_STATE_HOME": str(tmp / "state")}
    src = f"sqlite://{tmp / 'src.db'}"
    fill(src, opts.keys, opts.value_size)
    slow_src = f"slow://?delay_ms={opts.delay_ms}&of={src}"

    def slow_dst(name: str) -> str:
        return f"slow://?delay_ms={opts.delay_ms}&of=sqlite://{tmp / (name + '.db')}"

    plan_path = tmp / "plan.json"
    run_process([sys.executable, "-m", "kvctl", "migrate", slow_src, slow_dst("plan"), "--batch-size",
                 str(opts.batch), "--slices", str(opts.slices), "--plan-out", str(plan_path)], env=env)
    one_scan, sliced = pages_read(src, plan_path, opts.batch)
    common = ["--batch-size", str(opts.batch), "--slices", str(opts.slices)]
    rows: list[Row] = []
    before = load()
    base, _ = run_driver([slow_src, slow_dst("local1"), "--batch-size", str(opts.batch)], env)
    assert base["copied"] == opts.keys, base
    rows.append(Row("local --workers 1", 1, base["copy_seconds"], base["read"] / base["copy_seconds"], 0,
                     before, load()))
    print(f"local: {base['copy_seconds']:.2f} s", flush=True)
    for w in [int(x) for x in opts.workers.split(",")]:
        before = load()
        summary, rss = on_cluster(w, [slow_src, slow_dst(f"dask{w}"), *common], env)
        assert summary["copied"] == opts.keys, summary
        rows.append(Row(f"dask, {w} worker(s)", w, summary["copy_seconds"],
                        summary["read"] / summary["copy_seconds"], rss, before, load()))
        print(f"{w} workers: {summary['copy_seconds']:.2f} s", flush=True)
    mem: list[tuple[int, float, bool, float, float, float]] = []
    kept = Path(opts.sources) if opts.sources else tmp
    for n in [int(x) for x in opts.rss_keys.split(",") if x]:
        msrc = f"sqlite://{kept / f'm{n}.db'}"
        made, earlier = source(kept, n)
        print(f"{n:,} keys generated in {made:.0f} s{' (earlier)' if earlier else ''}", flush=True)
        before = load()
        summary, rss = on_cluster(2, [msrc, f"sqlite://{tmp / f'm{n}-dst.db'}", "--batch-size", "5000"], env)
        assert summary["copied"] == n, summary
        mem.append((n, made, earlier, summary["copy_seconds"], rss, max(before, load())))
        print(f"{n:,} keys: driver peak RSS {rss:.0f} MB", flush=True)
        (tmp / f"m{n}-dst.db").unlink(missing_ok=True)
        if not opts.sources:
            (tmp / f"m{n}.db").unlink(missing_ok=True)
    report.add(*render(opts, rows, mem, one_scan, sliced)).finish(opts.write)


def render(opts: argparse.Namespace, rows: list[Row], mem: list[tuple[int, float, bool, float, float, float]],
           one_scan: int, sliced: int) -> list[str]:
    dask = {r.workers: r for r in rows if r.name.startswith("dask")}
    one = dask[min(dask)].rate if dask else 1.0
    d = opts.delay_ms / 1000
    out = [
        "One run per figure; every figure below, the verdicts included, is written by the script.",
        "",
        f"## Latency-bound copy: {opts.keys:,} keys of {opts.value_size} B, pages of {opts.batch} records, "
        f"{opts.delay_ms} ms per batch call on both ends, {opts.slices} slices",
        "",
        f"One scan of the source reads {one_scan} pages; the {opts.slices} slices read {sliced} in all (a slice "
        f"ends with a partial page unless its keys are a multiple of {opts.batch}).  A copy overlaps a page's "
        f"read with the previous page's write, so a scan of P pages waits at least (P + 1) x {opts.delay_ms} ms "
        f"and a slice adds one more wait (its last write): at least {(one_scan + 1) * d:.1f} s for one "
        f"process and {(sliced + opts.slices) * d:.1f} s for one Dask worker "
        f"(x{(one_scan + 1) / (sliced + opts.slices):.2f} before any other cost).",
        "",
    ]
    body = []
    for r in rows:
        if r.name.startswith("dask"):
            vs, target = f"x{r.rate / one:.2f}", f"x{TARGETS.get(r.workers, '-')}"
            met = "met" if r.workers in TARGETS and r.rate / one >= TARGETS[r.workers] else "not met"
        else:
            vs, target = "-", f"1 Dask worker >= x{LOCAL_TARGET} of this"
            met = "met" if one / r.rate >= LOCAL_TARGET else f"not met (x{one / r.rate:.2f})"
        body.append([r.name, f"{r.seconds:.2f}", f"{r.rate:,.0f}", vs, target, met,
                     f"{r.rss_mb:.0f} MB" if r.rss_mb else "-", f"{r.load_before:.1f} / {r.load_after:.1f}"])
    out += table(["executor", "copy seconds", "keys/s", "vs 1 Dask worker", "target", "verdict",
                  "driver peak RSS", "load avg before / after"], body)
    out += [
        "",
        "Each Dask worker is one single-threaded process.  A copy pipelines its source reads and its "
        "destination writes, so a page costs about one delay; more workers overlap more waits until "
        "the machine's 2 CPUs (the SQLite work, the Dask worker loops, other jobs: see the load "
        "average) become the limit.",
        "",
        "## Driver memory (records never pass through the driver)",
        "",
    ]
    out += table(["keys", "source generated in (SQLite)", "copy seconds (2 workers, no delay)",
                  "driver peak RSS", f"under {RSS_LIMIT_MB} MB", "max load avg"],
                 [[f"{n:,}", f"{made:.0f} s" + (" (by an earlier run, kept with --sources)" if earlier else ""),
                   f"{secs:.1f}", f"{rss:.0f} MB", "met" if rss < RSS_LIMIT_MB else "not met", f"{ld:.1f}"]
                  for n, made, earlier, secs, rss, ld in mem])
    return out


if __name__ == "__main__":
    main()

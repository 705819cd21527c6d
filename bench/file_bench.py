"""Benchmark of the ``file`` backend, side by side with the stores its targets name, in one run.

    python bench/file_bench.py [--quick] [--write bench/results/file_RESULTS.md]

Workload (GridKV's harness, see shared/reference section 2): keys ``key-<i>``, one random 100-byte
value; *get* reads ``key-(i mod 1000)`` from 1,000 pre-filled keys on a warm store; *set* writes
always-new keys one call at a time; *batch* writes always-new keys with ``set_many`` of 1,000.
Every figure is a median over repeats (µs per key), single-threaded, in this one process.
*Open* builds a store of N keys of 100 bytes, closes it, and times a fresh open in a child
process, which also reports its resident-memory growth per key.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import NamedTuple

import lmdb
from _harness import Report, interleave, parser

from kvctl.registry import open_url
from kvctl.store import Record

VALUE = os.urandom(100)


class Timing(NamedTuple):
    """Median µs per operation: elapsed, and CPU time of this process (user + system).

    On a machine shared with other work the elapsed figures stretch; the CPU figures much less.
    Waiting for fsync is elapsed time only.
    """

    wall: float
    cpu: float

    def ratio(self, other: Timing) -> str:
        return f"{self.wall / other.wall:.2f}x (CPU {self.cpu / other.cpu:.2f}x)"


def median_us(fn: Callable[[int], object], repeats: int, ops: int) -> Timing:
    """``fn(r)`` runs repeat ``r``, ``ops`` operations."""
    samples = interleave({"": fn}, repeats, per_call=ops, cpu=time.process_time)[""]
    return Timing(samples.median(), samples.cpu_median())


def bench_get(url: str, ops: int, repeats: int) -> Timing:
    store = open_url(url)
    store.set_many([Record(b"key-%d" % i, VALUE) for i in range(1000)])
    keys = [b"key-%d" % (i % 1000) for i in range(ops)]
    get = store.get
    for key in keys[:2000]:
        get(key)  # warm

    def run(_: int) -> int:
        for key in keys:
            get(key)
        return ops

    result = median_us(run, repeats, ops)
    store.close()
    return result


def bench_set(url: str, ops: int, repeats: int) -> Timing:
    store = open_url(url)
    set_ = store.set

    def run(r: int) -> int:
        base = r * ops
        for i in range(base, base + ops):
            set_(b"key-%d" % i, VALUE)
        return ops

    result = median_us(run, repeats, ops)
    store.close()
    return result


def bench_set_many(url: str, batches: int) -> Timing:
    store = open_url(url)
    ready = [[Record(b"key-%d" % (b * 1000 + i), VALUE) for i in range(1000)] for b in range(batches)]

    def run(r: int) -> int:
        store.set_many(ready[r])
        return 1000

    result = median_us(run, batches, 1000)
    store.close()
    return result


def bench_scan(url: str, keys: int, repeats: int) -> Timing:
    store = open_url(url)
    for b in range(0, keys, 1000):
        store.set_many([Record(b"key-%d" % i, VALUE) for i in range(b, min(keys, b + 1000))])

    def run(_: int) -> int:
        return sum(len(p.records) for p in store.scan(batch_size=1000))

    result = median_us(run, repeats, keys)
    store.close()
    return result


def bench_raw_sqlite_set(path: str, ops: int, repeats: int) -> Timing:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE kv(k BLOB PRIMARY KEY, v BLOB)")
    sql = "INSERT OR REPLACE INTO kv VALUES (?, ?)"

    def run(r: int) -> int:
        base = r * ops
        for i in range(base, base + ops):
            conn.execute(sql, (b"key-%d" % i, VALUE))
        return ops

    result = median_us(run, repeats, ops)
    conn.close()
    return result


def bench_raw_lmdb_batched_sync(path: str, batches: int) -> Timing:
    env = lmdb.open(path, map_size=1 << 32, sync=True)

    def run(r: int) -> int:
        with env.begin(write=True) as txn:
            for i in range(r * 1000, r * 1000 + 1000):
                txn.put(b"key-%d" % i, VALUE)
        return 1000

    result = median_us(run, batches, 1000)
    env.close()
    return result


def bench_dict_get(ops: int, repeats: int) -> Timing:
    d = {b"key-%d" % i: VALUE for i in range(1000)}
    keys = [b"key-%d" % (i % 1000) for i in range(ops)]
    get = d.get

    def run(_: int) -> int:
        for key in keys:
            get(key)
        return ops

    return median_us(run, repeats, ops)


_OPEN_CHILD = r"""
import gc, json, os, sys, time
from kvctl.registry import open_url
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
gc.collect()
before = rss()
t0 = time.perf_counter()
c0 = time.process_time()
store = open_url(sys.argv[1])
opened = time.perf_counter() - t0
cpu = time.process_time() - c0
after = rss()
n = store.count()
t0 = time.perf_counter()
next(iter(store.scan(batch_size=10)))
first_scan = time.perf_counter() - t0
print(json.dumps({"open_s": opened, "cpu_s": cpu, "keys": n, "rss_bytes": after - before, "first_scan_s": first_scan}))
store.close()
"""


def bench_open(url: str, keys: int, repeats: int) -> dict[str, float]:
    store = open_url(url)
    for b in range(0, keys, 1000):
        store.set_many([Record(b"key-%d" % i, VALUE) for i in range(b, min(keys, b + 1000))])
    store.close()
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _OPEN_CHILD, url], check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout))
    return {
        "open_s": statistics.median(r["open_s"] for r in runs),
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "keys": runs[0]["keys"],
        "bytes_per_key": statistics.median(r["rss_bytes"] for r in runs) / keys,
        "first_scan_s": statistics.median(r["first_scan_s"] for r in runs),
    }


def memory_bytes_per_key(keys: int) -> float:
    child = r"""
import gc, os, sys
from kvctl.registry import open_url
from kvctl.store import Record
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
n = int(sys.argv[1]); value = os.urandom(100)
gc.collect(); before = rss()
store = open_url("memory://")
for b in range(0, n, 1000):
    # a distinct value object per key, as a store that read them from disk holds
    store.set_many([Record(b"key-%d" % i, value[:99] + bytes([i % 256])) for i in range(b, min(n, b + 1000))])
gc.collect()
print((rss() - before) / n)
"""
    out = subprocess.run([sys.executable, "-c", child, str(keys)], check=True, capture_output=True, text=True)
    return float(out.stdout)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer operations and 100k keys for open")
    args = ap.parse_args()
    report = Report("file backend benchmark")
    ops, repeats = (20_000, 7) if args.quick else (100_000, 15)
    set_ops, set_repeats = (2_000, 7) if args.quick else (10_000, 15)
    batches = 15 if args.quick else 41
    open_keys = 100_000 if args.quick else 1_000_000

    tmp = tempfile.mkdtemp(prefix="kvctl-file-bench-", dir=os.environ.get("BENCH_DIR", "."))
    rows: list[tuple[str, str, Timing, str]] = []
    try:
        def path(name: str) -> str:
            return os.path.join(tmp, name)

        print("get ...", file=sys.stderr)
        dict_get = bench_dict_get(ops, repeats)
        mem_get = bench_get("memory://", ops, repeats)
        file_get = bench_get(f"file://{path('get')}", ops, repeats)
        rows += [("get, warm, 1,000 keys", "dict.get (raw)", dict_get, ""),
                 ("", "memory backend", mem_get, ""),
                 ("", "**file backend**", file_get, f"{file_get.ratio(mem_get)} memory's time (target <= 1.5x)")]

        print("set ...", file=sys.stderr)
        file_never = bench_set(f"file://{path('set-never')}?fsync=never", set_ops, set_repeats)
        file_batch1 = bench_set(f"file://{path('set-batch')}?fsync=batch", set_ops, set_repeats)
        sqlite_set = bench_set(f"sqlite://{path('set.db')}", set_ops, set_repeats)
        raw_sqlite = bench_raw_sqlite_set(path("raw.db"), set_ops, set_repeats)
        file_always = bench_set(f"file://{path('set-always')}?fsync=always", 200, 7)
        mem_set = bench_set("memory://", set_ops, set_repeats)
        rows += [("set, sequential new keys", "memory backend", mem_set, "no durability"),
                 ("", "sqlite backend (WAL, synchronous=NORMAL)", sqlite_set, "commit per set, no fsync"),
                 ("", "raw sqlite3 (WAL, synchronous=NORMAL)", raw_sqlite, "autocommit, no fsync"),
                 ("", "**file backend, fsync=never**", file_never,
                  f"{sqlite_set.ratio(file_never)} faster than the sqlite backend (target >= 3x)"),
                 ("", "file backend, fsync=batch (default)", file_batch1, "group commit within 10 ms"),
                 ("", "file backend, fsync=always", file_always, "fdatasync per set")]

        print("batch ...", file=sys.stderr)
        lmdb_sync = bench_raw_lmdb_batched_sync(path("lmdb"), batches)
        file_batch = bench_set_many(f"file://{path('batch')}?fsync=batch", batches)
        file_batch_never = bench_set_many(f"file://{path('batch-never')}?fsync=never", batches)
        rows += [("set_many of 1,000 new keys", "raw py-lmdb, sync=True, 1,000 puts per txn", lmdb_sync,
                  "one durable commit per 1,000"),
                 ("", "**file backend, fsync=batch**", file_batch,
                  f"{lmdb_sync.ratio(file_batch)} lmdb's speed (target >= 1x); one fdatasync per 1,000"),
                 ("", "file backend, fsync=never", file_batch_never, "")]

        print("scan ...", file=sys.stderr)
        scan_keys = 20_000 if args.quick else 100_000
        mem_scan = bench_scan("memory://", scan_keys, 5)
        file_scan = bench_scan(f"file://{path('scan')}?fsync=never", scan_keys, 5)
        rows += [(f"scan of {scan_keys:,} keys, pages of 1,000", "memory backend", mem_scan, ""),
                 ("", "file backend", file_scan, f"{file_scan.ratio(mem_scan)} memory's time")]

        print(f"open of {open_keys:,} keys ...", file=sys.stderr)
        opened = bench_open(f"file://{path('open')}?fsync=never", open_keys, 3)
        mem_per_key = memory_bytes_per_key(open_keys)
        files = sum(os.path.getsize(os.path.join(path("open"), f)) for f in os.listdir(path("open")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    lines = [
        "One run, single-threaded, files on the working directory's filesystem: compare figures within "
        "this run only; the CPU column (this process's user + system time) is the less disturbed one, but "
        "time spent waiting for fsync shows only in the elapsed column. "
        "Medians of repeats; µs per key; 100-byte random values. Ratios: elapsed (CPU).",
        "",
        "| workload | store | elapsed µs/key | CPU µs/key | note |",
        "|---|---|---:|---:|---|",
    ]
    lines += [f"| {w} | {s} | {v.wall:.3f} | {v.cpu:.3f} | {n} |" for w, s, v, n in rows]
    lines += [
        "",
        f"**Open** of {opened['keys']:,} keys of 100 bytes ({files / 1e6:.0f} MB of segments, written by "
        f"set_many of 1,000): **{opened['open_s']:.2f} s** (target < 3 s; {opened['cpu_s']:.2f} s of CPU), "
        f"median of 3 fresh processes. "
        f"The sorted key index is built on the first scan, not at open: "
        f"{opened['first_scan_s']:.2f} s.",
        "",
        f"**Memory per key** (resident growth of the opening process / keys): "
        f"**{opened['bytes_per_key']:.0f} bytes** for the file backend (values up to inline_max=4 KiB "
        f"are kept in memory) vs {mem_per_key:.0f} bytes for the memory backend holding the same data.",
    ]
    report.add(*lines).finish(args.write)


if __name__ == "__main__":
    main()

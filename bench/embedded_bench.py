"""kvctl's embedded backends (memory, sqlite, lmdb) side by side with their raw drivers, in one run.

Workload (GridKV's harness shape): keys ``key-<i>``, one random 100-byte value.  *get* reads
``key-(i mod 1000)`` from 1,000 pre-filled keys; *set* writes always-new keys; the batch rows do
the same 1,000 keys at a time (``get_many`` / ``set_many``).  kvctl stores are opened with
``kvctl.registry.open_url`` and called directly (sync API).  Each raw baseline does the same
work with the same schema, pragmas, transaction pattern and sync mode, in its fastest idiom:

* memory: a dict (``d[k]``, ``d[k] = v``, list comprehension / ``dict.update`` for batches);
* sqlite: stdlib sqlite3 on a file made by the plugin (same table, indexes, WAL,
  synchronous=NORMAL), the plugin's own SQL text: point SELECT, autocommit UPSERT, one
  ``IN (...)`` SELECT per batch, ``BEGIN IMMEDIATE`` + ``executemany`` UPSERT + ``COMMIT``;
* lmdb: py-lmdb on an environment with the same map size, named database and sync mode: one
  read transaction per get (``env.begin(db=db).get(k)``), one write transaction per set, one
  transaction per batch (``txn.get`` loop; ``cursor.putmulti``).

Every figure is the median over ``--repeats`` rounds of the time per operation; kvctl and raw
calls run back to back inside each round, and each round sweeps every case, so machine drift
and bursts of load from elsewhere hit both sides alike.  Usage::

    python bench/embedded_bench.py [--repeats 21] [--cpu 0] [--nice -10] [--only sqlite]
        [--write bench/results/embedded_RESULTS.md]
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from struct import Struct
from typing import Any

import lmdb
from _harness import Report, Step, command, interleave, parser, pyperf_us

from kvctl.hlc import HLC
from kvctl.plugin_kit import record_of as make_record  # the record builder the plugins use
from kvctl.registry import open_url
from kvctl.store import Record

VALUE = os.urandom(100)
PREFILL = 1000
BATCH = 1000
KEYS = [b"key-%d" % i for i in range(PREFILL)]



@dataclass
class Case:
    backend: str
    operation: str
    durability: str
    ops: int  # operations per timed call
    kvctl: Step
    raw: Step
    target: float
    raw_idiom: str
    kvctl_us: float = 0.0  # medians
    raw_us: float = 0.0
    kvctl_min_us: float = 0.0  # fastest rounds: external load only ever adds time
    raw_min_us: float = 0.0

    @property
    def ratio(self) -> float:
        return self.kvctl_us / self.raw_us

    @property
    def min_ratio(self) -> float:
        return self.kvctl_min_us / self.raw_min_us


def fresh(tag: str, rounds: int, n: int) -> list[list[bytes]]:
    """Never-written keys for every round of a set workload (built before timing)."""
    return [[b"%s-%d-%d" % (tag.encode(), r, i) for i in range(n)] for r in range(rounds)]


def gets(n: int) -> list[bytes]:
    return [KEYS[i % PREFILL] for i in range(n)]


def kvctl_get_set(store: Any, keys: list[bytes], new: list[list[bytes]]) -> tuple[Step, Step]:
    """kvctl's side of the get and set cases of every backend: one call a key (for set, the round's
    never-written keys), the bound method looked up once as the raw side does."""
    def kv_get(_: int) -> None:
        g = store.get
        for k in keys:
            g(k)

    def kv_set(r: int) -> None:
        s = store.set
        for k in new[r]:
            s(k, VALUE)

    return kv_get, kv_set


# -- memory ------------------------------------------------------------------------------------
def memory_cases(rounds: int) -> list[Case]:
    store = open_url("memory://")
    store.set_many([Record(k, VALUE) for k in KEYS])
    d = {k: VALUE for k in KEYS}
    keys = gets(20_000)
    new_kv, new_raw = fresh("mk", rounds, 20_000), fresh("mr", rounds, 20_000)
    batch_kv = [[Record(k, VALUE) for k in ks[:BATCH]] for ks in fresh("mbk", rounds, BATCH)]
    batch_raw = [{k: VALUE for k in ks} for ks in fresh("mbr", rounds, BATCH)]

    kv_get, kv_set = kvctl_get_set(store, keys, new_kv)

    def raw_get(_: int) -> None:
        for k in keys:
            d[k]

    def raw_set(r: int) -> None:
        for k in new_raw[r]:
            d[k] = VALUE

    mem = "none (process memory)"
    return [
        Case("memory", "get", "-", len(keys), kv_get, raw_get, 6.0, "d[k]"),
        Case("memory", "set", mem, 20_000, kv_set, raw_set, 6.0, "d[k] = v"),
        Case("memory", "get_many 1000", "-", BATCH, lambda r: store.get_many(KEYS),
             lambda r: [d.get(k) for k in KEYS], 1.25, "[d.get(k) for k in keys]"),
        Case("memory", "set_many 1000", mem, BATCH, lambda r: store.set_many(batch_kv[r]),
             lambda r: d.update(batch_raw[r]), 1.25, "d.update(batch)"),
    ]


# -- sqlite ------------------------------------------------------------------------------------
def sqlite_cases(rounds: int, workdir: str) -> list[Case]:
    # ?feed=false on both sides: issue 2's target is kvctl's own overhead over the driver; the
    # change feed's trigger cost is measured by bench/sync_sqlite_bench.py
    store = open_url(f"sqlite://{workdir}/kvctl.db?feed=false")
    store.set_many([Record(k, VALUE) for k in KEYS])
    # The raw file gets its schema from the plugin, then is used through bare sqlite3.
    open_url(f"sqlite://{workdir}/raw.db?feed=false").close()
    conn = sqlite3.connect(f"{workdir}/raw.db", isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    # The plugin's own statements, so both sides run the same SQL.
    store.get_many(KEYS)
    get_sql, put_sql, many_sql = store._sql_get, store._sql_put, store._many_sql[BATCH]
    # What one would write by hand: the same filter over an IN list.
    in_sql = (f"SELECT key, value, expires_at, version FROM kv WHERE key IN ({','.join('?' * BATCH)}) "
              "AND (expires_at IS NULL OR expires_at > ?)")
    # Raw versions grow like the HLC's, so both sides append to the version index alike.
    versions = itertools.count(1 << 50)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(put_sql, [(k, VALUE, None, next(versions)) for k in KEYS])
    conn.execute("COMMIT")
    keys = gets(5_000)
    n_set = 2_000
    new_kv, new_raw = fresh("sk", rounds, n_set), fresh("sr", rounds, n_set)
    batch_kv = [[Record(k, VALUE) for k in ks] for ks in fresh("sbk", rounds, BATCH)]
    batch_raw = [[(k, VALUE, None, next(versions)) for k in ks] for ks in fresh("sbr", rounds, BATCH)]

    kv_get, kv_set = kvctl_get_set(store, keys, new_kv)

    def raw_get(_: int) -> None:
        ex = conn.execute
        for k in keys:
            ex(get_sql, (k,)).fetchone()

    def raw_set(r: int) -> None:
        ex = conn.execute
        for k in new_raw[r]:
            ex(put_sql, (k, VALUE, None, next(versions)))

    def raw_get_many(_: int) -> None:
        conn.execute(many_sql, [*KEYS, int(time.time() * 1000)]).fetchall()

    def raw_get_in(_: int) -> None:
        conn.execute(in_sql, [*KEYS, int(time.time() * 1000)]).fetchall()

    def raw_set_many(r: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(put_sql, batch_raw[r])
        conn.execute("COMMIT")

    wal = "WAL, synchronous=NORMAL (no fsync per commit)"
    return [
        Case("sqlite", "get", "-", len(keys), kv_get, raw_get, 1.25, "execute(SELECT ... key=?).fetchone()"),
        Case("sqlite", "set", wal, n_set, kv_set, raw_set, 1.25, "execute(UPSERT), autocommit"),
        Case("sqlite", "get_many 1000", "-", BATCH, lambda r: store.get_many(KEYS), raw_get_many, 1.25,
             "the plugin's statement: VALUES list of 1000 keys CROSS JOIN kv, fetchall()"),
        Case("sqlite", "get_many 1000", "-", BATCH, lambda r: store.get_many(KEYS), raw_get_in, 1.25,
             "by hand: SELECT ... WHERE key IN (1000 ?), fetchall()"),
        Case("sqlite", "set_many 1000", wal, BATCH, lambda r: store.set_many(batch_kv[r]), raw_set_many, 1.25,
             "BEGIN IMMEDIATE; executemany(UPSERT); COMMIT"),
    ]


# -- lmdb --------------------------------------------------------------------------------------
def lmdb_cases(rounds: int, workdir: str) -> list[Case]:
    return lmdb_mode_cases(rounds, workdir, sync=False) + lmdb_mode_cases(rounds, workdir, sync=True)


def lmdb_mode_cases(rounds: int, workdir: str, *, sync: bool) -> list[Case]:
    mode = "sync" if sync else "nosync"
    store = open_url(f"lmdb://{workdir}/kvctl-{mode}?sync={str(sync).lower()}")
    store.set_many([Record(k, VALUE) for k in KEYS])
    env = lmdb.open(f"{workdir}/raw-{mode}", map_size=1 << 30, max_dbs=8, sync=sync, metasync=sync)
    db = env.open_db(b"kvctl")
    with env.begin(write=True, db=db) as txn:
        txn.cursor().putmulti([(k, VALUE) for k in KEYS])
    n_set = 200 if sync else 2_000
    new_kv, new_raw = fresh(f"lk{mode}", rounds, n_set), fresh(f"lr{mode}", rounds, n_set)
    batch_kv = [[Record(k, VALUE) for k in ks] for ks in fresh(f"lbk{mode}", rounds, BATCH)]
    batch_raw = [[(k, VALUE) for k in ks] for ks in fresh(f"lbr{mode}", rounds, BATCH)]
    durability = "fsync per commit (sync=true)" if sync else "no fsync (sync=false)"
    keys = gets(10_000)

    kv_get, kv_set = kvctl_get_set(store, keys, new_kv)

    def raw_get(_: int) -> None:
        begin = env.begin
        for k in keys:
            begin(db=db).get(k)

    def raw_get_many(_: int) -> None:
        with env.begin(db=db) as txn:
            g = txn.get
            [g(k) for k in KEYS]

    def raw_set(r: int) -> None:
        begin = env.begin
        for k in new_raw[r]:
            with begin(write=True, db=db) as txn:
                txn.put(k, VALUE)

    def raw_set_many(r: int) -> None:
        with env.begin(write=True, db=db) as txn:
            txn.cursor().putmulti(batch_raw[r])

    reads = [] if sync else [  # reads do not depend on the sync mode
        Case("lmdb", "get", "-", len(keys), kv_get, raw_get, 1.5, "env.begin(db=db).get(k)"),
        Case("lmdb", "get_many 1000", "-", BATCH, lambda r: store.get_many(KEYS), raw_get_many, 1.25,
             "one read txn, txn.get loop"),
    ]
    return [
        *reads,
        Case("lmdb", "set", durability, n_set, kv_set, raw_set, 1.5, "one write txn per put"),
        Case("lmdb", "set_many 1000", durability, BATCH, lambda r: store.set_many(batch_kv[r]), raw_set_many,
             1.25, "one write txn, cursor.putmulti"),
    ]


# -- running and reporting ---------------------------------------------------------------------
def run(cases: list[Case], rounds: int) -> None:
    """Round r times every case once, kvctl and raw back to back (order flipped every round),
    after one warm-up round (statement caches, page cache, branch predictors).

    Rounds sweep across all cases, so a burst of load from elsewhere on the machine spoils one
    round of many cases rather than every round of one case; the median then discards it.
    """
    groups = [{f"{i} raw": case.raw, f"{i} kvctl": case.kvctl} for i, case in enumerate(cases)]
    ops = {f"{i} {side}": case.ops for i, case in enumerate(cases) for side in ("raw", "kvctl")}
    times = interleave(groups, rounds, per_call=ops, warmup=1, collect=True)
    for i, case in enumerate(cases):
        kv, raw = times[f"{i} kvctl"], times[f"{i} raw"]
        case.kvctl_us, case.raw_us = kv.median(), raw.median()
        case.kvctl_min_us, case.raw_min_us = kv.fastest(), raw.fastest()
        print(f"  {case.backend:7} {case.operation:14} kvctl {case.kvctl_us:8.3f} µs  raw {case.raw_us:8.3f} µs"
              f"  x{case.ratio:.2f}", file=sys.stderr)


def fixed_costs() -> list[tuple[str, float]]:
    """Per-record costs no plugin can avoid today, timed in this run (µs, pyperf's median of 7)."""
    header = Struct(">QQ")
    clock = HLC()
    framed = header.pack(0, 1 << 50) + VALUE
    version = 1 << 50
    probes: list[tuple[str, Callable[[], object]]] = [
        ("`Record(k, v, None, ver)`: the named-tuple constructor",
         lambda: Record(b"k", VALUE, None, version)),
        ("`make_record(k, v, None, ver)`: `kvctl.store.record_of`, the builder plugins use",
         lambda: make_record(b"k", VALUE, None, 1)),
        ("`HLC.now()`: one version", clock.now),
        ("LMDB header decode: `unpack_from` + `raw[16:]`", lambda: (header.unpack_from(framed), framed[16:])),
        ("LMDB header encode: `pack(exp, ver) + value`", lambda: header.pack(0, version) + VALUE),
    ]
    return [(label, pyperf_us(f"cost {i}", fn, loops=200_000)) for i, (label, fn) in enumerate(probes)]


def render(cases: list[Case], rounds: int, costs: list[tuple[str, float]]) -> list[str]:
    lines = [
        f"Medians of {rounds} rounds, µs per operation, "
        "100-byte values, keys `key-<i>`; gets read 1,000 pre-filled keys, sets write new keys.  "
        "Each round runs every case once, kvctl and raw back to back in alternating order.  Figures "
        "drift ~1.4x between runs on this machine kind: compare the ratio, which is taken inside one run.  "
        "Other work shared the machine, so the ratio of the fastest rounds is shown too (load only ever "
        "adds time).",
        "",
        "| backend | operation | durability | kvctl µs/op | raw µs/op | kvctl/raw | target | met "
        "| kvctl/raw of fastest rounds | raw idiom |",
        "|---|---|---|---:|---:|---:|---:|:-:|---:|---|",
    ]
    for c in cases:
        met = "yes" if c.ratio <= c.target else "**no**"
        lines.append(
            f"| {c.backend} | {c.operation} | {c.durability} | {c.kvctl_us:.3f} | {c.raw_us:.3f} | "
            f"{c.ratio:.2f}x | <= {c.target:g}x | {met} | {c.min_ratio:.2f}x | {c.raw_idiom} |"
        )
    lines += [
        "",
        "Per-record costs inside the kvctl figures, timed in this run (µs, including a Python call):",
        "",
        "| cost | µs |",
        "|---|---:|",
        *(f"| {label} | {us:.3f} |" for label, us in costs),
        "",
        "Reading the table:",
        "",
        "* Every kvctl read returns a `Record`; every versioned write takes an HLC version.  Where the "
        "raw operation costs less than a few of those per-record costs (a py-lmdb read or `putmulti`, "
        "a dict access), the ratio targets cannot be met by a plugin: the floor is the raw cost plus "
        "the per-record costs above (for LMDB also the 16-byte expiry/version header each value carries).",
        "* The two sqlite `get_many` rows time the same kvctl call against two raw statements: the "
        "plugin's own VALUES-join (same SQL: kvctl's overhead alone) and the `IN (...)` list one "
        "would write by hand (what a user gains or loses by going through kvctl).",
        "* fsync rows are dominated by the disk flush and swing with other I/O on the machine; the "
        "memory rows measure the memory plugin, which this benchmark only reports.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--repeats", type=int, default=21, help="rounds per case (default 21)")
    ap.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    ap.add_argument("--nice", type=int, default=None,
                    help="change the process priority (e.g. -10 as root: fewer preemptions on a busy machine)")
    ap.add_argument("--only", choices=("memory", "sqlite", "lmdb"), action="append",
                    help="run only these backends (repeatable)")
    args = ap.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.nice is not None:
        os.nice(args.nice)
    report = Report("Embedded backends: kvctl vs the raw driver", cmd=command(argv),
                    facts=f", SQLite {sqlite3.sqlite_version}, py-lmdb {lmdb.__version__} "
                          f"(LMDB {'.'.join(map(str, lmdb.version()))})")
    only = set(args.only or ("memory", "sqlite", "lmdb"))
    with tempfile.TemporaryDirectory(prefix="kvctl-bench-") as workdir:
        cases: list[Case] = []
        if "memory" in only:
            cases += memory_cases(args.repeats + 1)
        if "sqlite" in only:
            cases += sqlite_cases(args.repeats + 1, workdir)
        if "lmdb" in only:
            cases += lmdb_cases(args.repeats + 1, workdir)
        run(cases, args.repeats)
        costs = fixed_costs()
    report.add(*render(cases, args.repeats, costs)).finish(args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

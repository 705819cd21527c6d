"""The seed documents' published figures, with their hardware and the caveats of how they were made.

The comparison view puts each seed figure beside kvctl's figure for the nearest backend family
measured in this run, on this machine, with the caveat next to it (reference, section 2): most
seed tables have no benchmark code behind them, and a "latency" column is often 1/throughput.
This module is data about the seed documents; which backend families exist is whatever ran.
"""

from __future__ import annotations

from dataclasses import dataclass

GRIDKV_CAVEAT = ("no public code produces this table; the closest harness is single-threaded through the full "
                 "API (key-<i>, one random 100-byte value); its latency column is 1/throughput; which op "
                 "(Set/Get/Mixed) the one figure is is not stated: kvctl shows all three; its Set writes "
                 "always-new keys, kvctl's overwrites N keys (a growing store gives every value another state)")
GRIDKV_ALLOC_CAVEAT = ("Go -benchmem figures (cumulative bytes and allocations per op, not live memory); kvctl "
                       "counts allocator calls with memray, per op of Set / Get / Mixed: objects CPython reuses "
                       "from its free lists (tuples, floats, small dicts) are not counted, where Go counts "
                       "every heap allocation")
SESSION_CAVEAT = "illustrative figures: the Session project has no benchmark behind them"
SESSION_CACHE_CAVEAT = (SESSION_CAVEAT + "; a hit differs from a miss only when the Redis URL enables the local "
                        "cache (the seed's clustered store: local LRU + pub/sub invalidation)")
GORK_CAVEAT = ("not from Gorkflow's benchmarks: its real sequential Go benchmarks measured create+get at 2.2 us "
               "(memory) and 182 us (local LibSQL)")
SWARM_CAVEAT = ("no code behind this figure in ruv-swarm; \"latency\" is 1/throughput")
SWARM_EVENT_CAVEAT = ("the only figure with code: 30,000 sequential single-row inserts, each its own autocommit "
                      "transaction (kvctl: insert)")
SWARM_MEMORY_EVENT_CAVEAT = ("dominated by deliberate sleeps in ruv-swarm's memory backend benchmark "
                             "(kvctl: insert)")
M2_MAX = "MacBook Pro M2 Max, 32 GB"
# what each seed is: its figures are of its own code in its own language, not of a kvctl backend
PROJECTS = {"GridKV": "Go library", "Gorkflow": "Go library", "Session": "Crystal library",
            "ruv-swarm": "Rust crate"}
NOT_STATED = "not stated"


@dataclass(frozen=True)
class SeedFigure:
    seed: str                      # the seed project
    table: str                     # which of its tables
    row: str                       # the seed's row (a backend, an operation)
    figure: str                    # as published
    hardware: str
    caveat: str
    families: tuple[str, ...]      # kvctl backend families to put beside it
    workload: str                  # kvctl workload
    benches: tuple[str, ...]       # kvctl benches shown
    measure: str = "time"          # time (mean per unit) | ops (ops/s) | alloc (bytes, allocs per op)
    seed_us: float | None = None   # the figure as microseconds per op, where it is one number


def _gridkv(row: str, fig: str, us: float, families: tuple[str, ...], note: str = "") -> SeedFigure:
    return SeedFigure("GridKV", "Backend comparison", row, fig, NOT_STATED,
                      GRIDKV_CAVEAT + (f"; {note}" if note else ""), families, "gridkv",
                      ("set", "get", "mixed"), "time", us)


def _gridkv_alloc(row: str, fig: str, families: tuple[str, ...], note: str = "") -> SeedFigure:
    return SeedFigure("GridKV", "Per-operation allocations", row, fig, NOT_STATED,
                      GRIDKV_ALLOC_CAVEAT + (f"; {note}" if note else ""), families, "gridkv",
                      ("set", "get", "mixed"), "alloc")


_LSM = "kvctl has no Badger; RocksDB is the nearest LSM tree"
_TINYLFU = "kvctl's cache backend (TinyLFU, like Ristretto)"

FIGURES: tuple[SeedFigure, ...] = (
    _gridkv("File", "775K ops/s, 1.29 us", 1.29, ("file",)),
    _gridkv("Memory", "640K ops/s, 1.56 us", 1.56, ("memory",)),
    _gridkv("Ristretto", "270K ops/s, 3.71 us", 3.71, ("cache",), _TINYLFU),
    _gridkv("BadgerMemory", "78K ops/s, 12.81 us", 12.81, (), "no in-memory LSM is measured by default"),
    _gridkv("Badger", "55K ops/s, 18.14 us", 18.14, ("rocksdb",), _LSM),
    _gridkv_alloc("File", "995 B/op, 21 allocs/op", ("file",)),
    _gridkv_alloc("Memory", "1047 B/op, 23 allocs/op", ("memory",)),
    _gridkv_alloc("Ristretto", "1520 B/op, 24 allocs/op", ("cache",), _TINYLFU),
    _gridkv_alloc("BadgerMemory", "4865 B/op, 81 allocs/op", ()),
    _gridkv_alloc("Badger", "5194 B/op, 91 allocs/op", ("rocksdb",), _LSM),

    SeedFigure("Session", "Latency", "Read: Cookie", "~0.1 ms", NOT_STATED, SESSION_CAVEAT,
               ("cookie",), "session", ("read",), seed_us=100),
    SeedFigure("Session", "Latency", "Read: Memory", "~0.01 ms", NOT_STATED, SESSION_CAVEAT,
               ("memory",), "session", ("read",), seed_us=10),
    SeedFigure("Session", "Latency", "Read: Redis", "~1-5 ms", NOT_STATED, SESSION_CAVEAT,
               ("redis",), "session", ("read",)),
    SeedFigure("Session", "Latency", "Read: Clustered (hit)", "~0.01 ms", NOT_STATED, SESSION_CACHE_CAVEAT,
               ("redis", "redis+cluster"), "session", ("read",), seed_us=10),
    SeedFigure("Session", "Latency", "Read: Clustered (miss)", "~1-5 ms", NOT_STATED, SESSION_CACHE_CAVEAT,
               ("redis", "redis+cluster"), "session", ("read-miss",)),
    SeedFigure("Session", "Latency", "Write: Cookie", "~0.1 ms", NOT_STATED, SESSION_CAVEAT,
               ("cookie",), "session", ("write",), seed_us=100),
    SeedFigure("Session", "Latency", "Write: Memory", "~0.01 ms", NOT_STATED, SESSION_CAVEAT,
               ("memory",), "session", ("write",), seed_us=10),
    SeedFigure("Session", "Latency", "Write: Redis / Clustered", "~1-5 ms", NOT_STATED, SESSION_CAVEAT,
               ("redis", "redis+cluster"), "session", ("write",)),
    SeedFigure("Session", "Latency", "Delete: Memory", "~0.01 ms", NOT_STATED, SESSION_CAVEAT,
               ("memory",), "session", ("delete",), seed_us=10),
    SeedFigure("Session", "Latency", "Delete: Redis / Clustered", "~1-5 ms (+ pub)", NOT_STATED, SESSION_CAVEAT,
               ("redis", "redis+cluster"), "session", ("delete",)),

    SeedFigure("Gorkflow", "Performance", "Memory write", "~0.01 ms", NOT_STATED, GORK_CAVEAT,
               ("memory",), "gorkflow", ("write",), seed_us=10),
    SeedFigure("Gorkflow", "Performance", "Memory read", "~0.01 ms", NOT_STATED, GORK_CAVEAT,
               ("memory",), "gorkflow", ("read",), seed_us=10),
    SeedFigure("Gorkflow", "Performance", "LibSQL (local) write", "~1-5 ms", NOT_STATED, GORK_CAVEAT,
               ("libsql", "sqlite"), "gorkflow", ("write",)),
    SeedFigure("Gorkflow", "Performance", "LibSQL (local) read", "~0.1-1 ms", NOT_STATED, GORK_CAVEAT,
               ("libsql", "sqlite"), "gorkflow", ("read",)),
    SeedFigure("Gorkflow", "Go benchmark", "Memory create+get", "2.2 us", NOT_STATED,
               "Gorkflow's real sequential Go benchmark", ("memory",), "gorkflow", ("create+get",), seed_us=2.2),
    SeedFigure("Gorkflow", "Go benchmark", "LibSQL (local) create+get", "182 us", NOT_STATED,
               "Gorkflow's real sequential Go benchmark", ("libsql", "sqlite"), "gorkflow", ("create+get",),
               seed_us=182),

    SeedFigure("ruv-swarm", "SQLite", "Agent insert", "15,000 ops/s (0.067 ms)", M2_MAX, SWARM_CAVEAT,
               ("sqlite",), "ruv-swarm", ("insert",), "ops", 1e6 / 15_000),
    SeedFigure("ruv-swarm", "SQLite", "Task query", "25,000 ops/s (0.04 ms)", M2_MAX, SWARM_CAVEAT,
               ("sqlite",), "ruv-swarm", ("query",), "ops", 1e6 / 25_000),
    SeedFigure("ruv-swarm", "SQLite", "Event batch", "12,166 events/s (0.082 ms)", M2_MAX, SWARM_EVENT_CAVEAT,
               ("sqlite",), "ruv-swarm", ("insert",), "ops", 1e6 / 12_166),
    SeedFigure("ruv-swarm", "SQLite", "Transaction", "5,000 ops/s (0.2 ms)", M2_MAX, SWARM_CAVEAT,
               ("sqlite",), "ruv-swarm", ("transaction",), "ops", 200),
    SeedFigure("ruv-swarm", "Memory", "Agent insert", "100,000+ ops/s (0.01 ms)", M2_MAX, SWARM_CAVEAT,
               ("memory",), "ruv-swarm", ("insert",), "ops", 10),
    SeedFigure("ruv-swarm", "Memory", "Task query", "200,000+ ops/s (0.005 ms)", M2_MAX, SWARM_CAVEAT,
               ("memory",), "ruv-swarm", ("query",), "ops", 5),
    SeedFigure("ruv-swarm", "Memory", "Event batch", "48,706 events/s (0.02 ms)", M2_MAX,
               SWARM_MEMORY_EVENT_CAVEAT, ("memory",), "ruv-swarm", ("insert",), "ops", 1e6 / 48_706),
    SeedFigure("ruv-swarm", "Memory", "Transaction", "50,000+ ops/s (0.02 ms)", M2_MAX, SWARM_CAVEAT,
               ("memory",), "ruv-swarm", ("transaction",), "ops", 20),
)

"""The seed backends issue 7 added (cookie, cache, rocksdb) against their targets, in one run.

* **cache hit vs memory get** (target: within 2x): keys ``key-<i>``, 100-byte values, 1,000
  pre-filled keys read in turn through ``store.get`` / ``store.get_many``; both stores opened with
  ``kvctl.registry.open_url``.
* **rocksdb beside lmdb**: ``set_many`` of 1,000 new keys per call, ``get`` and ``get_many`` of
  1,000 pre-filled keys; kvctl's rocksdb and lmdb plugins and the raw drivers (rocksdict in raw
  mode with a WriteBatch, py-lmdb with one transaction per batch), same durability: no fsync per
  batch (rocksdb: WAL written, synced at close; lmdb: ``sync=false``).
* **cookie encode + decode of a 1 KiB store** (target: under 100 µs): a session whose ``data``
  JSON is ~1 KiB sealed into a token (JSON, AES-256-CBC, HMAC-SHA256, base64) and opened again
  (verify, decrypt, parse); the store-level ``set`` (which also rewrites the file with fsync) is
  shown beside it.
* **zipfian hit rate**: 100,000 keys drawn with a zipf(s) law; on a miss the key is inserted.
  kvctl's cache (TinyLFU admission, sampled-LFU eviction, bounded in bytes), a plain LRU bounded
  in the same bytes, and theine (W-TinyLFU, bounded in entries: given the entry count that fills
  the same bytes), with uniform 100-byte values and with values of 50 B - 4 KiB (log-uniform).

Timings are medians over ``--repeats`` rounds; every round runs every case of a table once, back
to back, and one sample is short (1,000 gets, 20 cookie round trips, one batch), so drift and
bursts of load from other processes hit all sides of a comparison alike.  Usage::

    python bench/seedbackends_bench.py [--repeats 101] [--ops 500000] [--write bench/results/seedbackends_RESULTS.md]
"""

from __future__ import annotations

import gc
import itertools
import os
import random
import shutil
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import lmdb
import rocksdict
from _harness import Report, interleave, parser, table
from kvctl_plugins.cache.bounded import ENTRY_OVERHEAD, BoundedCache
from kvctl_plugins.cookie.session import SessionDoc
from theine import Cache as Theine

from kvctl.plugin_kit.sealer import Sealer, derive_key
from kvctl.registry import open_url
from kvctl.store import Record, now_ms

VALUE = os.urandom(100)
N = 1000
KEYS = [b"key-%d" % i for i in range(N)]
SECRET = b"benchmark secret of at least 32 bytes!!"


Case = tuple[Callable[[int], object], int]  # a step (its argument: the round) and the operations it does


def medians(cases: dict[str, Case], repeats: int) -> dict[str, float]:
    """µs per operation, the median over ``repeats`` rounds; each round calls every case once, in order."""
    times = interleave({name: step for name, (step, _) in cases.items()}, repeats,
                       per_call={name: ops for name, (_, ops) in cases.items()}, alternate=False)
    return {name: samples.median() for name, samples in times.items()}


# -- cache hit vs memory get ------------------------------------------------------------------------
def bench_cache(repeats: int) -> list[list[str]]:
    memory = open_url("memory://")
    cache = open_url("cache://?max_bytes=64MiB")
    for store in (memory, cache):
        store.set_many(Record(k, VALUE) for k in KEYS)
    loop = KEYS

    def gets(store: Any) -> Case:
        get = store.get
        return (lambda r: [get(k) for k in loop]), len(loop)

    def batch(store: Any) -> Case:
        return (lambda r: store.get_many(KEYS)), N

    th: Theine[bytes, Record] = Theine(10_000)
    for k in KEYS:
        th.set(k, Record(k, VALUE))

    get = th.get
    m = medians({"memory get": gets(memory), "cache get (hit)": gets(cache),
                 "memory get_many": batch(memory), "cache get_many (hits)": batch(cache),
                 "theine get": ((lambda r: [get(k) for k in loop]), len(loop))}, repeats)
    assert cache.stats()["hit_rate"] == 1.0
    return [
        ["get", f"{m['memory get']:.3f}", f"{m['cache get (hit)']:.3f}",
         f"{m['cache get (hit)'] / m['memory get']:.2f}x", "<= 2x",
         "yes" if m["cache get (hit)"] <= 2 * m["memory get"] else "**no**"],
        ["get_many 1000 (per key)", f"{m['memory get_many']:.3f}", f"{m['cache get_many (hits)']:.3f}",
         f"{m['cache get_many (hits)'] / m['memory get_many']:.2f}x", "<= 2x",
         "yes" if m["cache get_many (hits)"] <= 2 * m["memory get_many"] else "**no**"],
        ["for reference: theine `Cache.get` (hit), the library's own call", f"{m['memory get']:.3f}",
         f"{m['theine get']:.3f}", f"{m['theine get'] / m['memory get']:.2f}x", "", ""],
    ]


# -- rocksdb beside lmdb ----------------------------------------------------------------------------
def bench_rocksdb(repeats: int, work: str) -> list[list[str]]:
    kv_rocks = open_url(f"rocksdb://{work}/kvctl-rocks")
    kv_lmdb = open_url(f"lmdb://{work}/kvctl-lmdb?sync=false")
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_compression_type(rocksdict.DBCompressionType.lz4())
    raw_rocks: Any = rocksdict.Rdict(f"{work}/raw-rocks", options)  # stubs: str keys; raw mode: bytes
    env = lmdb.open(f"{work}/raw-lmdb", map_size=1 << 30, sync=False, max_dbs=2)
    raw_db = env.open_db(b"kvctl")

    for store in (kv_rocks, kv_lmdb):
        store.set_many(Record(k, VALUE) for k in KEYS)
    batch = rocksdict.WriteBatch(raw_mode=True)
    for k in KEYS:
        batch.put(k, VALUE)
    raw_rocks.write(batch)
    with env.begin(write=True, db=raw_db) as txn:
        for k in KEYS:
            txn.put(k, VALUE)

    def fresh(r: int, tag: bytes) -> list[bytes]:
        return [b"%s-%d-%d" % (tag, r, i) for i in range(N)]

    def kv_set_many(store: Any, tag: bytes) -> Case:
        return (lambda r: store.set_many([Record(k, VALUE) for k in fresh(r, tag)])), N

    def raw_rocks_set_many(r: int) -> None:
        wb = rocksdict.WriteBatch(raw_mode=True)
        for k in fresh(r, b"rr"):
            wb.put(k, VALUE)
        raw_rocks.write(wb)

    def raw_lmdb_set_many(r: int) -> None:
        with env.begin(write=True, db=raw_db) as txn:
            txn.cursor().putmulti([(k, VALUE) for k in fresh(r, b"rl")])

    def kv_get(store: Any) -> Case:
        get = store.get
        return (lambda r: [get(k) for k in KEYS]), N

    def kv_get_many(store: Any) -> Case:
        return (lambda r: store.get_many(KEYS)), N

    rocks_get = raw_rocks.get

    def raw_lmdb_get_many(r: int) -> None:
        with env.begin(db=raw_db) as txn:
            get = txn.get
            [get(k) for k in KEYS]

    m = medians({
        "rocksdb set_many": kv_set_many(kv_rocks, b"kr"), "raw rocksdb set_many": (raw_rocks_set_many, N),
        "lmdb set_many": kv_set_many(kv_lmdb, b"kl"), "raw lmdb set_many": (raw_lmdb_set_many, N),
        "rocksdb get": kv_get(kv_rocks), "raw rocksdb get": ((lambda r: [rocks_get(k) for k in KEYS]), N),
        "lmdb get": kv_get(kv_lmdb), "raw lmdb get": ((lambda r: [env.begin(db=raw_db).get(k) for k in KEYS]), N),
        "rocksdb get_many": kv_get_many(kv_rocks), "raw rocksdb get_many": ((lambda r: raw_rocks.get(KEYS)), N),
        "lmdb get_many": kv_get_many(kv_lmdb), "raw lmdb get_many": (raw_lmdb_get_many, N),
    }, repeats)
    kv_rocks.close()
    kv_lmdb.close()
    raw_rocks.close()
    env.close()
    rows = []
    for op, label in (("set_many", "set_many 1000 (per key)"), ("get", "get"),
                      ("get_many", "get_many 1000 (per key)")):
        rows.append([label, f"{m['rocksdb ' + op]:.3f}", f"{m['raw rocksdb ' + op]:.3f}",
                     f"{m['lmdb ' + op]:.3f}", f"{m['raw lmdb ' + op]:.3f}",
                     f"{m['rocksdb ' + op] / m['lmdb ' + op]:.2f}x"])
    return rows


# -- cookie encode + decode -------------------------------------------------------------------------
def bench_cookie(repeats: int, work: str) -> tuple[list[list[str]], int]:
    doc = SessionDoc.new(now_ms(), 3_600_000)
    for i in range(20):
        doc.members[f"field_{i:02d}"] = f"value {i:02d} " + "x" * 32
    plain = doc.to_json()
    data_bytes = len(plain) - len(SessionDoc(doc.envelope, {}).to_json()) + 2
    rows = []
    os.environ["KVCTL_BENCH_COOKIE_SECRET"] = SECRET.decode()
    store = open_url(f"cookie://{work}/bench-cookie.txt?secret_env=KVCTL_BENCH_COOKIE_SECRET&gzip=never")
    store.set_many(Record(k.encode(), str(v).encode()) for k, v in doc.members.items())
    for label, gzip_mode, kdf in (("plain", "never", False), ("gzip=auto", "auto", False),
                                  ("gzip=always, kdf=pbkdf2 (key derived once at open)", "always", True)):
        sealer = Sealer(SECRET, derive_key(SECRET, kdf=kdf), gzip_on_write=gzip_mode)
        token = sealer.seal(plain)

        def encode(r: int, s: Sealer = sealer) -> object:
            return [s.seal(plain) for _ in range(20)]

        def decode(r: int, s: Sealer = sealer, t: str = token) -> object:
            return [SessionDoc.from_json(s.open(t)) for _ in range(20)]

        def both(r: int, s: Sealer = sealer) -> object:
            return [SessionDoc.from_json(s.open(s.seal(plain))) for _ in range(20)]

        m = medians({"encode": (encode, 20), "decode": (decode, 20), "both": (both, 20)}, repeats)
        rows.append([label, f"{len(token):,}", f"{m['encode']:.1f}", f"{m['decode']:.1f}", f"{m['both']:.1f}",
                     "< 100", "yes" if m["both"] < 100 else "**no**"])
    counter = itertools.count()

    def store_set(r: int) -> object:
        return [store.set(b"field_00", b"v%d" % next(counter)) for _ in range(5)]

    m = medians({"set": (store_set, 5)}, max(5, repeats // 10))
    rows.append(["store.set (seal + atomic file rewrite with fsync)", "", "", "", f"{m['set']:.1f}", "", ""])
    store.close()
    return rows, data_bytes


# -- zipfian hit rates ------------------------------------------------------------------------------
def zipf_trace(keys: int, s: float, ops: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    cum = list(itertools.accumulate(1.0 / (i ** s) for i in range(1, keys + 1)))
    ranks = rng.choices(range(keys), cum_weights=cum, k=ops)
    perm = list(range(keys))
    rng.shuffle(perm)  # popularity independent of key order
    return [perm[r] for r in ranks]


def hit_rates(trace: list[int], names: list[bytes], sizes: list[int], budget: int) -> tuple[float, float, float, float]:
    cost = [len(names[i]) + sizes[i] + ENTRY_OVERHEAD for i in range(len(names))]
    # plain LRU, bounded in the same bytes
    lru: OrderedDict[int, None] = OrderedDict()
    used = hits = 0
    for i in trace:
        if i in lru:
            lru.move_to_end(i)
            hits += 1
        else:
            lru[i] = None
            used += cost[i]
            while used > budget:
                old, _ = lru.popitem(last=False)
                used -= cost[old]
    lru_rate = hits / len(trace)
    # kvctl's cache
    cache = BoundedCache(budget)
    values = {n: bytes(n) for n in set(sizes)}
    hits = 0
    for i in trace:
        key = names[i]
        if cache.get(key) is not None:
            hits += 1
        else:
            cache.put(Record(key, values[sizes[i]]))
    ours = hits / len(trace)
    # theine: an entry bound; the count that fills the budget with entries of the mean cost
    mean = sum(cost) / len(cost)
    th: Theine[int, int] = Theine(max(1, int(budget / mean)))
    hits = 0
    for i in trace:
        if th.get(i)[1]:
            hits += 1
        else:
            th.set(i, 1)
    th_rate = hits / len(trace)
    th._force_drain_write()
    held = sum(cost[k] for shard in th._shards for k in shard._map)  # measurement only
    return lru_rate, ours, th_rate, held / budget


def bench_zipf(ops: int, keys: int = 100_000) -> list[list[str]]:
    rows = []
    names = [b"key-%d" % i for i in range(keys)]
    rng = random.Random(7)
    uniform = [100] * keys
    variable = [int(50 * (4096 / 50) ** rng.random()) for _ in range(keys)]  # log-uniform 50 B .. 4 KiB
    for s in (0.8, 0.99, 1.2):
        trace = zipf_trace(keys, s, ops, seed=int(s * 100))
        for label, sizes in (("100 B", uniform), ("50 B - 4 KiB", variable)):
            mean_cost = sum(len(names[i]) + sizes[i] + ENTRY_OVERHEAD for i in range(keys)) / keys
            for fraction in (0.01, 0.1):
                budget = int(keys * fraction * mean_cost)
                lru, ours, th, held = hit_rates(trace, names, sizes, budget)
                rows.append([f"{s}", label, f"{fraction:.0%} ({budget / 2**20:.1f} MiB)", f"{lru:.3f}",
                             f"{ours:.3f}", f"{ours - lru:+.3f}", f"{th:.3f} (holds {held:.2f}x the bytes)"])
                print(f"  zipf s={s} {label} {fraction:.0%}: lru {lru:.3f} kvctl {ours:.3f} theine {th:.3f}",
                      file=sys.stderr)
    return rows


# -- report -----------------------------------------------------------------------------------------
def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--repeats", type=int, default=101)
    ap.add_argument("--ops", type=int, default=500_000, help="zipf trace length")
    args = ap.parse_args()
    report = Report("Seed backends (issue 7): cache, rocksdb, cookie",
                    facts=f", rocksdict {version('rocksdict')}, theine {version('theine')}, py-lmdb {lmdb.__version__}")
    work = tempfile.mkdtemp(prefix="kvctl-seedbench-")
    gc.disable()
    try:
        print("cache vs memory ...", file=sys.stderr)
        cache_rows = bench_cache(args.repeats)
        print("rocksdb vs lmdb ...", file=sys.stderr)
        rocks_rows = bench_rocksdb(args.repeats, work)
        print("cookie ...", file=sys.stderr)
        cookie_rows, data_bytes = bench_cookie(args.repeats, work)
        gc.enable()
        print("zipf hit rates ...", file=sys.stderr)
        zipf_rows = bench_zipf(args.ops)
    finally:
        gc.enable()
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"Timings are medians of {args.repeats} rounds in µs per operation (per key for batch calls); "
        "all cases of a table alternate within each round.  The machine drifts ~1.4x between runs: "
        "compare within a table.",
        "",
        "## Cache hit vs memory get (target: within 2x)",
        "",
        "100-byte values, 1,000 pre-filled keys read in turn (`key-(i mod 1000)`), both stores through "
        "`open_url(...)` and `store.get` / `store.get_many`.  A hit is a dict lookup, an expiry test and one "
        "increment of the entry's access count (the policy's frequency).",
        "",
        *table(["operation", "memory µs", "cache µs", "cache/memory", "target", "met"], cache_rows,
               ["---", "---:", "---:", "---:", "---:", ":-:"]),
        "",
        "## RocksDB beside LMDB",
        "",
        "100-byte values.  set_many writes 1,000 new keys per call (one WriteBatch / one write transaction); "
        "get and get_many read 1,000 pre-filled keys.  Durability alike: no fsync per batch (rocksdb: WAL "
        "written per batch, fsynced at close; lmdb `?sync=false`).  Raw: rocksdict (raw mode, WriteBatch, "
        "multi-get) and py-lmdb (`putmulti` in one transaction; one read transaction per get / per batch).",
        "",
        *table(["operation", "kvctl rocksdb µs", "raw rocksdict µs", "kvctl lmdb µs", "raw py-lmdb µs",
                "rocksdb/lmdb (kvctl)"], rocks_rows, ["---", "---:", "---:", "---:", "---:", "---:"]),
        "",
        "GridKV's table (Go, its own harness, not this machine): Badger 18.14 µs, BadgerMemory 12.81 µs per op.",
        "",
        "## Cookie encode + decode of a 1 KiB store (target: under 100 µs)",
        "",
        f"A session with 20 string members, {data_bytes:,} bytes of `data` JSON (plus the session envelope); "
        "encode = JSON + AES-256-CBC + HMAC-SHA256 + base64 x2, decode = base64 + constant-time verify + "
        "decrypt + JSON parse (into the session document).  Token length with the cookie attributes must stay "
        "under 4,096 bytes.  Session's table claims ~0.1 ms (illustrative, no benchmark).",
        "",
        *table(["variant", "token bytes", "encode µs", "decode µs", "encode+decode µs", "target", "met"],
               cookie_rows, ["---", "---:", "---:", "---:", "---:", "---:", ":-:"]),
        "",
        "## Zipfian hit rate: kvctl cache vs plain LRU of the same size",
        "",
        f"100,000 keys, {args.ops:,} requests drawn from zipf(s) (popularity shuffled over the keys); a miss "
        "inserts the key.  kvctl's cache and the LRU are bounded by the same bytes (key + value + "
        f"{ENTRY_OVERHEAD} B per entry); the budget is the given share of all keys at the mean entry cost.  "
        "theine, for reference, bounds entries, not bytes: it gets the entry count that fills the budget at "
        "the mean cost, and the last column shows how many bytes it really held (over 1x = over budget).",
        "",
        *table(["zipf s", "value sizes", "cache size (share of keys)", "LRU hit rate", "kvctl cache hit rate",
                "kvctl - LRU", "theine hit rate (entry-bounded)"], zipf_rows,
               ["---:", "---", "---", "---:", "---:", "---:", "---"]),
        "",
    ]
    report.add(*lines).finish(args.write)


if __name__ == "__main__":
    main()

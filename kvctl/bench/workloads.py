"""The workloads: what each seed table measured, restated as plans over the Store protocol.

Every bench is a set-up (untimed pre-fill) and a plan builder: ``plan(ctx, n)`` returns ``n``
operations whose keys, values and op codes are all prepared before the clock starts.  Every value
of a bench measures the same store state: writes overwrite a fixed key set, and a bench whose ops
use up what they touch (a first read, a delete) or write new keys (inserts, batches, YCSB D and
E) is *sampled*: each value times at most ``SAMPLED_OPS`` of its ops (records, for batches; on
keys written for it untimed, where it needs them), and an ``after`` step puts the store back, so
neither the store nor the untimed work grows with pyperf's loop count.  YCSB's other mixes go
round a pool of requests drawn once per worker (drawing one costs more than a fast store's get).
Benches name the capabilities they need; a backend without one is skipped with the reason shown,
never special-cased.  The reference's section 2 says how the seed figures were produced; the
parameters here follow it (GridKV's harness: keys ``key-<i>``, one random 100-byte value, Get
over 1,000 pre-filled keys, Mixed = every fifth op a Set).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kvctl.bench import ycsb
from kvctl.bench.kernels import DELETE, GET, SET, SET_MANY, SET_TTL, Plan, uniform
from kvctl.bench.params import Params
from kvctl.bench.target import Target
from kvctl.errors import UsageError
from kvctl.store import Record, now_ms

SESSION_TTL_MS = 30 * 60 * 1000  # a session lives 30 minutes (written with a TTL where supported)
BATCH_RECORDS = 100              # ruv-swarm batch insert: records per set_many
TRANSACTION_RECORDS = 10         # ruv-swarm transaction: records per atomic set_many
PREFILL_BATCH = 1000
SAMPLED_OPS = 10_000             # ops a sampled bench times per value (its time is scaled to the loops)
YCSB_POOL_OPS = 50_000           # requests a worker draws once for a YCSB mix without inserts, then repeats


@dataclass
class Ctx:
    """What a bench's set-up and plan builders see in a worker: the store and the run's shape."""

    target: Target
    params: Params
    url: str
    value: bytes
    prefix: bytes
    # new-key ids start at a per-process base, so workers sharing a persistent store never
    # overwrite each other's "new" keys
    next_id: int = field(default_factory=lambda: os.getpid() * 10_000_000)
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _peer: Target | None = None

    @property
    def capabilities(self) -> Any:
        return self.target.capabilities

    def new_ids(self, n: int) -> range:
        start = self.next_id
        self.next_id += n
        return range(start, start + n)

    def keys(self, name: bytes, ids: range | list[int]) -> list[bytes]:
        fmt = self.prefix + name + b"-%d"
        return [fmt % i for i in ids]

    def cycle(self, keys: list[bytes], n: int) -> list[bytes]:
        """``n`` keys going round ``keys`` (``key-(i mod len)``), built at list-copy speed."""
        return (keys * (n // len(keys) + 1))[:n]

    def prefill(self, keys: list[bytes], *, ttl_ms: int | None = None, via: Target | None = None) -> None:
        target = via or self.target
        expires = None if ttl_ms is None else now_ms() + ttl_ms
        value = self.value
        for i in range(0, len(keys), PREFILL_BATCH):
            target.call("set_many", [Record(k, value, expires) for k in keys[i:i + PREFILL_BATCH]])

    def peer(self) -> Target:
        """A second connection to the same store (a second client: its own local cache, if any).

        A store whose second instance does not share data (an unnamed memory store), or that
        allows one connection per process (files locked by the first), falls back to the first
        connection, with a note in the results.
        """
        if self._peer is None:
            from kvctl.errors import KvctlError

            try:
                peer = Target.open(self.url)
            except KvctlError as exc:
                self.notes.append(f"one connection per process ({exc.__class__.__name__}): "
                                  "read-miss reads through the writer's connection")
                self._peer = self.target
                return self.target
            probe = self.prefix + b"kvctl-bench-peer-probe"
            peer.call("set", probe, b"1")
            if self.target.call("get", probe) is None:
                peer.close()
                self.notes.append("a second connection does not see the first's data: "
                                  "read-miss uses one connection")
                peer = self.target
            self.target.call("delete", probe)
            self._peer = peer
        return self._peer

    def close(self) -> None:
        if self._peer is not None and self._peer is not self.target:
            self._peer.close()


PlanFn = Callable[[Ctx, int], Plan]
SetupFn = Callable[[Ctx], None]


@dataclass(frozen=True)
class Bench:
    name: str
    title: str
    plan: PlanFn
    setup: SetupFn | None = None
    needs: tuple[str, ...] = ()    # Capabilities flags this bench requires
    inner: int = 1                 # operations per plan step (pyperf inner_loops)
    unit: str = "op"               # what one value is the time of: op, record, txn, pair
    latency_per: str = "op"        # what one per-op latency sample is the time of
    # sampled benches: each op needs an untimed write of its own; ``after(ctx, plan)`` undoes
    # what the timed plan left (see the module docstring)
    sampled: bool = False
    after: Callable[[Ctx, Plan], None] | None = None
    sample: int = SAMPLED_OPS      # plan steps a sampled value times (batches: SAMPLED_OPS records)


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    source: str                    # the seed document it reproduces
    description: str
    benches: tuple[Bench, ...]
    time_unit: str = "us"          # how its table shows times: us or ms
    throughput: bool = True        # show ops/s
    percentiles: bool = False      # per-op latency pass on every backend (else network only)
    alloc: bool = False            # allocation table (memray)
    quick: bool = False            # part of --quick

    def bench(self, name: str) -> Bench:
        for b in self.benches:
            if b.name == name:
                return b
        raise UsageError(f"workload {self.name} has no bench {name!r} "
                         f"(known: {', '.join(b.name for b in self.benches)})")

    def split(self, capabilities: Any, family: str) -> tuple[list[Bench], list[tuple[Bench, str]]]:
        """The benches this backend can run, and the skipped ones with the reason."""
        runnable: list[Bench] = []
        skipped: list[tuple[Bench, str]] = []
        for b in self.benches:
            missing = [n for n in b.needs if not getattr(capabilities, n, False)]
            if missing:
                skipped.append((b, f"the {family} backend does not declare "
                                   f"{', '.join(m.replace('_', ' ') for m in missing)}"))
            else:
                runnable.append(b)
        return runnable, skipped


# -- GridKV: Set / Get over 1,000 pre-filled / Mixed 80/20 ---------------------------------------

def _gridkv_prefill(ctx: Ctx) -> None:
    keys = ctx.keys(b"key", range(ctx.params.keys))
    ctx.prefill(keys)
    ctx.data["keys"] = keys


def _gridkv_set_prefill(ctx: Ctx) -> None:
    # a key set of its own, so Get's and Mixed's keys keep their value and version history
    keys = ctx.keys(b"set-key", range(ctx.params.keys))
    ctx.prefill(keys)
    ctx.data["set-keys"] = keys


def _gridkv_set(ctx: Ctx, n: int) -> Plan:
    # overwrites: always-new keys would grow the store (and its GC-tracked records) through the
    # run, so each value would measure a different store
    return uniform(SET, ctx.cycle(ctx.data["set-keys"], n))


def _gridkv_get(ctx: Ctx, n: int) -> Plan:
    return uniform(GET, ctx.cycle(ctx.data["keys"], n))


_MIXED_PATTERN = bytes([GET, GET, GET, GET, SET])


def _gridkv_mixed(ctx: Ctx, n: int) -> Plan:
    codes = (_MIXED_PATTERN * (n // 5 + 1))[:n]
    return Plan(ctx.cycle(ctx.data["keys"], n), codes=codes)


GRIDKV = Workload(
    name="gridkv", title="GridKV", source="GridKV (Go distributed KV)",
    description="single client through the full API; keys key-<i>; one random value; "
                "Set: overwrite one of N pre-filled keys of its own (the store keeps its size); "
                "Get: key-(i mod N) over N pre-filled keys; "
                "Mixed: the same with every fifth op a Set (80/20)",
    benches=(
        Bench("set", "Set (overwrite)", _gridkv_set, _gridkv_set_prefill),
        Bench("get", "Get (pre-filled)", _gridkv_get, _gridkv_prefill),
        Bench("mixed", "Mixed 80/20", _gridkv_mixed, _gridkv_prefill),
    ),
    alloc=True, quick=True,
)


# -- Session: read / write / delete latency, local-cache hit and miss -----------------------------

def _session_ttl(ctx: Ctx) -> int | None:
    return SESSION_TTL_MS if getattr(ctx.capabilities, "ttl", False) else None


def _session_prefill(ctx: Ctx) -> None:
    keys = ctx.keys(b"session", range(ctx.params.keys))
    ctx.prefill(keys, ttl_ms=_session_ttl(ctx))
    ctx.data["keys"] = keys


def _session_read(ctx: Ctx, n: int) -> Plan:
    return uniform(GET, ctx.cycle(ctx.data["keys"], n))


def _session_read_miss(ctx: Ctx, n: int) -> Plan:
    # sessions written by another client: this client reads each exactly once
    keys = ctx.keys(b"session", ctx.new_ids(n))
    ctx.prefill(keys, ttl_ms=_session_ttl(ctx), via=ctx.peer())
    return uniform(GET, keys)


def _forget(target: Target, plan: Plan) -> None:
    keys = list(dict.fromkeys(plan.keys))  # create+get names each key twice
    for i in range(0, len(keys), PREFILL_BATCH):
        target.call("delete_many", keys[i:i + PREFILL_BATCH])


def _session_forget(ctx: Ctx, plan: Plan) -> None:
    """Delete the sessions a read-miss plan had another connection write (through that one)."""
    _forget(ctx.peer(), plan)


def _forget_written(ctx: Ctx, plan: Plan) -> None:
    """Delete the new keys a plan wrote: the next value starts from the same store."""
    _forget(ctx.target, plan)


def _forget_batches(ctx: Ctx, plan: Plan) -> None:
    """Delete every record a plan of batches wrote (its keys name only each batch's first)."""
    keys = [r.key for batch in plan.args or () for r in batch]
    for i in range(0, len(keys), PREFILL_BATCH):
        ctx.target.call("delete_many", keys[i:i + PREFILL_BATCH])


def _session_write(ctx: Ctx, n: int) -> Plan:
    ttl = _session_ttl(ctx)
    return uniform(SET if ttl is None else SET_TTL, ctx.cycle(ctx.data["keys"], n), ttl_ms=ttl)


def _session_delete(ctx: Ctx, n: int) -> Plan:
    keys = ctx.keys(b"session", ctx.new_ids(n))
    ctx.prefill(keys, ttl_ms=_session_ttl(ctx))
    return uniform(DELETE, keys)


SESSION = Workload(
    name="session", title="Session", source="Session (Crystal web sessions)",
    description="sessions session-<i> written with a 30-minute TTL where the backend has TTLs; "
                "read: repeated reads of N live sessions (a local cache's hit path); read-miss: "
                "the first read of a session another connection wrote; write: overwrite a live "
                "session; delete: remove a live session",
    benches=(
        Bench("read", "Read (hit)", _session_read, _session_prefill),
        Bench("read-miss", "Read (miss)", _session_read_miss, sampled=True, after=_session_forget),
        Bench("write", "Write", _session_write, _session_prefill),
        Bench("delete", "Delete", _session_delete, sampled=True),
    ),
    time_unit="ms", throughput=False, percentiles=True,
)


# -- ruv-swarm: insert, query, batch insert, transaction -----------------------------------------

def _swarm_prefill(ctx: Ctx) -> None:
    keys = ctx.keys(b"agent", range(ctx.params.keys))
    ctx.prefill(keys)
    ctx.data["keys"] = keys


def _swarm_insert(ctx: Ctx, n: int) -> Plan:
    return uniform(SET, ctx.keys(b"agent", ctx.new_ids(n)))


def _swarm_query(ctx: Ctx, n: int) -> Plan:
    return uniform(GET, ctx.cycle(ctx.data["keys"], n))


def _batches(ctx: Ctx, name: bytes, n: int, size: int) -> Plan:
    value = ctx.value
    keys = ctx.keys(name, ctx.new_ids(n * size))
    batches = [[Record(k, value) for k in keys[i:i + size]] for i in range(0, n * size, size)]
    return uniform(SET_MANY, keys[::size], args=batches)


def _swarm_batch(ctx: Ctx, n: int) -> Plan:
    return _batches(ctx, b"event", n, BATCH_RECORDS)


def _swarm_transaction(ctx: Ctx, n: int) -> Plan:
    return _batches(ctx, b"task", n, TRANSACTION_RECORDS)


RUV_SWARM = Workload(
    name="ruv-swarm", title="ruv-swarm", source="ruv-swarm-persistence (Rust)",
    description=f"insert: one new record per call (each its own commit); query: read one of N "
                f"pre-filled records; batch insert: set_many of {BATCH_RECORDS} new records "
                f"(figures per record); transaction: set_many of {TRANSACTION_RECORDS} records "
                f"applied atomically (figures per transaction; backends declaring atomic_batch)",
    benches=(
        Bench("insert", "Insert", _swarm_insert, sampled=True, after=_forget_written),
        Bench("query", "Query", _swarm_query, _swarm_prefill),
        Bench("batch-insert", "Batch insert", _swarm_batch, inner=BATCH_RECORDS, unit="record",
              latency_per=f"set_many call of {BATCH_RECORDS} records", sampled=True, after=_forget_batches,
              sample=SAMPLED_OPS // BATCH_RECORDS),
        Bench("transaction", "Transaction", _swarm_transaction, needs=("atomic_batch",), unit="txn",
              sampled=True, after=_forget_batches, sample=SAMPLED_OPS // TRANSACTION_RECORDS),
    ),
    time_unit="ms",
)


# -- Gorkflow: write / read latency (and its real Go benchmark, create+get) ------------------------

def _gork_prefill(ctx: Ctx) -> None:
    keys = ctx.keys(b"run", range(ctx.params.keys))
    ctx.prefill(keys)
    ctx.data["keys"] = keys


def _gork_write(ctx: Ctx, n: int) -> Plan:
    return uniform(SET, ctx.keys(b"run", ctx.new_ids(n)))


def _gork_read(ctx: Ctx, n: int) -> Plan:
    return uniform(GET, ctx.cycle(ctx.data["keys"], n))


def _gork_create_get(ctx: Ctx, n: int) -> Plan:
    fresh = ctx.keys(b"run", ctx.new_ids(n))
    keys = [k for k in fresh for _ in (0, 1)]
    return Plan(keys, codes=bytes([SET, GET]) * n)


GORKFLOW = Workload(
    name="gorkflow", title="Gorkflow", source="Gorkflow (Go workflows)",
    description="write: save a new workflow run run-<i>; read: load one of N saved runs; "
                "create+get: save a new run then load it (Gorkflow's own Go benchmark), per pair",
    benches=(
        Bench("write", "Write", _gork_write, sampled=True, after=_forget_written),
        Bench("read", "Read", _gork_read, _gork_prefill),
        Bench("create+get", "Create + get", _gork_create_get, inner=1, unit="pair", sampled=True,
              after=_forget_written,
              latency_per="single op (a pair is a set then a get)"),
    ),
    time_unit="ms", throughput=False, percentiles=True,
)


# -- YCSB core workloads A-F ------------------------------------------------------------------------

def _ycsb_bench(letter: str) -> Bench:
    core = ycsb.WORKLOADS[letter]
    inserts = bool(core.mix.insert)

    def generator(ctx: Ctx) -> ycsb.Generator:
        gen = ctx.data.get("ycsb")
        if gen is None:
            gen = ycsb.Generator(letter, ctx.params.keys, ctx.params.seed, ctx.prefix,
                                 insert_base=ctx.new_ids(10_000_000).start, distribution=ctx.params.distribution)
            ctx.data["ycsb"] = gen
        return gen

    def setup(ctx: Ctx) -> None:
        ctx.prefill(generator(ctx).load_keys())

    def plan(ctx: Ctx, n: int) -> Plan:
        gen = generator(ctx)
        if inserts:
            return gen.plan(n)  # its ``undo`` says where ``after`` rewinds the inserts to
        # drawing a request costs several times what a fast store's get does: the requests drawn
        # are kept, up to YCSB_POOL_OPS, and each plan goes on where the last one stopped, round
        # the pool once it is full (a slow store never draws more than it uses)
        pool = ctx.data.get("ycsb-pool")
        if pool is None:
            pool = ctx.data["ycsb-pool"] = RequestPool(args=[] if core.mix.scan else None)
        return pool.take(gen, n)

    def after(ctx: Ctx, plan: Plan) -> None:
        if plan.undo is None:
            raise ValueError("a YCSB insert plan without its rewind mark")  # never rewind to 0 by default
        keys = generator(ctx).rewind(plan.undo)
        for i in range(0, len(keys), PREFILL_BATCH):
            ctx.target.call("delete_many", keys[i:i + PREFILL_BATCH])

    needs = ("ordered_scan",) if core.mix.scan else ()
    # a mix with inserts writes new records: sampled, its inserts deleted and forgotten after each value
    return Bench(letter, core.title, plan, setup, needs=needs, sampled=inserts, after=after if inserts else None)


@dataclass
class RequestPool:
    """The requests a YCSB mix without inserts has drawn (up to ``YCSB_POOL_OPS``), grown in place,
    and where the next plan starts in it."""

    keys: list[bytes] = field(default_factory=list)
    codes: bytearray = field(default_factory=bytearray)
    args: list[Any] | None = None
    at: int = 0

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, gen: ycsb.Generator, n: int) -> Plan:
        """``n`` requests from where the last plan stopped, drawing only those not drawn yet."""
        start = self.at
        want = min(YCSB_POOL_OPS, start + n)
        if len(self.keys) < want:
            more = gen.plan(want - len(self.keys))
            self.keys += more.keys
            self.codes += more.codes
            if self.args is not None:
                self.args += more.args or ()
        self.at = (start + n) % YCSB_POOL_OPS
        end = start + n

        def take(seq: Any) -> Any:
            return seq[start:end] if end <= len(seq) else (seq * (end // len(seq) + 1))[start:end]

        return Plan(take(self.keys), codes=bytes(take(self.codes)),
                    args=None if self.args is None else take(self.args))


YCSB = Workload(
    name="ycsb", title="YCSB", source="YCSB core workloads",
    description="record count = --keys, one field of --value-size bytes; keys user<fnv64(n)>; "
                "zipfian constant 0.99 (scrambled), latest = skewed latest; scans of 1-100 "
                "records (uniform) from a zipfian start key; fixed seed",
    benches=tuple(_ycsb_bench(letter) for letter in ycsb.WORKLOADS),
)


WORKLOADS: dict[str, Workload] = {w.name: w for w in (GRIDKV, SESSION, RUV_SWARM, GORKFLOW, YCSB)}


def get(name: str) -> Workload:
    workload = WORKLOADS.get(name)
    if workload is None:
        raise UsageError(f"unknown workload {name!r} (known: {', '.join(WORKLOADS)}, all)")
    return workload


def resolve(names: list[str], *, quick: bool) -> list[Workload]:
    """Workloads from ``--workload`` values (repeatable, comma-separated; ``all``)."""
    wanted = [n.strip().lower() for item in names for n in item.split(",") if n.strip()]
    if not wanted:
        return [w for w in WORKLOADS.values() if w.quick] if quick else list(WORKLOADS.values())
    if "all" in wanted:
        return list(WORKLOADS.values())
    out: list[Workload] = []
    for name in wanted:
        w = get(name)
        if w not in out:
            out.append(w)
    return out


def make_value(params: Params) -> bytes:
    """The one random value every write uses (seeded: identical in every worker)."""
    return random.Random(params.seed).randbytes(params.value_size)

"""kvctl's Redis backends against raw redis-py, side by side in one run.

    python bench/redis_bench.py [--cpu N] [--quick] [--write bench/results/redis_RESULTS.md]

Starts its own servers (a standalone redis-server and a 3-master cluster, never the test
services), pins them and this process to one CPU with taskset (reference section 6: loopback
round trips cost 18 µs on one core, ~76 µs across cores, so unpinned figures are noise), then
times each operation through kvctl and through the fastest raw redis-py call for the same work,
alternating the two in rounds so drift hits both alike.  Figures are medians over rounds of the
mean time per operation (µs), ratios medians of per-round ratios; values are 100 random bytes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hiredis
import redis
from _harness import Report, Samples, interleave, parser, ratio
from redis.cluster import ClusterNode, RedisCluster

from kvctl.registry import open_url
from kvctl.store import Record

VALUE = os.urandom(100)
BATCH = 1000


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 55000:
            return port


class Servers:
    def __init__(self, cpu: int) -> None:
        self.cpu = cpu
        self.dir = Path(tempfile.mkdtemp(prefix="kvctl-redis-bench-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> int:
        port = free_port()
        workdir = self.dir / str(port)
        workdir.mkdir()
        self.procs.append(subprocess.Popen(
            ["taskset", "-c", str(self.cpu), "redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(workdir), "--logfile", str(workdir / "log"), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                return port
            except redis.ConnectionError:
                time.sleep(0.05)
        raise SystemExit(f"redis-server on port {port} did not start")

    def cluster(self) -> list[int]:
        ports = [self.start("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf") for _ in range(3)]
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True)
        for port in ports:
            client = redis.Redis(port=port)
            while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                time.sleep(0.05)
        return ports

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def compare(pairs: dict[str, tuple[Callable[[int], Any], int]], loops: int, rounds: int) -> dict[str, Samples]:
    """µs/op of each function in each round (the mean of ``loops`` calls), with this thread's
    CPU time beside it; the functions interleaved round by round, after a warm-up (connections,
    scripts, caches)."""
    return interleave({name: fn for name, (fn, _) in pairs.items()}, rounds,
                      per_call={name: ops for name, (_, ops) in pairs.items()}, repeat=loops,
                      warmup=max(3, loops // 10), alternate=False, cpu=time.thread_time)


def single_get_set(store: Any, raw: Any, loops: int, rounds: int) -> dict[str, Samples]:
    """kvctl's get and set of one 100-byte value against the raw client's GET and SET, in turn."""
    return compare({
        "kvctl get": (lambda _: store.get(b"key-1"), 1), "raw GET": (lambda _: raw.get(b"key-1"), 1),
        "kvctl set": (lambda _: store.set(b"key-1", VALUE), 1), "raw SET": (lambda _: raw.set(b"key-1", VALUE), 1),
    }, loops=loops, rounds=rounds)


Row = tuple[str, str, Samples, str, Samples, str]


def standalone(port: int, quick: bool) -> list[Row]:
    rounds = 5 if quick else 31
    raw = redis.Redis(port=port)
    store = open_url(f"redis://127.0.0.1:{port}/0")
    keys = [b"key-%d" % i for i in range(BATCH)]
    raw.mset({k: VALUE for k in keys})
    records = [Record(k, VALUE) for k in keys]
    deadline = int(time.time() * 1000) + 3_600_000
    # Keys with an expiry are kept apart: overwriting them with a plain SET/MSET would also make
    # the server drop their expiries, a cost only whichever call came next would pay.
    timed_keys = [b"ttl-key-%d" % i for i in range(BATCH)]
    timed_records = [Record(k, VALUE, deadline) for k in timed_keys]

    def raw_pipe_get(_: int) -> Any:
        p = raw.pipeline(transaction=False)
        for k in keys:
            p.get(k)
        return p.execute()

    def raw_pipe_get_exp(_: int) -> Any:
        p = raw.pipeline(transaction=False)
        for k in keys:
            p.get(k)
            p.pexpiretime(k)  # type: ignore[arg-type]
        return p.execute()

    def raw_pipe_set(_: int) -> Any:
        p = raw.pipeline(transaction=False)
        for k in keys:
            p.set(k, VALUE)
        return p.execute()

    def raw_pipe_set_pxat(_: int) -> Any:
        p = raw.pipeline(transaction=False)
        for k in timed_keys:
            p.set(k, VALUE, pxat=deadline)
        return p.execute()

    mapping = {k: VALUE for k in keys}
    single = single_get_set(store, raw, loops=200 if quick else 400, rounds=rounds)
    batch = compare({
        "kvctl get_many": (lambda _: store.get_many(keys), BATCH),
        "raw MGET": (lambda _: raw.mget(keys), BATCH),
        "raw pipeline GET": (raw_pipe_get, BATCH),
        "raw pipeline GET+PEXPIRETIME": (raw_pipe_get_exp, BATCH),
        "kvctl set_many": (lambda _: store.set_many(records), BATCH),
        "raw MSET": (lambda _: raw.mset(mapping), BATCH),
        "raw pipeline SET": (raw_pipe_set, BATCH),
        "kvctl set_many with expiry": (lambda _: store.set_many(timed_records), BATCH),
        "Record() x1000": (lambda _: [Record(k, VALUE, None) for k in keys], BATCH),
        "raw pipeline SET PXAT": (raw_pipe_set_pxat, BATCH),
    }, loops=3 if quick else 5, rounds=rounds)
    store.close()

    cached = open_url(f"redis://127.0.0.1:{port}/0?local_cache=10000&cache_ttl=30s")
    cached.invalidator.subscribed.wait(5)
    cached.get(b"key-1")
    local: dict[bytes, Any] = {}
    hit = compare({"kvctl get, local cache hit": (lambda _: cached.get(b"key-1"), 1),
                   "dict lookup": (lambda _: local.get(b"key-1"), 1)},
                  loops=20_000 if quick else 50_000, rounds=rounds)
    assert cached.cache is not None and cached.cache.hits > 0
    cached.close()
    return [
        ("single get (100 B)", "kvctl get", single["kvctl get"], "raw GET", single["raw GET"], "≤ 1.15×"),
        ("single set (100 B)", "kvctl set", single["kvctl set"], "raw SET", single["raw SET"], "≤ 1.15×"),
        ("batch get 1,000 (value + expiry)", "kvctl get_many", batch["kvctl get_many"],
         "raw pipeline GET+PEXPIRETIME", batch["raw pipeline GET+PEXPIRETIME"], "≤ 1.25×"),
        ("batch get 1,000", "kvctl get_many", batch["kvctl get_many"], "raw pipeline GET",
         batch["raw pipeline GET"], "≤ 1.25×"),
        ("batch get 1,000 (MGET: values only)", "kvctl get_many", batch["kvctl get_many"], "raw MGET",
         batch["raw MGET"], "n/a: less work (see note)"),
        ("building the records alone", "Record(k, v, None)", batch["Record() x1000"], "raw MGET",
         batch["raw MGET"], "n/a (see note)"),
        ("batch set 1,000", "kvctl set_many", batch["kvctl set_many"], "raw pipeline SET",
         batch["raw pipeline SET"], "≤ 1.25×"),
        ("batch set 1,000 (MSET)", "kvctl set_many", batch["kvctl set_many"], "raw MSET", batch["raw MSET"],
         "≤ 1.25×"),
        ("batch set 1,000 with expiry", "kvctl set_many", batch["kvctl set_many with expiry"],
         "raw pipeline SET PXAT", batch["raw pipeline SET PXAT"], "≤ 1.25×"),
        ("local cache hit", "kvctl get (hit)", hit["kvctl get, local cache hit"], "dict.get",
         hit["dict lookup"], "< 2 µs"),
    ]


def cluster(ports: list[int], quick: bool) -> list[Row]:
    rounds = 5 if quick else 21
    rc = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in ports])
    seeds = ",".join(f"127.0.0.1:{p}" for p in ports[1:])
    store = open_url(f"redis+cluster://127.0.0.1:{ports[0]}?seeds={seeds}")
    keys = [b"key-%d" % i for i in range(BATCH)]
    records = [Record(k, VALUE) for k in keys]
    store.set_many(records)

    def raw_pipe_get(_: int) -> Any:
        p = rc.pipeline()
        for k in keys:
            p.get(k)
        return p.execute()

    def raw_pipe_set(_: int) -> Any:
        p = rc.pipeline()
        for k in keys:
            p.set(k, VALUE)
        return p.execute()

    single = single_get_set(store, rc, loops=200 if quick else 300, rounds=rounds)
    batch = compare({
        "kvctl get_many": (lambda _: store.get_many(keys), BATCH),
        "raw cluster pipeline GET": (raw_pipe_get, BATCH),
        "raw mget_nonatomic": (lambda _: rc.mget_nonatomic(keys), BATCH),
        "kvctl set_many": (lambda _: store.set_many(records), BATCH),
        "raw cluster pipeline SET": (raw_pipe_set, BATCH),
    }, loops=2 if quick else 3, rounds=rounds)
    store.close()
    rc.close()
    return [
        ("cluster single get", "kvctl get", single["kvctl get"], "raw RedisCluster.get", single["raw GET"],
         "≤ 1.15×"),
        ("cluster single set", "kvctl set", single["kvctl set"], "raw RedisCluster.set", single["raw SET"],
         "≤ 1.15×"),
        ("cluster batch get 1,000", "kvctl get_many", batch["kvctl get_many"], "raw cluster pipeline GET",
         batch["raw cluster pipeline GET"], "≤ 1.25×"),
        ("cluster batch get 1,000", "kvctl get_many", batch["kvctl get_many"], "raw mget_nonatomic",
         batch["raw mget_nonatomic"], "≤ 1.25×"),
        ("cluster batch set 1,000", "kvctl set_many", batch["kvctl set_many"], "raw cluster pipeline SET",
         batch["raw cluster pipeline SET"], "≤ 1.25×"),
    ]


def verdict(kvctl_us: float, ratio: float, target: str) -> str:
    if target.startswith("n/a"):
        return "—"
    if target.startswith("<"):
        return "met" if kvctl_us < float(target.split()[1]) else "MISSED"
    limit = float(target.split()[1].rstrip("×"))
    return "met" if ratio <= limit else "MISSED"


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--cpu", type=int, default=0, help="the one CPU for this process and the servers")
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    report = Report("Redis backends: kvctl vs raw redis-py",
                    facts=f", redis-py {redis.__version__}, hiredis {hiredis.__version__}")
    servers = Servers(args.cpu)
    try:
        port = servers.start()
        version = redis.Redis(port=port).info()["redis_version"]
        rows = standalone(port, args.quick)
        rows += cluster(servers.cluster(), args.quick)
    finally:
        servers.stop()

    lines = [
        f"Client and every server pinned to CPU {args.cpu} (taskset); Redis {version} (no persistence: "
        "`--save '' --appendonly no`). One run.",
        "",
        "Workload: keys `key-<i>`, 100-byte random values; single ops on one key; batches of 1,000 keys. "
        "kvctl and raw calls run interleaved in short rounds in the same process against the same "
        "server; µs/key is the median over rounds of each round's mean, ratio the median of the "
        "per-round ratios (the machine is shared: other jobs' load hits both calls of a round alike).",
        "",
        "| operation | kvctl | µs/key | raw redis-py | µs/key | ratio | target | | client CPU ratio |",
        "|---|---|---:|---|---:|---:|---|---|---:|",
    ]
    for what, ours, ours_samples, theirs, theirs_samples, target in rows:
        ours_us, theirs_us = ours_samples.median(), theirs_samples.median()
        paired = ratio(ours_samples, theirs_samples)
        cpu_ratio = statistics.median(
            a / b for a, b in zip(ours_samples.cpu, theirs_samples.cpu, strict=True) if b > 0)
        lines.append(f"| {what} | {ours} | {ours_us:.3f} | {theirs} | {theirs_us:.3f} | "
                     f"{paired:.2f}× | {target} | {verdict(ours_us, paired, target)} | {cpu_ratio:.2f}× |")
    lines += [
        "",
        "Notes:",
        "- The verdict is on wall-clock time. \"client CPU ratio\" compares only this process's CPU "
        "time (`time.thread_time`): kvctl's own overhead, free of the server's work and of the "
        "scheduling noise of a shared machine.",
        "- kvctl's `get`/`get_many` return each key's absolute expiry too (`PEXPIRETIME`), which a raw "
        "`GET`/`MGET` does not: the like-for-like raw call is the pipeline of GET+PEXPIRETIME. MGET "
        "alone is shown for honesty; kvctl pays one Lua loop of PEXPIRETIME on the server "
        "(~0.7 µs/key) beside its MGET, and on one pinned core the server's time adds to the client's. "
        "Building the 1,000 `Record` objects alone (a frozen, slotted dataclass: ~1 µs each) costs "
        "about as much as the whole MGET, so no `get_many` returning Records can come within 1.25× "
        "of a bare MGET; the row above shows that cost on its own.",
        "- kvctl's hot paths write commands to a pooled redis-py connection and read the replies "
        "directly, skipping redis-py's per-command bookkeeping; that is why a kvctl get (GET + "
        "PEXPIRETIME in one round trip) can beat a raw `Redis.get`.",
        "- `set_many` sends records without expiry as MSET and the others as one Lua script of "
        "`SET .. PXAT`, in MULTI/EXEC when there are several commands (the batch is atomic).",
        "- Cluster batches go to each master as one Lua script over its keys (allow-cross-slot-keys); "
        "all three servers share the one pinned CPU here, so the nodes do not work in parallel.",
        "- Seed figures (Session, illustrative, no benchmark behind them): Redis read ~1–5 ms, "
        "clustered read hit ~0.01 ms (10 µs). The local cache hit above is measured through "
        "`store.get` with the invalidation subscriber running.",
    ]
    report.add(*lines).finish(args.write)


if __name__ == "__main__":
    main()

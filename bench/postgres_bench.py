"""kvctl's postgres backend against raw asyncpg, side by side in one run.

    python bench/postgres_bench.py [--cpu N] [--out bench/postgres_RESULTS.md] [--quick]

Starts a private PostgreSQL with tests/services/postgres.sh (in a temporary services directory,
never the test services) under ``taskset -c N``, so the postmaster and every backend it forks run
on CPU N, and pins this process to the same CPU (reference section 6: loopback round trips cost
~18 µs on one core and ~76 µs across cores, so unpinned figures are noise).  Then it times each
operation through kvctl's async store and through the fastest raw asyncpg call for the same
work on the same table, alternating them in rounds so drift hits both alike.  Figures are
medians over rounds of the mean time per operation (µs); values are 100 random bytes; keys
``key-<i>``; reads hit 1,000 pre-filled keys; writes overwrite them (upserts).  Durability: the
server's defaults, fsync=on and synchronous_commit=on, so every commit waits for a WAL flush.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from kvctl.adapt import to_sync
from kvctl.registry import open_url
from kvctl.store import Record

HERE = Path(__file__).resolve().parent
SERVICE = HERE.parent / "tests" / "services" / "postgres.sh"
VALUE = os.urandom(100)
BATCH = 1000
TABLE = "bench_kv"
UPSERT_TAIL = (" ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
               "expires_at = EXCLUDED.expires_at, version = EXCLUDED.version")


class Server:
    """A private PostgreSQL pinned to one CPU, started and stopped with the services script."""

    def __init__(self, cpu: int) -> None:
        self.dir = tempfile.mkdtemp(prefix="kvctl-pg-bench-", dir="/tmp")
        os.chmod(self.dir, 0o755)  # the postgres user must reach its data directory
        # PostgreSQL's default durability (the test services turn fsync off).
        self.env = {**os.environ, "KVCTL_SERVICES_DIR": self.dir, "KVCTL_POSTGRES_SERVER_OPTIONS": ""}
        self.cpu = cpu

    def start(self) -> str:
        out = subprocess.run(["taskset", "-c", str(self.cpu), "bash", str(SERVICE), "start"],
                             env=self.env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"could not start PostgreSQL:\n{out.stderr}")
        return out.stdout.strip().split("=", 1)[1]

    def stop(self) -> None:
        subprocess.run(["bash", str(SERVICE), "stop"], env=self.env, capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


async def per_op(fn: Callable[[], Awaitable[Any]], calls: int, ops_per_call: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await fn()
    return (time.perf_counter() - start) / (calls * ops_per_call) * 1e6


def sync_per_op(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


class Case:
    """One operation measured through kvctl and through raw asyncpg, alternately."""

    def __init__(self, name: str, target: float, calls: int, ops: int, rounds: int = 0) -> None:
        self.name, self.target, self.calls, self.ops, self.rounds = name, target, calls, ops, rounds
        self.samples: dict[str, list[float]] = {}

    def add(self, label: str, value: float) -> None:
        self.samples.setdefault(label, []).append(value)

    def median(self, label: str) -> float:
        return statistics.median(self.samples[label])


async def run(url: str, rounds: int, scale: float) -> tuple[list[Case], dict[str, str]]:
    kv_url = f"{url}?table={TABLE}"
    store = open_url(kv_url)
    await store.set_many([Record(b"key-%d" % i, VALUE) for i in range(BATCH)])  # creates the table
    raw = await asyncpg.connect(url)
    info = {
        "server": await raw.fetchval("SHOW server_version"),
        "fsync": await raw.fetchval("SHOW fsync"),
        "synchronous_commit": await raw.fetchval("SHOW synchronous_commit"),
    }
    t = f'"{TABLE}"'
    get_one = await raw.prepare(f"SELECT value, expires_at, version FROM {t} "
                                "WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)")
    get_any = await raw.prepare(f"SELECT key, value, expires_at, version FROM {t} "
                                "WHERE key = ANY($1::bytea[]) AND (expires_at IS NULL OR expires_at > $2)")
    upsert_sql = f"INSERT INTO {t} (key, value, expires_at, version) VALUES ($1, $2, $3, $4)" + UPSERT_TAIL
    upsert = await raw.prepare(upsert_sql)
    keys = [b"key-%d" % i for i in range(BATCH)]
    records = [Record(k, VALUE) for k in keys]
    rows = [(k, VALUE, None, 1 << 50) for k in keys]

    counter = [0]

    def next_key() -> bytes:
        counter[0] += 1
        return keys[counter[0] % BATCH]

    async def raw_copy_merge() -> None:
        async with raw.transaction():
            await raw.execute("CREATE TEMP TABLE stage (key bytea, value bytea, expires_at bigint, "
                              "version bigint) ON COMMIT DROP")
            await raw.copy_records_to_table("stage", records=rows)
            await raw.execute(f"INSERT INTO {t} SELECT key, value, expires_at, version FROM stage" + UPSERT_TAIL)

    def n(calls: int) -> int:
        return max(1, int(calls * scale))

    cases = [
        (Case("get (single key)", 1.15, n(1000), 1, rounds), {
            "kvctl": lambda: store.get(next_key()),
            "asyncpg prepared": lambda: get_one.fetchrow(next_key(), 0),
        }),
        (Case("set (single key, upsert, one commit)", 1.15, n(100), 1, rounds * 2), {
            "kvctl": lambda: store.set(next_key(), VALUE),
            "asyncpg prepared": lambda: upsert.fetch(next_key(), VALUE, None, 1 << 50),
        }),
        (Case("get_many 1,000 keys (per key)", 1.25, n(20), BATCH, rounds), {
            "kvctl": lambda: store.get_many(keys),
            "asyncpg ANY($1) prepared": lambda: get_any.fetch(keys, 0),
        }),
        (Case("set_many 1,000 keys (per key, one transaction)", 1.25, n(10), BATCH, rounds), {
            "kvctl": lambda: store.set_many(records),
            "asyncpg executemany": lambda: raw.executemany(upsert_sql, rows),
            "asyncpg COPY + merge": raw_copy_merge,
        }),
    ]
    for case, variants in cases:
        for fn in variants.values():  # warm up: prepared statements, caches, first purge
            for _ in range(3):
                await fn()
        for _ in range(case.rounds):
            for label, fn in variants.items():
                case.add(label, await per_op(fn, case.calls, case.ops))
    await store.close()
    await raw.close()
    return [c for c, _ in cases], info


async def design_choices(url: str, rounds: int, scale: float) -> tuple[Case, dict[int, Case]]:
    """The measurements behind two design choices, raw asyncpg only.

    One connection per store rather than a pool; and the set_many path by batch size: one
    unnest() upsert statement vs executemany vs COPY into a temporary table plus a merge.
    """
    t = '"bench_sweep"'
    raw = await asyncpg.connect(url)
    await raw.execute(f"DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (key bytea PRIMARY KEY, value bytea NOT NULL, "
                      f"expires_at bigint, version bigint NOT NULL); CREATE INDEX ON {t} (version); "
                      f"CREATE INDEX ON {t} (expires_at) WHERE expires_at IS NOT NULL")
    await raw.execute(f"INSERT INTO {t} SELECT convert_to('key-' || i, 'UTF8'), '\\x00', NULL, 1 "
                      "FROM generate_series(0, 19999) AS i")
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    query = f"SELECT value, expires_at, version FROM {t} WHERE key = $1"
    stmt = await raw.prepare(query)
    conn_case = Case("get (single key): one connection vs a pool", 0, max(1, int(1000 * scale)), 1, rounds)
    conn_variants: dict[str, Callable[[], Awaitable[Any]]] = {
        "one connection, prepared": lambda: stmt.fetchrow(b"key-1"),
        "asyncpg pool (min=max=1)": lambda: pool.fetchrow(query, b"key-1"),
    }
    sweep: dict[int, Case] = {}
    upsert = (f"INSERT INTO {t} (key, value, expires_at, version) VALUES ($1, $2, $3, $4)" + UPSERT_TAIL)
    arrays = (f"INSERT INTO {t} (key, value, expires_at, version) SELECT * FROM "
              "unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::bigint[])" + UPSERT_TAIL)
    for size in (10, 100, 1000, 2000, 5000, 20000):
        rows = [(b"key-%d" % i, VALUE, None, 1 << 50) for i in range(size)]
        columns = [list(c) for c in zip(*rows, strict=True)]

        async def copy_merge(rows: list[tuple[bytes, bytes, None, int]] = rows) -> None:
            async with raw.transaction():
                await raw.execute("CREATE TEMP TABLE stage (key bytea, value bytea, expires_at bigint, "
                                  "version bigint) ON COMMIT DROP")
                await raw.copy_records_to_table("stage", records=rows)
                await raw.execute(f"INSERT INTO {t} SELECT key, value, expires_at, version FROM stage"
                                  + UPSERT_TAIL)

        calls = max(1, int(max(1, 20000 // size) * scale))
        sweep[size] = Case(f"{size:,} rows", 0, calls, size, max(3, rounds // 3))
        variants: dict[str, Callable[[], Awaitable[Any]]] = {
            "unnest() upsert": functools.partial(raw.execute, arrays, *columns),
            "executemany": functools.partial(raw.executemany, upsert, rows),
            "COPY + merge": copy_merge,
        }
        for fn in variants.values():
            await fn()
        for _ in range(sweep[size].rounds):
            for label, fn in variants.items():
                sweep[size].add(label, await per_op(fn, calls, size))
    for fn in conn_variants.values():
        await fn()
    for _ in range(conn_case.rounds):
        for label, fn in conn_variants.items():
            conn_case.add(label, await per_op(fn, conn_case.calls, 1))
    await pool.close()
    await raw.execute(f"DROP TABLE {t}")
    await raw.close()
    return conn_case, sweep


def run_sync_adapter(url: str, rounds: int, scale: float) -> Case:
    """The CLI's path: the async store through kvctl.adapt.to_sync (one event loop, run per call)."""
    store = to_sync(open_url(f"{url}?table={TABLE}"))
    runner = asyncio.Runner()
    raw = runner.run(asyncpg.connect(url))
    stmt = runner.run(raw.prepare(f'SELECT value, expires_at, version FROM "{TABLE}" WHERE key = $1'))
    case = Case("get (single key) through to_sync, for the CLI", 0, max(1, int(2000 * scale)), 1)
    store.get(b"key-1")
    for _ in range(rounds):
        case.add("kvctl to_sync", sync_per_op(lambda: store.get(b"key-1"), case.calls))
        case.add("asyncpg prepared, Runner.run per call", sync_per_op(
            lambda: runner.run(stmt.fetchrow(b"key-1")), case.calls))
    store.close()
    runner.run(raw.close())
    runner.close()
    return case


def report(cases: list[Case], extra: Case, design: tuple[Case, dict[int, Case]], info: dict[str, str],
           args: argparse.Namespace, rounds: int) -> str:
    command = "python bench/postgres_bench.py " + " ".join(sys.argv[1:])
    lines = [
        f"Command: `{command.strip()}`",
        "",
        "# PostgreSQL backend vs raw asyncpg",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"asyncpg {asyncpg.__version__}, PostgreSQL {info['server']} (private instance from "
        f"tests/services/postgres.sh), fsync={info['fsync']}, synchronous_commit={info['synchronous_commit']}. "
        f"Client and server pinned to CPU {args.cpu}; loopback TCP; 1-minute load average {info['load']} "
        f"(the machine is shared). One run: medians over {rounds} rounds "
        f"({rounds * 2} for single sets) of the mean µs per operation, kvctl and raw alternating in "
        "each round. 100-byte values, "
        "keys `key-<i>`, 1,000 pre-filled keys; writes are upserts of existing keys, each call "
        "one commit (so single sets are dominated by the WAL flush).",
        "",
        "| operation | kvctl µs/op | fastest raw | raw µs/op | ratio | target | |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        ours = case.median("kvctl")
        raws = {label: case.median(label) for label in case.samples if label != "kvctl"}
        best_label = min(raws, key=lambda label: raws[label])
        ratio = ours / raws[best_label]
        verdict = "met" if ratio <= case.target else "MISSED"
        lines.append(f"| {case.name} | {ours:.2f} | {best_label} | {raws[best_label]:.2f} | "
                     f"{ratio:.2f}x | ≤{case.target:.2f}x | {verdict} |")
        for label, value in raws.items():
            if label != best_label:
                lines.append(f"| | | {label} | {value:.2f} | {ours / value:.2f}x | | |")
    ours = extra.median("kvctl to_sync")
    theirs = extra.median("asyncpg prepared, Runner.run per call")
    lines += [
        "",
        "The CLI drives the async store through `kvctl.adapt.to_sync` (one event loop, one "
        "`Runner.run` per call); the same wrapping around raw asyncpg, for comparison:",
        "",
        "| operation | kvctl to_sync µs/op | asyncpg + Runner.run µs/op | ratio |",
        "|---|---|---|---|",
        f"| get (single key) | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f}x |",
        "",
        "kvctl's batch paths: get_many is one prepared statement joining `unnest($1::bytea[]) WITH "
        "ORDINALITY` to the table, so rows come back in request order (the raw baseline's `ANY($1)` "
        "returns them unordered, leaving the caller to match them up); set_many "
        "sends one prepared `INSERT ... SELECT FROM unnest($1..$4) ON CONFLICT DO UPDATE` below "
        "2,000 rows (faster than executemany from 2 rows up) and COPY into a temporary table plus one "
        "merging INSERT from 2,000 rows up (the measured crossover); every batch is one statement or one "
        "transaction, sorted by key.",
    ]
    conn_case, sweep = design
    one, pooled = (conn_case.median(label) for label in conn_case.samples)
    lines += [
        "",
        "## Measurements behind the design (raw asyncpg, same server and pinning)",
        "",
        f"One connection per store, not a pool: a prepared single-key read took {one:.2f} µs on one "
        f"connection and {pooled:.2f} µs through an asyncpg pool of one connection (acquire/release "
        "and the pool's reset on release cost more than the query).",
        "",
        "set_many path by batch size, µs per row (upserts of existing keys, one transaction each):",
        "",
        "| batch | unnest() upsert | executemany | COPY + merge |",
        "|---|---|---|---|",
    ]
    for case in sweep.values():
        cells = " | ".join(f"{case.median(label):.2f}" for label in ("unnest() upsert", "executemany", "COPY + merge"))
        lines.append(f"| {case.name} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, default=0, help="the CPU for client and server (default 0)")
    parser.add_argument("--out", default=None, help="write the Markdown report here")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (fewer calls and rounds)")
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        raise SystemExit("taskset (util-linux) is needed to pin client and server")
    os.sched_setaffinity(0, {args.cpu})
    rounds, scale = (3, 0.1) if args.quick else (15, 1.0)
    load_before = os.getloadavg()[0]
    server = Server(args.cpu)
    try:
        url = server.start()
        cases, info = asyncio.run(run(url, rounds, scale))
        extra = run_sync_adapter(url, rounds, scale)
        design = asyncio.run(design_choices(url, rounds, scale))
    finally:
        server.stop()
    info["load"] = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    text = report(cases, extra, design, info, args, rounds)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

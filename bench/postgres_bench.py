"""kvctl's postgres backend against raw asyncpg, side by side in one run.

    python bench/postgres_bench.py [--cpu N] [--quick] [--write bench/results/postgres_RESULTS.md]

The kvctl store is opened with ``?feed=false``: raw asyncpg keeps no change feed, so this compares
like with like (bench/sync_postgres_bench.py measures the feed's write cost).

Starts a private PostgreSQL with tests/services/postgres.sh (in a temporary services directory,
never the test services) under ``taskset -c N``, so the postmaster and every backend it forks run
on CPU N, and pins this process to the same CPU (reference section 6: loopback round trips cost
~18 µs on one core and ~76 µs across cores, so unpinned figures are noise).  Then it times each
operation through kvctl's async store and through the fastest raw asyncpg call for the same
work, on the same table.  The variants of an operation are interleaved call by call (in an order
that alternates), so load from other processes on this shared machine hits them alike; each
figure is the median of the per-call times divided by the keys per call (µs per key).  Values
are 100 random bytes; keys ``key-<i>``; reads hit 1,000 pre-filled keys; writes overwrite them
(upserts).  Durability: the server's defaults, fsync=on and synchronous_commit=on, so every
commit waits for a WAL flush.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from _harness import Report, Samples, interleave, interleave_async, parser, private_postgres

from kvctl.adapt import to_sync
from kvctl.registry import open_url
from kvctl.store import Record

VALUE = os.urandom(100)
BATCH = 1000
TABLE = "bench_kv"
UPSERT_TAIL = (" ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
               "expires_at = EXCLUDED.expires_at, version = EXCLUDED.version")

AsyncCall = Callable[[int], Awaitable[Any]]  # the argument (the call's number) is not used


class Case:
    """One operation, measured through each variant (kvctl and raw), interleaved call by call."""

    def __init__(self, name: str, calls: int, keys_per_call: int, target: float = 0.0) -> None:
        self.name, self.calls, self.keys, self.target = name, calls, keys_per_call, target
        self.samples: dict[str, Samples] = {}

    def median(self, label: str) -> float:
        return self.samples[label].median()

    async def measure(self, variants: dict[str, AsyncCall], warmup: int = 3) -> Case:
        """Warm up (prepared statements, caches, the first purge), then call the variants in turn,
        in an order that reverses every call: neither always runs right after the other."""
        self.samples = await interleave_async(variants, self.calls, per_call=self.keys, warmup=warmup)
        return self

    def measure_sync(self, variants: dict[str, Callable[[int], Any]], warmup: int = 3) -> Case:
        """The same, for plain calls (each may run its own event loop)."""
        self.samples = interleave(variants, self.calls, per_call=self.keys, warmup=warmup)
        return self


async def kvctl_vs_raw(url: str, scale: float) -> tuple[list[Case], dict[str, str]]:
    store = open_url(f"{url}?table={TABLE}&feed=false")
    await store.set_many([Record(b"key-%d" % i, VALUE) for i in range(BATCH)])  # creates the table
    raw = await asyncpg.connect(url)
    info = {
        "server": await raw.fetchval("SHOW server_version"),
        "fsync": await raw.fetchval("SHOW fsync"),
        "synchronous_commit": await raw.fetchval("SHOW synchronous_commit"),
    }
    t = f'"{TABLE}"'
    live = "(expires_at IS NULL OR expires_at > $2)"
    get_one = await raw.prepare(f"SELECT value, expires_at, version FROM {t} WHERE key = $1 AND {live}")
    get_any = await raw.prepare(f"SELECT key, value, expires_at, version FROM {t} "
                                f"WHERE key = ANY($1::bytea[]) AND {live}")
    upsert_sql = f"INSERT INTO {t} (key, value, expires_at, version) VALUES ($1, $2, $3, $4)" + UPSERT_TAIL
    upsert = await raw.prepare(upsert_sql)
    keys = [b"key-%d" % i for i in range(BATCH)]
    records = [Record(k, VALUE) for k in keys]
    rows = [(k, VALUE, None, 1 << 50) for k in keys]
    turn = iter(range(1 << 62))

    def next_key() -> bytes:
        return keys[next(turn) % BATCH]

    async def raw_copy_merge(_: int) -> None:
        async with raw.transaction():
            await raw.execute("CREATE TEMP TABLE stage (key bytea, value bytea, expires_at bigint, "
                              "version bigint) ON COMMIT DROP")
            await raw.copy_records_to_table("stage", records=rows)
            await raw.execute(f"INSERT INTO {t} SELECT key, value, expires_at, version FROM stage" + UPSERT_TAIL)

    def n(calls: int) -> int:
        return max(5, int(calls * scale))

    cases = [
        await Case("get (single key)", n(20000), 1, 1.15).measure({
            "kvctl": lambda _: store.get(next_key()),
            "asyncpg prepared": lambda _: get_one.fetchrow(next_key(), 0),
        }),
        await Case("set (single key, upsert, one commit)", n(2000), 1, 1.15).measure({
            "kvctl": lambda _: store.set(next_key(), VALUE),
            "asyncpg prepared": lambda _: upsert.fetchval(next_key(), VALUE, None, 1 << 50),
        }),
        await Case("get_many 1,000 keys (per key)", n(400), BATCH, 1.25).measure({
            "kvctl": lambda _: store.get_many(keys),
            "asyncpg ANY($1) prepared": lambda _: get_any.fetch(keys, 0),
        }),
        await Case("set_many 1,000 keys (per key, one transaction)", n(150), BATCH, 1.25).measure({
            "kvctl": lambda _: store.set_many(records),
            "asyncpg executemany": lambda _: raw.executemany(upsert_sql, rows),
            "asyncpg COPY + merge": raw_copy_merge,
        }),
    ]
    await store.close()
    await raw.close()
    return cases, info


def through_to_sync(url: str, scale: float) -> Case:
    """The CLI's path: the async store through kvctl.adapt.to_sync (one event loop, run per call)."""
    store = to_sync(open_url(f"{url}?table={TABLE}&feed=false"))
    runner = asyncio.Runner()
    raw = runner.run(asyncpg.connect(url))
    stmt = runner.run(raw.prepare(f'SELECT value, expires_at, version FROM "{TABLE}" WHERE key = $1 '
                                  "AND (expires_at IS NULL OR expires_at > $2)"))
    case = Case("get (single key)", max(5, int(10000 * scale)), 1).measure_sync({
        "kvctl to_sync": lambda _: store.get(b"key-1"),
        "asyncpg + Runner.run": lambda _: runner.run(stmt.fetchrow(b"key-1", 0)),
    })
    store.close()
    runner.run(raw.close())
    runner.close()
    return case


async def design_choices(url: str, scale: float) -> tuple[Case, list[Case]]:
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
    connection = await Case("get (single key)", max(5, int(10000 * scale)), 1).measure({
        "one connection, prepared": lambda _: stmt.fetchrow(b"key-1"),
        "asyncpg pool (min=max=1)": lambda _: pool.fetchrow(query, b"key-1"),
    })
    await pool.close()
    upsert = f"INSERT INTO {t} (key, value, expires_at, version) VALUES ($1, $2, $3, $4)" + UPSERT_TAIL
    arrays = (f"INSERT INTO {t} (key, value, expires_at, version) SELECT * FROM "
              "unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::bigint[])" + UPSERT_TAIL)
    sweep = []
    for size in (10, 100, 1000, 2000, 5000, 10000, 20000):
        rows = [(b"key-%d" % i, VALUE, None, 1 << 50) for i in range(size)]
        columns = [list(c) for c in zip(*rows, strict=True)]

        async def copy_merge(_: int, rows: list[tuple[bytes, bytes, None, int]] = rows) -> None:
            async with raw.transaction():
                await raw.execute("CREATE TEMP TABLE stage (key bytea, value bytea, expires_at bigint, "
                                  "version bigint) ON COMMIT DROP")
                await raw.copy_records_to_table("stage", records=rows)
                await raw.execute(f"INSERT INTO {t} SELECT key, value, expires_at, version FROM stage"
                                  + UPSERT_TAIL)

        def unnest(_: int, columns: list[list[Any]] = columns) -> Awaitable[Any]:
            return raw.execute(arrays, *columns)

        def many(_: int, rows: list[tuple[bytes, bytes, None, int]] = rows) -> Awaitable[Any]:
            return raw.executemany(upsert, rows)

        calls = max(5, int(min(200, 100_000 // size) * scale))
        sweep.append(await Case(f"{size:,} rows", calls, size).measure({
            "unnest() upsert": unnest,
            "executemany": many,
            "COPY + merge": copy_merge,
        }, warmup=1))
    await raw.execute(f"DROP TABLE {t}")
    await raw.close()
    return connection, sweep


def render(cases: list[Case], cli: Case, design: tuple[Case, list[Case]], info: dict[str, str],
           cpu: int) -> list[str]:
    lines = [
        f"PostgreSQL {info['server']} (private instance from "
        f"tests/services/postgres.sh), fsync={info['fsync']}, synchronous_commit={info['synchronous_commit']}. "
        f"Client and server pinned to CPU {cpu}; loopback TCP. One run. Variants interleaved call by call; each "
        "figure is the median per-call time divided by the keys per call. 100-byte values, keys "
        "`key-<i>`, 1,000 pre-filled keys; writes are upserts of existing keys, each call one commit "
        "(so single sets are dominated by the WAL flush).",
        "",
        "| operation | calls | kvctl µs/key | fastest raw | raw µs/key | ratio | target | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        ours = case.median("kvctl")
        raws = {label: case.median(label) for label in case.samples if label != "kvctl"}
        best = min(raws, key=lambda label: raws[label])
        ratio = ours / raws[best]
        verdict = "met" if ratio <= case.target else "MISSED"
        lines.append(f"| {case.name} | {case.calls:,} | {ours:.2f} | {best} | {raws[best]:.2f} | "
                     f"{ratio:.2f}x | ≤{case.target:.2f}x | {verdict} |")
        for label, value in raws.items():
            if label != best:
                lines.append(f"| | | | {label} | {value:.2f} | {ours / value:.2f}x | | |")
    ours, theirs = cli.median("kvctl to_sync"), cli.median("asyncpg + Runner.run")
    lines += [
        "",
        "The CLI drives the async store through `kvctl.adapt.to_sync` (one event loop, one "
        "`Runner.run` per call); the same wrapping around raw asyncpg, for comparison:",
        "",
        "| operation | calls | kvctl to_sync µs | asyncpg + Runner.run µs | ratio |",
        "|---|---|---|---|---|",
        f"| {cli.name} | {cli.calls:,} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f}x |",
        "",
        "kvctl's paths: get and set are one prepared statement each, kept on the store's one "
        "connection; get_many is one prepared statement joining `unnest($1::bytea[]) WITH ORDINALITY` "
        "to the table, so rows come back in request order (the raw baseline's `ANY($1)` returns them "
        "unordered and leaves matching them up to the caller); set_many sends one prepared "
        "`INSERT ... SELECT FROM unnest($1..$4) ON CONFLICT DO UPDATE` below 5,000 rows and COPY into "
        "a temporary table plus one merging INSERT from 5,000 rows up (see below); every batch is one "
        "statement or one transaction, in key order.",
    ]
    connection, sweep = design
    one, pooled = connection.median("one connection, prepared"), connection.median("asyncpg pool (min=max=1)")
    lines += [
        "",
        "## Measurements behind the design (raw asyncpg, same server, same pinning)",
        "",
        f"One connection per store, not a pool: a prepared single-key read took {one:.2f} µs on one "
        f"connection and {pooled:.2f} µs through an asyncpg pool of one connection (acquire, release "
        f"and the reset query the pool runs on release), over {connection.calls:,} interleaved calls.",
        "",
        "set_many path by batch size, µs per row (upserts of existing keys, one transaction per call):",
        "",
        "| batch | calls | unnest() upsert | executemany | COPY + merge |",
        "|---|---|---|---|---|",
    ]
    for case in sweep:
        cells = " | ".join(f"{case.median(label):.2f}" for label in ("unnest() upsert", "executemany", "COPY + merge"))
        lines.append(f"| {case.name} | {case.calls:,} | {cells} |")
    return lines


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--cpu", type=int, default=0, help="the CPU for client and server (default 0)")
    ap.add_argument("--quick", action="store_true", help="a short smoke run (fewer calls)")
    args = ap.parse_args()
    if shutil.which("taskset") is None:
        raise SystemExit("taskset (util-linux) is needed to pin client and server")
    os.sched_setaffinity(0, {args.cpu})
    scale = 0.05 if args.quick else 1.0
    report = Report("PostgreSQL backend vs raw asyncpg", facts=f", asyncpg {asyncpg.__version__}")
    with private_postgres(args.cpu) as url:
        cases, info = asyncio.run(kvctl_vs_raw(url, scale))
        cli = through_to_sync(url, scale)
        design = asyncio.run(design_choices(url, scale))
    report.add(*render(cases, cli, design, info, args.cpu)).finish(args.write)


if __name__ == "__main__":
    main()

"""PostgreSQL change feed: incremental sync time and what the feed costs writers, in one run.

    python bench/sync_postgres_bench.py [--url URL] [--keys N] [--rounds R] [--durable] [--quick]
        [--write bench/results/sync_postgres_RESULTS.md]

Uses the server of tests/services.sh (``KVCTL_TEST_POSTGRES_URL``, or ``--url``); its tables are
created with a unique prefix and dropped at the end.  That server runs with fsync=off and
synchronous_commit=off, which shows the feed's own cost; ``--durable`` repeats the write-path
measurements on a private server with PostgreSQL's default durability (every commit waits for a
WAL flush), started and stopped with tests/services/postgres.sh in a temporary directory.

1. **Incremental sync.**  A source table of ``--keys`` keys (100-byte values) is copied to a
   second table by a first ``kvctl sync`` run (a diff pass); then each round makes 1,000 changes
   at the source (700 overwrites, 300 deletes, one call each) and times one incremental sync
   through the engine (kvctl.engines.replicate.sync: opening both stores, reading the feed from the
   saved cursor, applying last-writer-wins, saving the cursor) and, once, through the CLI.
2. **Write-path overhead.**  The same upserts (of 1,000 existing keys, 100-byte values, one
   statement per call) on three tables: ``?feed=false`` (no change table, no triggers), the
   feed as shipped, and the feed with its statement-level capture triggers swapped for row-level
   ones (the alternative design, for other programs' writes).  Each is written through kvctl
   (``set``, ``set_many`` of 1,000) and through plain SQL from another connection (what other
   programs pay: the triggers).  Variants interleave call by call, alternating the order, so
   load from other processes on this shared machine hits them alike; figures are medians.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from _harness import Report, interleave_async, parser, private_postgres, run_process, services_env

from kvctl.engines.replicate import SyncPlan, sync
from kvctl.registry import open_url
from kvctl.store import Record

VALUE = os.urandom(100)
PREFIX = f"bench_syncpg_{os.getpid()}_{uuid.uuid4().hex[:4]}"


def default_url() -> str:
    url = services_env().get("KVCTL_TEST_POSTGRES_URL")
    if not url:
        raise SystemExit("no server: start one with tests/services.sh start, or pass --url")
    return url


def table_url(base: str, name: str, **options: str) -> str:
    return f"{base}?table={name}" + "".join(f"&{k}={v}" for k, v in options.items())


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


# == 1. incremental sync ==========================================================================
async def load(url: str, keys: int) -> float:
    started = time.perf_counter()
    store = open_url(url)
    try:
        for start in range(0, keys, 50_000):
            await store.set_many([Record(b"key-%08d" % i, VALUE) for i in range(start, min(keys, start + 50_000))])
    finally:
        await store.close()
    return time.perf_counter() - started


async def change(url: str, keys: int, round_: int) -> None:
    """1,000 changes, one call each: 700 overwrites and 300 deletes of random existing keys."""
    rng = random.Random(round_)
    store = open_url(url)
    try:
        for i in range(1000):
            key = b"key-%08d" % rng.randrange(keys)
            if i % 10 < 7:
                await store.set(key, b"round %d " % round_ + VALUE)
            else:
                await store.delete(key)
    finally:
        await store.close()


def cli_sync(src: str, dst: str, state: Path) -> tuple[float, dict[str, Any]]:
    env = {**os.environ, "XDG_STATE_HOME": str(state)}
    out = run_process([sys.executable, "-m", "kvctl", "sync", src, dst, "--json"], env=env)
    return out.seconds, json.loads(out.stdout)


async def bench_sync(base: str, keys: int, rounds: int, lines: list[str]) -> None:
    src, dst = table_url(base, f"{PREFIX}_src"), table_url(base, f"{PREFIX}_dst")
    state = Path(tempfile.mkdtemp(prefix="kvctl-syncpg-"))
    loaded = await load(src, keys)
    plan = SyncPlan(src, dst, state / "kvctl")
    started = time.perf_counter()
    first = await sync(plan)
    first_s = time.perf_counter() - started
    runs: list[float] = []
    engine: list[float] = []
    applied: list[int] = []
    modes: list[str] = []
    for r in range(rounds):
        await change(src, keys, r)
        started = time.perf_counter()
        result = await sync(plan)
        runs.append(time.perf_counter() - started)
        engine.append(result.seconds)
        applied.append(result.applied_to_dst)
        modes.append(result.mode)
    await change(src, keys, rounds)
    cli_wall, cli = cli_sync(src, dst, state)
    converged = await same(src, dst)
    lines += [
        "## Incremental sync, postgres -> postgres",
        "",
        f"Each round: 1,000 changes at the source (700 overwrites, 300 deletes, one call each), then one "
        f"incremental sync. {rounds} rounds; medians.",
        "",
        "| keys | sync incl. opening both stores (ms) | engine's own time (ms) | CLI end to end (s) | "
        "of which sync (ms) | modes | first sync: full diff pass (s) | converged |",
        "|---:|---:|---:|---:|---:|---|---:|---|",
        f"| {keys:,} | {median_ms(runs):.1f} | {median_ms(engine):.1f} | {cli_wall:.2f} | "
        f"{cli['seconds'] * 1000:.1f} | {', '.join(sorted({*modes, cli['mode']}))} | {first_s:.1f} | "
        f"{'yes' if converged else 'NO'} |",
        "",
        f"Setup: loading the source (set_many batches of 50,000, COPY path, feed on) took {loaded:.1f} s; the "
        f"first sync (diff pass: scan, get_many, apply_many per page) {first_s:.1f} s and applied "
        f"{first.applied_to_dst:,} keys. Sync runs (ms): {', '.join(f'{x * 1000:.1f}' for x in runs)}; changes "
        f"applied per run: {', '.join(map(str, applied))} (below 1,000 when random keys repeat or a delete "
        "hits a key deleted before). The CLI run pays Python start-up and imports besides the sync.",
        "",
    ]


async def same(a: str, b: str) -> bool:
    left, right = open_url(a), open_url(b)
    try:
        pa = [r async for p in left.scan(batch_size=10_000) for r in p.records]
        pb = [r async for p in right.scan(batch_size=10_000) for r in p.records]
        return [(r.key, r.value, r.version) for r in pa] == [(r.key, r.value, r.version) for r in pb]
    finally:
        await left.close()
        await right.close()


# == 2. write-path overhead =======================================================================
ROW_CAPTURE = """
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO {tombs} AS tb (key, version) VALUES (OLD.key, OLD.version + 256)
      ON CONFLICT (key) DO UPDATE SET version = GREATEST(tb.version, EXCLUDED.version);
    INSERT INTO {changes} (key, version, deleted) VALUES (OLD.key, OLD.version + 256, true);
    RETURN OLD;
  END IF;
  INSERT INTO {changes} (key, value, expires_at, version) VALUES (NEW.key, NEW.value, NEW.expires_at, NEW.version);
  RETURN NEW;
END"""


async def swap_to_row_triggers(con: asyncpg.Connection, table: str) -> None:
    """Replace the shipped statement-level capture triggers with row-level ones (same WHEN)."""
    when = await con.fetchval(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = $1::regclass "
        "AND tgname = 'kvctl_capture_insert'", q(table))
    condition = when[when.index("WHEN"):when.index("EXECUTE")].strip()
    fn = q(f"{table}__bench_row_capture")
    body = ROW_CAPTURE.format(tombs=q(f"{table}__tombs"), changes=q(f"{table}__changes"))
    await con.execute(f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $b${body}$b$")
    for name in ("kvctl_capture_insert", "kvctl_capture_update", "kvctl_capture_delete"):
        await con.execute(f"DROP TRIGGER {name} ON {q(table)}")
    await con.execute(f"CREATE TRIGGER bench_row_capture AFTER INSERT OR UPDATE OR DELETE ON {q(table)} "
                      f"FOR EACH ROW {condition} EXECUTE FUNCTION {fn}()")


Call = Callable[[int], Awaitable[Any]]  # the argument (the call's number) is not used


async def interleave(variants: dict[str, Call], calls: int, per_call: int) -> dict[str, float]:
    """Median µs per key of each variant, called in turn (order alternating each call)."""
    samples = await interleave_async(variants, calls, per_call=per_call)
    return {name: s.median() for name, s in samples.items()}


async def bench_writes(base: str, quick: bool, lines: list[str], *, title: str = "") -> None:
    names = {"off": f"{PREFIX}_nofeed", "stmt": f"{PREFIX}_feed", "row": f"{PREFIX}_rowfeed"}
    stores = {"off": open_url(table_url(base, names["off"], feed="false")),
              "stmt": open_url(table_url(base, names["stmt"])),
              "row": open_url(table_url(base, names["row"]))}
    keys = [b"key-%06d" % i for i in range(1000)]
    batch = [Record(k, VALUE) for k in keys]
    for store in stores.values():
        await store.set_many(batch)  # creates the tables; later writes overwrite
    admin = await asyncpg.connect(base)
    await swap_to_row_triggers(admin, names["row"])
    raw = await asyncpg.connect(base)  # another program: no kvctl session mark
    raw_one = {v: await raw.prepare(f"INSERT INTO {q(t)} (key, value) VALUES ($1, $2) ON CONFLICT (key) "
                                    "DO UPDATE SET value = EXCLUDED.value") for v, t in names.items()}
    raw_many = {v: await raw.prepare(f"INSERT INTO {q(t)} (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) "
                                     "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")
                for v, t in names.items()}
    # Without triggers a versionless write fails NOT NULL: other programs then give a version.
    raw_one["off"] = await raw.prepare(f"INSERT INTO {q(names['off'])} (key, value, version) VALUES ($1, $2, 1) "
                                       "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")
    raw_many["off"] = await raw.prepare(
        f"INSERT INTO {q(names['off'])} (key, value, version) SELECT k, v, 1 FROM unnest($1::bytea[], $2::bytea[]) "
        "AS u(k, v) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")
    values = [VALUE] * len(keys)
    counter = iter(range(10**9))

    def one(v: str) -> Call:
        return lambda _: stores[v].set(keys[next(counter) % 1000], VALUE)

    def many(v: str) -> Call:
        return lambda _: stores[v].set_many(batch)

    def raw1(v: str) -> Call:
        return lambda _: raw_one[v].fetch(keys[next(counter) % 1000], VALUE)

    def rawn(v: str) -> Call:
        return lambda _: raw_many[v].fetch(keys, values)

    single_calls, batch_calls = (300, 30) if quick else (3000, 200)
    labels = {"off": "feed=false (no feed)", "stmt": "feed on, as shipped (statement-level capture)",
              "row": "feed on, row-level capture instead"}
    results = {
        "kvctl set (1 key)": await interleave({v: one(v) for v in names}, single_calls, 1),
        "kvctl set_many (1,000 keys, per key)": await interleave({v: many(v) for v in names}, batch_calls, 1000),
        "plain SQL upsert, 1 row": await interleave({v: raw1(v) for v in names}, single_calls, 1),
        "plain SQL upsert, 1,000 rows (per row)": await interleave({v: rawn(v) for v in names}, batch_calls, 1000),
    }
    # Purge what the rounds wrote into the change tables now and then? No: each call is timed
    # against a growing change table, as a writer between purges would be.
    lines += [
        f"## Write-path overhead of the feed{title}",
        "",
        f"Upserts of 1,000 existing keys with 100-byte values, one statement (one commit) per call; "
        f"{single_calls:,} single-key calls and {batch_calls} batch calls per variant, interleaved. "
        "µs per key (median of per-call times divided by keys per call). kvctl's own writes record "
        "their changes in the same statement (the triggers skip kvctl's sessions); plain SQL from "
        "another connection goes through the triggers.",
        "",
        f"| operation | {labels['off']} | {labels['stmt']} | vs no feed | {labels['row']} | vs no feed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for op, r in results.items():
        lines.append(f"| {op} | {r['off']:.2f} | {r['stmt']:.2f} | {r['stmt'] / r['off']:.2f}x | "
                     f"{r['row']:.2f} | {r['row'] / r['off']:.2f}x |")
    lines.append("")
    for store in stores.values():
        await store.close()
    await raw.close()
    await admin.close()


async def drop_all(base: str) -> None:
    con = await asyncpg.connect(base)
    try:
        for (name,) in await con.fetch("SELECT tablename FROM pg_tables WHERE tablename LIKE $1", PREFIX + "%"):
            await con.execute(f"DROP TABLE IF EXISTS {q(name)} CASCADE")
        for (name,) in await con.fetch("SELECT proname FROM pg_proc WHERE proname LIKE $1", PREFIX + "%"):
            await con.execute(f"DROP FUNCTION IF EXISTS {q(name)}() CASCADE")
        await con.execute("DELETE FROM kvctl_meta WHERE table_name LIKE $1", PREFIX + "%")
    finally:
        await con.close()


async def server_facts(base: str) -> str:
    con = await asyncpg.connect(base)
    try:
        version = await con.fetchval("SHOW server_version")
        fsync = await con.fetchval("SHOW fsync")
        sync_commit = await con.fetchval("SHOW synchronous_commit")
        return f"PostgreSQL {version}, fsync={fsync}, synchronous_commit={sync_commit}"
    finally:
        await con.close()


async def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--url", default=None, help="a PostgreSQL URL (default: the test services' server)")
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--durable", action="store_true",
                    help="also measure the write path on a private server with default durability")
    ap.add_argument("--quick", action="store_true", help="100,000 keys, 2 rounds, fewer write calls")
    args = ap.parse_args()
    base = (args.url or default_url()).split("?", 1)[0]
    keys, rounds = (100_000, 2) if args.quick else (args.keys, args.rounds)
    report = Report("PostgreSQL change feed: incremental sync and write-path overhead",
                    facts=f", asyncpg {asyncpg.__version__}")
    lines: list[str] = []
    try:
        await bench_sync(base, keys, rounds, lines)
        await bench_writes(base, args.quick, lines)
    finally:
        await drop_all(base)
    facts = await server_facts(base)
    if args.durable:
        with private_postgres() as durable:
            await bench_writes(durable, args.quick, lines,
                               title=f" with default durability ({await server_facts(durable)}, private server)")
    head = [
        f"{facts} (the server of tests/services.sh: commits do not wait "
        f"for a flush, so the figures show the feed's CPU and I/O-volume cost, not fsync latency); "
        "loopback TCP; one run.",
        "",
    ]
    tail = [
        "What the figures say: an incremental sync reads the changes since its cursor with one "
        "index range scan of the change table's primary key (seq), pages of 1,000, and applies "
        "each page with one last-writer-wins statement at the destination, so its cost follows the "
        "number of changes, not the number of keys. The feed costs kvctl's own writes one more row "
        "insert per change (the change table's heap and primary key) in the same statement; other "
        "programs' writes additionally pay the per-row version trigger and the capture trigger.",
    ]
    report.add(*head, *lines, *tail).finish(args.write)


if __name__ == "__main__":
    asyncio.run(main())

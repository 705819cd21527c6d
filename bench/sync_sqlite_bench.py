"""SQLite change feed (issue 8): incremental sync of 1,000 changes in 1,000,000 keys, and what
the triggers cost on writes.

    python bench/sync_sqlite_bench.py [--keys N] [--rounds R] [--overhead-keys M]
        [--write bench/results/sync_sqlite_RESULTS.md]

**Sync.**  Two SQLite stores of N keys (100-byte random values) are brought in sync by a first
sync (a diff pass: setup, timed once).  Each round makes 1,000 changes at the source (700
overwrites, 300 deletes of random existing keys, one call each, as an application would) and
times the incremental sync two ways: *engine* (``SyncEngine.run_once()`` on the two stores already
open in this process) and *CLI* (``python -m kvctl sync SRC DST --json`` as a subprocess, wall
clock and CPU, start-up and opening both files included).  Every run must be mode ``feed`` with
about 1,000 changes applied: the feed is read from the saved cursor, nothing is rescanned.  One
forced full comparison (``--full``) is timed for scale.

**Trigger overhead.**  The same writes on four files of M keys each: schema version 1 (the
plugin's code from the last commit before change feeds, loaded from git: no triggers),
version 2 with ``?feed=false`` (tombstone and version-stamping triggers only), version 2 with
the feed (the default: every write also appended to the change table), and the same with the
change table's ``seq`` declared AUTOINCREMENT (the design not taken, for its cost).  Rounds rotate
the variants so machine drift falls on all of them; medians of elapsed and CPU time.

**Upgrade.**  Opening a version 1 file of N keys with this code upgrades it in place (the table
is rebuilt inside one transaction): timed once.
"""

from __future__ import annotations

import importlib
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import REPO, Report, lap, parser
from _sync import SyncFigures, measure_sync

from kvctl.registry import open_url
from kvctl.store import Record, Store
from kvctl.url import StoreURL

VALUE_SIZE = 100


# -- the version 1 plugin, from git -------------------------------------------------------------
def v1_commit() -> str:
    """The newest commit whose sqlite plugin is still schema version 1."""
    commits = subprocess.run(["git", "rev-list", "HEAD", "--", "plugins/sqlite"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    for commit in commits:
        text = subprocess.run(["git", "show", f"{commit}:plugins/sqlite/schema.py"], cwd=REPO,
                              capture_output=True, text=True).stdout
        if "SCHEMA_VERSION = 1" in text:
            return commit
    raise SystemExit("no schema version 1 commit of plugins/sqlite in this repository's history")


def load_v1(root: Path) -> tuple[Any, str]:
    """The version 1 SQLiteStore class, imported as its own package; and its commit.  Its
    ``records.py`` (how rows become Records) is today's: Record has changed shape since, and
    building records is not what is compared here."""
    commit = v1_commit()
    pkg = root / "v1code" / "kvctl_sqlite_v1"
    pkg.mkdir(parents=True)
    names = subprocess.run(["git", "ls-tree", "--name-only", commit, "plugins/sqlite/"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        if name.endswith(".py"):
            source = subprocess.run(["git", "show", f"{commit}:{name}"], cwd=REPO, capture_output=True,
                                    text=True, check=True).stdout
            # the helpers v1 took from kvctl.store live in kvctl.plugin_kit now: one module offers both
            (pkg / Path(name).name).write_text(source.replace("from kvctl.store import", "from ._compat import"))
    (pkg / "_compat.py").write_text("from kvctl.plugin_kit import *  # noqa: F403\n"
                                    "from kvctl.plugin_kit import record_of as make_record  # noqa: F401\n"
                                    "from kvctl.store import *  # noqa: F403\n")
    (pkg / "records.py").write_text("from ._compat import make_record  # noqa: F401\n")
    sys.path.insert(0, str(pkg.parent))
    module = importlib.import_module("kvctl_sqlite_v1")
    return module.SQLiteStore, commit[:10]


# -- trigger overhead ---------------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    open: Callable[[], Store]
    store: Any = None
    keys: list[bytes] = field(default_factory=list)
    load_s: float = 0.0
    figures: dict[str, list[float]] = field(default_factory=dict)  # operation -> µs per op, per round
    cpu: dict[str, list[float]] = field(default_factory=dict)  # the same, CPU time of this process


def value(rng: random.Random) -> bytes:
    return rng.randbytes(VALUE_SIZE)


def overhead(variants: list[Variant], keys: int, rounds: int) -> None:
    rng = random.Random(7)
    for v in variants:
        v.store = v.open()
        v.keys = [b"key-%08d" % i for i in range(keys)]
        started = time.perf_counter()
        for start in range(0, keys, 10_000):
            v.store.set_many([Record(k, value(rng)) for k in v.keys[start:start + 10_000]])
        v.load_s = time.perf_counter() - started
        print(f"[overhead] {v.name}: {keys:,} keys loaded in {v.load_s:.1f} s", file=sys.stderr)
    for r in range(rounds):
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:  # rotated: drift falls on all
            one_round(v, r, rng)
        print(f"[overhead] round {r + 1}/{rounds} done", file=sys.stderr)
    for v in variants:
        v.store.close()


def one_round(v: Variant, r: int, rng: random.Random) -> None:
    """Time each operation once on variant ``v``; inputs are built before the clock starts."""
    s = v.store
    new = [b"new-%d-%08d" % (r, i) for i in range(2000)]
    old = [rng.choice(v.keys) for _ in range(2000)]
    vals = [value(rng) for _ in range(2000)]
    batches_new = [[Record(b"bn-%d-%d-%04d" % (r, j, i), value(rng)) for i in range(1000)] for j in range(5)]
    batches_old = [[Record(rng.choice(v.keys), value(rng)) for _ in range(1000)] for _ in range(5)]
    doomed = list(dict.fromkeys(rng.choice(v.keys) for _ in range(1000)))
    runs: list[tuple[str, int, Callable[[], object]]] = [
        ("set, new key", 2000, lambda: [s.set(k, x) for k, x in zip(new, vals, strict=True)]),
        ("set, existing key", 2000, lambda: [s.set(k, x) for k, x in zip(old, vals, strict=True)]),
        ("set_many(1,000), new keys", 5000, lambda: [s.set_many(b) for b in batches_new]),
        ("set_many(1,000), existing keys", 5000, lambda: [s.set_many(b) for b in batches_old]),
        ("delete, existing key", len(doomed), lambda: [s.delete(k) for k in doomed]),
    ]
    for op, n, fn in runs:
        took = lap(fn)
        v.figures.setdefault(op, []).append(took.wall / n * 1e6)
        v.cpu.setdefault(op, []).append(took.cpu / n * 1e6)
    dead = set(doomed)
    v.keys = [k for k in v.keys if k not in dead]


def autoincrement_feed(url: str) -> Store:
    """A store whose change table's ``seq`` is AUTOINCREMENT (the design not taken): same columns,
    same triggers; only the ``sqlite_sequence`` bookkeeping differs."""
    store = open_url(url)
    conn = store._conn
    ddl = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'kv__changes'").fetchone()[0]
    conn.execute('DROP TABLE "kv__changes"')
    conn.execute(ddl.replace("seq INTEGER PRIMARY KEY", "seq INTEGER PRIMARY KEY AUTOINCREMENT", 1))
    return store


# -- sync ---------------------------------------------------------------------------------------
@dataclass
class SqliteSyncFigures(SyncFigures):
    """The shared sync figures, plus the source file's size and its feed's length at the end."""

    src_bytes: int = 0
    feed_rows: int = 0


def bench_sync(root: Path, keys: int, rounds: int) -> SqliteSyncFigures:
    res = SqliteSyncFigures(keys)
    src_url, dst_url = f"sqlite://{root / 'src.db'}", f"sqlite://{root / 'dst.db'}"
    measure_sync(res, src_url, dst_url, root, rounds, "kvctl_plugins.sqlite")
    with open_url(src_url) as src:
        stats = src.stats()
        res.src_bytes = stats["file_bytes"] + stats["wal_bytes"]
        res.feed_rows = stats.get("feed_changes", 0)
    return res


def bench_upgrade(v1_class: Any, root: Path, keys: int) -> tuple[float, float]:
    """(load, upgrade-on-open) seconds for a version 1 file of ``keys`` keys."""
    path = root / "v1big.db"
    store = v1_class.from_url(StoreURL.parse(f"sqlite://{path}"))
    rng = random.Random(3)
    started = time.perf_counter()
    for start in range(0, keys, 10_000):
        store.set_many([Record(b"key-%08d" % i, value(rng)) for i in range(start, min(keys, start + 10_000))])
    load = time.perf_counter() - started
    store.close()
    started = time.perf_counter()
    open_url(f"sqlite://{path}").close()
    return load, time.perf_counter() - started


# -- the report ---------------------------------------------------------------------------------
def med(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    return f"{statistics.median(values) * scale:.{digits}f}" if values else "-"


def render(commit: str, variants: list[Variant], over_keys: int, over_rounds: int,
           sync: SqliteSyncFigures, upgrade: tuple[float, float] | None) -> list[str]:
    lines = [
        "One run; files in a temporary directory on the local disk; WAL, synchronous=NORMAL (kvctl's "
        "default: a commit is not fsynced, a checkpoint is). Elapsed times stretch with the machine's "
        "load; CPU figures are given where they help.",
        "",
        f"## Incremental sync: 1,000 changes in {sync.keys:,} keys, sqlite -> sqlite",
        "",
        "Each round: 1,000 changes at the source (700 overwrites, 300 deletes of random existing keys, "
        "one call each), then one incremental sync. Medians over the rounds.",
        "",
        "| keys | engine: sync work, elapsed (CPU) ms | CLI end to end, elapsed (CPU) s | of which sync (ms) "
        "| open one store (ms) | start-up + imports (s) | modes | full comparison, for scale (s) | converged |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---|",
        f"| {sync.keys:,} | {med(sync.engine_s, 1000)} ({med(sync.engine_cpu_s, 1000)}) | "
        f"{med(sync.cli_wall_s, 1, 2)} ({med(sync.cli_cpu_s, 1, 2)}) | {med(sync.cli_sync_s, 1000)} | "
        f"{med(sync.open_s, 1000)} | {med(sync.startup_s, 1, 2)} | "
        f"{', '.join(sorted(set(sync.modes + sync.cli_modes)))} | {sync.full_s:.1f} | "
        f"{'yes' if sync.converged else 'NO'} |",
        "",
        f"Setup: filling the source took {sync.load_s:.1f} s and the first sync ({sync.first_mode} pass, "
        f"copying every key) {sync.first_s:.1f} s. Engine runs (ms): "
        f"{', '.join(f'{s * 1000:.1f}' for s in sync.engine_s)}; changes applied per run: "
        f"{', '.join(map(str, sync.applied))} (under 1,000 when random keys repeat). CLI runs, wall (s): "
        f"{', '.join(f'{s:.2f}' for s in sync.cli_wall_s)}. The source file at the end: "
        f"{sync.src_bytes / 1e6:.0f} MB with {sync.feed_rows:,} changes retained in its feed (default "
        "?feed_retention=100000).",
        "",
        "The sync reads the source's change table from the saved cursor (`seq > ?`, an integer primary "
        "key range), looks the changed keys up at the destination in one statement per page and applies "
        "the winners in one transaction; it never scans the million keys. Opening a SQLite store costs "
        "milliseconds whatever its size (nothing is replayed), so the command end to end is dominated "
        "by Python start-up and imports.",
        "",
        f"## Trigger overhead on writes ({over_keys:,} keys per file, {over_rounds} rounds, µs per operation)",
        "",
        f"`v1` is the plugin's code at commit {commit} (schema version 1, no triggers), imported from git "
        "beside this one; `v2, feed=false` keeps tombstones and stamps versions by trigger; `v2, feed` "
        "(the default) also appends every write to the change table; the last column is the same with "
        "`seq INTEGER PRIMARY KEY AUTOINCREMENT`, which SQLite pays for with a write of `sqlite_sequence` "
        "per insert (kvctl keeps `seq` growing by never purging the newest change instead). "
        "Each figure is the median over the "
        "rounds of one timed loop of calls (single calls: 2,000 per round; set_many: 5 batches of 1,000).",
        "",
    ]
    ops = list(variants[0].figures)
    lines.append("| operation | " + " | ".join(f"{v.name}: elapsed (CPU)" for v in variants) + " | "
                 + " | ".join(f"{v.name} vs v1, elapsed (CPU)" for v in variants[1:]) + " |")
    lines.append("|---|" + "---:|" * (2 * len(variants) - 1))
    for op in ops:
        cells = [f"{med(v.figures[op], 1, 1)} ({med(v.cpu[op], 1, 1)})" for v in variants]
        ratios = []
        for v in variants[1:]:
            wall = statistics.median(v.figures[op]) / statistics.median(variants[0].figures[op])
            cpu = statistics.median(v.cpu[op]) / statistics.median(variants[0].cpu[op])
            ratios.append(f"{wall:.2f}x ({cpu:.2f}x)")
        lines.append(f"| {op} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    lines.append("| bulk load, set_many of 10,000 (µs per key, elapsed) | " + " | ".join(
        f"{v.load_s / over_keys * 1e6:.1f}" for v in variants) + " |" * len(variants))
    lines.append("")
    lines += [
        "Read the CPU ratios: elapsed times on this shared machine swing by more than the differences "
        "measured (a variant can even come out faster than v1). The feed is on by default all the "
        "same: issue 8 wants writes by other programs in the feed, and only triggers that exist when "
        "those programs write can capture them; `?feed=false` is for stores that are never a sync source "
        "(it keeps tombstones, so such a store is still a correct sync destination).",
        "",
        "What the triggers do on kvctl's own writes: an insert deletes the key's tombstone (one probe "
        "of a usually empty index) and, with the feed, appends the row to the change table; an update "
        "of an existing key appends it (no trigger at all with feed=false: the stamping trigger's WHEN "
        "clause is false for a write that brings its own version); a delete writes a tombstone (whose "
        "version is raised above the newest in the table: two index probes) and, with the feed, its "
        "change. The change table is an append at the end of an integer-keyed B-tree, but it carries a "
        "copy of the value, so the bytes written per change roughly double.",
        "",
    ]
    if upgrade is not None:
        lines += [
            f"## Upgrade of a version 1 file ({sync.keys:,} keys)",
            "",
            f"Loading it with the v1 code took {upgrade[0]:.1f} s; the first open with this code, which "
            f"rebuilds the table (SQLite cannot drop `NOT NULL` from a column in place) and adds the "
            f"side tables and triggers inside one transaction, took {upgrade[1]:.1f} s. It happens once per file.",
            "",
        ]
    return lines


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--overhead-keys", type=int, default=100_000)
    ap.add_argument("--overhead-rounds", type=int, default=11)
    ap.add_argument("--no-upgrade", action="store_true", help="skip timing the v1 upgrade")
    args = ap.parse_args()
    report = Report("SQLite change feed: incremental sync and trigger overhead",
                    facts=f", SQLite {sqlite3.sqlite_version}")
    root = Path(tempfile.mkdtemp(prefix="kvctl-sqlite-sync-bench-"))
    try:
        v1_class, commit = load_v1(root)
        variants = [
            Variant("v1", lambda: v1_class.from_url(StoreURL.parse(f"sqlite://{root / 'o1.db'}"))),
            Variant("v2, feed=false", lambda: open_url(f"sqlite://{root / 'o2.db'}?feed=false")),
            Variant("v2, feed", lambda: open_url(f"sqlite://{root / 'o3.db'}")),
            Variant("v2, feed, AUTOINCREMENT", lambda: autoincrement_feed(f"sqlite://{root / 'o4.db'}")),
        ]
        overhead(variants, args.overhead_keys, args.overhead_rounds)
        sync = bench_sync(root, args.keys, args.rounds)
        upgrade = None if args.no_upgrade else bench_upgrade(v1_class, root, args.keys)
        report.add(*render(commit, variants, args.overhead_keys, args.overhead_rounds, sync, upgrade))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.finish(args.write)


if __name__ == "__main__":
    main()

"""The incremental-sync measurement that sync_bench.py (file and sqlite pairs) and
sync_sqlite_bench.py (sqlite, with its feed's own figures) report.

Two stores of N keys are brought in sync by a first run (a diff pass: the setup, timed once).  Each
round then makes 1,000 changes at the source and times the incremental sync: the engine's
``run_once`` on stores open in this process (their opens timed apart), then ``kvctl sync --json``
as a subprocess end to end, with Python start-up and imports measured in a process that opens no
store.  One forced full comparison is timed on the same stores, for scale.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import change, fill, lap, run_process, same_records

from kvctl.adapt import to_async
from kvctl.engines.replicate import SyncEngine, SyncPlan
from kvctl.registry import open_url


@dataclass
class SyncFigures:
    """Seconds (lists: one value a round) of one source -> destination pair."""

    keys: int
    label: str = "sync"
    load_s: float = 0.0
    first_s: float = 0.0
    first_mode: str = ""
    open_s: list[float] = field(default_factory=list)
    engine_s: list[float] = field(default_factory=list)
    engine_cpu_s: list[float] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    applied: list[int] = field(default_factory=list)
    cli_wall_s: list[float] = field(default_factory=list)
    cli_cpu_s: list[float] = field(default_factory=list)
    cli_sync_s: list[float] = field(default_factory=list)
    cli_modes: list[str] = field(default_factory=list)
    startup_s: list[float] = field(default_factory=list)
    full_s: float = 0.0
    converged: bool = False


def fill_url(url: str, keys: int) -> float:
    def run() -> None:
        with open_url(url) as store:
            fill(store, keys)

    return lap(run).wall


def make_changes(url: str, keys: int, seed: int) -> None:
    with open_url(url) as store:
        change(store, random.Random(seed), keys)


def engine_once(plan: SyncPlan, opened: list[float]) -> tuple[float, float, Any]:
    """Open both stores (the first open timed into ``opened``), then time only the engine's run
    (CPU of the whole process: the adapter's worker thread included)."""
    t0 = time.perf_counter()
    src = open_url(plan.src_url)
    opened.append(time.perf_counter() - t0)
    dst = open_url(plan.dst_url)
    try:
        cpu0, t1 = time.process_time(), time.perf_counter()
        result = asyncio.run(SyncEngine(plan, to_async(src), to_async(dst)).run_once())
        return time.perf_counter() - t1, time.process_time() - cpu0, result
    finally:
        src.close()
        dst.close()


def cli_once(env: dict[str, str], plan: SyncPlan, *extra: str) -> tuple[float, float, dict[str, Any]]:
    proc = run_process([sys.executable, "-m", "kvctl", "sync", plan.src_url, plan.dst_url, "--json", *extra],
                       env=env)
    return proc.seconds, proc.cpu, json.loads(proc.stdout)


def startup_once(env: dict[str, str], plugin: str) -> float:
    """Python start-up plus the imports a sync run makes (``plugin``: the backend's module), without
    opening any store."""
    return run_process([sys.executable, "-c", "import kvctl.cli.app, kvctl.engines.replicate, kvctl.adapt, "
                        f"{plugin}"], env=env, capture=False).seconds


def measure_sync(res: SyncFigures, src_url: str, dst_url: str, root: Path, rounds: int, plugin: str) -> None:
    """Fill ``res`` for the pair (``root``: a directory of the pair's own, for the sync state)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVCTL_")}
    env["XDG_STATE_HOME"] = str(root / "state")
    plan = SyncPlan(src_url, dst_url, root / "state" / "kvctl")  # the CLI's state directory: one pair state
    print(f"[{res.label}] filling {res.keys:,} keys", file=sys.stderr)
    res.load_s = fill_url(src_url, res.keys)
    print(f"[{res.label}] first sync (diff pass)", file=sys.stderr)
    res.first_s, _, first = engine_once(plan, [])
    res.first_mode = first.mode
    for r in range(rounds):
        make_changes(src_url, res.keys, 100 + r)
        seconds, cpu, result = engine_once(plan, res.open_s)
        res.engine_s.append(seconds)
        res.engine_cpu_s.append(cpu)
        res.modes.append(result.mode)
        res.applied.append(result.applied_to_dst)
        print(f"[{res.label}] round {r + 1}: engine {seconds * 1000:.1f} ms ({result.mode}, "
              f"{result.applied_to_dst} applied)", file=sys.stderr)
    for r in range(rounds):
        make_changes(src_url, res.keys, 200 + r)
        wall, cpu, doc = cli_once(env, plan)
        res.cli_wall_s.append(wall)
        res.cli_cpu_s.append(cpu)
        res.cli_sync_s.append(doc["seconds"])
        res.cli_modes.append(doc["mode"])
        res.startup_s.append(startup_once(env, plugin))
        print(f"[{res.label}] round {r + 1}: CLI {wall:.2f} s wall, sync {doc['seconds'] * 1000:.1f} ms "
              f"({doc['mode']})", file=sys.stderr)
    res.full_s, _, _ = engine_once(SyncPlan(src_url, dst_url, root / "state" / "kvctl", force_full=True), [])
    res.converged = same_records(src_url, dst_url)

"""Incremental ``kvctl sync`` after 1,000 changes in a store of 1,000,000 keys (issue 8's target).

    python bench/sync_bench.py [--keys N] [--rounds R] [--write bench/results/sync_RESULTS.md]

Two stores of N keys (100-byte random values) are brought in sync by a first ``kvctl sync`` (a
diff pass: that is the setup, timed once).  Each round then makes 1,000 changes at the source
(700 overwrites, 300 deletes of random existing keys, one call each, as an application would)
and times the incremental sync three ways:

- *engine*: ``SyncEngine.run_once()`` on the two stores already open in this process: the sync
  work itself (read the feed from the saved cursor, last-writer-wins apply, save the cursor);
- *CLI, end to end*: ``python -m kvctl sync SRC DST --json`` as a subprocess, wall clock: Python
  start-up, imports, opening both stores (each replays its log into the in-memory index), the
  sync, closing; the JSON's ``seconds`` is the sync part of that run;
- *open*: one store's open (log replay) alone, for reading the CLI figure.

For scale, one forced full comparison (``--full``: what a run without a feed costs) is timed
on the same stores.  Every pair whose backend declares ``change_feed`` is measured: file->file
always, sqlite->sqlite when the sqlite backend has a feed in this tree (checked at run time).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import Report, change, fill, lap, parser, run_process, same_records

from kvctl.adapt import to_async
from kvctl.engines.replicate import SyncEngine, SyncPlan
from kvctl.registry import open_url


@dataclass
class PairResult:
    pair: str
    keys: int
    load_s: float = 0.0
    first_sync_s: float = 0.0
    first_mode: str = ""
    open_s: list[float] = field(default_factory=list)
    engine_s: list[float] = field(default_factory=list)
    engine_cpu_s: list[float] = field(default_factory=list)
    engine_modes: list[str] = field(default_factory=list)
    applied: list[int] = field(default_factory=list)
    cli_wall_s: list[float] = field(default_factory=list)
    cli_cpu_s: list[float] = field(default_factory=list)
    cli_sync_s: list[float] = field(default_factory=list)
    cli_modes: list[str] = field(default_factory=list)
    startup_s: list[float] = field(default_factory=list)
    full_s: float = 0.0
    converged: bool = False
    note: str = ""


def fill_url(url: str, keys: int) -> float:
    def run() -> None:
        with open_url(url) as store:
            fill(store, keys)

    return lap(run).wall


def make_changes(url: str, keys: int, seed: int) -> None:
    with open_url(url) as store:
        change(store, random.Random(seed), keys)


async def engine_run(plan: SyncPlan, src: Any, dst: Any) -> tuple[float, float, Any]:
    started = time.perf_counter()
    cpu = time.process_time()  # the whole process: the adapter's worker thread included
    result = await SyncEngine(plan, src, dst).run_once()
    return time.perf_counter() - started, time.process_time() - cpu, result


def engine_once(plan: SyncPlan, src_url: str, dst_url: str, opened: list[float]) -> tuple[float, float, Any]:
    """Open both stores (timed apart), then time only the engine's run."""
    t0 = time.perf_counter()
    src = open_url(src_url)
    opened.append(time.perf_counter() - t0)
    dst = open_url(dst_url)
    try:
        return asyncio.run(engine_run(plan, to_async(src), to_async(dst)))
    finally:
        src.close()
        dst.close()


def cli_once(env: dict[str, str], src_url: str, dst_url: str, *extra: str) -> tuple[float, dict[str, Any]]:
    proc = run_process([sys.executable, "-m", "kvctl", "sync", src_url, dst_url, "--json", *extra], env=env)
    doc = json.loads(proc.stdout)
    doc["cpu_s"] = proc.cpu
    return proc.seconds, doc


def startup_once(env: dict[str, str]) -> float:
    """Python start-up plus the imports a sync run makes, without opening any store."""
    return run_process([sys.executable, "-c", "import kvctl.cli.app, kvctl.engines.replicate, kvctl.adapt, "
                        "kvctl_plugins.file"], env=env, capture=False).seconds


def bench_pair(scheme: str, root: Path, keys: int, rounds: int) -> PairResult:
    def url(name: str) -> str:
        return f"file://{root / name}" if scheme == "file" else f"sqlite://{root / (name + '.db')}"

    src_url, dst_url = url("src"), url("dst")
    res = PairResult(f"{scheme} -> {scheme}", keys)
    state = root / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVCTL_")}
    env["XDG_STATE_HOME"] = str(state)
    plan = SyncPlan(src_url, dst_url, state / "kvctl")  # the CLI's state directory: one pair state
    print(f"[{res.pair}] filling {keys:,} keys", file=sys.stderr)
    res.load_s = fill_url(src_url, keys)
    print(f"[{res.pair}] first sync (diff pass)", file=sys.stderr)
    res.first_sync_s, _, first = engine_once(plan, src_url, dst_url, [])
    res.first_mode = first.mode
    for r in range(rounds):
        make_changes(src_url, keys, 100 + r)
        seconds, cpu, result = engine_once(plan, src_url, dst_url, res.open_s)
        res.engine_s.append(seconds)
        res.engine_cpu_s.append(cpu)
        res.engine_modes.append(result.mode)
        res.applied.append(result.applied_to_dst)
        print(f"[{res.pair}] round {r + 1}: engine {seconds * 1000:.1f} ms ({result.mode}, "
              f"{result.applied_to_dst} applied)", file=sys.stderr)
    for r in range(rounds):
        make_changes(src_url, keys, 200 + r)
        wall, doc = cli_once(env, src_url, dst_url)
        res.cli_wall_s.append(wall)
        res.cli_cpu_s.append(doc["cpu_s"])
        res.cli_sync_s.append(doc["seconds"])
        res.cli_modes.append(doc["mode"])
        res.startup_s.append(startup_once(env))
        print(f"[{res.pair}] round {r + 1}: CLI {wall:.2f} s wall, sync {doc['seconds'] * 1000:.1f} ms "
              f"({doc['mode']})", file=sys.stderr)
    plan_full = SyncPlan(src_url, dst_url, state / "kvctl", force_full=True)
    res.full_s, _, _ = engine_once(plan_full, src_url, dst_url, [])
    res.converged = same_records(src_url, dst_url)
    return res


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f}" if values else "-"


def render(results: list[PairResult], notes: list[str]) -> list[str]:
    lines = [
        "One run; files in a temporary directory; elapsed times stretch with the machine's load, the CPU "
        "figures much less. Stores use their default durability (file: fsync=batch, every batch call "
        "fsynced). Each round: 1,000 changes at the source (700 overwrites, 300 deletes, one call "
        "each), then one incremental sync. Medians over the rounds.",
        "",
        "| pair | keys | engine: sync work, elapsed (CPU) ms | CLI end to end, elapsed (CPU) s | "
        "of which sync (ms) | open one store (s) | start-up + imports (s) | modes | "
        "full comparison, for scale (s) | converged |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in results:
        modes = sorted(set(r.engine_modes + r.cli_modes))
        lines.append(
            f"| {r.pair} | {r.keys:,} | {ms(r.engine_s)} ({ms(r.engine_cpu_s)}) | "
            f"{statistics.median(r.cli_wall_s):.2f} ({statistics.median(r.cli_cpu_s):.2f}) | "
            f"{ms(r.cli_sync_s)} | {statistics.median(r.open_s):.2f} | {statistics.median(r.startup_s):.2f} | "
            f"{', '.join(modes)} | {r.full_s:.1f} | "
            f"{'yes' if r.converged else 'NO'} |")
    lines.append("")
    for r in results:
        lines += [
            f"**{r.pair}**: setup: filling the source took {r.load_s:.1f} s and the first sync "
            f"({r.first_mode} pass, copying every key) {r.first_sync_s:.1f} s. Engine runs (ms): "
            f"{', '.join(f'{s * 1000:.1f}' for s in r.engine_s)}; changes applied per run: "
            f"{', '.join(map(str, r.applied))} (fewer than 1,000 when random keys repeat, or a delete "
            f"hit a key deleted before). CLI runs, wall (s): {', '.join(f'{s:.2f}' for s in r.cli_wall_s)}.",
            "",
        ]
    lines += [
        "What the 1 s target covers: the sync work (engine column, and the CLI's own `seconds`) is "
        "reading the changes from the source's feed from the saved cursor, applying them last-writer-"
        "wins at the destination in one fsynced batch per page, and saving the cursor; it does not "
        "rescan the million keys. The CLI's end-to-end time also pays Python start-up and imports "
        "(measured apart, in a process that opens no store) and opening both stores, one after the "
        "other: a file store replays its log into the in-memory key directory on open (the open "
        "column, once per store), which grows with the number of keys, not with the changes; "
        "roughly, CLI = start-up + 2 x open + sync + close. The 1 s target is met by the sync work; "
        "the end-to-end command is not under 1 s at this size, because of the two opens.",
        "",
    ]
    return lines + notes


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    report = Report("sync benchmark: incremental sync after 1,000 changes")
    results: list[PairResult] = []
    notes: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="kvctl-sync-bench-", dir=os.getcwd()))
    try:
        for scheme in ("file", "sqlite"):
            probe_dir = root / f"probe-{scheme}"
            probe_dir.mkdir()
            probe = open_url(f"file://{probe_dir}/p" if scheme == "file" else f"sqlite://{probe_dir}/p.db")
            has_feed = probe.capabilities.change_feed
            probe.close()
            if not has_feed:
                notes.append(f"{scheme} -> {scheme}: not measured: the {scheme} backend declares no change "
                             "feed in this tree (checked at run time), so its sync would be a full "
                             "comparison every time.")
                notes.append("")
                continue
            pair_root = root / scheme
            pair_root.mkdir()
            results.append(bench_pair(scheme, pair_root, args.keys, args.rounds))
            shutil.rmtree(pair_root, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.add(*render(results, notes)).finish(args.write)


if __name__ == "__main__":
    main()

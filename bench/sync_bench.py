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

import os
import shutil
import statistics
import tempfile
from pathlib import Path

from _harness import Report, parser
from _sync import SyncFigures, measure_sync

from kvctl.registry import open_url


def bench_pair(scheme: str, root: Path, keys: int, rounds: int) -> SyncFigures:
    def url(name: str) -> str:
        return f"file://{root / name}" if scheme == "file" else f"sqlite://{root / (name + '.db')}"

    res = SyncFigures(keys, label=f"{scheme} -> {scheme}")
    measure_sync(res, url("src"), url("dst"), root, rounds, f"kvctl_plugins.{scheme}")
    return res


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f}" if values else "-"


def render(results: list[SyncFigures], notes: list[str]) -> list[str]:
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
        modes = sorted(set(r.modes + r.cli_modes))
        lines.append(
            f"| {r.label} | {r.keys:,} | {ms(r.engine_s)} ({ms(r.engine_cpu_s)}) | "
            f"{statistics.median(r.cli_wall_s):.2f} ({statistics.median(r.cli_cpu_s):.2f}) | "
            f"{ms(r.cli_sync_s)} | {statistics.median(r.open_s):.2f} | {statistics.median(r.startup_s):.2f} | "
            f"{', '.join(modes)} | {r.full_s:.1f} | "
            f"{'yes' if r.converged else 'NO'} |")
    lines.append("")
    for r in results:
        lines += [
            f"**{r.label}**: setup: filling the source took {r.load_s:.1f} s and the first sync "
            f"({r.first_mode} pass, copying every key) {r.first_s:.1f} s. Engine runs (ms): "
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
    results: list[SyncFigures] = []
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

"""What a full ``kvctl bench`` costs: wall clock, CPU and peak memory of the whole run, and where it goes.

Runs ``kvctl bench --workload all`` with no URL (every registered embedded backend, each on a
fresh store in a temporary directory) ``--rounds`` times as a user would, in a child process
whose exit status, elapsed time, CPU seconds and peak RSS come from ``wait4`` (the pyperf
workers it starts are its children, so their CPU counts too; the peak RSS is the largest of
the parent and of any one worker).  The run's own rows tell which backends and workloads were
measured.  Run it in an environment without the test plugins (they register extra backends).

Every process of the run appends where its CPU went to a file (``KVCTL_BENCH_COST``, see
``kvctl/bench/runner.py``); the last round's phases are tabled per workload and per backend:
pyperf's workers (start-up to the first call, the store's set-up, loop calibration, warm-ups
and values, the rest: pyperf's own work and exit), the latency and load passes, the allocation
pass (memray) and the instruction count (valgrind), with each job's wall clock.  CPU seconds,
not wall time, compare across loads; fsync waits show in wall time only.

    python bench/fullrun_bench.py --rounds 1 --write bench/results/fullrun_RESULTS.md
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from _harness import Report, command, parser, run_process, table

PHASES = ("workers", "start-up", "set-up", "calibration", "values", "pyperf + exit", "latency/load",
          "memray", "valgrind", "job wall")


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--rounds", type=int, default=1, help="whole runs to make")
    ap.add_argument("--extra", default="", help="more kvctl bench arguments, one string")
    ap.add_argument("--cost-file", type=Path, help="keep the last round's KVCTL_BENCH_COST records here")
    args = ap.parse_args()
    report = Report("What a full kvctl bench costs", cmd=command())
    rows = []
    measured: Counter[str] = Counter()
    failed = []
    phases: dict[tuple[str, str], dict[str, float]] = {}
    for n in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="kvctl-fullrun-") as tmp:
            out = Path(tmp) / "run.json"
            costs = Path(tmp) / "cost.jsonl"
            cmd = [sys.executable, "-P", "-m", "kvctl", "bench", "--workload", "all", "-q", "-o", str(out),
                   *args.extra.split()]
            proc = run_process(cmd, check=False, env={**os.environ, "KVCTL_BENCH_COST": str(costs)})
            names = _benchmarks(out)
            phases = _phases(costs)
            if args.cost_file is not None and costs.exists():
                args.cost_file.write_text(costs.read_text())
        measured = Counter(name.rsplit("@", 1)[-1] for name in names)
        if proc.returncode != 0:
            failed.append(proc.stderr.strip().splitlines()[-1:] or ["(no message)"])
        rows.append([n, proc.returncode, f"{proc.seconds / 60:.1f}", f"{proc.cpu / 60:.1f}",
                     f"{proc.rss_mb:.0f}", len(names)])
        print(f"round {n}: rc {proc.returncode}, {proc.seconds:.0f} s, {len(names)} benchmarks", file=sys.stderr)
    report.add("`kvctl bench --workload all` with no URL: every embedded backend, every workload, "
               "pyperf's default settings as kvctl sets them.", "",
               *table(["round", "exit", "wall min", "CPU min (with its workers)", "peak RSS MB", "benchmarks"],
                      rows, ["---:", "---:", "---:", "---:", "---:", "---:"]), "",
               "Benchmarks per backend in the last round: "
               + ", ".join(f"{b} {c}" for b, c in sorted(measured.items())) + ".")
    if failed:
        report.add("", "Failed rounds said: " + "; ".join(" ".join(f) for f in failed))
    if phases:
        report.add("", "Where the last round's time went, CPU seconds (the job wall clock in seconds): "
                   "*workers* is all of pyperf's worker processes, split into their start-up (interpreter, "
                   "imports), the store's set-up (open, pre-fill), loop calibration, warm-ups and values "
                   "(plans built and timed), and the rest (pyperf's own work, exit).", "")
        for i, title in ((0, "workload"), (1, "backend")):
            grouped: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
            for key, d in phases.items():
                for phase in PHASES:
                    grouped[key[i]][phase] += d.get(phase, 0.0)
                    grouped["all"][phase] += d.get(phase, 0.0)
            report.add(*table([title, *PHASES], [[g, *(f"{grouped[g][p]:.1f}" for p in PHASES)]
                                                 for g in sorted(grouped, key=lambda g: (g == "all", g))],
                              ["---", *["---:"] * len(PHASES)]), "")
    report.finish(args.write)


def _benchmarks(path: Path) -> list[str]:
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return [b.get("metadata", {}).get("name", "?") for b in data.get("benchmarks", [])]


def _phases(path: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(workload, backend) -> phase -> seconds, from the run's cost records."""
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        r = json.loads(line)
        name, _, backend = r["bench"].rpartition("@")
        key = (name.partition(".")[0], backend) if name else ("harness", "harness")
        d = out[key]
        if r["phase"] == "worker":
            setup = sum(c for loops, c in r["calls"] if loops == 0)
            timed = sum(c for loops, c in r["calls"] if loops) - setup  # the first call included the set-up
            d["start-up"] += r["before"]
            d["set-up"] += setup
            d["calibration" if r["calibrate"] else "values"] += timed
        elif r["phase"] == "pyperf":
            d["workers"] += r["children"]
        elif r["phase"] == "passes":
            d["latency/load"] += r["latency_load"]
            d["memray"] += r["alloc"]
        elif r["phase"] == "instr":
            d["valgrind"] += r["children"]
        elif r["phase"] == "job":
            d["job wall"] += r.get("wall", 0.0)
            if key[0] == "harness":
                d["workers"] += r["self"]  # the harness times its plans in its own process
    for d in out.values():
        d["pyperf + exit"] = d["workers"] - sum(d[p] for p in ("start-up", "set-up", "calibration", "values"))
    return out


if __name__ == "__main__":
    main()

"""What a full ``kvctl bench`` costs: wall clock, CPU and peak memory of the whole run.

Runs ``kvctl bench --workload all`` with no URL (every registered embedded backend, each on a
fresh store in a temporary directory) ``--rounds`` times as a user would, in a child process
whose exit status, elapsed time, CPU seconds and peak RSS come from ``wait4`` (the pyperf
workers it starts are its children, so their CPU counts too; the peak RSS is the largest of
the parent and of any one worker).  The run's own rows tell which backends and workloads were
measured.  Run it in an environment without the test plugins (they register extra backends).

    python bench/fullrun_bench.py --rounds 1 --write bench/results/fullrun_RESULTS.md
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

from _harness import Report, command, parser, run_process, table


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--rounds", type=int, default=1, help="whole runs to make")
    ap.add_argument("--extra", default="", help="more kvctl bench arguments, one string")
    args = ap.parse_args()
    report = Report("What a full kvctl bench costs", cmd=command())
    rows = []
    measured: Counter[str] = Counter()
    failed = []
    for n in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="kvctl-fullrun-") as tmp:
            out = Path(tmp) / "run.json"
            cmd = [sys.executable, "-P", "-m", "kvctl", "bench", "--workload", "all", "-q", "-o", str(out),
                   *args.extra.split()]
            proc = run_process(cmd, check=False)
            names = _benchmarks(out)
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
    report.finish(args.write)


def _benchmarks(path: Path) -> list[str]:
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return [b.get("metadata", {}).get("name", "?") for b in data.get("benchmarks", [])]


if __name__ == "__main__":
    main()

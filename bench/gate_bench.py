"""The CI performance gate, measured: false alarms on unchanged code, and what it detects.

    python bench/gate_bench.py [--runs 10] [--hog-runs 10] [--detect-runs 20] \
        [--cost-runs 3] [--parallel 2] [--write bench/results/gate_RESULTS.md]

Needs valgrind and the probe plugin (tests/bench_plugin, installed by tests/run.sh).

1. False alarms: the CI gate exactly as tests/run.sh runs it (`kvctl bench --suite
   bench/ci/suite-ci.toml --baseline bench/ci/baseline-ci.json`), --runs times in a row on unchanged
   code, and --hog-runs times beside a CPU hog (`python -c 'while 1: pass'`, started and ended
   here by its pid).  Every saved run is also judged offline with times gated too
   (`--fail-on all`), to show what a time gate would have said on the same runs.
2. Detection: the same suite on `probe://`, a test plugin wrapping the memory store that injects
   CPU work per op (a loop that allocates nothing, spread evenly over the ops) or one extra
   2-tuple per op (served by CPython's free list).  A baseline with nothing injected, two
   calibration runs (one loop iteration per get, then per set) to know what an iteration costs
   in each bench, then variants injecting at least +1%, +2%, +5% and +25% of each bench's own
   instructions per op (get and mixed exactly, set at least), and the tuple; --detect-runs gate
   runs each.
0. With --regenerate-baseline, first `kvctl bench --suite bench/ci/suite-ci.toml -o
   bench/ci/baseline-ci.json` (the documented command), before any gate run.
3. Cost: --cost-runs gate runs of the CI suite once everything else here has finished.

--parallel runs that many gate runs at a time (instruction and allocation counts do not depend
on load, so the runs may share the machine; their wall times then include each other).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SUITE = "bench/ci/suite-ci.toml"
BASELINE = "bench/ci/baseline-ci.json"
BENCHES = ("set", "get", "mixed")
LEVELS = (0.01, 0.02, 0.05, 0.25)
TOLERANCES = (0.005, 0.01, 0.015, 0.02, 0.05)
LABEL = "ci"  # probe runs name their rows gridkv.*@ci whatever the URL's options


def kvctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "kvctl", "bench", *args]


@dataclass
class GateRun:
    what: str
    rc: int
    wall_s: float
    load: float
    path: Path
    base: Path
    message: str
    instr: dict[str, float | None] = field(default_factory=dict)
    allocs: dict[str, float | None] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)       # benches the gate failed
    time_failed: list[str] = field(default_factory=list)  # benches a time gate would have failed
    allocs_more: list[str] = field(default_factory=list)  # benches whose allocations rose beyond the slack


def gate_run(what: str, path: Path, args: list[str], base: Path, hog: bool = False) -> GateRun:
    from kvctl.bench.results import Run

    hog_proc = subprocess.Popen([sys.executable, "-c", "while 1: pass"]) if hog else None
    try:
        load = os.getloadavg()[0]
        t0 = time.monotonic()
        proc = subprocess.run(kvctl(*args, "--baseline", str(base), "-o", str(path), "-q"), cwd=ROOT,
                              capture_output=True, text=True)
        wall = time.monotonic() - t0
    finally:
        if hog_proc is not None:
            hog_proc.kill()
            hog_proc.wait()
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("kvctl:")]
    out = GateRun(what, proc.returncode, wall, load, path, base, lines[-1] if lines else "")
    if not path.exists():
        return out
    run, baseline = Run.load(str(path)), Run.load(str(base))
    for r in run.rows():
        if r.workload == "gridkv":
            out.instr[r.bench] = r.get("instr_per_op")
            out.allocs[r.bench] = r.get("allocs_per_op")
    judge(out, run, baseline)
    return out


def suite_options(**changes: Any) -> Any:
    """The gate's options as the CI suite sets them (tolerances, what fails), with ``changes``."""
    from kvctl.bench import gate

    suite = tomllib.loads((ROOT / SUITE).read_text())["suite"]
    options = {"tolerance": float(suite["tolerance"].rstrip("%")) / 100,
               "instr_tolerance": float(suite["instr_tolerance"].rstrip("%")) / 100,
               "fail_on": suite["fail_on"], **changes}
    return gate.Options(**options)


def judge(out: GateRun, run: Any, baseline: Any) -> None:
    """Which benches the suite's gate fails in ``run`` (and what a time gate would have failed)."""
    from kvctl.bench import gate

    verdicts = gate.compare(run, baseline, suite_options()).verdicts
    out.failed = [v.name for v in verdicts if v.failures]
    out.allocs_more = [v.name for v in verdicts if v.allocs == "more"]
    out.time_failed = [v.name for v in gate.compare(run, baseline, suite_options(fail_on="time")).verdicts
                       if v.failures]


def timed_gate_run(until: float | None, *args: Any) -> GateRun | None:
    """``gate_run(*args)``, or None when the time given to the measurement is over."""
    if until is not None and time.time() > until:
        return None
    return gate_run(*args)


def make_run(path: Path, args: list[str]) -> dict[str, float]:
    """A run saved without a gate; its instructions per op by bench."""
    from kvctl.bench.results import Run

    proc = subprocess.run(kvctl(*args, "-o", str(path), "-q"), cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"gate_bench: {' '.join(args)} failed: {proc.stderr.strip()[-300:]}")
    counts = {r.bench: r.get("instr_per_op") for r in Run.load(str(path)).rows() if r.workload == "gridkv"}
    if any(v is None for v in counts.values()):
        sys.exit("gate_bench: no instructions/op in the run (is valgrind installed?)")
    return counts


def caught(run: GateRun, tolerance: float) -> bool:
    """Would the instruction gate alone have failed this saved run at ``tolerance``?"""
    from kvctl.bench import gate
    from kvctl.bench.results import Run

    if not run.path.exists():
        return False
    options = suite_options(instr_tolerance=tolerance, fail_on="instructions")
    return gate.compare(Run.load(str(run.path)), Run.load(str(run.base)), options).failed


def esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(esc(str(c)) for c in row) + " |" for row in rows]
    return [*out, ""]


def spread(runs: list[GateRun], what: str, bench: str) -> str:
    values = [v for r in runs if (v := getattr(r, what).get(bench)) is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo:,.1f} … {hi:,.1f} ({(hi - lo) / lo:.2%})" if lo else f"{lo:g} … {hi:g}"


def spins(level: float, base: dict[str, float], cal: dict[str, dict[str, float]]) -> dict[str, int]:
    """Loop iterations per 100 gets and per 100 sets adding at least ``level`` to every bench.

    ``cal["get"]`` / ``cal["set"]``: what 100 iterations per get / per set add to each bench's
    instructions per op.  Get and mixed get exactly ``level``; set at least ``level``.
    """
    spin_get = level * base["get"] / cal["get"]["get"] * 100
    for_set = level * base["set"] / cal["set"]["set"]
    for_mixed = (level * base["mixed"] - spin_get / 100 * cal["get"]["mixed"]) / cal["set"]["mixed"]
    return {"get": round(spin_get), "set": round(max(for_set, for_mixed) * 100)}


def injected(spin: dict[str, int], base: dict[str, float], cal: dict[str, dict[str, float]]) -> dict[str, float]:
    """The share of each bench's instructions that ``spin`` adds, by the calibration."""
    return {b: (spin["get"] * cal["get"][b] + spin["set"] * cal["set"][b]) / 100 / base[b] for b in BENCHES}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="gate runs on unchanged code, machine as it is")
    ap.add_argument("--hog-runs", type=int, default=10, help="gate runs on unchanged code beside a CPU hog")
    ap.add_argument("--detect-runs", type=int, default=20, help="gate runs per injected variant")
    ap.add_argument("--cost-runs", type=int, default=3, help="gate runs timed alone at the end")
    ap.add_argument("--parallel", type=int, default=2, help="gate runs at a time")
    ap.add_argument("--minutes", type=float, help="start no gate run after this many minutes (the report "
                    "then counts the runs that were made)")
    ap.add_argument("--regenerate-baseline", action="store_true",
                    help=f"first write {BASELINE} with the documented command (after a change in what is counted)")
    ap.add_argument("--write", type=Path)
    ap.add_argument("--keep", help="copy the saved runs (and what the report needs) into this folder")
    ap.add_argument("--report-from", type=Path, help="write the report from a --keep folder, measuring nothing")
    ap.add_argument("--add-to", type=Path, help="make these runs in addition to those kept in this --keep folder "
                    "(a run cut short by --minutes), keep them all there and report on them all")
    args = ap.parse_args()
    if args.report_from:
        state = _kept(args.report_from)
        from kvctl.bench.results import Run

        for r in [r for group in state[2:5] for r in group] + [r for d in state[7] for r in d[3]]:
            if r.path.exists():
                judge(r, Run.load(str(r.path)), Run.load(str(r.base)))
        return _write(args, _report(args, *state))
    if shutil.which("valgrind") is None:
        sys.exit("gate_bench: valgrind is not installed")
    from kvctl.registry import schemes

    if "probe" not in schemes():
        sys.exit("gate_bench: the probe plugin is not installed (pip install -e tests/bench_plugin)")
    from kvctl.bench.results import Run

    command = "python bench/gate_bench.py " + " ".join(sys.argv[1:])
    started = dt.datetime.now(dt.UTC)
    tmp = Path(tempfile.mkdtemp(prefix="kvctl-gate-bench-"))
    earlier = _kept(args.add_to) if args.add_to else None
    tag = f"add{started:%H%M%S}-" if earlier else ""  # file names of this pass beside the kept ones
    suite = ["--suite", SUITE]

    def probe(options: str = "") -> list[str]:
        return [f"{LABEL}=probe://ci{'?' + options if options else ''}", *suite]

    def report(future: Future[GateRun | None], label: str) -> None:
        run = future.result()
        if run is None:
            return
        print(f"{label}: rc {run.rc}, {run.wall_s:.1f} s, failed {run.failed or '-'}", flush=True)

    try:
        until = time.time() + args.minutes * 60 if args.minutes else None
        with ThreadPoolExecutor(max(1, args.parallel)) as pool:
            # the probe's baseline and calibration first: the variants need them
            if earlier is not None:
                # the same conditions as the kept runs, judged against the same probe baseline:
                # counts drift by a few tenths of a percent between passes, enough to change the spins
                base, cal = earlier[5], earlier[6]
                base_path = args.add_to / "probe-base.json"
                variants: list[tuple[str, str, dict[str, float] | None]] = [
                    (name, options, share) for name, options, share, _runs in earlier[7]]
            else:
                base, cal, base_path = _probe_baseline(pool, tmp, probe, args.regenerate_baseline, suite)
                variants = []
                for level in LEVELS:
                    spin = spins(level, base, cal)
                    variants.append((f"+{level:.0%} CPU work", f"spin_get={spin['get']}&spin_set={spin['set']}",
                                     injected(spin, base, cal)))
                variants.append(("one extra 2-tuple per op", "tuple=1", None))
            # round after round, one run of every condition each: a run stopped by --minutes leaves
            # every condition with about the same number of runs
            unchanged: list[Future[GateRun | None]] = []
            futures: dict[str, list[Future[GateRun | None]]] = {options: [] for _n, options, _s in variants}
            for i in range(max(args.runs, args.hog_runs, args.detect_runs)):
                for hog, count in ((False, args.runs), (True, args.hog_runs)):
                    if i < count:
                        name = "unchanged + CPU hog" if hog else "unchanged"
                        f = pool.submit(timed_gate_run, until, name, tmp / f"{tag}{'hog' if hog else 'idle'}{i}.json",
                                        suite, ROOT / BASELINE, hog)
                        f.add_done_callback(partial(report, label=f"{name} {i + 1}"))
                        unchanged.append(f)
                if i < args.detect_runs:
                    for name, options, _share in variants:
                        f = pool.submit(timed_gate_run, until, name, tmp / f"{tag}{options}-{i}.json", probe(options),
                                        base_path)
                        f.add_done_callback(partial(report, label=f"{name} {i + 1}"))
                        futures[options].append(f)
            runs_unchanged = [r for f in unchanged if (r := f.result()) is not None]
            detect = [(name, options, share, [r for f in futures[options] if (r := f.result()) is not None])
                      for name, options, share in variants]
        idle = [r for r in runs_unchanged if r.what == "unchanged"]
        hog_runs = [r for r in runs_unchanged if r.what != "unchanged"]
        # 3. the gate's own cost, alone
        cost = [gate_run("cost", tmp / f"{tag}cost{i}.json", suite, ROOT / BASELINE) for i in range(args.cost_runs)]
        if earlier is not None:
            command, started, idle, hog_runs, cost, detect = _added(earlier, command, idle, hog_runs, cost, detect)
        baseline = Run.load(str(ROOT / BASELINE))
        machine = baseline.machine()
        # the saved runs, to write the report again without measuring (--report-from)
        saved = args.add_to or (Path(args.keep) if args.keep else None)
        if saved is not None:
            shutil.copytree(tmp, saved, dirs_exist_ok=True)
            state = (command, started, idle, hog_runs, cost, base, cal, detect, machine)
            with open(saved / "state.pickle", "wb") as out:
                pickle.dump(state, out)
        lines = _report(args, command, started, idle, hog_runs, cost, base, cal, detect, machine)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _write(args, lines)


def _probe_baseline(pool: ThreadPoolExecutor, tmp: Path, probe: Callable[[str], list[str]], regenerate: bool,
                    suite: list[str]) -> tuple[dict[str, float], dict[str, dict[str, float]], Path]:
    """The probe's instructions/op with nothing injected, what one spin per get / per set adds,
    and the saved run the variants are judged against."""
    regenerated = pool.submit(make_run, Path(BASELINE), suite) if regenerate else None
    first = {op: pool.submit(make_run, tmp / f"probe-{op}.json", probe(f"spin_{op}=100" if op else ""))
             for op in ("", "get", "set")}
    if regenerated is not None:
        print(f"{BASELINE} regenerated: {regenerated.result()}", flush=True)
    base = first[""].result()
    cal = {op: {b: first[op].result()[b] - base[b] for b in BENCHES} for op in ("get", "set")}
    base_path = tmp / "probe-base.json"
    shutil.copy(tmp / "probe-.json", base_path)
    print(f"baseline {base}, calibration {cal}", flush=True)
    return base, cal, base_path


def _kept(folder: Path) -> tuple[Any, ...]:
    """The state a --keep folder holds, its run files found in that folder."""
    with open(folder / "state.pickle", "rb") as fh:
        state = pickle.load(fh)
    for _n, _o, _s, runs in state[7]:
        for r in runs:
            r.path, r.base = folder / r.path.name, folder / r.base.name
    for group in state[2:5]:
        for r in group:
            r.path = folder / r.path.name
    return tuple(state)


Detect = list[tuple[str, str, dict[str, float] | None, list[GateRun]]]


def _added(earlier: tuple[Any, ...], command: str, idle: list[GateRun], hog_runs: list[GateRun],
           cost: list[GateRun], detect: Detect) -> tuple[Any, ...]:
    """The kept runs and this pass's together (``--add-to``: the same variants, judged against the
    same probe baseline)."""
    old_command, started, old_idle, old_hog, old_cost, _base, _cal, old_detect, _machine = earlier
    merged = [(name, options, share, old + new[3])
              for (name, options, share, old), new in zip(old_detect, detect, strict=True)]
    return (f"{old_command}; then {command}", started, old_idle + idle, old_hog + hog_runs, cost or old_cost,
            merged)


def _write(args: argparse.Namespace, lines: list[str]) -> int:
    text = "\n".join(lines) + "\n"
    if args.write:
        args.write.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def deviation(runs: list[GateRun], base: Path, bench: str) -> float | None:
    """The largest |change| of a bench's instructions/op from the baseline over ``runs``."""
    from kvctl.bench.results import Run

    rows = {r.bench: r.get("instr_per_op") for r in Run.load(str(base)).rows() if r.workload == "gridkv"}
    ref = rows.get(bench)
    values = [v for r in runs if (v := r.instr.get(bench)) is not None]
    if not ref or not values:
        return None
    return max(abs(v / ref - 1) for v in values)


def _report(args: argparse.Namespace, command: str, started: dt.datetime, idle: list[GateRun],
            hog_runs: list[GateRun], cost: list[GateRun], base: dict[str, float], cal: dict[str, dict[str, float]],
            detect: list[tuple[str, str, dict[str, float] | None, list[GateRun]]],
            machine: dict[str, Any]) -> list[str]:
    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    ended = dt.datetime.now(dt.UTC)
    everything = idle + hog_runs
    loads = [r.load for r in everything + [r for _n, _o, _s, runs in detect for r in runs]]
    tolerance = tomllib.loads((ROOT / SUITE).read_text())["suite"].get("instr_tolerance", "2%")
    lines = [f"<!-- generated by: {command} -->", "# The CI performance gate: false alarms and detection", "",
             f"Command: `{command}`, {started:%Y-%m-%d %H:%M}–{ended:%H:%M} UTC; Python {platform.python_version()}, "
             f"{valgrind}, {os.cpu_count()} CPUs ({machine.get('cpu_model', '?')}).  The machine was shared with "
             f"other work the whole time (load average {min(loads):.1f}–{max(loads):.1f} at the start of the gate "
             f"runs; {args.parallel} gate runs at a time): a noisy CI neighbour.  That is a fair condition for "
             "this gate, because instruction and allocation counts do not depend on load; only the wall times do.  "
             f"The gate fails on instructions/op beyond {tolerance} and on allocations (bench/ci/suite-ci.toml); "
             "times are reported, not gated.", "",
             "## False alarms on unchanged code", "",
             f"`kvctl bench --suite {SUITE} --baseline {BASELINE}` (what tests/run.sh runs): {len(idle)} runs on the "
             f"machine as it was and {len(hog_runs)} beside a CPU hog (`python -c 'while 1: pass'`, one per run, "
             "started and ended by its pid), interleaved.  \"Time gate\": the same saved runs judged with "
             "`--fail-on time` (offline, `kvctl.bench.gate.compare`).", ""]
    rows = []
    for what, runs in (("unchanged", idle), ("unchanged + CPU hog", hog_runs), ("all", everything)):
        if not runs:
            continue
        walls = [r.wall_s for r in runs]
        rows.append([what, len(runs), f"{sum(r.rc != 0 for r in runs)}", f"{sum(bool(r.failed) for r in runs)}",
                     f"{sum(bool(r.time_failed) for r in runs)}",
                     f"{statistics.median(walls):.1f} ({min(walls):.1f}–{max(walls):.1f})"])
    lines += table(["condition", "runs", "gate failed (exit ≠ 0)",
                    f"failed, judged again against {BASELINE} as committed", "a time gate would have failed",
                    "wall s, median (range)"], rows)
    if args.report_from:
        lines += [f"Written from the runs kept in `{args.report_from}` (`--report-from`): the exit codes are the "
                  f"gate's at the time; the runs are judged again against the {BASELINE} committed now.", ""]
    lines += ["Spread of the gated figures over those runs (min … max, relative range), and the largest "
              "difference of instructions/op from the committed baseline: the noise a tolerance must clear.", ""]
    body = []
    for b in BENCHES:
        dev = deviation(everything, ROOT / BASELINE, b)
        body.append([f"gridkv.{b}@memory", spread(everything, "instr", b),
                     "-" if dev is None else f"{dev:.2%}", spread(everything, "allocs", b)])
    lines += table(["bench", "instructions/op", "largest change from the baseline", "allocs/op"], body)
    failing = [r for r in everything if r.rc != 0]
    for r in failing:
        lines.append(f"- {r.what}: exit {r.rc}: {r.message}")
    if failing:
        lines.append("")
    if cost:
        walls = [r.wall_s for r in cost]
        lines += ["## What the gate costs", "",
                  f"The same gate command run {len(cost)} times after the runs above had finished (the machine "
                  f"still shared with other work, load average {min(r.load for r in cost):.1f}–"
                  f"{max(r.load for r in cost):.1f}): wall clock median {statistics.median(walls):.1f} s "
                  f"(range {min(walls):.1f}–{max(walls):.1f} s), exit codes {sorted({r.rc for r in cost})}.", ""]
    lines += ["## Detection of injected regressions", "",
              "The same suite on `ci=probe://ci?OPTIONS` (tests/bench_plugin: the memory store behind a wrapper; "
              "the wrapper's own cost is in the baseline), against a baseline of `probe://ci` with nothing "
              f"injected; up to {args.detect_runs} gate runs per variant (the table counts those made).  "
              "Baseline instructions/op: "
              + ", ".join(f"{b} {base[b]:,.1f}" for b in BENCHES)
              + ".  Calibration (what 1 loop iteration per get / per set adds to each bench): "
              + "; ".join(f"{b} {cal['get'][b] / 100:,.1f} / {cal['set'][b] / 100:,.1f}" for b in BENCHES)
              + ".  `spin_get` and `spin_set` (iterations per 100 gets / sets) are solved so that get and mixed "
              "gain exactly the stated share and set at least that share (\"injected\", from the calibration); "
              "\"measured\": the median change of instructions/op over the runs; \"caught\": runs in which the gate "
              "failed that bench.", ""]
    head = ["injected", "URL options"]
    for b in BENCHES:
        head += [f"{b}: injected", f"{b}: measured", f"{b}: caught"]
    head += ["allocation gate saw it", "gate failed (exit 1)"]
    rows = []
    for name, options, share, runs in detect:
        row: list[Any] = [name, options]
        for b in BENCHES:
            name_b = f"gridkv.{b}@{LABEL}"
            changes = [(r.instr[b] or 0) / base[b] - 1 for r in runs if r.instr.get(b) is not None]
            row += ["-" if share is None else f"{share[b]:+.2%}",
                    f"{statistics.median(changes):+.2%}" if changes else "-",
                    f"{sum(name_b in r.failed for r in runs)}/{len(runs)}"]
        row.append(f"{sum(bool(r.allocs_more) for r in runs)}/{len(runs)}")
        row.append(f"{sum(r.rc == 1 for r in runs)}/{len(runs)}")
        rows.append(row)
    lines += table(head, rows)
    lines += ["A bench fails when its instructions/op rise beyond the suite's `instr_tolerance`, or its allocs/op "
              "beyond 2% (at least 0.5, always less than one whole object per op).", "",
              "## Other instruction tolerances (the same saved runs, judged offline)", "",
              "Runs the instruction comparison alone would fail at each `--instr-tolerance`: false alarms "
              "on the unchanged runs, detections of each injected variant.  A tolerance equal to the change "
              "to catch catches it about half the time (the measured change scatters around it), so catching "
              "2% every time needs a tolerance below 2% by more than the noise above.", ""]
    head = ["--instr-tolerance", f"false alarms ({len(everything)} unchanged runs)"]
    head += [name for name, _options, _share, _runs in detect]
    rows = []
    for tol in TOLERANCES:
        row = [f"{tol:.1%}", f"{sum(caught(r, tol) for r in everything)}"]
        row += [f"{sum(caught(r, tol) for r in runs)}/{len(runs)}" for _n, _o, _s, runs in detect]
        rows.append(row)
    lines += table(head, rows)
    return lines


if __name__ == "__main__":
    sys.exit(main())

"""What every script in bench/ shares: its command line, its clocks, peak memory, machine facts
and the Markdown report it prints and writes.

A script starts from ``parser(__doc__)`` (its own options plus the one output flag, ``--write
FILE``), times with ``interleave`` (variants called in turn, round after round, so drift and
bursts of load from other work on a shared machine hit every variant alike), ``lap`` (one timed
call) or ``run_process`` (a whole program to its exit, with its peak RSS), and ends with a
``Report``: the title, the exact command that made it, the machine's facts, then the script's
own tables, printed and written to ``--write`` when given.  Results are never typed by hand.

Per-operation costs with no variant to pair with (``Record()``, ``HLC.now()``) go through
``pyperf_us``: pyperf's own calibrated loops, in this process.  Paired variants stay on
``interleave``: pyperf runs one benchmark to its end before the next, which would turn the
scripts' within-round kvctl/raw comparison into a comparison across time.

bench/ is not a package: a script run as ``python bench/NAME.py`` has bench/ on ``sys.path``
and imports this module as ``_harness``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SERVICES_ENV = Path(os.environ.get("KVCTL_SERVICES_DIR", "/tmp/kvctl-services")) / "env"

Step = Callable[[int], object]  # one timed call; the argument is the round (fresh keys for writes)
AsyncStep = Callable[[int], Awaitable[object]]


# -- the command line ---------------------------------------------------------------------------
def parser(doc: str | None, *, raw: bool = False) -> argparse.ArgumentParser:
    """The script's parser: its docstring's first paragraph (all of it with ``raw``) as description,
    and the one output flag of every script, ``--write FILE``."""
    text = doc or ""
    ap = argparse.ArgumentParser(description=text if raw else " ".join(text.strip().split("\n\n")[0].split()),
                                 formatter_class=argparse.RawDescriptionHelpFormatter if raw
                                 else argparse.HelpFormatter)
    ap.add_argument("--write", type=Path, metavar="FILE",
                    help="also write the Markdown report to FILE (bench/results/NAME_RESULTS.md for the record)")
    return ap


def command(argv: Sequence[str] | None = None, *, prefix: Sequence[str] = ()) -> str:
    """The command that ran the calling script, as a user types it from the repository root
    (``argv``: the arguments when ``main`` was given its own; ``prefix``: e.g. ``nice -n 10``)."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join([*prefix, "python", str(shown), *args])


# -- clocks -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lap:
    """One timed call: elapsed seconds and CPU seconds (``cpu`` clock: this process by default)."""

    wall: float
    cpu: float


def lap(fn: Callable[[], object], cpu: Callable[[], float] = time.process_time) -> Lap:
    c0, t0 = cpu(), time.perf_counter()
    fn()
    return Lap(time.perf_counter() - t0, cpu() - c0)


@dataclass
class Samples:
    """µs per operation of one variant, one sample per timed call (CPU too when it was asked for)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.wall)

    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def fastest(self) -> float:
        """The fastest call: load from elsewhere only ever adds time."""
        return min(self.wall)


def ratio(ours: Samples, theirs: Samples) -> float:
    """Median of per-round ratios: both calls of a round met the same load, so this is steadier
    than a ratio of medians on a shared machine."""
    return statistics.median(a / b for a, b in zip(ours.wall, theirs.wall, strict=True))


Groups = Mapping[str, Any] | Sequence[Mapping[str, Any]]


def _schedule(groups: Groups, rounds: int, alternate: bool) -> Iterator[tuple[int, str]]:
    """(round, variant) in timing order: each round sweeps every group; inside a group the
    variants run back to back, in reverse order every other round when ``alternate``."""
    sweep = [groups] if isinstance(groups, Mapping) else list(groups)
    for r in range(rounds):
        for group in sweep:
            names = list(group)
            yield from ((r, name) for name in (names[::-1] if alternate and r % 2 else names))


def _flat(groups: Groups) -> dict[str, Any]:
    return dict(groups) if isinstance(groups, Mapping) else {k: v for g in groups for k, v in g.items()}


def _ops(per_call: int | Mapping[str, int], name: str) -> int:
    return per_call if isinstance(per_call, int) else per_call[name]


def interleave(groups: Mapping[str, Step] | Sequence[Mapping[str, Step]], rounds: int, *,
               per_call: int | Mapping[str, int] = 1, repeat: int = 1, warmup: int = 0, alternate: bool = True,
               cpu: Callable[[], float] | None = None, collect: bool = False) -> dict[str, Samples]:
    """Time every variant once per round, the variants interleaved (see ``_schedule``).

    A sample is ``repeat`` calls of ``step(round)`` divided by ``repeat * per_call`` operations,
    in µs per operation.  ``warmup`` untimed calls of each variant come first (round numbers
    ``rounds``, ``rounds + 1``...: give set-style steps one spare round of fresh keys);
    ``collect`` runs the garbage collector before every timed call; ``cpu`` is the CPU clock to
    report beside the elapsed time (``time.process_time``, ``time.thread_time``), if any.
    """
    steps = _flat(groups)
    for step in steps.values():
        for w in range(warmup):
            step(rounds + w)
    out = {name: Samples() for name in steps}
    for r, name in _schedule(groups, rounds, alternate):
        step, ops = steps[name], _ops(per_call, name) * repeat
        if collect:
            gc.collect()
        c0, t0 = cpu() if cpu else 0.0, time.perf_counter()
        for _ in range(repeat):
            step(r)
        out[name].wall.append((time.perf_counter() - t0) / ops * 1e6)
        if cpu:
            out[name].cpu.append((cpu() - c0) / ops * 1e6)
    return out


async def interleave_async(groups: Mapping[str, AsyncStep] | Sequence[Mapping[str, AsyncStep]], rounds: int, *,
                           per_call: int | Mapping[str, int] = 1, warmup: int = 0,
                           alternate: bool = True) -> dict[str, Samples]:
    """``interleave`` for coroutine functions, on the running event loop (elapsed time only)."""
    steps = _flat(groups)
    for step in steps.values():
        for w in range(warmup):
            await step(rounds + w)
    out = {name: Samples() for name in steps}
    for r, name in _schedule(groups, rounds, alternate):
        t0 = time.perf_counter()
        await steps[name](r)
        out[name].wall.append((time.perf_counter() - t0) / _ops(per_call, name) * 1e6)
    return out


_RUNNER: Any = None


def pyperf_us(name: str, fn: Callable[[], object], *, loops: int, values: int = 7, warmups: int = 1) -> float:
    """Median µs of one call of ``fn``: pyperf's loop in this process (``--in-process``), ``values``
    values of ``loops`` calls each after ``warmups`` values, its summary kept off stdout."""
    global _RUNNER
    import pyperf

    if _RUNNER is None:  # pyperf allows one Runner per process
        _RUNNER = pyperf.Runner(processes=1)
        _RUNNER.parse_args(["--in-process", "--quiet"])
    args = _RUNNER.args
    args.loops, args.values, args.warmups = loops, values, warmups
    with contextlib.redirect_stdout(sys.stderr):
        bench = _RUNNER.bench_func(name, fn)
    return float(bench.median()) * 1e6


# -- processes and memory -----------------------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    """A program run to its exit: elapsed seconds, its own CPU seconds and peak RSS (``wait4``)."""

    returncode: int
    seconds: float
    cpu: float
    rss_mb: float
    stdout: str
    stderr: str


def run_process(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, check: bool = True,
                capture: bool = True) -> Proc:
    """Run ``cmd`` with its output captured in files (so the clock stops at its exit, not at the
    end of a pipe), or thrown away (``capture=False``).  ``check``: exit with the program's
    stderr when it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sink: Any = out if capture else subprocess.DEVNULL
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), env=None if env is None else dict(env), stdout=sink,
                                stderr=err if capture else subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        done = Proc(proc.returncode, seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                    out.read().decode(errors="replace"), err.read().decode(errors="replace"))
    if check and done.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


@contextlib.contextmanager
def private_postgres(cpu: int | None = None) -> Iterator[str]:
    """A PostgreSQL of this run's own with the server's default durability (fsync on, every
    commit waits for its WAL flush; the test services turn that off), started by
    tests/services/postgres.sh in a temporary directory, under ``taskset -c cpu`` when given
    (the postmaster and every backend it forks then run there); its URL.  Stopped and removed after."""
    import shutil

    service = REPO / "tests" / "services" / "postgres.sh"
    home = tempfile.mkdtemp(prefix="kvctl-pg-bench-", dir="/tmp")
    os.chmod(home, 0o755)  # the postgres user must reach its data directory
    env = {**os.environ, "KVCTL_SERVICES_DIR": home, "KVCTL_POSTGRES_SERVER_OPTIONS": ""}
    pin = [] if cpu is None else ["taskset", "-c", str(cpu)]
    try:
        out = subprocess.run([*pin, "bash", str(service), "start"], env=env, capture_output=True, text=True,
                             check=False)
        if out.returncode != 0:
            raise SystemExit(f"could not start PostgreSQL:\n{out.stderr}")
        yield out.stdout.strip().split("=", 1)[1]
    finally:
        subprocess.run(["bash", str(service), "stop"], env=env, capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def services_env() -> dict[str, str]:
    """The test servers' variables (tests/services.sh writes them), this process's own winning."""
    found: dict[str, str] = {}
    if SERVICES_ENV.exists():
        for line in SERVICES_ENV.read_text().splitlines():
            parts = shlex.split(line)
            if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
                key, _, value = parts[1].partition("=")
                found[key] = value
    return {k: os.environ.get(k, v) for k, v in found.items()} | {
        k: v for k, v in os.environ.items() if k.startswith("KVCTL_TEST_")}


# -- the report ---------------------------------------------------------------------------------
def machine(extra: str = "") -> str:
    """One line of machine facts (the same ones ``kvctl bench`` records)."""
    from kvctl.bench.results import machine_info  # here: a child process measuring its RSS imports none of it

    m = machine_info(None)
    pinned = "" if m["cpu_pinning"] == "none" else f", this process pinned to CPU {m['cpu_pinning']}"
    return (f"Machine: {m['cpu_model']} ({m['arch']}), {m['cpu_count']} CPUs{pinned}, {m['platform']}, "
            f"Python {m['python']}{extra}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.")


def load() -> float:
    return os.getloadavg()[0]


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], align: Sequence[str] | None = None) -> list[str]:
    """A Markdown table; ``align`` holds one ``---``, ``---:`` or ``:-:`` a column."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align or ["---"] * len(header)) + "|"]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


class Report:
    """A results file: title, the command that made it, machine facts, then the script's lines.

    ``load_start`` is taken when the report is made: make it before measuring."""

    def __init__(self, title: str, *, cmd: str | None = None, facts: str = "") -> None:
        self.title, self.cmd, self.facts = title, cmd or command(), facts
        self.load_start = load()
        self.started = time.monotonic()
        self.lines: list[str] = []

    def add(self, *lines: str) -> Report:
        self.lines.extend(lines)
        return self

    def text(self) -> str:
        head = [f"<!-- generated by `{self.cmd}`: do not edit by hand -->", f"# {self.title}", "",
                "```", self.cmd, "```", "",
                f"{machine(self.facts)} Load average (1 min) {self.load_start:.1f} at the start, "
                f"{load():.1f} at the end (other work shares the machine); the whole run took "
                f"{time.monotonic() - self.started:.0f} s.", ""]
        return "\n".join(head + self.lines).rstrip("\n") + "\n"

    def finish(self, write: Path | None) -> str:
        """Print the report and write it to ``write`` when given; the text."""
        text = self.text()
        print(text)
        if write is not None:
            write.write_text(text)
            print(f"wrote {write}", file=sys.stderr)
        return text


# -- the change workload the sync and snapshot scripts share ------------------------------------
CHANGES = 1000  # per round: 700 overwrites, then 300 deletes of random existing keys, one call each
UPDATES = 700


def fill(store: Any, keys: int) -> None:
    """``keys`` keys ``key-%08d`` with 100 random bytes each (seeded: every run writes the same),
    ``set_many`` of 10,000 at a time, on an open sync store."""
    import random

    from kvctl.store import Record

    rng = random.Random(1)
    for start in range(0, keys, 10_000):
        store.set_many([Record(b"key-%08d" % i, rng.randbytes(100)) for i in range(start, min(keys, start + 10_000))])


def change(store: Any, rng: Any, keys: int) -> None:
    """One round of changes at the source, as an application makes them: a call per change."""
    for i in range(CHANGES):
        key = b"key-%08d" % rng.randrange(keys)
        if i < UPDATES:
            store.set(key, rng.randbytes(100))
        else:
            store.delete(key)


def same_records(a: str, b: str) -> bool:
    """Whether two sync stores hold the same records (values, expiries, versions), page by page."""
    from kvctl.registry import open_url

    with open_url(a) as x, open_url(b) as y:
        return all(p.records == q.records for p, q in zip(x.scan(batch_size=10_000), y.scan(batch_size=10_000),
                                                           strict=True))

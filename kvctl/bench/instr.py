"""Instructions per operation, counted by valgrind: the gate's deterministic CPU measure.

Time on a shared two-core machine moves by 1.4x and more between runs; the number of machine
instructions an operation executes does not depend on load, so a rise of it beyond a small
tolerance is a regression in kvctl's (or the plugin's, or its driver's) CPU work.

Method: after pyperf has timed a job, one process runs under callgrind
(``valgrind --tool=callgrind --dump-before=getppid``).  Callgrind writes its counters to a new
file every time the process enters libc's ``getppid``, which this module calls (``os.getppid``)
as a marker and which nothing else here calls, so the run is cut into windows.  For each bench:
the store is set up, a warm-up plan runs, the plans are built, then four windows run N ops and
2N ops on the store, then the same plans on the harness's empty store; instructions per op are
``((2N window - N window) - (the same on the empty store)) / N``: every fixed cost (start-up,
imports, the set-up, the loop's own cost, the marker) cancels.

Pinned, so the same code gives the same count: ``PYTHONHASHSEED=0`` (str and bytes hashes
decide dict probing), ``python -P`` (the current directory is not on ``sys.path``), the garbage
collector paused inside the windows, new-key ids from a fixed base, a fresh store (or fixed
keys under the run's prefix), N fixed by the parameters (never by timing), and the wall clock
of the stores' version stamps (:mod:`kvctl.hlc`): it advances a fixed ``HLC_STEP_NS`` per read,
from a whole millisecond.
Under callgrind a write takes about a millisecond, so with the real clock whether a write lands
in the same millisecond as the last one (the HLC's counter path, a few dozen instructions more)
depends on the machine's load: GridKV Mixed moved by 2% between an idle and a loaded machine.
The fixed step puts writes where they are at native speed (hundreds per millisecond).

The counting process's allocator is pinned too.  What the process did before the windows (the
environment, the interpreter's and the installation's paths, what ``site`` and entry-point
discovery imported) decides where its heap blocks lie, and two allocator events cost instructions
depending on that layout: glibc growing a big block (a store's change log, a list) in place or
moving it with a user-space copy, and pymalloc's pools filling and emptying at different points.
The first moved GridKV Mixed by 2.2% between two installations of the same commit;
``MALLOC_MMAP_THRESHOLD_=4096`` makes glibc serve every block of 4 KiB or more by mmap (and turns off
its self-adjusting threshold), so such a block grows by ``mremap`` in the kernel, which is not
counted.  The child also reads a copy of the job under a fixed name in a fixed-length directory
(``/tmp/kvctl-instr-XXXXXXXX``), so where the job file lies does not shift its heap.  It reads the
same byte code every time: a native process first byte-compiles the packages the count imports (as
``pip install`` does; a fresh editable checkout has no ``.pyc`` yet) and the counting process never
writes any (``PYTHONDONTWRITEBYTECODE``): the first count of a fresh checkout compiled kvctl's
modules inside the process and differed from every later one by about 0.1%.  The second
(pymalloc) remains: the same commit and Python build count within about 0.3% across installations,
exactly the same in one installation; a change to any module the counting process imports (even
one no window runs) shifts its heap the same way, and moved GridKV set by up to 0.6%.

Budget: a bench whose ops cost far more than kvctl's own work (libSQL's local client opens a
SQLite connection per call: ~500k instructions an op, 50x a memory store's set) would keep a
full run waiting minutes under valgrind, so it is counted over fewer ops.  Ops 101-200 of the
warm-up (N ops on the store) are a window of their own; when it shows more than ``OP_BUDGET``
instructions per op, N is halved (not below ``MIN_OPS``) until the N-op window fits
``N x OP_BUDGET``, the rest of the warm-up is left out, and the bench's N and 2N windows use that
N.  The choice comes from a count, not from time, so the same code picks the same N on any
machine; the N used is saved beside each count, and the gate compares counts over the same N
only.  A bench within the budget (kvctl's own stores, SQLite) is counted over N as given, its
warm-up the same N ops in the same order as before.

What it counts: user-space instructions of the client process (kvctl, the plugin, its driver,
the interpreter), not the kernel (system calls, fsync) and not a server's work.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvctl.bench.kernels import Plan

HLC_STEP_NS = 2_000          # what the pinned version clock advances per read (a native write's time)
MARK_FUNCTION = "getppid"    # the C function whose entry cuts callgrind's windows
ID_BASE = 2 * 10**15         # new-key ids of this pass: as long as the allocation pass's, not the same keys
# MALLOC_MMAP_THRESHOLD_: glibc serves every block of 4 KiB or more by mmap, so growing a big list
# (a store's change log) is an mremap in the kernel, never a copy in user space that happens or not
# depending on what the process allocated before (it moved GridKV Mixed by 2.2% between installations)
# PYTHONDONTWRITEBYTECODE: a count never leaves .pyc files that change what the next one reads
PINNED_ENV = {"PYTHONHASHSEED": "0", "MALLOC_MMAP_THRESHOLD_": "4096", "PYTHONDONTWRITEBYTECODE": "1"}
TIMEOUT_S = 1200
TMP_BASE = "/tmp"            # where the counting process's files go (valgrind runs on Linux)
WINDOWS = 4                  # N on the store, 2N on the store, N and 2N on the empty store
OUT_NAME = "callgrind.out"   # callgrind's file in the counting process's directory; dump k is OUT_NAME.k
# instructions per op beyond which a bench's N is halved: about twice the costliest GridKV op of
# SQLite (set, ~105k; memory's set ~11k), well under libSQL's local ops (~470k-650k: N = 250)
OP_BUDGET = 200_000
MIN_OPS = 50                 # a bench's N is never halved below this
PROBE_OPS = 100              # warm-up ops whose count prices an op (after as many that absorb one-time costs)


def valgrind() -> str | None:
    """The valgrind executable, or None when it is not installed."""
    return shutil.which("valgrind")


def tool() -> dict[str, str]:
    """What the run used to count instructions, for the record (``{"missing": why}`` without it)."""
    path = valgrind()
    if path is None:
        return {"missing": "valgrind is not installed"}
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return {"missing": f"valgrind does not run: {exc}"}
    return {"tool": f"{version or 'valgrind'} callgrind"}


def command(valgrind_path: str, out_file: str, args: list[str]) -> list[str]:
    """The command that runs this module's counting process under callgrind."""
    return [valgrind_path, "--tool=callgrind", "-q", f"--dump-before={MARK_FUNCTION}",
            f"--callgrind-out-file={out_file}", "--dump-instr=no", "--dump-line=no",
            sys.executable, "-P", "-m", "kvctl.bench.instr", *args]


def read_total(path: Path) -> int:
    """The instructions (Ir) of one callgrind dump."""
    with open(path) as fh:
        for line in fh:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise ValueError(f"{path.name} has no summary line")


def ops_within_budget(n: int, per_op: float | None) -> int:
    """N for a bench whose warm-up cost ``per_op`` instructions per op: ``n``, halved while the
    N-op window exceeds ``n x OP_BUDGET`` (never below ``MIN_OPS``); ``n`` when unknown."""
    if per_op is None:
        return n
    m = n
    while m // 2 >= MIN_OPS and m * per_op > n * OP_BUDGET:
        m //= 2
    return m


def measure_job(job_path: str, names: list[str], n: int
                ) -> tuple[dict[str, float], dict[str, int], dict[str, str]]:
    """Instructions per op of each named bench of the job (per unit: ops / ``inner``), the N each
    was counted over (``n``, or less for a bench beyond the budget), and the one-line reason for
    each bench that could not be counted."""
    path = valgrind()
    if path is None:
        return {}, {}, {}  # the run records that valgrind is missing once; the gate says so
    # a fixed-length directory and relative names: the paths the child reads are the same length
    # whatever TMPDIR and the job's own directory are (their strings shift the child's heap)
    with tempfile.TemporaryDirectory(prefix="kvctl-instr-", dir=TMP_BASE if os.path.isdir(TMP_BASE) else None) as tmp:
        out_file = Path(tmp) / OUT_NAME
        plan_file = Path(tmp) / "windows.json"
        shutil.copyfile(job_path, Path(tmp) / "job.json")
        env = {**os.environ, **PINNED_ENV}
        try:
            # natively, with the counting process's environment and sys.path: its byte code up to date
            compiled = subprocess.run([sys.executable, "-P", "-m", "kvctl.bench.instr", "--compile", "job.json"],
                                      capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=tmp,
                                      stdin=subprocess.DEVNULL)
            if compiled.returncode != 0:  # the count still runs; it may compile what it imports itself
                last = (compiled.stderr.strip().splitlines() or ["no message"])[-1]
                sys.stderr.write(f"kvctl: warning: byte-compiling before the instruction count failed: {last}\n")
            proc = subprocess.run(command(path, str(out_file), ["job.json", str(n), "windows.json", *names]),
                                  capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=tmp,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return {}, {}, dict.fromkeys(names, f"no result within {TIMEOUT_S} s under valgrind")
        try:
            done = json.loads(plan_file.read_text())
        except (OSError, ValueError):
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            reason = lines[-1].strip() if lines else f"valgrind exited with status {proc.returncode}"
            return {}, {}, dict.fromkeys(names, reason[:300])
        dumps = sorted(out_file.parent.glob(out_file.name + ".*"))
        errors: dict[str, str] = dict(done["errors"])
        if len(dumps) != done["marks"]:
            # something in a window called the marker too: the windows cannot be told apart
            return {}, {}, dict.fromkeys(names, f"{len(dumps)} callgrind windows for {done['marks']} marks "
                                                f"(the store calls {MARK_FUNCTION}?)")
        counts: dict[str, float] = {}
        ops: dict[str, int] = {}
        for name, (first, inner, m) in done["windows"].items():
            small, large, empty_small, empty_large = (read_total(Path(f"{out_file}.{first + i}"))
                                                      for i in range(WINDOWS))
            counts[name] = round(((large - small) - (empty_large - empty_small)) / m / max(1, inner), 1)
            ops[name] = m
        return counts, ops, errors


def _count(job_path: str, n: int, plan_file: str, names: list[str]) -> None:
    """Inside valgrind: run the windows of each bench, record which dump files they are."""
    from kvctl.bench.job import Job
    from kvctl.bench.runner import describe, open_ctx
    from kvctl.bench.workloads import get

    job = Job.load(job_path)
    specs = {s.name: s for s in job.benches}
    pin_version_clock()
    windows: dict[str, tuple[int, int, int]] = {}
    errors: dict[str, str] = {}
    marks = 0

    def mark() -> None:
        nonlocal marks
        os.getppid()  # callgrind dumps its counters on entering getppid (see the module docstring)
        marks += 1

    ctx = open_ctx(job, None, url=job.instr_url or job.url)
    empty = open_ctx(job, "null-async" if ctx.target.is_async else "null")
    ctx.next_id = empty.next_id = ID_BASE
    value = ctx.value
    try:
        for name in names:
            spec = specs[name]
            bench = get(spec.workload).bench(spec.bench)
            try:
                if bench.setup is not None:
                    bench.setup(ctx)
                    bench.setup(empty)
                m = _warm_up(ctx, bench.plan(ctx, n), value, mark, lambda: marks)
                empty.target.run_plan(bench.plan(empty, m), value)
                runs = [(ctx, bench.plan(ctx, m)), (ctx, bench.plan(ctx, 2 * m)),
                        (empty, bench.plan(empty, m)), (empty, bench.plan(empty, 2 * m))]
                gc.collect()
                gc.disable()
                try:
                    mark()
                    first = marks + 1  # dump k holds what ran between marks k-1 and k
                    for c, plan in runs:
                        c.target.run_plan(plan, value)
                        mark()
                finally:
                    gc.enable()
                windows[name] = (first, max(1, bench.inner), m)
            except Exception as exc:
                errors[name] = describe(exc)
    finally:
        for c in (ctx, empty):
            try:
                c.close()
                c.target.close()
            except Exception:
                pass
    with open(plan_file, "w") as fh:
        json.dump({"windows": windows, "errors": errors, "marks": marks}, fh)


def _warm_up(ctx: Any, plan: Plan, value: bytes, mark: Callable[[], None], marks: Callable[[], int]) -> int:
    """Run the warm-up ``plan`` (specialised bytecode, caches) and return the N to count over.

    Its first ``PROBE_OPS`` ops absorb one-time costs, the next ``PROBE_OPS`` are a window of their
    own whose count gives the cost of an op; the rest of the plan runs only when N stays as given
    (the same ops in the same order as one plan), so a costly bench is not warmed up for N ops."""
    n = len(plan)
    probe = min(PROBE_OPS, n // 2)
    ctx.target.run_plan(_steps(plan, 0, probe), value)
    mark()
    ctx.target.run_plan(_steps(plan, probe, 2 * probe), value)
    mark()
    m = ops_within_budget(n, _dump_total(marks()) / probe if probe else None)
    if m == n:
        ctx.target.run_plan(_steps(plan, 2 * probe, n), value)
    return m


def _steps(plan: Plan, start: int, end: int) -> Plan:
    """Steps ``start`` to ``end`` of ``plan``."""
    from kvctl.bench.kernels import Plan

    return Plan(plan.keys[start:end], only=plan.only, codes=plan.codes[start:end],
                args=None if plan.args is None else plan.args[start:end], ttl_ms=plan.ttl_ms)


def _dump_total(index: int) -> float:
    """Instructions of callgrind's dump ``index`` of this process (0 outside valgrind: no budget)."""
    try:
        return read_total(Path(f"{OUT_NAME}.{index}"))
    except (OSError, ValueError):
        return 0.0


def pin_version_clock() -> None:
    """Make :mod:`kvctl.hlc`'s wall clock advance ``HLC_STEP_NS`` per read, from now on.

    A C-level counter, not a Python function, so a version stamp costs what it costs with the
    real clock; it starts at the next whole millisecond of the real time, so versions already in
    a store stay older.  Whole, not the real time itself: the HLC's counter restarts at every new
    millisecond and costs an int allocation once it passes 256 (CPython's small-int cache), so
    where in its millisecond the clock started decided how many writes of a window allocated,
    and moved GridKV Mixed (200 writes per 1000 ops, less than a millisecond of the fixed step)
    by up to 1% from one count to the next.
    """
    import itertools
    import time

    from kvctl import hlc

    start = (time.time_ns() // 1_000_000 + 1) * 1_000_000
    hlc._time_ns = itertools.count(start, HLC_STEP_NS).__next__


def compile_imports(job_path: str) -> None:
    """Byte-compile every non-standard package the counting process imports for this job (kvctl,
    the job's backend plugins and their drivers), so that process reads byte code and compiles
    nothing.  Unwritable directories are left as they are: they are compiled at every count alike."""
    import compileall

    from kvctl.bench.job import Job
    from kvctl.bench.runner import open_ctx  # noqa: F401  (imported for what it imports)
    from kvctl.bench.workloads import get  # noqa: F401
    from kvctl.registry import load
    from kvctl.url import StoreURL

    job = Job.load(job_path)
    for url in {job.instr_url or job.url, job.url}:
        # not a store URL, or a plugin that does not load: the count itself says so
        with contextlib.suppress(Exception):
            load(StoreURL.parse(url).scheme)
    tops = {name.partition(".")[0] for name in list(sys.modules)} - set(sys.stdlib_module_names)
    for top in sorted(tops):
        path = getattr(sys.modules.get(top), "__file__", None)
        if not path:
            continue  # built in, or a namespace package
        if os.path.basename(path) == "__init__.py":
            compileall.compile_dir(os.path.dirname(path), quiet=2)
        elif path.endswith(".py"):
            compileall.compile_file(path, quiet=2)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "--compile":
        compile_imports(args[1])
        return 0
    if len(args) < 3:
        sys.stderr.write("usage: valgrind --tool=callgrind ... python -P -m kvctl.bench.instr JOB.json N OUT.json "
                         "BENCH...\n")
        return 2
    job_path, n, plan_file, *names = args
    _count(job_path, int(n), plan_file, names)
    return 0


__all__ = ["ID_BASE", "MARK_FUNCTION", "OP_BUDGET", "command", "measure_job", "ops_within_budget", "tool",
           "valgrind"]

if __name__ == "__main__":
    sys.exit(main())

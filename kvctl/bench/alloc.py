"""Allocations per operation with memray: allocator calls, cumulative (like Go's ``-benchmem``).

Unlike Go, what is counted is calls into CPython's allocators and malloc: an object CPython
serves from one of its free lists (a 2-tuple, a float, an empty dict, a frame) is never seen
here.  Such a regression shows in the instruction count (:mod:`kvctl.bench.instr`) instead.

Method (reference, section 7): warm up; track N ops and then 2N ops with memray tracing the
Python allocators as well as malloc and friends; the difference divided by N removes every
fixed cost (tracker start-up, the loop's set-up); the same measurement of the same plan on the
harness's empty store is subtracted.  Allocation *records* are counted (memray's summary totals
count frees too).  The counts are identical run after run: nothing is sampled or timed.

The garbage collector is paused while tracking, so a collection landing in one window and not
the other cannot move the figures; plans (keys, batches) are built before tracking starts, from
a fixed key-id base (key lengths, hence bytes, identical in every run).  memray's Python-stack
profile hook is switched off inside the window: on CPython 3.11 a profile hook makes every
Python call materialize a frame object (and every C-method call a bound method), which would be
counted as the store's allocations; memray's allocator hooks still see every allocation.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from kvctl.bench.kernels import Plan
from kvctl.bench.workloads import Bench, Ctx

# New-key ids of the allocation pass: one fixed base, beyond any worker's pid-based range.
ID_BASE = 10**15


@dataclass(frozen=True)
class Allocs:
    allocs_per_op: float
    bytes_per_op: float


def _allocator_kinds() -> frozenset[int]:
    from memray import AllocatorType as A

    return frozenset(int(a) for a in (
        A.PYMALLOC_MALLOC, A.PYMALLOC_CALLOC, A.PYMALLOC_REALLOC, A.MALLOC, A.CALLOC, A.REALLOC,
        A.POSIX_MEMALIGN, A.ALIGNED_ALLOC, A.MEMALIGN, A.VALLOC, A.PVALLOC, A.MMAP))


def track(run: Callable[[], None]) -> tuple[int, int]:
    """(allocation records, bytes allocated) while ``run()`` executes."""
    import memray

    kinds = _allocator_kinds()
    fd, path = tempfile.mkstemp(prefix="kvctl-memray-", suffix=".bin")
    os.close(fd)
    os.unlink(path)  # memray refuses to overwrite an existing file
    gc.collect()
    gc.disable()
    try:
        with memray.Tracker(path, trace_python_allocators=True, memory_interval_ms=60_000):
            sys.setprofile(None)  # see the module docstring; memray restores its own on exit
            run()
    finally:
        gc.enable()
    count = total = 0
    try:
        reader = memray.FileReader(path)
        try:
            for rec in reader.get_allocation_records():
                if int(rec.allocator) in kinds:
                    count += 1
                    total += rec.size
        finally:
            reader.close()
    finally:
        os.unlink(path)
    return count, total


def ops_for(n: int, step_s: float | None, budget_s: float, floor: int = 50) -> int:
    """N for a store taking ``step_s`` (CPU seconds, :func:`cpu_step`) per op: ``n``, halved
    until the 4N ops of a measurement (warm-up N, N, 2N) fit in ``budget_s``.  Halving (not
    dividing) keeps N the same from run to run unless the store's speed changes by about 2x: N
    must not wander with timing noise, since amortized costs (a table resize, a page split) make
    the per-op figure depend on N."""
    if not step_s or step_s <= 0:
        return n
    while n > floor and 4 * n * step_s > budget_s:
        n //= 2
    return max(n, min(floor, n))


def cpu_step(ctx: Ctx, bench: Bench, n: int) -> float:
    """Seconds of this process's CPU per op of ``bench`` (a short probe of at most 200 ops).

    N is chosen from CPU time, not from pyperf's wall-clock mean: on a loaded machine the wall
    clock stretches several times over, which would halve N in one run and not the next, and
    counts over another N do not compare.
    """
    import time

    plan = bench.plan(ctx, max(1, min(n, 200)))
    ctx.target.run_plan(plan, ctx.value)  # warm-up: the probe times a warm path
    start = time.process_time()
    ctx.target.run_plan(plan, ctx.value)
    return (time.process_time() - start) / len(plan)


def _per_op(ctx: Ctx, bench: Bench, n: int) -> tuple[float, float]:
    value = ctx.value
    ctx.target.run_plan(bench.plan(ctx, n), value)  # warm-up: caches, lazy imports, first-use paths
    small: Plan = bench.plan(ctx, n)
    large: Plan = bench.plan(ctx, 2 * n)
    c1, b1 = track(lambda: ctx.target.run_plan(small, value))
    c2, b2 = track(lambda: ctx.target.run_plan(large, value))
    return (c2 - c1) / n, (b2 - b1) / n


def measure(ctx: Ctx, bench: Bench, n: int, empty: Ctx) -> Allocs:
    """Allocations per op of ``bench`` on ``ctx``'s store, minus the same on the empty store."""
    allocs, size = _per_op(ctx, bench, n)
    base_allocs, base_size = _per_op(empty, bench, n)
    inner = max(1, bench.inner)
    return Allocs(round((allocs - base_allocs) / inner, 3), round((size - base_size) / inner, 1))

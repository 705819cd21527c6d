"""Per-op latency: raw nanoseconds into preallocated arrays, percentiles after the run.

pyperf's statistics are over batch means; tail latency needs every op's own time.  The timed
loop writes ``perf_counter_ns`` differences into an ``array('q')`` allocated before it starts;
sorting and the percentiles happen after the run.  Two clock reads and the loop around them are
negligible beside a network round trip but not beside a sub-microsecond op, so every pass also
times the same plan on the harness's empty store: that floor (the clock's own cost and
resolution included) is recorded beside the percentiles.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterable

from kvctl.bench.workloads import Bench, Ctx

PERCENTILES = (50.0, 95.0, 99.0, 99.9)
# names of the percentile fields in results (kvctl_p50_us ...)
PERCENTILE_KEYS = ("p50", "p95", "p99", "p99.9")
# a percentile is reported only from enough samples to have a few values beyond it
MIN_SAMPLES = {"p50": 1, "p95": 40, "p99": 200, "p99.9": 2000}


def preallocated(n: int) -> array:
    return array("q", bytes(8 * n))


def summarize(samples: Iterable[array]) -> dict[str, float]:
    """p50/p95/p99/p99.9 and max in microseconds (nearest-rank) over all sample arrays."""
    values = sorted(v for chunk in samples for v in chunk)
    if not values:
        return {}
    n = len(values)
    out: dict[str, float] = {}
    for key, pct in zip(PERCENTILE_KEYS, PERCENTILES, strict=True):
        if n < MIN_SAMPLES[key]:
            continue
        rank = max(1, -(-int(pct * n) // 100))  # ceil(pct/100 * n), at least 1
        out[key] = values[min(rank, n) - 1] / 1000.0
    out["max"] = values[-1] / 1000.0
    out["count"] = float(n)
    return out


def budgeted(count: int, exact: bool, mean_s: float | None, budget_s: float, floor: int = 200) -> int:
    """``count`` ops, or fewer when they would take longer than ``budget_s`` at ``mean_s`` each
    (a store that fsyncs every write must not turn a 1,000-op pass into minutes)."""
    if exact or not mean_s or mean_s <= 0:
        return count
    return max(min(count, floor), min(count, int(budget_s / mean_s)))


def latency_pass(ctx: Ctx, bench: Bench, count: int, empty: Ctx | None = None) -> dict[str, float]:
    """Run ``count`` ops of ``bench`` (after a short warm-up), each timed on its own.

    With ``empty`` (a context on the harness's empty store), the same plan timed there gives
    the clock floor: ``clock_p50``/``clock_p99`` in microseconds and the clock's ``clock_res``.
    """
    warm = bench.plan(ctx, max(1, min(count // 10, 200)))
    ctx.target.run_plan(warm, ctx.value)
    plan = bench.plan(ctx, count)
    lat = preallocated(len(plan))
    ctx.target.latency_plan(plan, ctx.value, lat)
    out = summarize([lat])
    if empty is not None:
        floor = preallocated(len(plan))
        empty.target.latency_plan(plan, empty.value, floor)
        empty.target.latency_plan(plan, empty.value, floor)  # the second pass: warmed up
        base = summarize([floor])
        out.update({f"clock_{k}": v for k, v in base.items() if k in ("p50", "p99")})
        out["clock_res"] = time.get_clock_info("perf_counter").resolution * 1e6
    return out

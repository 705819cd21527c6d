"""The performance gate: compare a run with a saved baseline and say whether anything regressed.

What fails (``fail_on``; default ``instructions,allocs``): the deterministic measures only.

* Instructions per op (valgrind, :mod:`kvctl.bench.instr`) repeat within ~0.5% run after run,
  whatever the machine's load: a rise beyond the tolerance (default 2%) is more CPU work per op.
* Allocations (``allocs/op``, ``bytes/op``, :mod:`kvctl.bench.alloc`): a rise beyond a tight
  tolerance (default 2%) is a regression.  Absolute floors (0.5 allocs/op, 32 bytes/op) absorb
  the few allocations that depend on timing (a store's HLC counter passing CPython's small-int
  cache allocates one int now and then); the allowed rise of allocs/op is capped at 0.9, so one
  more allocator call per op always fails, however many a backend makes.  Objects CPython serves
  from its free lists (tuples, floats, small dicts) never reach the allocator: those regressions
  show in the instruction count, not here.
* Times are reported and fail only when asked (``time`` in ``fail_on``): on a shared machine
  they move by 1.4x and more between runs.  Each benchmark's values are divided by the run's own
  reference (``harness.reference``: a bare dict measured in the same run); a benchmark is
  *slower* or *faster* only when a Mann-Whitney U test on those ratios is significant (default
  alpha 0.05) AND the change in mean is at least the minimum effect (default 10%).

The gate also fails when a baseline row is missing from the run (unless ``allow_missing``), when
a benchmark or one of its passes errors, and when the run's parameters that decide what is
measured (value size, keys, seed, distribution, the counts' N) differ from the baseline's.
Where valgrind is missing, the gate says so once and gates on allocations (never on time in its
place).  A baseline from another machine or bench format version is reported with a warning:
times are then compared only through those ratios, and the counts (which depend on the
interpreter and the counting method) only when the interpreter and format match.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from kvctl.bench.params import FORMAT_VERSION, Params
from kvctl.bench.report import Table
from kvctl.bench.results import Row, Run, environment, fingerprint, fmt_float
from kvctl.errors import UsageError

MEASURES = ("instructions", "allocs", "time")
DEFAULT_FAIL_ON = "instructions,allocs"
# what decides the measured quantity itself (pyperf's effort only changes how precisely time is known)
MEASURED_PARAMS = ("value_size", "keys", "seed", "distribution", "alloc_ops", "instr_ops")


def parse_fail_on(text: str) -> frozenset[str]:
    """``all``, ``none``, or a comma-separated list of measures (instructions, allocs, time)."""
    words = {w.strip().lower() for w in text.split(",") if w.strip()}
    if words == {"all"}:
        return frozenset(MEASURES)
    if words == {"none"}:
        return frozenset()
    unknown = sorted(words - set(MEASURES))
    if unknown or not words:
        raise UsageError(f"--fail-on {text!r}: use all, none, or a list of {', '.join(MEASURES)}")
    return frozenset(words)


@dataclass(frozen=True)
class Options:
    tolerance: float = 0.02        # allocations: relative rise allowed
    instr_tolerance: float = 0.01  # instructions/op: relative rise allowed (measured: bench/results/gate_RESULTS.md)
    min_effect: float = 0.10       # times: smallest change that can count
    alpha: float = 0.05            # times: significance level of the U test
    fail_on: str = DEFAULT_FAIL_ON  # see parse_fail_on
    allocs_floor: float = 0.5      # allocs/op: absolute slack (see the module docstring)
    allocs_cap: float = 0.9        # allocs/op: the slack never reaches one whole object per op
    bytes_floor: float = 32.0      # bytes/op: absolute slack
    allow_missing: bool = False    # a baseline row missing from the run only warns

    def fails(self, measure: str) -> bool:
        return measure in parse_fail_on(self.fail_on)


@dataclass
class Verdict:
    name: str
    time: str = "n/a"              # faster | slower | not significant | n/a
    change: float | None = None    # relative change of the normalized mean
    p: float | None = None
    instr: str = "n/a"             # same | more | fewer | n/a
    instr_base: float | None = None
    instr_new: float | None = None
    allocs: str = "n/a"            # same | more | fewer | n/a
    allocs_base: float | None = None
    allocs_new: float | None = None
    bytes_base: float | None = None
    bytes_new: float | None = None
    failures: list[str] = field(default_factory=list)


@dataclass
class Result:
    verdicts: list[Verdict]
    warnings: list[str]
    options: Options
    errors: list[str] = field(default_factory=list)  # run-level failures (parameters differ)

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(v.failures for v in self.verdicts)

    def failure_summary(self) -> str:
        """One line: what failed."""
        failed = [f"{v.name} ({v.failures[0]})" for v in self.verdicts if v.failures]
        parts = [f"{len(failed)} benchmark(s): {'; '.join(failed)}"] if failed else []
        return "; ".join(self.errors + parts)

    def table(self) -> Table:
        rows = []
        for v in self.verdicts:
            change = "-" if v.change is None else f"{v.change * 100:+.1f}%"
            p = "-" if v.p is None else f"{v.p:.3g}"
            rows.append([v.name, _pair(v.instr_base, v.instr_new, 6), v.instr, _pair(v.allocs_base, v.allocs_new, 4),
                         _pair(v.bytes_base, v.bytes_new, 4), v.allocs, change, p, v.time,
                         "FAIL: " + "; ".join(v.failures) if v.failures else "ok"])
        o = self.options
        gated = ", ".join(m for m in MEASURES if o.fails(m)) or "nothing (report only)"
        params = (f"fails on: {gated}; instructions: rise beyond {o.instr_tolerance:.1%}; allocations: rise "
                  f"beyond {o.tolerance:.0%} (floor {o.allocs_floor:g}, at most {o.allocs_cap:g} allocs; "
                  f"floor {o.bytes_floor:g} B); times: mean of values / the run's harness.reference, "
                  f"Mann-Whitney U (alpha {o.alpha:g}) and a change of at least {o.min_effect:.0%}")
        return Table("Gate: this run against the baseline",
                     ["benchmark", "instructions/op", "instr", "allocs/op", "bytes/op", "allocs", "time change",
                      "p", "time", "gate"], rows, params=params, notes=self.errors + self.warnings, key="gate")


def _pair(base: float | None, new: float | None, digits: int) -> str:
    if base is None and new is None:
        return "-"
    return f"{fmt_float(base, digits)} → {fmt_float(new, digits)}"


# -- statistics --------------------------------------------------------------------------------------

def _ranks(values: list[float]) -> tuple[list[float], bool]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties = False
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        if j > i:
            ties = True
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks, ties


def _u_distribution(n1: int, n2: int) -> list[int]:
    """Counts of each U value under H0: the coefficients of the Gaussian binomial [n1+n2, n1]_q."""
    poly = [1]
    for i in range(1, n1 + 1):
        m = n2 + i
        grown = poly + [0] * m
        for k in range(len(grown) - 1, m - 1, -1):  # multiply by (1 - q^m)
            grown[k] -= grown[k - m]
        for k in range(i, len(grown)):               # divide by (1 - q^i)
            grown[k] += grown[k - i]
        poly = grown[: n1 * n2 + 1] if len(grown) > n1 * n2 + 1 else grown
    return poly[: n1 * n2 + 1]


def mann_whitney_u(x: list[float], y: list[float]) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test: (U of x, p-value).  Exact without ties for small samples,
    else the normal approximation with tie and continuity corrections."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    ranks, ties = _ranks(list(x) + list(y))
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    u_small = min(u1, n1 * n2 - u1)
    if not ties and n1 * n2 <= 10_000:
        counts = _u_distribution(n1, n2)
        total = sum(counts)
        tail = sum(counts[: math.floor(u_small) + 1])
        return u1, min(1.0, 2.0 * tail / total)
    n = n1 + n2
    tie_sum = 0.0
    values = sorted(list(x) + list(y))
    i = 0
    while i < n:
        j = i
        while j + 1 < n and values[j + 1] == values[i]:
            j += 1
        t = j - i + 1
        tie_sum += t ** 3 - t
        i = j + 1
    sigma = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie_sum / (n * (n - 1))))
    if sigma == 0:
        return u1, 1.0
    z = (abs(u1 - n1 * n2 / 2.0) - 0.5) / sigma
    p = math.erfc(max(z, 0.0) / math.sqrt(2.0))
    return u1, min(1.0, p)


# -- comparison --------------------------------------------------------------------------------------

def compare(new: Run, base: Run, options: Options | None = None) -> Result:
    o = options or Options()
    warnings: list[str] = []
    errors: list[str] = []
    compare_counts = True
    if base.format != FORMAT_VERSION or new.format != FORMAT_VERSION:
        warnings.append(f"the baseline was written by bench format {base.format} and this run by {new.format} "
                        f"(current {FORMAT_VERSION}): instruction and allocation figures are not compared, times "
                        "only as ratios to each run's reference")
        compare_counts = False
    bm, nm = base.machine(), new.machine()
    if fingerprint(bm) != fingerprint(nm):
        warnings.append(f"the baseline comes from another machine ({fingerprint(bm)}; this run: {fingerprint(nm)}): "
                        "times are compared only as ratios to each run's own reference")
    if compare_counts and environment(bm) != environment(nm):
        warnings.append(f"instruction and allocation counts depend on the interpreter (baseline {environment(bm)}; "
                        f"this run {environment(nm)}): they are not compared")
        compare_counts = False
    errors += _param_differences(new, base)
    ref_new, ref_base = new.reference_mean(), base.reference_mean()
    if ref_new is None or ref_base is None:
        warnings.append("a run has no harness.reference: times are compared directly, without normalization")
        ref_new = ref_base = 1.0

    new_rows = {r.name: r for r in new.rows()}
    base_rows = [b for b in base.rows() if b.ok and not b.name.startswith("harness.")]
    compare_instr = compare_counts and _instructions_comparable(new, base_rows, new_rows, warnings)
    verdicts: dict[str, Verdict] = {}
    missing = 0
    for b in base_rows:
        n = new_rows.get(b.name)
        v = verdicts[b.name] = Verdict(b.name)
        if n is None:
            if o.allow_missing:
                warnings.append(f"{b.name}: in the baseline, not in this run")
                del verdicts[b.name]
            else:
                v.failures.append("in the baseline, not in this run")
                missing += 1
            continue
        if not n.ok:
            v.time = v.allocs = v.instr = n.status
            v.failures.append(f"{n.status} in this run: {n.reason}")
            continue
        _compare_times(v, n, b, ref_new, ref_base, o)
        if compare_counts:
            if compare_instr:
                _compare_instr(v, n, b, o)
            _compare_allocs(v, n, b, o)
    if missing:
        warnings.append(f"{missing} baseline benchmark(s) missing from this run fail the gate (a plugin that no "
                        "longer loads, a workload left out?); --allow-missing accepts that")
    for n in new_rows.values():
        if n.name.startswith("harness.") or n.name in verdicts:
            continue
        if n.status not in ("ok", "skipped"):
            verdicts[n.name] = Verdict(n.name, time=n.status, allocs=n.status, instr=n.status,
                                       failures=[f"{n.status} in this run: {n.reason}"])
        elif n.ok:
            warnings.append(f"{n.name}: in this run, not in the baseline (regenerate the baseline to gate it)")
    for e in new.info.get("errors", []):
        if e.get("partial"):  # a pass after pyperf (latency, load, instructions, allocations) failed
            name = str(e.get("name", ""))
            verdicts.setdefault(name, Verdict(name)).failures.append(str(e.get("reason", "failed")))
    return Result(list(verdicts.values()), warnings, o, errors)


def _param_differences(new: Run, base: Run) -> list[str]:
    """The parameters that decide what is measured, where the two runs differ (one line each)."""
    raw_new, raw_base = new.info.get("params"), base.info.get("params")
    if not isinstance(raw_new, dict) or not isinstance(raw_base, dict):
        return []  # a plain pyperf file: its format warning says the rest
    pn, pb = Params.from_json(raw_new), Params.from_json(raw_base)
    diffs = [f"{k} {getattr(pb, k)!r} in the baseline, {getattr(pn, k)!r} in this run" for k in MEASURED_PARAMS
             if getattr(pn, k) != getattr(pb, k)]
    if not diffs:
        return []
    return ["the run's parameters differ from the baseline's (" + "; ".join(diffs) + "): the figures measure "
            "different things; run with the baseline's parameters or regenerate the baseline"]


def _instructions_comparable(new: Run, base_rows: list[Row], new_rows: dict[str, Row], warnings: list[str]) -> bool:
    """Whether both runs counted instructions; else one warning saying why not (once, not per row)."""
    in_base = any(b.get("instr_per_op") is not None for b in base_rows)
    in_new = any(r.get("instr_per_op") is not None for r in new_rows.values())
    counter: dict[str, Any] = new.info.get("instructions") or {}
    if in_base and not in_new and counter.get("missing"):
        warnings.append(f"{counter['missing']}: instructions/op not counted; the gate compares allocations "
                        "(times fail only with --fail-on time)")
        return False
    if not in_base and in_new:
        warnings.append("the baseline has no instructions/op (made without valgrind): they are not compared; "
                        "regenerate the baseline where valgrind is installed")
        return False
    return in_base


def _compare_times(v: Verdict, n: Row, b: Row, ref_new: float, ref_base: float, o: Options) -> None:
    xs = [x / ref_new for x in n.values]
    ys = [y / ref_base for y in b.values]
    if not xs or not ys:
        return
    v.change = statistics.fmean(xs) / statistics.fmean(ys) - 1.0
    _, v.p = mann_whitney_u(xs, ys)
    if v.p < o.alpha and abs(v.change) >= o.min_effect:
        v.time = "slower" if v.change > 0 else "faster"
        if v.time == "slower" and o.fails("time"):
            v.failures.append(f"slower by {v.change:.0%} (p={v.p:.3g})")
    else:
        v.time = "not significant"


def _same_n(v: Verdict, n: Row, b: Row, key: str, what: str) -> bool:
    """Counts over a different N are not comparable (amortized costs move with N): a failure."""
    if n.get(key) == b.get(key):
        return True
    v.failures.append(f"{what} counted over N = {n.get(key)} ops, the baseline over {b.get(key)}")
    return False


def _compare_instr(v: Verdict, n: Row, b: Row, o: Options) -> None:
    v.instr_base, v.instr_new = b.get("instr_per_op"), n.get("instr_per_op")
    if v.instr_base is None or v.instr_new is None:
        if v.instr_base is not None:  # counted in the baseline, not here: the pass failed (listed apart)
            v.instr = "missing"
        return
    if not _same_n(v, n, b, "instr_ops", "instructions"):
        return
    limit = o.instr_tolerance * abs(v.instr_base)
    rise = v.instr_new - v.instr_base
    v.instr = "more" if rise > limit else "fewer" if -rise > limit else "same"
    if v.instr == "more" and o.fails("instructions"):
        v.failures.append(f"instructions/op {fmt_float(v.instr_base, 6)} → {fmt_float(v.instr_new, 6)} "
                          f"(+{rise / v.instr_base:.1%})" if v.instr_base else
                          f"instructions/op 0 → {fmt_float(v.instr_new, 6)}")


def _compare_allocs(v: Verdict, n: Row, b: Row, o: Options) -> None:
    v.allocs_base, v.allocs_new = b.get("allocs_per_op"), n.get("allocs_per_op")
    v.bytes_base, v.bytes_new = b.get("bytes_per_op"), n.get("bytes_per_op")
    if v.allocs_base is None or v.allocs_new is None:
        return
    if not _same_n(v, n, b, "alloc_ops", "allocations"):
        return
    verdicts = []
    for what, old, new, floor, cap in (("allocs/op", v.allocs_base, v.allocs_new, o.allocs_floor, o.allocs_cap),
                                       ("bytes/op", v.bytes_base, v.bytes_new, o.bytes_floor, math.inf)):
        if old is None or new is None:
            continue
        limit = min(max(o.tolerance * abs(old), floor), cap)
        if new - old > limit:
            verdicts.append("more")
            if o.fails("allocs"):
                v.failures.append(f"{what} {fmt_float(old, 4)} → {fmt_float(new, 4)} "
                                  f"(+{(new - old) / old:.1%})" if old else f"{what} 0 → {fmt_float(new, 4)}")
        elif old - new > limit:
            verdicts.append("fewer")
        else:
            verdicts.append("same")
    v.allocs = "more" if "more" in verdicts else "fewer" if "fewer" in verdicts else "same"

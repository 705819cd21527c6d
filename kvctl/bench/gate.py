"""The performance gate: compare a run with a saved baseline and say whether anything regressed.

* Allocations (``allocs/op``, ``bytes/op``) are deterministic: a rise beyond a tight tolerance
  (default 2%) is a regression.  Absolute floors (0.5 allocs/op, 32 bytes/op) absorb the few
  allocations that depend on timing: a store's HLC counter passing CPython's small-int cache when
  more than 256 writes land in one millisecond allocates one int (32 bytes), so the counts move
  by up to ~2% with the machine's speed; any real regression adds at least a whole object per op.
* Times are never compared raw: each benchmark's values are divided by the run's own reference
  (``harness.reference``: a bare dict measured in the same run), so a slower or busier machine
  moves both and cancels out.  A benchmark is *slower* or *faster* only when a Mann-Whitney U test
  on those normalized values is significant (default alpha 0.05) AND the change in mean is at
  least the minimum effect (default 10%); otherwise it is *not significant*.
* A baseline from another machine or bench format version is reported with a warning: times
  are then compared only through those ratios, and allocation counts (which depend on the
  interpreter and the counting method) only when the interpreter and format match.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from kvctl.bench.params import FORMAT_VERSION
from kvctl.bench.report import Table
from kvctl.bench.results import Row, Run, environment, fingerprint, fmt_float

FAIL_ON = ("all", "allocs", "none")


@dataclass(frozen=True)
class Options:
    tolerance: float = 0.02        # allocations: relative rise allowed
    min_effect: float = 0.10       # times: smallest change that can count
    alpha: float = 0.05            # times: significance level of the U test
    fail_on: str = "all"           # all: allocations and times; allocs: allocations only; none: report
    allocs_floor: float = 0.5      # allocs/op: absolute slack (see the module docstring)
    bytes_floor: float = 32.0      # bytes/op: absolute slack


@dataclass
class Verdict:
    name: str
    time: str = "n/a"              # faster | slower | not significant | n/a
    change: float | None = None    # relative change of the normalized mean
    p: float | None = None
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

    @property
    def failed(self) -> bool:
        return any(v.failures for v in self.verdicts)

    def table(self) -> Table:
        rows = []
        for v in self.verdicts:
            change = "-" if v.change is None else f"{v.change * 100:+.1f}%"
            p = "-" if v.p is None else f"{v.p:.3g}"
            allocs = "-" if v.allocs_new is None and v.allocs_base is None else \
                f"{fmt_float(v.allocs_base, 4)} → {fmt_float(v.allocs_new, 4)}"
            size = "-" if v.bytes_new is None and v.bytes_base is None else \
                f"{fmt_float(v.bytes_base, 4)} → {fmt_float(v.bytes_new, 4)}"
            rows.append([v.name, change, p, v.time, allocs, size, v.allocs,
                         "FAIL: " + "; ".join(v.failures) if v.failures else "ok"])
        o = self.options
        params = (f"times: mean of values / the run's harness.reference, Mann-Whitney U (alpha {o.alpha:g}) and a "
                  f"change of at least {o.min_effect:.0%}; allocations: rise beyond {o.tolerance:.0%} "
                  f"(floor {o.allocs_floor:g} allocs, {o.bytes_floor:g} B); fails on: {o.fail_on}")
        return Table("Gate: this run against the baseline",
                     ["benchmark", "time change", "p", "time", "allocs/op", "bytes/op", "allocs", "gate"], rows,
                     params=params, notes=self.warnings, key="gate")


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
    compare_allocs = True
    if base.format != FORMAT_VERSION or new.format != FORMAT_VERSION:
        warnings.append(f"the baseline was written by bench format {base.format} and this run by {new.format} "
                        f"(current {FORMAT_VERSION}): allocation figures are not compared, times only as ratios "
                        "to each run's reference")
        compare_allocs = False
    bm, nm = base.machine(), new.machine()
    if fingerprint(bm) != fingerprint(nm):
        warnings.append(f"the baseline comes from another machine ({fingerprint(bm)}; this run: {fingerprint(nm)}): "
                        "times are compared only as ratios to each run's own reference")
    if compare_allocs and environment(bm) != environment(nm):
        warnings.append(f"allocation counts depend on the interpreter (baseline {environment(bm)}; this run "
                        f"{environment(nm)}): they are not compared")
        compare_allocs = False
    ref_new, ref_base = new.reference_mean(), base.reference_mean()
    if ref_new is None or ref_base is None:
        warnings.append("a run has no harness.reference: times are compared directly, without normalization")
        ref_new = ref_base = 1.0

    new_rows = {r.name: r for r in new.rows()}
    verdicts: list[Verdict] = []
    for b in base.rows():
        if not b.ok or b.name.startswith("harness."):
            continue
        n = new_rows.get(b.name)
        if n is None:
            warnings.append(f"{b.name}: in the baseline, not in this run")
            continue
        v = Verdict(b.name)
        if not n.ok:
            v.time = v.allocs = n.status
            v.failures.append(f"{n.status} in this run: {n.reason}")
            verdicts.append(v)
            continue
        _compare_times(v, n, b, ref_new, ref_base, o)
        if compare_allocs:
            _compare_allocs(v, n, b, o)
        verdicts.append(v)
    return Result(verdicts, warnings, o)


def _compare_times(v: Verdict, n: Row, b: Row, ref_new: float, ref_base: float, o: Options) -> None:
    xs = [x / ref_new for x in n.values]
    ys = [y / ref_base for y in b.values]
    if not xs or not ys:
        return
    v.change = statistics.fmean(xs) / statistics.fmean(ys) - 1.0
    _, v.p = mann_whitney_u(xs, ys)
    if v.p < o.alpha and abs(v.change) >= o.min_effect:
        v.time = "slower" if v.change > 0 else "faster"
        if v.time == "slower" and o.fail_on == "all":
            v.failures.append(f"slower by {v.change:.0%} (p={v.p:.3g})")
    else:
        v.time = "not significant"


def _compare_allocs(v: Verdict, n: Row, b: Row, o: Options) -> None:
    v.allocs_base, v.allocs_new = b.get("allocs_per_op"), n.get("allocs_per_op")
    v.bytes_base, v.bytes_new = b.get("bytes_per_op"), n.get("bytes_per_op")
    if v.allocs_base is None or v.allocs_new is None:
        return
    verdicts = []
    for what, old, new, floor in (("allocs/op", v.allocs_base, v.allocs_new, o.allocs_floor),
                                  ("bytes/op", v.bytes_base, v.bytes_new, o.bytes_floor)):
        if old is None or new is None:
            continue
        limit = max(o.tolerance * abs(old), floor)
        if new - old > limit:
            verdicts.append("more")
            if o.fail_on in ("all", "allocs"):
                v.failures.append(f"{what} {fmt_float(old, 4)} → {fmt_float(new, 4)} "
                                  f"(+{(new - old) / old:.1%})" if old else f"{what} 0 → {fmt_float(new, 4)}")
        elif old - new > limit:
            verdicts.append("fewer")
        else:
            verdicts.append("same")
    v.allocs = "more" if "more" in verdicts else "fewer" if "fewer" in verdicts else "same"

"""A bench run as data: a pyperf suite plus kvctl's own section, saved as one JSON file.

The file *is* a pyperf suite (``python -m pyperf stats FILE`` and ``compare_to`` read it: they
ignore unknown top-level keys); kvctl adds a ``"kvctl"`` key with what pyperf has no place for:
the parameters, the machine, each backend's probe result, skipped and failed benches.  Per-bench
figures pyperf does not compute (allocations, percentiles, load curves) are ``kvctl_*`` metadata
of the benchmark itself, so they survive pyperf's own tools.
"""

from __future__ import annotations

import io
import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from kvctl.bench.params import FORMAT_VERSION
from kvctl.errors import UsageError

REFERENCE = "harness.reference"
EMPTY = "harness.empty"


@dataclass
class Row:
    """One bench on one backend: measured, skipped or failed."""

    name: str
    workload: str
    bench: str
    backend: str
    status: str = "ok"             # ok | skipped | error | unreachable
    reason: str = ""
    values: list[float] = field(default_factory=list)  # seconds per unit (pyperf values)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def stdev(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def ops_per_s(self) -> float | None:
        m = self.mean
        return 1.0 / m if m else None

    @property
    def unit(self) -> str:
        return str(self.meta.get("kvctl_unit", "op"))

    def get(self, key: str) -> Any:
        return self.meta.get(f"kvctl_{key}")

    def percentiles(self) -> dict[str, float]:
        out = {}
        for key in ("p50", "p95", "p99", "p99.9", "max"):
            v = self.meta.get(f"kvctl_{key}_us")
            if isinstance(v, (int, float)):
                out[key] = float(v)
        return out

    def load_curve(self) -> list[dict[str, Any]]:
        raw = self.meta.get("kvctl_load")
        if not raw:
            return []
        try:
            return list(json.loads(raw))
        except (TypeError, ValueError):
            return []


@dataclass
class Run:
    suite: Any                      # pyperf.BenchmarkSuite | None
    info: dict[str, Any]

    # -- persistence -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": "1.0", "benchmarks": []}
        if self.suite is not None:
            buffer = io.StringIO()
            self.suite.dump(buffer)
            data = json.loads(buffer.getvalue())
        data["kvctl"] = self.info
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")) + "\n"

    def save(self, path: str) -> None:
        """Write the run (gzip-compressed when the name ends in .gz, as pyperf also reads)."""
        import gzip
        import os

        tmp = f"{path}.tmp"
        with (gzip.open(tmp, "wt", encoding="utf-8") if path.endswith(".gz") else open(tmp, "w")) as fh:
            fh.write(self.dumps())
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "<run>") -> Run:
        import pyperf

        info = data.get("kvctl")
        suite = None
        if data.get("benchmarks"):
            try:
                suite = pyperf.BenchmarkSuite._json_load(source, data)
            except Exception as exc:
                raise UsageError(f"{source} is not a pyperf/kvctl bench file: {exc}") from None
        if not isinstance(info, dict):
            # a plain pyperf file (not written by kvctl bench): usable, with what pyperf has
            info = {"format": 0}
        return cls(suite, info)

    @classmethod
    def load(cls, path: str) -> Run:
        import gzip

        try:
            with (gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path)) as fh:
                data = json.load(fh)
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except ValueError:
            raise UsageError(f"{path} is not JSON (expected a saved `kvctl bench -o FILE.json` run)") from None
        if not isinstance(data, dict) or "benchmarks" not in data:
            raise UsageError(f"{path} is not a saved bench run (no benchmarks)")
        return cls.from_json(data, path)

    # -- views -------------------------------------------------------------------------------------
    @property
    def format(self) -> int:
        return int(self.info.get("format", 0))

    def benchmarks(self) -> list[Any]:
        return list(self.suite) if self.suite is not None else []

    def rows(self) -> list[Row]:
        rows: list[Row] = []
        for b in self.benchmarks():
            meta = b.get_metadata()
            name = b.get_name()
            workload = str(meta.get("kvctl_workload", name.partition(".")[0]))
            rows.append(Row(name=name, workload=workload, bench=str(meta.get("kvctl_bench", name)),
                            backend=str(meta.get("kvctl_backend", "")), values=list(b.get_values()),
                            meta=meta))
        for entry in self.info.get("skipped", []) + self.info.get("errors", []):
            if entry.get("partial"):
                continue  # a pass after pyperf failed: the row exists; the problem is listed apart
            rows.append(Row(name=entry.get("name", ""), workload=entry.get("workload", ""),
                            bench=entry.get("bench", ""), backend=entry.get("backend", ""),
                            status=entry.get("status", "error"), reason=entry.get("reason", "")))
        return rows

    def row(self, name: str) -> Row | None:
        for r in self.rows():
            if r.name == name and r.ok:
                return r
        return None

    def reference_mean(self) -> float | None:
        r = self.row(REFERENCE)
        return r.mean if r is not None else None

    def machine(self) -> dict[str, Any]:
        machine = self.info.get("machine")
        if isinstance(machine, dict):
            return machine
        # a plain pyperf file: what pyperf recorded
        meta = self.suite.get_metadata() if self.suite is not None else {}
        return {"cpu_model": meta.get("cpu_model_name", "?"), "cpu_count": meta.get("cpu_count", "?"),
                "python": meta.get("python_version", "?"), "platform": meta.get("platform", "?")}


def fingerprint(machine: dict[str, Any]) -> str:
    """What must match for times to compare across runs directly (not only as ratios)."""
    return f"{machine.get('arch', '?')} | {machine.get('cpu_model', '?')} x{machine.get('cpu_count', '?')}"


def environment(machine: dict[str, Any]) -> str:
    """What must match for allocation counts to compare: the interpreter and the platform."""
    return f"{machine.get('python', '?')} | {machine.get('implementation', '?')} | {machine.get('arch', '?')}"


def machine_info(affinity: str | None) -> dict[str, Any]:
    import os
    import platform
    import sys

    cpu_model = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    cpu_model = " ".join(line.partition(":")[2].split())
                    break
    except OSError:
        cpu_model = platform.processor() or "?"
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = []
    count = os.cpu_count() or 0
    pinning = affinity or ("none" if len(allowed) in (0, count) else ",".join(map(str, allowed)))
    return {
        "arch": platform.machine(), "cpu_model": cpu_model, "cpu_count": count,
        "python": platform.python_version(), "implementation": sys.implementation.name,
        "platform": platform.platform(terse=True), "hostname": platform.node(),
        "cpu_pinning": pinning, "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def fmt_float(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


__all__ = ["EMPTY", "FORMAT_VERSION", "REFERENCE", "Row", "Run", "environment", "fingerprint", "machine_info"]

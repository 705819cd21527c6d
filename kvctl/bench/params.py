"""The parameters of a bench run: load shape, data shape, and how hard pyperf works.

They travel from the CLI to every job process as JSON, and are printed beside every result.
:class:`Choices` makes them (and the gate's thresholds) from the command line over a suite file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1  # of the kvctl section and the kvctl_* metadata in saved runs


@dataclass
class Params:
    value_size: int = 100          # bytes per value (GridKV: one random 100-byte value)
    keys: int = 1000               # pre-filled keys (GridKV Get set; YCSB record count)
    seed: int = 42                 # every random choice (values, YCSB requests) derives from it
    ops: int | None = None         # ops per latency pass / per client in a load pass
    duration: float = 2.0          # seconds per load pass when ``ops`` is not given
    clients: list[int] = field(default_factory=list)  # load passes (empty: single client only)
    load_workloads: list[str] = field(default_factory=list)  # workloads given load passes (empty: all)
    distribution: str | None = None  # YCSB request distribution override
    quick: bool = False
    # pyperf effort
    processes: int = 4
    values: int = 3
    warmups: int = 1
    min_time: float = 0.1
    affinity: str | None = None    # CPU list the workers are pinned to (pyperf --affinity)
    alloc_ops: int = 2000          # N of the allocation measurement (N and 2N ops are tracked)
    # N of the instruction count under valgrind (N and 2N ops); a bench costlier than instr.OP_BUDGET
    # instructions per op is counted over N halved, chosen from its count, never from time
    instr_ops: int = 1000
    latency_ops: int = 5000        # ops of the per-op latency pass when ``ops`` is not given
    prefix: str = ""               # key namespace in the store under test
    executor: str | None = None    # a Dask scheduler (tcp://h:p) that runs the load passes' clients
    executor_here: bool = False    # ... of a cluster on this machine (a host-local store is reachable)

    @classmethod
    def quick_defaults(cls, **overrides: Any) -> Params:
        # one worker process of 5 values per bench (plus pyperf's calibration run): a smoke test
        # and the CI gate, where times are informative and allocations are what is compared
        base: dict[str, Any] = dict(quick=True, processes=1, values=5, warmups=1, min_time=0.02, alloc_ops=1000,
                    latency_ops=1000, duration=1.0)
        base.update(overrides)
        return cls(**base)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Params:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def pyperf_args(self) -> list[str]:
        # a worker stuck on a server that stopped answering is ended, and its bench reported
        args = ["--processes", str(self.processes), "--values", str(self.values),
                "--warmups", str(self.warmups), "--min-time", str(self.min_time), "--timeout", "600"]
        if self.affinity:
            args.append(f"--affinity={self.affinity}")
        return args

    def latency_count(self) -> int:
        return self.ops if self.ops else self.latency_ops


# -- from the command line and a suite file -----------------------------------------------------
# `kvctl bench --suite FILE` reads these keys; an option given on the command line wins over the
# file, and the file over the defaults.
SUITE_KEYS = frozenset({
    "urls", "workloads", "quick", "value_size", "keys", "ops", "duration", "clients", "distribution", "seed",
    "processes", "values", "min_time", "pin", "fail_on", "tolerance", "min_effect", "description", "alloc_ops",
    "instr_ops", "instr_tolerance", "allow_missing", "embedded", "load_workloads",
})


def read_suite(path: Path) -> dict[str, Any]:
    """A suite file's options (its ``[suite]`` table, or the whole file); unknown keys are refused."""
    import tomllib

    from kvctl.errors import UsageError

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"cannot read suite file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"suite file {path} is not valid TOML: {exc}") from None
    suite = data.get("suite", data)
    unknown = sorted(set(suite) - SUITE_KEYS)
    if unknown:
        raise UsageError(f"suite file {path}: unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(SUITE_KEYS))})")
    return dict(suite)


def fraction(text: str, name: str) -> float:
    """``2%`` or ``0.02``."""
    from kvctl.errors import UsageError

    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(f"{name} {text!r} is not a fraction (use e.g. 2% or 0.02)") from None
    if not 0 <= value < 10:
        raise UsageError(f"{name} {text!r} is out of range")
    return value


def client_counts(text: str) -> list[int]:
    """``--clients``: N or a curve like 1,2,4,8 (a single client: no load passes, [])."""
    from kvctl.errors import UsageError

    try:
        values = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise UsageError(f"--clients {text!r}: expected a number or a list like 1,2,4,8") from None
    if not values or any(v < 1 or v > 1024 for v in values):
        raise UsageError(f"--clients {text!r}: each count must be between 1 and 1024")
    return [] if values == [1] else values


class Choices:
    """The command line's options over a suite file's: :meth:`pick` is the one rule."""

    def __init__(self, suite: dict[str, Any]) -> None:
        self.suite = suite

    def pick(self, value: Any, name: str, default: Any = None) -> Any:
        """``value`` when given (not None), else the suite file's ``name``, else ``default``."""
        return value if value is not None else self.suite.get(name, default)

    def flag(self, value: bool, name: str) -> bool:
        """A flag: on when given, else as the suite file says."""
        return bool(self.pick(value or None, name, False))

    def gate(self, *, fail_on: str | None, tolerance: str | None, instr_tolerance: str | None,
             min_effect: str | None, allow_missing: bool) -> Any:
        """The gate's thresholds (:class:`kvctl.bench.gate.Options`); a bad value fails here,
        before a long run."""
        from kvctl.bench import gate

        fail = str(self.pick(fail_on, "fail_on", gate.DEFAULT_FAIL_ON))
        gate.parse_fail_on(fail)
        return gate.Options(
            tolerance=fraction(str(self.pick(tolerance, "tolerance", "2%")), "--tolerance"),
            instr_tolerance=fraction(str(self.pick(instr_tolerance, "instr_tolerance", "1%")), "--instr-tolerance"),
            min_effect=fraction(str(self.pick(min_effect, "min_effect", "10%")), "--min-effect"),
            fail_on=fail, allow_missing=self.flag(allow_missing, "allow_missing"))

    def params(self, given: dict[str, Any], *, quick: bool) -> Params:
        """The run's :class:`Params` from the options named as its fields (``duration``,
        ``clients``, ``load_workloads`` and ``pin`` as the command line spells them)."""
        from kvctl.url import parse_duration_ms

        overrides: dict[str, Any] = {}
        for name in ("value_size", "keys", "ops", "seed", "processes", "values", "min_time", "distribution",
                     "alloc_ops", "instr_ops"):
            v = self.pick(given.get(name), name)
            if v is not None:
                overrides[name] = v
        dur = self.pick(given.get("duration"), "duration")
        if dur is not None:
            overrides["duration"] = parse_duration_ms(str(dur)) / 1000.0
        cl = self.pick(given.get("clients"), "clients")
        if cl is not None:
            overrides["clients"] = client_counts(",".join(map(str, cl)) if isinstance(cl, list) else str(cl))
        lw = self.pick(given.get("load_workloads"), "load_workloads")
        if lw is not None:
            overrides["load_workloads"] = _workload_names(lw if isinstance(lw, list) else str(lw).split(","))
        affinity = self.pick(given.get("pin"), "pin")
        if affinity is not None:
            overrides["affinity"] = str(affinity)
        _check_distribution(overrides.get("distribution"))
        return Params.quick_defaults(**overrides) if quick else Params(**overrides)


def _workload_names(names: list[str]) -> list[str]:
    from kvctl.bench import workloads

    return [workloads.get(n.strip().lower()).name for n in names if n.strip()]


def _check_distribution(name: str | None) -> None:
    if name is not None:
        from kvctl.bench.ycsb import DISTRIBUTIONS
        from kvctl.errors import UsageError

        if name not in DISTRIBUTIONS:
            raise UsageError(f"--distribution {name!r}: use one of {', '.join(DISTRIBUTIONS)}")

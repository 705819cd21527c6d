"""The parameters of a bench run: load shape, data shape, and how hard pyperf works.

They travel from the CLI to every job process as JSON, and are printed beside every result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
    instr_ops: int = 1000          # N of the instruction count under valgrind (N and 2N ops, never shrunk)
    latency_ops: int = 5000        # ops of the per-op latency pass when ``ops`` is not given
    prefix: str = ""               # key namespace in the store under test

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

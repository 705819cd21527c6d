"""A job: one backend x one workload (or the harness), as handed to a job process in a JSON file.

The file is written by the parent (mode 0600: the URL may hold a password) and read by the job
process and by each of its pyperf workers, so everything a worker needs is in it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from kvctl.bench.params import Params

RUNNER = "kvctl.bench.runner"


def python_args(module: str = RUNNER) -> list[str]:
    """Interpreter arguments that run ``module`` in a child process (the job process, its pyperf
    workers) importing what this process imports.  ``-P``: no current directory on sys.path, where a
    folder named ``kvctl`` (the parent of a clone) would shadow the installed package; ``-s`` when
    this process runs without the user site, so the child does not pick up other copies there.
    The load pass's client processes inherit these flags through multiprocessing."""
    return ["-P", *(["-s"] if sys.flags.no_user_site else []), "-m", module]


@dataclass
class BenchSpec:
    name: str                      # pyperf benchmark name, e.g. "gridkv.set@sqlite"
    workload: str
    bench: str
    store: str | None = None       # None: the job's URL; "null", "null-async", "dict": harness stores
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    label: str
    url: str                       # raw (may contain a password): never printed
    params: Params
    benches: list[BenchSpec]
    out: str                       # where the job process writes its result
    network: bool = False
    alloc_url: str | None = None   # a fresh store for the allocation pass (None: the job's URL)
    instr_url: str | None = None   # a fresh store for the instruction count (None: the job's URL)
    kind: str = "store"            # "store" or "harness"
    fresh: bool = False            # the run generated this store (embedded, scratch directory): a worker times its own
    metadata: dict[str, Any] = field(default_factory=dict)  # kvctl_* for every bench of the job

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["params"] = self.params.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        data = dict(data)
        data["params"] = Params.from_json(data["params"])
        data["benches"] = [BenchSpec(**b) for b in data["benches"]]
        return cls(**data)

    def save(self, path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.to_json(), fh)

    @classmethod
    def load(cls, path: str) -> Job:
        with open(path) as fh:
            return cls.from_json(json.load(fh))

    def error_path(self, index: int) -> str:
        """Where a worker leaves the one-line reason it failed (the manager reads it)."""
        return f"{self.out}.err{index}"

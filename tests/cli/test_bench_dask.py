"""`kvctl bench --executor dask://...`: the load passes' clients run on the workers of a real
local Dask cluster, against a real Redis, and every op's latency reaches the merged percentiles."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kvctl.bench.cluster_load import cluster_pass, shares
from kvctl.bench.job import Job
from kvctl.bench.params import Params
from kvctl.bench.results import Run
from kvctl.bench.workloads import get
from tests.conftest import service_url
from tests.engines.support import dask_cluster

pytest.importorskip("distributed")
__all__ = ["dask_cluster"]
pytest.importorskip("pyperf")

TINY = ["--processes", "1", "--values", "2", "--min-time", "0.005"]
OPS = 300


@pytest.fixture(scope="module")
def cluster(dask_cluster: Any) -> Any:
    return dask_cluster


def kvctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvctl", "bench", *args], capture_output=True, text=True,
                          timeout=300)


def test_clients_are_spread_evenly() -> None:
    assert shares(5, 2) == [3, 2] and shares(3, 3) == [1, 1, 1] and sum(shares(64, 7)) == 64


def _redis() -> str:
    return f"{service_url('KVCTL_TEST_REDIS_URL')}?namespace=bd{os.getpid()}{time.monotonic_ns()}:"


def test_a_pass_merges_every_op_of_every_client(cluster: Any) -> None:
    job = Job(label="redis", url=_redis(), params=Params(keys=200, ops=OPS, clients=[3]), benches=[], out="",
              network=True)
    point = cluster_pass(job, "gridkv", get("gridkv").bench("get"), 3, OPS, 1.0, None, cluster.scheduler.address)
    assert point["clients"] == 3 and point["workers"] == 2  # 3 clients over 2 single-threaded workers
    # the percentiles are taken over every op of every client (not averaged per worker)
    assert point["ops"] == 3 * OPS == point["count"], point
    assert 0 < point["p50"] <= point["p95"] <= point["p99"] <= point["max"] and point["ops_per_s"] > 0


def test_bench_runs_its_load_passes_on_the_workers(tmp_path: Path, cluster: Any) -> None:
    out = tmp_path / "run.json"
    address = "dask://" + cluster.scheduler.address.removeprefix("tcp://")
    done = kvctl(_redis(), "--workload", "gorkflow", *TINY, "--keys", "100", "--ops", "100", "--clients", "2",
                 "--executor", address, "-o", str(out), "-q")
    assert done.returncode == 0, done.stderr
    run = Run.load(str(out))
    row = run.row("gorkflow.read@redis")
    assert row is not None
    curve = row.load_curve()
    assert [(p["clients"], p["workers"], p["ops"], p["count"]) for p in curve] == [(2, 2, 200, 200)]
    assert run.info["params"]["executor"] == cluster.scheduler.address


def test_the_executor_needs_client_counts() -> None:
    done = kvctl("memory://x", "--executor", "dask://127.0.0.1:1", "-q")
    assert done.returncode == 2 and "--clients" in done.stderr and len(done.stderr.strip().splitlines()) == 1, \
        done.stderr

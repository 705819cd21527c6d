"""Load passes on a Dask cluster (``kvctl bench --executor dask://...``): the clients run on the
workers, and their latencies are merged exactly.

A pass of N clients becomes T = min(N, worker threads) tasks, each pinned to its own worker
thread, holding about N/T of the clients as asyncio tasks over one store it opens itself (the
store's URL or profile name travels, never a secret).  Every task builds its plans, then says it
is ready and waits for the run's start event, so the clients start together.  Each task returns
its op count, its wall time and every op's latency in nanoseconds (8 bytes an op); the job
process concatenates them and takes the percentiles of the whole, so a p99 is the p99 of every
op of every client, not an average of per-worker percentiles.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from array import array
from dataclasses import replace
from typing import Any

from kvctl.bench.job import Job
from kvctl.bench.latency import summarize
from kvctl.bench.load import async_pass, chunks, planned_ops
from kvctl.bench.workloads import Bench
from kvctl.errors import KvctlError, UnavailableError, UsageError
from kvctl.extras import import_extra
from kvctl.url import redact

START_TIMEOUT_S = 120.0


def _distributed() -> Any:
    return import_extra("distributed", "dask", "--executor dask")


_clients: dict[str, Any] = {}


def _client(address: str) -> Any:
    """One client per job process and scheduler (a job runs several passes)."""
    if address not in _clients:
        try:
            _clients[address] = _distributed().Client(address, timeout=15)
        except (OSError, TimeoutError) as exc:
            raise UnavailableError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    return _clients[address]


def slots(client: Any) -> list[str]:
    """One entry per worker thread: the worker's address, repeated for each of its threads."""
    workers = client.scheduler_info()["workers"]
    return [addr for addr, info in sorted(workers.items()) for _ in range(max(1, info.get("nthreads", 1)))]


def shares(clients: int, tasks: int) -> list[int]:
    """``clients`` spread over ``tasks`` as evenly as possible."""
    return [clients // tasks + (1 if i < clients % tasks else 0) for i in range(tasks)]


def cluster_pass(job: Job, workload: str, bench: Bench, clients: int, ops: int | None, duration: float,
                 mean_s: float | None, address: str, *, host_local: bool = False) -> dict[str, Any]:
    """A load pass of ``clients`` clients on the workers of the scheduler at ``address``;
    ``host_local``: the store is a path on this host, which workers elsewhere cannot open."""
    if host_local:
        raise UsageError("the store is on this host's filesystem; workers on other hosts would each open "
                         "a different one", hint="use --executor dask://local, or a server store")
    if redact(job.url) != job.url:
        raise UsageError("the store's URL holds a secret, which would travel in the task arguments",
                         hint="put it in an *_env option, or name a profile configured on every worker")
    distributed = _distributed()
    client = _client(address)
    places = slots(client)
    if not places:
        raise UnavailableError(f"the Dask scheduler at {address} has no workers")
    split = shares(clients, min(clients, len(places)))
    run_id = uuid.uuid4().hex[:16]
    ready = distributed.Queue(f"kvctl-bench-ready-{run_id}", client=client)
    go = distributed.Event(f"kvctl-bench-go-{run_id}", client=client)
    per_client = planned_ops(ops, duration, mean_s)
    futures = [client.submit(client_task, job, workload, bench.name, n, per_client, None if ops else duration,
                             run_id, key=f"kvctl-bench-{run_id}-{i}", workers=[places[i]],
                             allow_other_workers=False, pure=False, retries=0)
               for i, n in enumerate(split)]
    try:
        _wait_ready(ready, futures, len(split))
        go.set()
        results = client.gather(futures)
    finally:
        client.cancel(futures)
    lats = [array("q", r["lat"]) for r in results]
    out: dict[str, Any] = {"clients": clients, "workers": len(split), "ops": sum(r["ops"] for r in results),
                           # each task's rate over its own wall time, summed: the aggregate while all ran
                           "ops_per_s": sum(r["ops"] / r["wall"] for r in results if r["wall"])}
    out.update(summarize(lats))
    return out


def _wait_ready(ready: Any, futures: list[Any], n: int) -> None:
    """Until every task has built its plans; a task that failed first raises its error here."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while ready.qsize() < n:
        for fut in futures:
            if fut.status == "error":
                fut.result()  # raises the task's exception
        if time.monotonic() > deadline:
            raise KvctlError(f"{n - ready.qsize()} of {n} load tasks did not start within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


def client_task(job: Job, workload: str, bench_name: str, clients: int, per_client: int,
                duration: float | None, run_id: str) -> dict[str, Any]:
    """On a worker: ``clients`` clients of one bench; their ops, wall time and latencies."""
    from kvctl import config
    from kvctl.bench.runner import open_ctx
    from kvctl.bench.workloads import get

    distributed = _distributed()
    worker_client = distributed.get_client()
    job = replace(job, url=config.resolve(job.url))
    bench = get(workload).bench(bench_name)
    ctx = open_ctx(job, None)
    target, closed = ctx.target, False
    try:
        if bench.setup is not None:
            bench.setup(ctx)
        plans = [chunks(bench.plan(ctx, per_client)) for _ in range(clients)]
        if target.is_async:
            _start_together(distributed, worker_client, run_id)
            result = target.run_coroutine(async_pass(target.store, plans, ctx.value, duration))
        else:
            # as a local load pass: a fresh connection behind the async adapter, the set-up one
            # closed first (some embedded backends lock their files against a second one)
            from kvctl.registry import open_async

            ctx.close()
            target.close()
            closed = True

            async def main() -> Any:
                async with open_async(ctx.url) as store:
                    _start_together(distributed, worker_client, run_id)
                    return await async_pass(store, plans, ctx.value, duration)

            result = asyncio.run(main())
    finally:
        if not closed:
            ctx.close()
            target.close()
    ops, wall, lats = result
    return {"ops": ops, "wall": wall, "lat": b"".join(lat.tobytes() for lat in lats)}


def _start_together(distributed: Any, client: Any, run_id: str) -> None:
    """Say this task is ready, then wait for the driver's start (every task ready)."""
    distributed.Queue(f"kvctl-bench-ready-{run_id}", client=client).put(1)
    if not distributed.Event(f"kvctl-bench-go-{run_id}", client=client).wait(timeout=START_TIMEOUT_S):
        raise KvctlError(f"the load pass did not start within {START_TIMEOUT_S:.0f} s")

"""Load passes: N concurrent clients, for the throughput-versus-clients curve.

Network backends get N asyncio tasks sharing one store (its driver's connection pool), each op
timed into preallocated arrays for tail latency under load.  Embedded backends get N processes
(the GIL would serialize threads), each with its own connection, started together on a barrier.
Every plan is built before the clock starts; a pass runs for ``--duration`` seconds, or exactly
``--ops`` ops per client.
"""

from __future__ import annotations

import asyncio
import queue
import time
from array import array
from typing import Any

from kvctl.bench.kernels import Plan, run_async, run_async_timed
from kvctl.bench.latency import preallocated, summarize
from kvctl.bench.workloads import Bench, Ctx

CHUNK = 500                 # ops between deadline checks
MAX_PLANNED_OPS = 400_000   # per client, when sizing a duration-bound pass from the single-client mean


def planned_ops(ops: int | None, duration: float, mean_s: float | None) -> int:
    if ops:
        return ops
    if not mean_s or mean_s <= 0:
        return 20_000
    return max(CHUNK, min(MAX_PLANNED_OPS, int(duration / mean_s * 1.2) + CHUNK))


def chunks(plan: Plan) -> list[Plan]:
    """Split a plan into CHUNK-op pieces (one deadline check per piece)."""
    out = []
    n = len(plan)
    for i in range(0, n, CHUNK):
        out.append(Plan(plan.keys[i:i + CHUNK], only=plan.only,
                        codes=plan.codes[i:i + CHUNK] if plan.codes else b"",
                        args=plan.args[i:i + CHUNK] if plan.args is not None else None,
                        ttl_ms=plan.ttl_ms))
    return out


# -- network: asyncio tasks -----------------------------------------------------------------------

async def _client_task(store: Any, chunks: list[Plan], value: bytes, deadline: float | None,
                       record: bool) -> tuple[int, float, list[array]]:
    done = 0
    lats: list[array] = []
    t0 = time.perf_counter()
    for chunk in chunks:
        if record:
            lat = preallocated(len(chunk))
            await run_async_timed(store, chunk, value, lat)
            lats.append(lat)
        else:
            await run_async(store, chunk, value)
        done += len(chunk)
        if deadline is not None and time.perf_counter() >= deadline:
            break
    return done, time.perf_counter() - t0, lats


async def async_pass(store: Any, plans: list[list[Plan]], value: bytes, duration: float | None
                     ) -> tuple[int, float, list[array]]:
    """Every client's plan at once on one store: the ops done, the wall time, and every op's latency."""
    deadline = None if duration is None else time.perf_counter() + duration
    t0 = time.perf_counter()
    results = await asyncio.gather(*(_client_task(store, pieces, value, deadline, True) for pieces in plans))
    wall = time.perf_counter() - t0
    return sum(r[0] for r in results), wall, [lat for r in results for lat in r[2]]


async def _async_pass(store: Any, plans: list[list[Plan]], value: bytes, duration: float | None
                      ) -> dict[str, Any]:
    ops, wall, lats = await async_pass(store, plans, value, duration)
    out: dict[str, Any] = {"clients": len(plans), "ops": ops, "ops_per_s": ops / wall if wall else 0.0}
    out.update(summarize(lats))
    return out


def network_pass(ctx: Ctx, bench: Bench, clients: int, ops: int | None, duration: float,
                 mean_s: float | None) -> dict[str, Any]:
    per_client = planned_ops(ops, duration, mean_s)
    plans = [chunks(bench.plan(ctx, per_client)) for _ in range(clients)]
    limit = None if ops else duration
    target = ctx.target
    if target.is_async:
        return dict(target.run_coroutine(_async_pass(target.store, plans, ctx.value, limit)))

    # a sync network store: a fresh connection behind the async adapter, on a fresh loop
    from kvctl.registry import open_async

    async def main() -> dict[str, Any]:
        async with open_async(ctx.url) as store:
            return await _async_pass(store, plans, ctx.value, limit)

    return asyncio.run(main())


# -- embedded: processes --------------------------------------------------------------------------

def _child(job_path: str, workload: str, bench_name: str, per_client: int, duration: float | None,
           barrier: Any, results: Any) -> None:
    """One embedded client: its own connection; always reports, even when it cannot open the store
    (a backend that locks its files against a second process fails here, and says why)."""
    ctx = None
    try:
        from kvctl.bench.job import Job
        from kvctl.bench.runner import open_ctx
        from kvctl.bench.workloads import get

        job = Job.load(job_path)
        bench = get(workload).bench(bench_name)
        ctx = open_ctx(job, None)
        if bench.setup is not None:
            bench.setup(ctx)
        pieces = chunks(bench.plan(ctx, per_client))
        barrier.wait()
        deadline = None if duration is None else time.perf_counter() + duration
        done, busy = 0, 0.0
        for chunk in pieces:
            busy += ctx.target.time_plan(chunk, ctx.value)
            done += len(chunk)
            if deadline is not None and time.perf_counter() >= deadline:
                break
        results.put((done, busy, None, False))
    except BaseException as exc:
        import threading

        # a client that failed says why; the others only see the barrier break (not a reason)
        results.put((0, 0.0, _reason(exc), not isinstance(exc, threading.BrokenBarrierError)))
        barrier.abort()
    finally:
        if ctx is not None:
            ctx.close()
            ctx.target.close()


def _reason(exc: BaseException) -> str:
    from kvctl.errors import KvctlError

    text = str(exc) if isinstance(exc, KvctlError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]


def process_pass(job_path: str, workload: str, bench: Bench, clients: int, ops: int | None,
                 duration: float, mean_s: float | None) -> dict[str, Any]:
    import multiprocessing

    mp = multiprocessing.get_context("spawn")
    barrier = mp.Barrier(clients + 1)
    results = mp.Queue()
    per_client = planned_ops(ops, duration, mean_s)
    procs = [mp.Process(target=_child, args=(job_path, workload, bench.name, per_client,
                                             None if ops else duration, barrier, results))
             for _ in range(clients)]
    for p in procs:
        p.start()
    started = True
    try:
        barrier.wait(timeout=120)
    except Exception:
        started = False
    rates, total = 0.0, 0
    pending = clients
    reasons: list[str] = []   # why clients failed (the first is reported)
    broken = not started      # some client only saw the start barrier break
    died = False
    limit = time.monotonic() + (duration or 0) + 600
    while pending and time.monotonic() < limit:
        try:
            done, busy, reason, real = results.get(timeout=1.0)
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and results.empty():
                died = True
                break
            continue
        pending -= 1
        if reason and real:
            reasons.append(reason)
        broken = broken or bool(reason and not real)
        total += done
        rates += done / busy if busy else 0.0
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.terminate()  # our own client process, stuck: end it so the run goes on
            p.join(timeout=10)
    if reasons or broken or died or pending:
        from kvctl.errors import KvctlError

        why = (reasons[0] if reasons else "the clients did not all start" if broken
               else "a client process died without a result" if died else "no result in time")
        raise KvctlError(f"{clients} client process{'es' if clients != 1 else ''}: {why}")
    # each client's rate over its own busy time, summed: the aggregate while all ran together
    return {"clients": clients, "ops": total, "ops_per_s": rates}

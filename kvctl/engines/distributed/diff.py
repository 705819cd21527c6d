"""`kvctl diff --executor dask://...`: the two stores compared slice by slice in Dask tasks.

The split is migrate's (:func:`kvctl.engines.migrate.split.plan_slices`): key ranges when both
stores scan in key order (each task merge-joins its range of both), hash slices otherwise (each
task looks up its share of A in B and of B in A).  Each task opens both stores for reading and
returns its :class:`~kvctl.engines.diff.DiffResult`, counts and at most ``sample`` keys per kind;
the driver adds them up.  A diff writes nothing, so it has no checkpoint: a slice whose worker
died is simply compared again.  Ctrl-C stops every slice through the run's Dask ``Event``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from typing import Any

from kvctl.errors import KvctlError

from .._slices import slice_of
from .._stores import describe, open_async
from ..diff import DiffOptions, DiffResult, both_ordered, compare
from ..migrate.plan import Plan
from ..migrate.split import plan_slices
from ..reporting import Reporter
from .cluster import (
    RESUBMITS,
    SLICES_PER_WORKER,
    TICK_S,
    _need_dask,
    connect,
    raise_failed,
    settle,
    stoppable,
    worker_count,
)
from .executor import ExecutorSpec, check_reachable, task_ref


def run(a_ref: str, b_ref: str, a_url: str, b_url: str, opts: DiffOptions, spec: ExecutorSpec, *, workers: int = 1,
        slices: int | None = None, shared_fs: bool = False, reporter: Reporter | None = None) -> DiffResult:
    """Compare ``a_url`` and ``b_url`` on a Dask cluster; ``*_ref`` is what the workers open."""
    refs = (task_ref(a_ref, a_url), task_ref(b_ref, b_url))
    reporter = reporter or Reporter()
    t0 = time.perf_counter()
    with connect(spec, workers) as client:
        n = slices or SLICES_PER_WORKER * worker_count(client)
        names, split = asyncio.run(_split(a_url, b_url, opts, spec, shared_fs, n))
        result = DiffResult(*names)
        run_id = uuid.uuid4().hex[:16]
        stop = _need_dask().Event(f"kvctl-stop-{run_id}", client=client)
        futures = {client.submit(diff_slice, *refs, opts, part, run_id, pure=False): i
                   for i, part in enumerate(split)}
        errors: dict[int, tuple[str, str, str | None, int]] = {}
        tries: dict[int, int] = {}
        try:
            while futures:
                for fut in [f for f in futures if f.done()]:
                    i = futures.pop(fut)
                    try:
                        res = fut.result()
                    except Exception as exc:  # its worker died too often: compare the slice again
                        tries[i] = tries.get(i, 0) + 1
                        if tries[i] <= RESUBMITS:
                            futures[client.submit(diff_slice, *refs, opts, split[i], run_id, pure=False)] = i
                        else:
                            errors[i] = ("KvctlError", f"{type(exc).__name__}: {exc}", None, 70)
                        continue
                    if isinstance(res, DiffResult):
                        result.absorb(res, opts.sample)
                    else:
                        errors[i] = tuple(res)
                settle(futures, TICK_S)
        except KeyboardInterrupt:
            stop.set()  # every slice stops within a poll; nothing to save
            client.cancel(list(futures))
            raise
    if errors:
        raise_failed(errors, len(split), reporter, "rerun the diff")
    result.seconds = time.perf_counter() - t0
    return result


async def _split(a_url: str, b_url: str, opts: DiffOptions, spec: ExecutorSpec, shared_fs: bool,
                 n: int) -> tuple[tuple[str, str], list[dict[str, Any]]]:
    a, b = open_async(a_url, access="read"), open_async(b_url, access="read")
    try:
        check_reachable(a, spec, shared_fs, "store A")
        check_reachable(b, spec, shared_fs, "store B")
        plan = Plan(prefix=opts.filter.prefix, glob=opts.filter.glob)
        return (describe(a), describe(b)), await plan_slices(a, plan, n, ordered=both_ordered(a, b), partitions=False)
    finally:
        await a.close()
        await b.close()


def diff_slice(a_ref: str, b_ref: str, opts: DiffOptions, part: dict[str, Any], run_id: str,
               ) -> DiffResult | list[Any]:
    """Compare one slice on a Dask worker: its result, or a kvctl error as [class, message, hint, code]."""
    from kvctl import config

    stop = _need_dask().Event(f"kvctl-stop-{run_id}", client=_need_dask().get_client())
    try:
        return asyncio.run(_compare(config.resolve(a_ref), config.resolve(b_ref),
                                    replace(opts, part=slice_of(part)), stop))
    except KvctlError as exc:
        return [type(exc).__name__, exc.message, exc.hint, exc.exit_code]


async def _compare(a_url: str, b_url: str, opts: DiffOptions, stop: Any) -> DiffResult:
    a, b = open_async(a_url, access="read"), open_async(b_url, access="read")
    try:
        return await stoppable(compare(a, b, opts), stop)
    finally:
        await a.close()
        await b.close()

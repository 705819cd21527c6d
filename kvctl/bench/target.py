"""The store under test, opened inside a worker process and driven from synchronous code.

A sync store is called directly.  An async store gets ONE event loop (``asyncio.Runner``) for the
life of the worker: its connections are opened on that loop and every timed batch of operations
runs on it (pyperf's ``bench_async_func`` would make a loop per value and break them).  The
clock is read inside the coroutine, so loop start-up is never timed.
"""

from __future__ import annotations

import time
from array import array
from typing import Any

from kvctl.adapt import is_async
from kvctl.bench import kernels
from kvctl.bench.kernels import Plan


class Target:
    """One open store (sync or async) with helpers to set it up and to time plans on it."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.is_async = is_async(store)
        self._loop: Any = None
        if self.is_async:
            import asyncio

            self._loop = asyncio.Runner()
            enter = getattr(store, "__aenter__", None)
            if enter is not None:
                self._loop.run(enter())
        else:
            enter = getattr(store, "__enter__", None)
            if enter is not None:
                enter()
        self.capabilities = getattr(store, "capabilities", None)

    @classmethod
    def open(cls, url: str) -> Target:
        from kvctl.registry import open_url

        return cls(open_url(url))

    # -- untimed calls (set-up, checks) ----------------------------------------------------------
    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.store, method)(*args, **kwargs)
        if self.is_async:
            return self._loop.run(result)
        return result

    # -- timed runs ------------------------------------------------------------------------------
    def time_plan(self, plan: Plan, value: bytes) -> float:
        """Seconds to execute ``plan`` (the plan was built before; nothing else is timed)."""
        if self.is_async:
            return float(self._loop.run(_timed_async(self.store, plan, value)))
        clock = time.perf_counter
        t0 = clock()
        kernels.run_sync(self.store, plan, value)
        return clock() - t0

    def run_plan(self, plan: Plan, value: bytes) -> None:
        if self.is_async:
            self._loop.run(kernels.run_async(self.store, plan, value))
        else:
            kernels.run_sync(self.store, plan, value)

    def latency_plan(self, plan: Plan, value: bytes, lat: array) -> None:
        """Execute ``plan`` with a clock around every op (ns into the preallocated ``lat``)."""
        if self.is_async:
            self._loop.run(kernels.run_async_timed(self.store, plan, value, lat))
        else:
            kernels.run_sync_timed(self.store, plan, value, lat)

    def run_coroutine(self, coro: Any) -> Any:
        """Run a coroutine on this target's loop (async stores only: one loop for everything)."""
        import asyncio

        if self._loop is None:
            return asyncio.run(coro)
        return self._loop.run(coro)

    def close(self) -> None:
        try:
            if self.is_async:
                exit_ = getattr(self.store, "__aexit__", None)
                if exit_ is not None:
                    self._loop.run(exit_(None, None, None))
            else:
                exit_ = getattr(self.store, "__exit__", None)
                if exit_ is not None:
                    exit_(None, None, None)
        finally:
            if self._loop is not None:
                self._loop.close()


async def _timed_async(store: Any, plan: Plan, value: bytes) -> float:
    clock = time.perf_counter
    t0 = clock()
    await kernels.run_async(store, plan, value)
    return clock() - t0

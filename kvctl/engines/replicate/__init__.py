"""`kvctl sync`: incremental replication between two stores (named so as not to be confused with
the blocking form of the store protocol, :func:`kvctl.adapt.to_sync`).

:func:`run` does one sync and :func:`watch` follows the source until SIGINT or SIGTERM; each owns
the command's only event loop.  The pieces: :mod:`.engine` (one run between two open stores),
:mod:`.apply` (last-writer-wins writes, shared with snapshot restore), :mod:`.state` (the pair's
cursors) and :mod:`.result`.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from ..reporting import Progress, Reporter
from .apply import apply_lww
from .engine import SyncEngine, SyncPlan, opened, sync
from .result import Conflict, SyncResult, WatchResult
from .state import state_path

__all__ = ["Conflict", "SyncEngine", "SyncPlan", "SyncResult", "WatchResult", "apply_lww", "opened", "run",
           "state_path", "sync", "watch"]


def run(plan: SyncPlan, reporter: Reporter | None = None) -> SyncResult:
    """One sync of ``plan``'s pair: open both stores, move what changed, close them."""
    return asyncio.run(sync(plan, reporter))


def watch(plan: SyncPlan, interval_s: float, reporter: Reporter | None = None,
          on_result: Callable[[SyncResult, WatchResult], None] | None = None) -> WatchResult:
    """Follow the source, one incremental run per ``interval_s``, until SIGINT or SIGTERM, which
    end the watch after the run in progress.  ``on_result`` is told of each run, with the totals."""
    return asyncio.run(_watch(plan, interval_s, reporter or Reporter(), on_result))


class _Totals(Reporter):
    """Adds each run to the watch's totals (and the lag its progress events carry)."""

    def __init__(self, inner: Reporter, on_result: Callable[[SyncResult, WatchResult], None] | None) -> None:
        self.inner = inner
        self.on_result = on_result
        self.totals = WatchResult()

    def progress(self, event: Progress) -> None:
        self.totals.saw_lag(event.lag_ms)
        self.inner.progress(event)

    def note(self, message: str) -> None:
        self.inner.note(message)

    def ran(self, result: SyncResult) -> None:
        self.totals.add(result)
        if self.on_result is not None:
            self.on_result(result, self.totals)


async def _watch(plan: SyncPlan, interval_s: float, reporter: Reporter,
                 on_result: Callable[[SyncResult, WatchResult], None] | None) -> WatchResult:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    totals = _Totals(reporter, on_result)
    async with opened(plan) as (src, dst):
        await SyncEngine(plan, src, dst, totals).watch(interval_s, stop, totals.ran)
    return totals.totals

"""What every Dask-run engine shares: the client, the worker count, stopping a task, and
reporting the slices that failed."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import warnings
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from kvctl.errors import KvctlError, UnavailableError
from kvctl.extras import import_extra

from ..reporting import Reporter, plural
from .executor import ExecutorSpec

T = TypeVar("T")
RESUBMITS = 2  # the driver's own retries of a slice whose worker kept dying, after Dask's
SLICES_PER_WORKER = 8
STOP_POLL_S = 0.2  # a slice's wait for the run's stop, renewed this often
TICK_S = 0.1  # the driver's progress and checkpoint mirroring, at most this often


def _need_dask() -> Any:
    return import_extra("distributed", "dask", "--executor dask")


@contextlib.contextmanager
def connect(spec: ExecutorSpec, workers: int) -> Iterator[Any]:
    """A Dask client: to the scheduler at ``spec.address``, or to a cluster of ``workers``
    processes started on this machine for the run (loopback only, no dashboard)."""
    distributed = _need_dask()
    if spec.address is None:
        # The scheduler serves HTTP (health, metrics) even without a dashboard, on 8787 unless
        # told otherwise, and warns when that port is taken: a free port, and Dask's start-up
        # warnings kept out of kvctl's output (they are about Dask's set-up, not the user's).
        with _sigint_blocked(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", dashboard_address=None,
                                               scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
        with cluster, distributed.Client(cluster) as client:
            yield client
        return
    try:
        client = distributed.Client(spec.address, timeout=15)
    except (OSError, TimeoutError) as exc:
        raise UnavailableError(f"cannot reach the Dask scheduler at {spec.address}: {exc}") from None
    with client:
        yield client


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Start the cluster's threads, and so its worker processes, with SIGINT blocked: a Ctrl-C
    reaches the whole process group, and only the driver acts on it (it stops every slice)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def worker_count(client: Any) -> int:
    return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))


def raise_failed(errors: dict[int, tuple[str, str, str | None, int]], total: int, reporter: Reporter,
                 hint: str) -> None:
    """List every failed slice, then raise the first one's error (its class and exit code)."""
    from kvctl import errors as tree

    for i, (_, message, _, _) in sorted(errors.items()):
        reporter.note(f"slice {i} failed: {message}")
    first = min(errors)
    cls_name, message, own_hint, code = errors[first]
    cls = getattr(tree, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, KvctlError)):
        cls = KvctlError
    exc = cls(f"{len(errors)} of {plural(total, 'slice')} failed; slice {first}: {message}", hint=own_hint or hint)
    exc.exit_code = code
    raise exc


def settle(pending: dict[Any, int], timeout: float) -> None:
    """Return when one of the ``pending`` futures is done, or after ``timeout``: a finished slice
    (and, once stopping, the last one) is seen at once, not at the next tick."""
    with contextlib.suppress(TimeoutError):
        _need_dask().wait(list(pending), timeout=timeout, return_when="FIRST_COMPLETED")


def drop_queued(client: Any, pending: dict[Any, int]) -> None:
    """Stopping: cancel the slices no worker has started, so the run does not wait for each to be
    scheduled only to return "stopped".  A slice the scheduler hands out after this sees the
    stop already set and returns at once; the started ones stop themselves and save."""
    with contextlib.suppress(Exception):  # a lost scheduler: wait for them as before
        started = {key for keys in client.processing().values() for key in keys}
        # not done: a slice that ended since the last look is not processing either, and its
        # result must still be read
        queued = [fut for fut in pending if not fut.done() and fut.key not in started]
        client.cancel(queued)
        for fut in queued:
            del pending[fut]


async def stoppable(work: Coroutine[Any, Any, T], stop: Any) -> T:
    """Run ``work``, cancelling it (which saves a copy's checkpoint) when the driver sets ``stop``."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    over = threading.Event()

    def watch() -> None:
        while not over.is_set():
            with contextlib.suppress(Exception):  # a lost scheduler: go on; the fence stops a stale copy
                if stop.wait(timeout=STOP_POLL_S):
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(task.cancel)
                    return

    watcher = threading.Thread(target=watch, name="kvctl-slice-stop", daemon=True)
    watcher.start()
    try:
        return await work
    finally:
        over.set()
        # The slice ends only when its wait on the scheduler has: a wait still pending when the
        # run's cluster closes is cancelled there and logged as an error on the user's terminal.
        await asyncio.to_thread(watcher.join, 2 * STOP_POLL_S)

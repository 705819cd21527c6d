"""`kvctl migrate --executor dask://...`: the migrate engine in Dask tasks, one per slice.

The driver (this process) splits the source exactly as ``--workers`` does
(:func:`kvctl.engines.migrate.split.prepare`), but into many more slices than workers so a slow or
dead worker does not hold the run, and submits one task per unfinished slice.  Records never
pass through the driver or the scheduler: a task opens both stores itself, from a profile name
or a URL without secrets, and returns a small summary.

Checkpoints live in three places:

* on the worker, in a file of its own (what the engine resumes from);
* in the cluster, in a Dask ``Variable`` per slice, written before every checkpoint, so that
  Dask's retry of a killed worker's task, on any host, resumes mid-slice;
* in the driver's checkpoint file: each slice's task sends its checkpoints as events and the
  driver mirrors them into the coordinator checkpoint (``extra["cursors"]``), so ``--resume``
  after a killed driver re-copies at most about one checkpoint interval per slice.

Fencing: Dask may run a task twice at once (a worker cut off from the scheduler keeps running
its task while another worker retries it), and cancelling never stops running code.  So each
attempt claims the slice's Variable when it starts, with a token of its own, and checks under a
lock before every checkpoint write that the token is still the current one; a stale attempt
raises :class:`StaleAttempt` and stops without writing.

Stop: Ctrl-C sets the run's Dask ``Event``; every task watches it, cancels its copy (which saves
its checkpoint) and returns "stopped".  A second Ctrl-C abandons the tasks: their next attempt
fences them.

Failures: a task that raises is reported with its slice; a task whose worker died is retried by
Dask (``distributed.scheduler.allowed-failures``), then resubmitted by the driver up to
``RESUBMITS`` times.  Every failed slice is listed; the other slices go on, and ``--resume``
reruns only the unfinished ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from kvctl.errors import KvctlError, UsageError

from .._stopped import resumable
from .._stores import open_async, start_count
from ..migrate import checkpoint
from ..migrate.copy import finish, migrate_urls
from ..migrate.plan import Plan, Summary
from ..migrate.split import collect, prepare, slice_plan
from ..reporting import Counts, Once, Progress, Reporter
from .cluster import (
    RESUBMITS,
    SLICES_PER_WORKER,
    TICK_S,
    _need_dask,
    connect,
    drop_queued,
    raise_failed,
    settle,
    stoppable,
    worker_count,
)
from .executor import ExecutorSpec, check_reachable, task_ref

STOP_GRACE_S = 30.0
EVENT_EVERY_S = 0.5  # a task's progress events, at most


class StaleAttempt(KvctlError):
    """A newer attempt of this slice owns it: this one must stop without writing a checkpoint."""


# -- the driver --------------------------------------------------------------------------------
def run(src_ref: str, dst_ref: str, src_url: str, dst_url: str, plan: Plan, spec: ExecutorSpec, *,
        slices: int | None = None, shared_fs: bool = False, reporter: Reporter | None = None) -> Summary:
    """Migrate ``src_url`` to ``dst_url`` on a Dask cluster; ``*_ref`` is what the workers open."""
    if src_url == dst_url:
        raise UsageError("source and destination are the same store")
    refs = (task_ref(src_ref, src_url), task_ref(dst_ref, dst_url))
    reporter = Once(reporter or Reporter())
    with connect(spec, plan.workers) as client:
        n = slices or SLICES_PER_WORKER * worker_count(client)
        cp, cp_path, summary, plan = asyncio.run(_prepare(src_url, dst_url, plan, spec, shared_fs, reporter, n))
        summary.workers = worker_count(client)
        t0 = time.perf_counter()
        driver = _Driver(client, refs, plan, cp, cp_path, reporter, t0)
        if plan.estimate_total:
            _count_in_background(src_url, plan, driver.estimate)
        driver.run()
    collect(cp, summary)
    summary.processed_this_run = driver.processed
    summary.copy_seconds = time.perf_counter() - t0
    asyncio.run(_finish(src_url, dst_url, plan, summary, reporter, t0))
    summary.seconds = time.perf_counter() - t0
    if not plan.dry_run:
        checkpoint.remove(cp_path)
    return summary


async def _prepare(src_url: str, dst_url: str, plan: Plan, spec: ExecutorSpec, shared_fs: bool,
                   reporter: Reporter, n: int) -> tuple[checkpoint.Checkpoint, Path, Summary, Plan]:
    src, dst = open_async(src_url, access="read"), open_async(dst_url)
    try:
        check_reachable(src, spec, shared_fs, "source")
        check_reachable(dst, spec, shared_fs, "destination")
        return await prepare(src, dst, src_url, dst_url, plan, reporter, n, option="--executor",
                             executor="dask")
    finally:
        await src.close()
        await dst.close()


def _count_in_background(src_url: str, plan: Plan, total: list[int | None]) -> None:
    """Count the source in a thread of the driver for the progress bar's total and ETA: the
    slices' own copies do not count (each knows only its part)."""
    async def count() -> None:
        src = open_async(src_url, access="read")
        try:
            task = start_count(src, plan.key_filter, total)
            if task is not None:
                await task
        finally:
            await src.close()

    def main() -> None:
        with contextlib.suppress(Exception):  # an estimate is optional
            asyncio.run(count())

    threading.Thread(target=main, name="kvctl-count", daemon=True).start()


async def _finish(src_url: str, dst_url: str, plan: Plan, summary: Summary, reporter: Reporter,
                  t0: float) -> None:
    src, dst = open_async(src_url, access="read"), open_async(dst_url)
    try:
        await finish(src, dst, plan, summary, reporter, t0)
    finally:
        await src.close()
        await dst.close()


class _Driver:
    """Submits the unfinished slices, mirrors their checkpoints, merges their progress."""

    def __init__(self, client: Any, refs: tuple[str, str], plan: Plan, cp: checkpoint.Checkpoint,
                 cp_path: Path, reporter: Reporter, t0: float) -> None:
        self.client, self.refs, self.plan = client, refs, plan
        self.cp, self.cp_path, self.reporter, self.t0 = cp, cp_path, reporter, t0
        self.run_id = f"{cp.fingerprint[:16]}-{cp.started_at_ms}"
        self.live: dict[int, Counts] = {}
        self.lock = threading.Lock()  # events arrive on the client's thread
        self.dirty = False
        self.processed = 0
        self.errors: dict[int, tuple[str, str, str | None, int]] = {}
        self.resubmits: dict[int, int] = {}
        self.estimate: list[int | None] = [None]  # the source's key count, once known
        cp.extra.setdefault("cursors", {})

    @property
    def finished(self) -> dict[str, Any]:
        return self.cp.extra["finished"]

    def run(self) -> None:
        distributed = _need_dask()
        stop = distributed.Event(f"kvctl-stop-{self.run_id}", client=self.client)
        stop.clear()
        topic = f"kvctl-{self.run_id}"
        self.client.subscribe_topic(topic, self._on_event)
        futures: dict[Any, int] = {}
        for i, spec in enumerate(self.cp.extra["slices"]):
            if str(i) not in self.finished:
                self._claim_variable(distributed, i)
                futures[self._submit(i, spec)] = i
        try:
            self._watch(futures, stop)
        finally:
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(topic)
            self._mirror(force=True)
        if self.errors:
            self._raise()

    def _submit(self, i: int, spec: dict[str, Any]) -> Any:
        return self.client.submit(
            run_slice, self.refs[0], self.refs[1], self.plan, spec, i, self.run_id,
            key=f"kvctl-slice-{self.run_id}-{i}-{self.resubmits.get(i, 0)}", pure=False, retries=0)

    def _claim_variable(self, distributed: Any, i: int) -> None:
        """Seed the slice's cluster state with the cursor the driver mirrored (a resume)."""
        seed = self.cp.extra["cursors"].get(str(i))
        distributed.Variable(_var(self.run_id, i), client=self.client).set({"owner": None, "cp": seed})

    def _watch(self, futures: dict[Any, int], stop: Any) -> None:
        pending = dict(futures)
        asked_at: float | None = None
        while pending:
            try:
                if asked_at is not None and time.monotonic() - asked_at > STOP_GRACE_S:
                    self.client.cancel(list(pending))
                    raise KeyboardInterrupt
                for fut in [f for f in pending if f.done()]:
                    i = pending.pop(fut)
                    again = self._result(fut, i, stopping=asked_at is not None)
                    if again is not None:
                        pending[again] = i
                self._mirror()
                self.reporter.progress(Progress("copy", self.total(), self.estimate[0],
                                                time.perf_counter() - self.t0))
                settle(pending, TICK_S)
            except KeyboardInterrupt:
                if asked_at is not None:  # a second Ctrl-C: abandon the tasks (the next attempt fences them)
                    self.client.cancel(list(pending))
                    raise
                asked_at = time.monotonic()
                stop.set()
                drop_queued(self.client, pending)
        if asked_at is not None:
            self._mirror(force=True)
            if not self.plan.dry_run:
                self.reporter.note(f"stopped {resumable(self.total().read)}")
            raise KeyboardInterrupt

    def _result(self, fut: Any, i: int, stopping: bool) -> Any:
        """Record a finished task; a new future when the slice is to be run again."""
        try:
            res = fut.result()
        except Exception as exc:  # the task's worker died too often (KilledWorker), or Dask failed
            if not stopping and self.resubmits.get(i, 0) < RESUBMITS:
                self.resubmits[i] = self.resubmits.get(i, 0) + 1
                self.reporter.note(f"slice {i}: {type(exc).__name__}: {exc}; running it again")
                return self._submit(i, self.cp.extra["slices"][i])
            self.errors[i] = ("KvctlError", f"{type(exc).__name__}: {exc}", None, 70)
            return None
        self._take_cp(i, res.get("owner"), res.get("cp"))
        outcome = res["outcome"]
        if outcome == "done":
            self.live.pop(i, None)
            self.processed += res["processed"]
            self.finished[str(i)] = {"counts": res["counts"], "problems": res["problems"]}
            self.cp.extra["cursors"].pop(str(i), None)
            self._mirror(force=True)  # this slice is complete: a resume skips it
            with contextlib.suppress(Exception):
                _need_dask().Variable(_var(self.run_id, i), client=self.client).delete()
        elif outcome == "stale" and not stopping:  # an attempt the driver does not know took it over
            return self._submit(i, self.cp.extra["slices"][i])
        elif outcome == "error":
            self.errors[i] = tuple(res["error"])
        return None

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        i = int(msg["slice"])
        with self.lock:
            self.live[i] = Counts.from_dict(msg["counts"])
        if msg.get("cp") is not None:
            self._take_cp(i, msg["owner"], msg["cp"])

    def _take_cp(self, i: int, owner: str | None, cp: dict[str, Any] | None) -> None:
        if cp is None or str(i) in self.finished:
            return
        with self.lock:
            old = self.cp.extra["cursors"].get(str(i))
            # the newest checkpoint of the slice wins: counts only grow within an attempt, and a
            # later attempt starts from the previous one's checkpoint
            if old is None or cp.get("updated_at_ms", 0) >= old.get("updated_at_ms", 0):
                self.cp.extra["cursors"][str(i)] = cp
                self.dirty = True

    def _mirror(self, force: bool = False) -> None:
        with self.lock:
            if (self.dirty or force) and not self.plan.dry_run:
                self.cp.save(self.cp_path)
                self.dirty = False

    def total(self) -> Counts:
        total = Counts()
        with self.lock:
            for c in self.live.values():
                total.add(c)
        for done in self.finished.values():
            total.add(Counts.from_dict(done["counts"]))
        return total

    def _raise(self) -> None:
        raise_failed(self.errors, len(self.cp.extra["slices"]), self.reporter,
                     "the other slices are done or saved: rerun with --resume to continue")


def _var(run_id: str, i: int) -> str:
    return f"kvctl-{run_id}-{i}"


# -- a task ------------------------------------------------------------------------------------
class _Fence:
    """This attempt's claim on its slice's cluster state (see the module docstring)."""

    def __init__(self, run_id: str, index: int) -> None:
        distributed = _need_dask()
        self.client = distributed.get_client()
        self.worker = distributed.get_worker()
        self.variable = distributed.Variable(_var(run_id, index), client=self.client)
        self.lock = distributed.Lock(f"{_var(run_id, index)}-lock")
        self.topic = f"kvctl-{run_id}"
        self.index = index
        self.owner = f"{uuid.uuid4().hex[:12]}@{self.worker.address}"
        self.counts = Counts()
        self._last = 0.0

    def claim(self) -> dict[str, Any] | None:
        """Become the slice's current attempt; the checkpoint to resume from, if any."""
        with self.lock:
            try:
                state = self.variable.get(timeout=5)
            except TimeoutError:  # the driver removed it: the slice finished, this is a recomputation
                raise StaleAttempt(f"slice {self.index} is already finished") from None
            self.variable.set({"owner": self.owner, "cp": state["cp"]})
        return state["cp"]

    def before_checkpoint(self, cp: checkpoint.Checkpoint) -> None:
        """Fence, then publish: the cursor where a retry finds it and an event the driver mirrors."""
        doc = _cp_doc(cp)
        with self.lock:
            if self.variable.get()["owner"] != self.owner:
                raise StaleAttempt(f"slice {self.index}: a newer attempt owns it")
            self.variable.set({"owner": self.owner, "cp": doc})
        self.send(doc)

    def send(self, doc: dict[str, Any] | None = None) -> None:
        self.worker.log_event(self.topic, {"slice": self.index, "owner": self.owner,
                                           "counts": self.counts.to_dict(), "cp": doc})


class _EventReporter(Reporter):
    def __init__(self, fence: _Fence) -> None:
        self.fence = fence
        self._last = 0.0

    def progress(self, event: Progress) -> None:
        self.fence.counts = event.counts
        now = time.monotonic()
        if now - self._last >= EVENT_EVERY_S:
            self._last = now
            self.fence.send()


def run_slice(src_ref: str, dst_ref: str, plan: Plan, spec: dict[str, Any], index: int, run_id: str,
              ) -> dict[str, Any]:
    """Copy one slice on a Dask worker; a small summary, never a traceback for a kvctl error."""
    from kvctl import config

    distributed = _need_dask()
    fence = _Fence(run_id, index)
    stop = distributed.Event(f"kvctl-stop-{run_id}", client=fence.client)
    out: dict[str, Any] = {"owner": fence.owner, "cp": None}
    if stop.is_set():
        return {**out, "outcome": "stopped"}
    try:
        seed = fence.claim()
    except StaleAttempt:
        return {**out, "outcome": "stale"}
    src_url, dst_url = config.resolve(src_ref), config.resolve(dst_ref)
    path = Path(tempfile.gettempdir()) / f"kvctl-slice-{run_id}-{index}-{os.getpid()}.json"
    wplan = replace(slice_plan(plan, spec, index), checkpoint_path=path, resume=seed is not None,
                    before_checkpoint=fence.before_checkpoint)
    if seed is not None:
        cp = checkpoint.Checkpoint(**{**seed, "fingerprint": wplan.fingerprint(src_url, dst_url)})
        cp.save(path)
    try:
        summary = asyncio.run(_work(src_url, dst_url, wplan, stop, _EventReporter(fence)))
    except asyncio.CancelledError:
        return {**out, "outcome": "stopped", "cp": _read_doc(path)}
    except StaleAttempt:
        return {**out, "outcome": "stale"}
    except KvctlError as exc:
        return {**out, "outcome": "error", "cp": _read_doc(path),
                "error": [type(exc).__name__, exc.message, exc.hint, exc.exit_code]}
    finally:
        checkpoint.remove(path)
    return {**out, "outcome": "done", "counts": summary.counts.to_dict(),
            "problems": summary.problems.to_dict(), "processed": summary.processed_this_run}


async def _work(src_url: str, dst_url: str, plan: Plan, stop: Any, reporter: Reporter) -> Summary:
    return await stoppable(migrate_urls(src_url, dst_url, plan, reporter), stop)


def _cp_doc(cp: checkpoint.Checkpoint) -> dict[str, Any]:
    from dataclasses import asdict

    return {**asdict(cp), "updated_at_ms": time.time_ns() // 1_000_000}


def _read_doc(path: Path) -> dict[str, Any] | None:
    import json

    with contextlib.suppress(OSError, ValueError):
        doc = json.loads(path.read_bytes())
        doc.pop("format", None)
        return doc
    return None

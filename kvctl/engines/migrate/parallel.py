"""`kvctl migrate --workers N`: the migrate engine in N processes on disjoint slices of the keyspace.

The keyspace is split as :mod:`.split` describes, one slice per worker.

Resume: the coordinator writes a checkpoint holding the split and which workers finished; each
worker checkpoints its own slice (its fingerprint includes the slice) and keeps it, marked done,
until the coordinator has recorded the slice as finished.  ``--resume`` reuses the saved split,
skips finished workers and resumes the others.  ``--delete-extra`` and ``--verify``
run in the coordinator after every worker finished without error.

Processes: each worker has two pipes of its own to the coordinator, never a queue shared with
the others (a process that dies holding a shared queue's lock, or half-way through a message,
would block every other writer for good).  Its results pipe carries progress, notes and its one
outcome (done, error or stopped); the coordinator reads every results pipe until every worker
has exited, so no worker ever blocks writing.  The coordinator closing a worker's control pipe,
or dying, asks the worker to stop: it cancels its copy, which saves its checkpoint.  Workers
ignore SIGINT from their first instruction on: Ctrl-C reaches the whole process group, and only
the coordinator acts on it (it asks every worker to stop, waits for each to save, then exits
130; a second Ctrl-C, or a worker not gone within ``STOP_GRACE_S``, kills them).

Stores must be reachable from other processes: a source or destination that is neither
``persistent`` nor ``multi_node`` (e.g. ``memory://``) is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import signal
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from kvctl.errors import KvctlError

from .._stopped import resumable
from .._stores import open_async, refuse_same_store
from ..reporting import Counts, Once, Progress, Reporter
from . import checkpoint
from .copy import finish, migrate_urls
from .plan import Plan, Summary, checkpoint_file, read_checkpoint
from .split import collect, prepare, slice_plan

STOP_GRACE_S = 30.0  # a worker asked to stop is killed if it has not exited by then


# -- the coordinator ---------------------------------------------------------------------------
def run(src_url: str, dst_url: str, plan: Plan, reporter: Reporter | None = None) -> Summary:
    reporter = reporter or Reporter()
    refuse_same_store(src_url, dst_url)
    try:
        return asyncio.run(_coordinate(src_url, dst_url, plan, reporter))
    except asyncio.CancelledError:  # asyncio.run turns a Ctrl-C into KeyboardInterrupt; be sure of it
        raise KeyboardInterrupt from None


async def _coordinate(src_url: str, dst_url: str, plan: Plan, reporter: Reporter) -> Summary:
    reporter = Once(reporter)  # the workers' notes are often the same: say each once
    src, dst = open_async(src_url, access="read"), open_async(dst_url)
    try:
        cp, cp_path, summary, plan = await prepare(src, dst, src_url, dst_url, plan, reporter, plan.workers,
                                                   option="--workers")
        t0 = time.perf_counter()
        crew = _Crew(src_url, dst_url, plan, cp, cp_path, reporter, t0)
        if summary.resumed:
            summary.copied_before = crew.saved().copied
        work = asyncio.get_running_loop().run_in_executor(None, crew.run)
        while not work.done():
            try:
                await asyncio.shield(work)  # raises a worker's error
            except asyncio.CancelledError:
                # Ctrl-C: the workers save their checkpoints and exit; a second one stops them now
                (crew.hurry if crew.stop.is_set() else crew.stop).set()
        work.result()
        if crew.stop.is_set():
            if not plan.dry_run:
                reporter.note(f"stopped {resumable(crew.saved().read)}")
            raise asyncio.CancelledError
        collect(cp, summary)
        summary.processed_this_run += sum(crew.results.values())
        crew.remove_slice_checkpoints()
        summary.copy_seconds = time.perf_counter() - t0
        await finish(src, dst, plan, summary, reporter, t0)
        summary.seconds = time.perf_counter() - t0
        if not plan.dry_run:
            checkpoint.remove(cp_path)
        return summary
    finally:
        await src.close()
        await dst.close()


class _Worker:
    """One worker process and the coordinator's ends of its two pipes."""

    def __init__(self, index: int, proc: BaseProcess, results: Connection, control: Connection,
                 plan: Plan) -> None:
        self.index = index
        self.proc = proc
        self.results: Connection | None = results  # worker -> coordinator; None once at its end
        self.control: Connection | None = control  # coordinator -> worker; closing it means "stop"
        self.plan = plan
        self.outcome: str | None = None  # "done", "error" or "stopped", as the worker reported it
        self.killed = False

    @property
    def over(self) -> bool:
        return self.results is None and self.proc.exitcode is not None

    def ask_to_stop(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None


class _Crew:
    """Runs one process per unfinished slice, relays their progress and collects their results.

    Its :meth:`run` blocks (the coordinator calls it on a thread) until every worker process has
    exited, reading every worker's pipe all along so that no worker ever blocks writing to it.
    ``stop`` (Ctrl-C) asks each worker to save its checkpoint and exit; ``hurry`` (a second
    Ctrl-C), or a worker still running ``STOP_GRACE_S`` after being asked, is killed: it resumes
    from its last checkpoint.  A worker that fails makes the others stop too.
    """

    def __init__(self, src_url: str, dst_url: str, plan: Plan, cp: checkpoint.Checkpoint, cp_path: Path,
                 reporter: Reporter, t0: float) -> None:
        self.src_url, self.dst_url, self.plan = src_url, dst_url, plan
        self.cp, self.cp_path = cp, cp_path
        self.reporter, self.t0 = reporter, t0
        self.stop = threading.Event()
        self.hurry = threading.Event()
        self.workers: dict[int, _Worker] = {}
        self.live: dict[int, Counts] = {}
        self.results: dict[int, int] = {}  # keys each worker processed in this run
        self.error: tuple[int, str, str, str | None, int] | None = None

    @property
    def finished(self) -> dict[str, Any]:
        return self.cp.extra["finished"]

    def run(self) -> None:
        ctx = mp.get_context("spawn")  # a clean interpreter: no inherited event loop, threads or connections
        try:
            for i, spec in enumerate(self.cp.extra["slices"]):
                if str(i) not in self.finished and not self.stop.is_set():
                    self.workers[i] = self._start(ctx, i, slice_plan(self.plan, spec, i))
            self._supervise()
        finally:
            for w in self.workers.values():  # only after an unexpected error here: never leave one behind
                w.ask_to_stop()
                if w.proc.exitcode is None:
                    w.proc.kill()
                w.proc.join()
                if w.results is not None:
                    w.results.close()
        if self.error is not None:  # it came before any Ctrl-C
            index, cls_name, message, hint, code = self.error
            from kvctl import errors

            cls = getattr(errors, cls_name, None)
            if not (isinstance(cls, type) and issubclass(cls, KvctlError)):
                cls = KvctlError
            exc = cls(f"worker {index}: {message}", hint=hint or "rerun with --resume to continue")
            exc.exit_code = code
            raise exc

    def _start(self, ctx: Any, index: int, wplan: Plan) -> _Worker:
        results_r, results_w = ctx.Pipe(duplex=False)
        control_r, control_w = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=worker_main, args=(self.src_url, self.dst_url, wplan, control_r, results_w),
                           daemon=True, name=f"kvctl-migrate-{index}")
        # The worker starts with SIGINT blocked (a thread's signal mask survives fork and exec),
        # then ignores it: a Ctrl-C reaches the whole process group, and only the coordinator
        # acts on it, so no worker dies half-way through importing or writing to its pipe.
        if hasattr(signal, "pthread_sigmask"):  # POSIX
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                proc.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        else:
            proc.start()
        results_w.close()  # the worker holds the only write end: its exit is this pipe's end
        control_r.close()
        self.live[index] = Counts()
        return _Worker(index, proc, results_r, control_w, wplan)

    def _supervise(self) -> None:
        asked_at: float | None = None
        while not all(w.over for w in self.workers.values()):
            if asked_at is None and (self.stop.is_set() or self.error is not None):
                asked_at = time.monotonic()
                for w in self.workers.values():
                    w.ask_to_stop()
            if asked_at is not None and (self.hurry.is_set() or time.monotonic() - asked_at > STOP_GRACE_S):
                for w in self.workers.values():
                    if w.proc.exitcode is None:
                        w.killed = True
                        w.proc.kill()
            waitables: list[Any] = [w.results for w in self.workers.values() if w.results is not None]
            waitables += [w.proc.sentinel for w in self.workers.values() if w.proc.exitcode is None]
            ready = set(wait(waitables, timeout=0.2))
            for w in self.workers.values():
                if w.results is not None and w.results in ready:
                    self._read(w)
                if w.over and w.outcome is None and not w.killed and self.error is None:
                    self.error = (w.index, "KvctlError", f"its process ended without a result ({_how(w.proc)})",
                                  None, 70)
                    w.outcome = "error"
            self.reporter.progress(Progress("copy", self.total(), None, time.perf_counter() - self.t0))
        if self.error is None and not self.stop.is_set():
            for w in self.workers.values():  # nobody asked it to stop: anything but "done" is a failure
                if w.outcome != "done":
                    self.error = (w.index, "KvctlError", "it stopped before the end of its slice", None, 70)
                    break

    def _read(self, w: _Worker) -> None:
        """Everything the worker's pipe holds now; at its end, close it."""
        while w.results is not None:
            try:
                msg = w.results.recv()
            except (EOFError, OSError):  # the worker exited (a message cut short by a kill is dropped)
                w.results.close()
                w.results = None
                return
            self._handle(w, msg)
            if not w.results.poll():
                return

    def _handle(self, w: _Worker, msg: tuple[str, Any]) -> None:
        kind, payload = msg
        i = w.index
        if kind == "progress":
            self.live[i] = Counts.from_dict(payload)
        elif kind == "note":
            self.reporter.note(str(payload))
        elif kind == "done":
            w.outcome = kind
            self.live.pop(i, None)
            self.results[i] = payload["processed"]
            self.finished[str(i)] = {"counts": payload["counts"], "problems": payload["problems"]}
            if not self.plan.dry_run:
                self.cp.save(self.cp_path)  # this worker's slice is complete: a resume skips it
                checkpoint.remove(checkpoint_file(w.plan, self.src_url, self.dst_url))
        elif kind == "stopped":
            w.outcome = kind
            self.live[i] = Counts.from_dict(payload)
        elif kind == "error":
            w.outcome = kind
            if self.error is None and not self.stop.is_set():  # after a Ctrl-C, the interruption is the news
                cls_name, message, hint, code = payload
                self.error = (i, str(cls_name), str(message), hint, int(code))

    def total(self) -> Counts:
        total = Counts()
        for c in self.live.values():
            total.add(c)
        for done in self.finished.values():
            total.add(Counts.from_dict(done["counts"]))
        return total

    def saved(self) -> Counts:
        """What the checkpoints hold, once every worker has exited: what a resume starts from."""
        total = Counts()
        for i, spec in enumerate(self.cp.extra["slices"]):
            done = self.finished.get(str(i))
            if done is not None:
                total.add(Counts.from_dict(done["counts"]))
                continue
            with contextlib.suppress(KvctlError):  # unreadable: the resume will say so
                wcp = read_checkpoint(slice_plan(self.plan, spec, i), self.src_url, self.dst_url)
                if wcp is not None:
                    total.add(Counts.from_dict(wcp.counts))
        return total

    def remove_slice_checkpoints(self) -> None:
        """Normally already gone, each removed as its worker finished."""
        if not self.plan.dry_run:
            for i, spec in enumerate(self.cp.extra["slices"]):
                checkpoint.remove(checkpoint_file(slice_plan(self.plan, spec, i), self.src_url, self.dst_url))


def _how(proc: BaseProcess) -> str:
    code = proc.exitcode
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


# -- a worker process --------------------------------------------------------------------------
class _PipeReporter(Reporter):
    def __init__(self, results: Connection) -> None:
        self.results = results
        self.stopping = False  # once asked to stop, the coordinator says what happened
        self.counts = Counts()  # the engine's, as of its last progress event
        self._last = 0.0

    def send(self, message: tuple[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the coordinator is gone: the control pipe stops us too
            self.results.send(message)

    def progress(self, event: Progress) -> None:
        self.counts = event.counts
        now = time.monotonic()
        if now - self._last >= 0.2:
            self._last = now
            self.send(("progress", event.counts.to_dict()))

    def note(self, message: str) -> None:
        if not self.stopping:
            self.send(("note", message))


def worker_main(src_url: str, dst_url: str, plan: Plan, control: Connection, results: Connection) -> None:
    """Copy one slice; report ("done" | "error" | "stopped", ...) on ``results``, never a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's (see _Crew._start)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    reporter = _PipeReporter(results)
    try:
        summary = asyncio.run(_work(src_url, dst_url, plan, control, reporter))
    except asyncio.CancelledError:  # asked to stop; the engine saved the checkpoint
        reporter.send(("stopped", reporter.counts.to_dict()))
    except KvctlError as exc:
        reporter.send(("error", (type(exc).__name__, exc.message, exc.hint, exc.exit_code)))
    except BaseException as exc:  # reported, never swallowed, never a traceback
        reporter.send(("error", (type(exc).__name__, f"{type(exc).__name__}: {exc}", None, 70)))
    else:
        reporter.send(("done", {"counts": summary.counts.to_dict(), "problems": summary.problems.to_dict(),
                                "processed": summary.processed_this_run}))
    finally:
        results.close()


async def _work(src_url: str, dst_url: str, plan: Plan, control: Connection, reporter: _PipeReporter) -> Summary:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def watch() -> None:
        """Cancel the copy when the coordinator closes the control pipe, or exits, or dies."""
        with contextlib.suppress(EOFError, OSError):
            control.recv_bytes()
        reporter.stopping = True
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing to stop
            loop.call_soon_threadsafe(task.cancel)

    threading.Thread(target=watch, name="kvctl-migrate-control", daemon=True).start()
    return await migrate_urls(src_url, dst_url, plan, reporter)

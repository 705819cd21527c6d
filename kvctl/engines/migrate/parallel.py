"""`kvctl migrate --workers N`: the migrate engine in N processes on disjoint slices of the keyspace.

How the keyspace is split (by capability, never by backend):

* **ordered sources** (``ordered_scan``): by key range.  The coordinator discovers how keys
  branch with a few hundred one-key probes (``scan(prefix, start_after=x, batch_size=1)``):
  starting at the prefix, it lists the distinct next bytes of each populated prefix and expands
  breadth-first until it has about 8 populated prefixes per worker, then gives each worker a
  contiguous run of them holding an equal estimated share of the keys (a prefix's share is its
  parent's divided among the parent's populated children).  Worker i copies keys in
  ``(boundary[i-1], boundary[i]]``; the ranges cover the whole key line whatever the boundaries
  are, so balance is approximate (it assumes siblings hold similar numbers of keys) but coverage
  is exact.
* **other sources**: by hash slice.  Every worker scans the source keys-only and copies the keys
  with ``crc32(key) % N == i``, fetching their values with ``get_many``.  Keys cross the wire N
  times, values and writes once, so this scales when writing (or value transfer) is the
  bottleneck.  Splitting SCAN cursors or per cluster node would need a partitioning call the
  Store protocol does not have yet.

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
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from kvctl.errors import KvctlError, UsageError
from kvctl.store import AsyncStore

from .._batches import Counts, Problems, check_policy
from .._slices import slice_of
from .._stores import describe, open_async, refuse_same_store
from . import checkpoint
from .copy import Plan, Progress, Reporter, Summary, checkpoint_file, finish, migrate_urls, read_checkpoint

TARGET_PREFIXES_PER_WORKER = 8
PROBE_BUDGET = 512
_FAR = b"\xff" * 64  # appended to a prefix: past (nearly) every key that starts with it
STOP_GRACE_S = 30.0  # a worker asked to stop is killed if it has not exited by then


# -- splitting ---------------------------------------------------------------------------------
class _Prober:
    def __init__(self, store: AsyncStore, budget: int) -> None:
        self.store = store
        self.budget = budget

    async def first_after(self, prefix: bytes, after: bytes | None) -> bytes | None:
        """The first key under ``prefix`` greater than ``after`` (one round trip)."""
        self.budget -= 1
        pages = self.store.scan(prefix, start_after=after, batch_size=1, keys_only=True)
        try:
            async for page in pages:
                if page.records:
                    return page.records[0].key
        finally:
            aclose = getattr(pages, "aclose", None)
            if aclose is not None:
                await aclose()
        return None

    async def children(self, node: bytes) -> list[bytes] | None:
        """The populated one-byte extensions of ``node``; None when the budget ran out."""
        out: list[bytes] = []
        after: bytes | None = node
        while True:
            if self.budget <= 0:
                return None
            key = await self.first_after(node, after)
            if key is None:
                return out
            child = key[: len(node) + 1]
            if out and out[-1] == child:  # a key beyond child + _FAR: step past it
                after = key + _FAR
                continue
            out.append(child)
            if child[-1] == 0xFF:
                return out
            after = child + _FAR


async def key_range_split(store: AsyncStore, prefix: bytes, n: int,
                          budget: int = PROBE_BUDGET) -> list[bytes]:
    """Up to ``n - 1`` increasing boundaries splitting the keys under ``prefix`` into n ranges.

    The key tree is expanded breadth-first, one byte at a time, until there are enough prefixes
    or the probe budget is spent.  Each prefix carries its estimated share of the keys (its
    parent's share divided among the parent's populated children), and the bounds cut the
    cumulative share evenly: prefixes of different depths (a level expanded halfway) weigh what
    they cover, not one each.
    """
    prober = _Prober(store, budget)
    leaves: list[tuple[bytes, float]] = [(prefix, 1.0)]
    target = n * TARGET_PREFIXES_PER_WORKER
    while len(leaves) < target:
        expanded: list[tuple[bytes, float]] = []
        grew = False
        for i, (node, share) in enumerate(leaves):
            kids = await prober.children(node)
            if kids is None:  # out of probes: keep the rest as they are
                expanded.extend(leaves[i:])
                break
            if kids:
                grew = grew or len(kids) > 1 or kids[0] != node
                expanded.extend((kid, share / len(kids)) for kid in kids)
            else:
                expanded.append((node, share))  # a key with nothing after it: a leaf
            if len(expanded) + len(leaves) - i - 1 >= target:
                expanded.extend(leaves[i + 1:])
                break
        if expanded == leaves or not grew:
            leaves = expanded
            break
        leaves = expanded
    if len(leaves) < 2:
        return []
    groups = min(n, len(leaves))
    bounds: list[bytes] = []
    total = sum(share for _, share in leaves)
    seen = 0.0
    for node, share in leaves:
        # a bound at the first prefix that starts past the next equal share of the keys
        if seen >= total * (len(bounds) + 1) / groups and len(bounds) < groups - 1:
            bounds.append(node)
        seen += share
    return sorted(set(bounds))


def ranges_from(bounds: list[bytes]) -> list[tuple[bytes | None, bytes | None]]:
    """Worker ranges (after, upto] covering the whole key line."""
    edges: list[bytes | None] = [None, *bounds, None]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


# -- the coordinator ---------------------------------------------------------------------------
def run(src_url: str, dst_url: str, plan: Plan, reporter: Reporter | None = None) -> Summary:
    reporter = reporter or Reporter()
    refuse_same_store(src_url, dst_url)
    try:
        return asyncio.run(_coordinate(src_url, dst_url, plan, reporter))
    except asyncio.CancelledError:  # asyncio.run turns a Ctrl-C into KeyboardInterrupt; be sure of it
        raise KeyboardInterrupt from None


async def _coordinate(src_url: str, dst_url: str, plan: Plan, reporter: Reporter) -> Summary:
    reporter = _Once(reporter)  # the workers' notes are often the same: say each once
    src, dst = open_async(src_url, access="read"), open_async(dst_url)
    try:
        cp, cp_path, summary, plan = await prepare(src, dst, src_url, dst_url, plan, reporter, plan.workers,
                                                   option="--workers")
        t0 = time.perf_counter()
        crew = _Crew(src_url, dst_url, plan, cp, cp_path, reporter, t0)
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
                reporter.note(f"stopped after {crew.saved().read:,} keys; progress saved: rerun with --resume "
                              "to continue")
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


async def prepare(src: AsyncStore, dst: AsyncStore, src_url: str, dst_url: str, plan: Plan, reporter: Reporter,
                  slices: int, option: str, **fingerprint: Any,
                  ) -> tuple[checkpoint.Checkpoint, Path, Summary, Plan]:
    """Check both stores, then load (``--resume``) or make the coordinator checkpoint: the split
    into ``slices`` slices and the slices finished so far.  Shared by every executor."""
    for store in (src, dst):
        caps = store.capabilities
        if not (caps.persistent or caps.multi_node):
            raise UsageError(f"{option} needs stores that other processes can open; the {store.name} "
                             "backend keeps its data inside one process",
                             hint="use --workers 1" if option == "--workers" else "use --executor local")
    if dst.capabilities.one_writer:
        raise UsageError(f"{option} needs a destination several processes can write at once; the {dst.name} "
                         "backend takes one writer at a time",
                         hint="use --workers 1" if option == "--workers" else "use --executor local")
    check_policy(plan.on_conflict, src.capabilities.versions, dst)
    fp = checkpoint.fingerprint(parent=plan.fingerprint(src_url, dst_url), workers=slices,
                                ordered=src.capabilities.ordered_scan, **fingerprint)
    cp_path = plan.checkpoint_path or checkpoint.default_path(fp)
    found = None if plan.dry_run else checkpoint.load(cp_path, fp)
    cp = found if plan.resume else None
    summary = Summary(describe(src), describe(dst), dry_run=plan.dry_run, workers=plan.workers,
                      checkpoint=None if plan.dry_run else str(cp_path), resumed=cp is not None)
    if cp is None:
        if plan.resume and not plan.dry_run:
            reporter.note("no checkpoint of this migrate to resume: starting from the beginning")
        elif found is not None:
            reporter.note("a checkpoint of an interrupted run of this migrate exists; starting over "
                          "(use --resume to continue it)")
        plan = replace(plan, resume=False)  # a new split: no worker resumes an older one's slice
        cp = checkpoint.Checkpoint(fp, summary.src, summary.dst, started_at_ms=time.time_ns() // 1_000_000)
        cp.extra = {"slices": await plan_slices(src, plan, slices), "finished": {}}
        if not plan.dry_run:
            cp.save(cp_path)
    else:
        reporter.note(f"resuming {len(cp.extra['slices']) - len(cp.extra['finished'])} unfinished slice(s)")
    return cp, cp_path, summary, plan


def collect(cp: checkpoint.Checkpoint, summary: Summary) -> None:
    """The totals of every finished slice, those of this run and those a resumed run skipped."""
    counts = Counts()
    problems = Problems()
    for done in cp.extra["finished"].values():
        counts.add(Counts.from_dict(done["counts"]))
        problems.extend(Problems.from_dict(done.get("problems", {})))
    summary.counts, summary.problems = counts, problems


async def plan_slices(src: AsyncStore, plan: Plan, n: int, ordered: bool | None = None,
                      partitions: bool = True) -> list[dict[str, Any]]:
    """About ``n`` slices of the source under the plan's filter, as small JSON values: the parts
    of a partitioned source (each read once, however many slices were asked for); key ranges when
    the source (or, for ``ordered``, every store the slices are read from) scans in order; hash
    slices otherwise (``n`` keys-only scans of the source)."""
    prefix = plan.key_filter.scan_prefix
    if partitions and src.capabilities.partitioned and prefix is not None:
        partitioned: Any = src  # partitions is an optional method of the protocol
        return [{"partition": p} for p in await partitioned.partitions(prefix)]
    if src.capabilities.ordered_scan if ordered is None else ordered:
        bounds = await key_range_split(src, prefix or b"", n) if prefix is not None else []
        return [{"range": [None if a is None else a.hex(), None if b is None else b.hex()]}
                for a, b in ranges_from(bounds)]
    return [{"hash": [i, n]} for i in range(n)]


def slice_plan(plan: Plan, spec: dict[str, Any], index: int) -> Plan:
    """The plan of one slice's copy: its part of the keyspace, its own checkpoint, kept when done."""
    part = slice_of(spec)
    return replace(plan, key_range=part.key_range, hash_slice=part.hash_slice, partition=part.partition,
                   delete_extra=False, verify=False,
                   workers=1, estimate_total=False, checkpoint_path=_worker_cp(plan, index),
                   keep_checkpoint=True)


def _worker_cp(plan: Plan, index: int) -> Path | None:
    return None if plan.checkpoint_path is None else plan.checkpoint_path.with_name(
        f"{plan.checkpoint_path.name}.w{index}")


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
        return self.cp.extra["finished"]  # type: ignore[no-any-return]

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


class _Once(Reporter):
    """Passes progress on, and each distinct note once."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self.said: set[str] = set()

    def progress(self, event: Progress) -> None:
        self.inner.progress(event)

    def note(self, message: str) -> None:
        if message not in self.said:
            self.said.add(message)
            self.inner.note(message)


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

"""`kvctl migrate --workers N`: the migrate engine in N processes on disjoint slices of the keyspace.

How the keyspace is split (by capability, never by backend):

* **ordered sources** (``ordered_scan``): by key range.  The coordinator discovers how keys
  branch with a few hundred one-key probes (``scan(prefix, start_after=x, batch_size=1)``):
  starting at the prefix, it lists the distinct next bytes of each populated prefix and expands
  breadth-first until it has about 8 populated prefixes per worker, then gives each worker a
  contiguous run of them.  Worker i copies keys in ``(boundary[i-1], boundary[i]]``; the ranges
  cover the whole key line whatever the boundaries are, so balance is approximate (it assumes
  populated prefixes hold similar numbers of keys) but coverage is exact.
* **other sources**: by hash slice.  Every worker scans the source keys-only and copies the keys
  with ``crc32(key) % N == i``, fetching their values with ``get_many``.  Keys cross the wire N
  times, values and writes once, so this scales when writing (or value transfer) is the
  bottleneck.  Splitting SCAN cursors or per cluster node would need a partitioning call the
  Store protocol does not have yet.

Resume: the coordinator writes a checkpoint holding the split and which workers finished; each
worker checkpoints its own slice (its fingerprint includes the slice).  ``--resume`` reuses the
saved split, skips finished workers and resumes the others.  ``--delete-extra`` and ``--verify``
run in the coordinator after every worker finished without error.

Stores must be reachable from other processes: a source or destination that is neither
``persistent`` nor ``multi_node`` (e.g. ``memory://``) is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from kvctl.errors import KvctlError, UsageError
from kvctl.store import AsyncStore

from . import checkpoint
from .migrate import Plan, Progress, Reporter, Summary, finish
from .storeops import describe, open_async
from .transfer import Counts, Problems, check_policy

TARGET_PREFIXES_PER_WORKER = 8
PROBE_BUDGET = 512
_FAR = b"\xff" * 64  # appended to a prefix: past (nearly) every key that starts with it


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
    """Up to ``n - 1`` increasing boundaries splitting the keys under ``prefix`` into n ranges."""
    prober = _Prober(store, budget)
    leaves = [prefix]
    target = n * TARGET_PREFIXES_PER_WORKER
    while len(leaves) < target:
        expanded: list[bytes] = []
        grew = False
        for i, node in enumerate(leaves):
            kids = await prober.children(node)
            if kids is None:  # out of probes: keep the rest as they are
                expanded.extend(leaves[i:])
                break
            if kids:
                grew = grew or len(kids) > 1 or kids[0] != node
                expanded.extend(kids)
            else:
                expanded.append(node)  # a key with nothing after it: a leaf
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
    bounds = []
    for g in range(1, groups):
        bounds.append(leaves[g * len(leaves) // groups])
    return sorted(set(bounds))


def ranges_from(bounds: list[bytes]) -> list[tuple[bytes | None, bytes | None]]:
    """Worker ranges (after, upto] covering the whole key line."""
    edges: list[bytes | None] = [None, *bounds, None]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


# -- the coordinator ---------------------------------------------------------------------------
def run(src_url: str, dst_url: str, plan: Plan, reporter: Reporter | None = None) -> Summary:
    reporter = reporter or Reporter()
    if src_url == dst_url:
        raise UsageError("source and destination are the same store")
    return asyncio.run(_coordinate(src_url, dst_url, plan, reporter))


async def _coordinate(src_url: str, dst_url: str, plan: Plan, reporter: Reporter) -> Summary:
    src, dst = open_async(src_url), open_async(dst_url)
    try:
        for store in (src, dst):
            caps = store.capabilities
            if not (caps.persistent or caps.multi_node):
                raise UsageError(f"--workers needs stores that other processes can open; the {store.name} "
                                 "backend keeps its data inside one process", hint="use --workers 1")
        check_policy(plan.on_conflict, src.capabilities.versions, dst)
        fp = checkpoint.fingerprint(parent=plan.fingerprint(src_url, dst_url), workers=plan.workers,
                                    ordered=src.capabilities.ordered_scan)
        cp_path = plan.checkpoint_path or checkpoint.default_path(fp)
        cp = checkpoint.load(cp_path, fp) if plan.resume and not plan.dry_run else None
        summary = Summary(describe(src), describe(dst), dry_run=plan.dry_run, workers=plan.workers,
                          checkpoint=None if plan.dry_run else str(cp_path), resumed=cp is not None)
        if cp is None:
            cp = checkpoint.Checkpoint(fp, summary.src, summary.dst, started_at_ms=time.time_ns() // 1_000_000)
            cp.extra = {"slices": await _slices(src, plan), "finished": {}}
            if not plan.dry_run:
                cp.save(cp_path)
        elif plan.resume:
            reporter.note(f"resuming {len(cp.extra['slices']) - len(cp.extra['finished'])} unfinished worker(s)")
        t0 = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(
            None, _run_workers, src_url, dst_url, plan, cp, cp_path, reporter, t0, summary)
        summary.copy_seconds = time.perf_counter() - t0
        await finish(src, dst, plan, summary, reporter, t0)
        summary.seconds = time.perf_counter() - t0
        if not plan.dry_run:
            checkpoint.remove(cp_path)  # each worker removed its own when it finished
        return summary
    finally:
        await src.close()
        await dst.close()


async def _slices(src: AsyncStore, plan: Plan) -> list[dict[str, Any]]:
    prefix = plan.key_filter.scan_prefix
    if src.capabilities.ordered_scan:
        bounds = await key_range_split(src, prefix or b"", plan.workers) if prefix is not None else []
        return [{"range": [None if a is None else a.hex(), None if b is None else b.hex()]}
                for a, b in ranges_from(bounds)]
    return [{"hash": [i, plan.workers]} for i in range(plan.workers)]


def _worker_plan(plan: Plan, spec: dict[str, Any], index: int) -> Plan:
    key_range = None
    hash_slice = None
    if "range" in spec:
        a, b = spec["range"]
        key_range = (None if a is None else bytes.fromhex(a), None if b is None else bytes.fromhex(b))
    else:
        hash_slice = (int(spec["hash"][0]), int(spec["hash"][1]))
    return replace(plan, key_range=key_range, hash_slice=hash_slice, delete_extra=False, verify=False,
                   workers=1, estimate_total=False, checkpoint_path=_worker_cp(plan, index))


def _worker_cp(plan: Plan, index: int) -> Path | None:
    return None if plan.checkpoint_path is None else plan.checkpoint_path.with_name(
        f"{plan.checkpoint_path.name}.w{index}")


def _run_workers(src_url: str, dst_url: str, plan: Plan, cp: checkpoint.Checkpoint, cp_path: Path,
                 reporter: Reporter, t0: float, summary: Summary) -> None:
    """Start one process per unfinished slice, relay progress, collect results (blocking)."""
    ctx = mp.get_context("spawn")  # a clean interpreter: no inherited event loop, threads or connections
    events: Any = ctx.Queue()
    slices: list[dict[str, Any]] = cp.extra["slices"]
    finished: dict[str, Any] = cp.extra["finished"]
    procs: dict[int, Any] = {}
    live: dict[int, Counts] = {}
    for i, spec in enumerate(slices):
        if str(i) in finished:
            continue
        wplan = _worker_plan(plan, spec, i)
        p = ctx.Process(target=worker_main, args=(i, src_url, dst_url, wplan, events), daemon=True,
                        name=f"kvctl-migrate-{i}")
        p.start()
        procs[i] = p
        live[i] = Counts()
    results: dict[int, Summary] = {}
    error: tuple[int, str, str, int] | None = None
    try:
        while len(results) < len(procs) and error is None:
            try:
                kind, index, payload = events.get(timeout=0.2)
            except queue.Empty:
                dead = [i for i, p in procs.items() if i not in results and p.exitcode is not None]
                if dead:
                    # drain what it may have sent just before exiting
                    with contextlib.suppress(queue.Empty):
                        while True:
                            kind, index, payload = events.get(timeout=0.2)
                            _handle(kind, index, payload, live, results, finished)
                    still = [i for i in dead if i not in results]
                    if still and error is None:
                        i = still[0]
                        error = (i, "KvctlError", f"worker {i} died (exit code {procs[i].exitcode})", 70)
                continue
            err = _handle(kind, index, payload, live, results, finished)
            if err is not None:
                error = err
            elif kind == "done" and not plan.dry_run:
                cp.save(cp_path)  # this worker's slice is complete: a resume skips it
            total = Counts()
            for c in live.values():
                total.add(c)
            for done in finished.values():
                total.add(Counts.from_dict(done["counts"]))
            reporter.progress(Progress("copy", total, None, time.perf_counter() - t0))
    finally:
        if error is not None:
            _stop(procs)
        _join_all(procs, events)
    if error is not None:
        index, cls_name, message, code = error
        from kvctl import errors

        cls = getattr(errors, cls_name, None)
        if not (isinstance(cls, type) and issubclass(cls, KvctlError)):
            cls = KvctlError
        exc = cls(f"worker {index}: {message}", hint="rerun with --resume to continue")
        exc.exit_code = code
        raise exc
    counts = Counts()
    problems = Problems()
    for done in finished.values():  # this run's workers and those a resumed run skipped
        counts.add(Counts.from_dict(done["counts"]))
        problems.extend(Problems.from_dict(done.get("problems", {})))
    for s in results.values():
        summary.processed_this_run += s.processed_this_run
    summary.counts, summary.problems = counts, problems


def _handle(kind: str, index: int, payload: Any, live: dict[int, Counts], results: dict[int, Summary],
            finished: dict[str, Any]) -> tuple[int, str, str, int] | None:
    if kind == "progress":
        live[index] = Counts.from_dict(payload)
    elif kind == "done":
        results[index] = payload
        live.pop(index, None)
        finished[str(index)] = {"counts": payload.counts.to_dict(), "problems": payload.problems.to_dict()}
    elif kind == "error":
        cls_name, message, code = payload
        return index, cls_name, message, code
    return None


def _join_all(procs: dict[int, Any], events: Any) -> None:
    """Wait for every worker, draining the queue so none blocks flushing its last messages."""
    while any(p.exitcode is None for p in procs.values()):
        with contextlib.suppress(queue.Empty):
            while True:
                events.get_nowait()
        for p in procs.values():
            p.join(0.05)


def _stop(procs: dict[int, Any]) -> None:
    """Ask running workers to stop the way Ctrl-C does, so each saves its checkpoint."""
    for p in procs.values():
        if p.exitcode is None and p.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGINT)


# -- a worker process --------------------------------------------------------------------------
class _QueueReporter(Reporter):
    def __init__(self, index: int, events: Any) -> None:
        self.index = index
        self.events = events
        self._last = 0.0

    def progress(self, event: Progress) -> None:
        now = time.monotonic()
        if now - self._last >= 0.2:
            self._last = now
            self.events.put(("progress", self.index, event.counts.to_dict()))


def worker_main(index: int, src_url: str, dst_url: str, plan: Plan, events: Any) -> None:
    from .migrate import run as run_one

    try:
        summary = run_one(src_url, dst_url, plan, _QueueReporter(index, events))
    except KeyboardInterrupt:
        events.put(("error", index, ("Interrupted", "interrupted", 130)))
        return
    except KvctlError as exc:
        events.put(("error", index, (type(exc).__name__, str(exc), exc.exit_code)))
        return
    except Exception as exc:  # reported, never swallowed
        events.put(("error", index, (type(exc).__name__, f"{type(exc).__name__}: {exc}", 70)))
        return
    events.put(("done", index, summary))


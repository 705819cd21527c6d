"""`kvctl migrate`: copy every (matching) key from one store to another, resumably and verifiably.

The flow of one run::

    run(src_url, dst_url, plan)                     one event loop (asyncio.run)
      open both stores (registry.open_async)
      reader task: SRC.scan pages  ->  bounded queue  ->  writer: BatchWriter -> DST.set_many
                                                          every N batches: checkpoint (atomic)
      after a complete, error-free copy: --delete-extra (bounded by --max-delete), --verify
      -> Summary (the cli renders it; this module never prints)

Memory is bounded by ``queue_depth`` pages of ``batch_size`` records whatever the key count.
``--workers N`` runs this same engine in N processes on disjoint slices of the keyspace (see
:mod:`kvctl.engines.parallel`); each slice has its own checkpoint.

``--resume`` continues after the checkpoint's cursor.  The interrupted run may have written past
that cursor before it stopped; :class:`ResumeWriter` tells those writes (the destination holds
exactly the source record) from real conflicts, so a resumed run ends as an uninterrupted one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvctl.codec import json_key
from kvctl.errors import DifferenceError, IncompleteError
from kvctl.store import AsyncStore, Page, Record, now_ms

from . import checkpoint, stopped
from .diff import DiffOptions, DiffResult, compare, extra_keys, same_expiry
from .fsutil import writable_dir
from .keyfilter import KeyFilter
from .pipeline import pump
from .slices import Slice, slice_pages
from .storeops import describe, dump_many, has_typed_values, open_async, refuse_same_store
from .transfer import BatchWriter, Counts, Policy, Problems, check_policy


@dataclass(frozen=True)
class Plan:
    """Everything the user chose; the fields marked (*) decide the checkpoint fingerprint."""

    prefix: bytes = b""  # (*)
    glob: bytes | None = None  # (*)
    on_conflict: Policy = "overwrite"  # (*)
    drop_ttl: bool = False  # (*)
    dry_run: bool = False
    delete_extra: bool = False
    max_delete: int = 1000
    resume: bool = False
    verify: bool = False
    batch_size: int = 5000
    queue_depth: int = 4
    checkpoint_every: int = 10  # batches between checkpoints ...
    checkpoint_interval: float = 1.0  # ... and at least this many seconds (each costs two fsyncs)
    checkpoint_path: Path | None = None
    expiry_tolerance_ms: int = 2000
    estimate_total: bool = False  # count the source for a progress total (costs a keys-only scan)
    workers: int = 1
    # a worker's slice of the keyspace (*): keys in (after, upto], or crc32(key) % n == i
    key_range: tuple[bytes | None, bytes | None] | None = None
    hash_slice: tuple[int, int] | None = None
    partition: str | None = None  # (*) one part of a partitioned source (Store.partitions)
    # a worker's: keep the checkpoint of a finished copy (done) for the coordinator to remove once
    # it has recorded the slice as finished, so a lost "done" never makes a resume start over
    keep_checkpoint: bool = False
    # called before every checkpoint write; an executor's slice uses it to publish the cursor
    # where a retry on another host finds it, and to stop a stale attempt by raising
    before_checkpoint: Callable[[checkpoint.Checkpoint], None] | None = field(default=None, compare=False)

    @property
    def key_filter(self) -> KeyFilter:
        return KeyFilter(self.prefix, self.glob)

    def fingerprint(self, src_url: str, dst_url: str) -> str:
        rng = None if self.key_range is None else [None if b is None else b.hex() for b in self.key_range]
        return checkpoint.fingerprint(
            src=src_url, dst=dst_url, prefix=self.prefix.hex(),
            glob=None if self.glob is None else self.glob.hex(), policy=self.on_conflict,
            drop_ttl=self.drop_ttl, range=rng, slice=self.hash_slice,
            **({"partition": self.partition} if self.partition is not None else {}),
        )


@dataclass
class Progress:
    phase: str  # "copy", "delete-extra", "verify"
    counts: Counts
    total: int | None  # estimated keys to read, when known
    elapsed: float


class Reporter:
    """What the engine tells the cli while it runs; the defaults ignore everything."""

    def progress(self, event: Progress) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass
class Summary:
    src: str
    dst: str
    dry_run: bool = False
    counts: Counts = field(default_factory=Counts)
    problems: Problems = field(default_factory=Problems)
    seconds: float = 0.0  # the whole command, with --delete-extra and --verify
    copy_seconds: float = 0.0
    processed_this_run: int = 0
    resumed: bool = False
    workers: int = 1
    extra_found: int | None = None  # keys only in DST (with --delete-extra)
    deleted: int = 0
    delete_refused: str | None = None
    verify: DiffResult | None = None
    checkpoint: str | None = None

    @property
    def keys_per_s(self) -> float:
        return self.processed_this_run / self.copy_seconds if self.copy_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        def named(items: list[tuple[bytes, str]], what: str) -> list[dict[str, Any]]:
            return [{**json_key(key), what: why} for key, why in items]

        return {
            "src": self.src, "dst": self.dst, "dry_run": self.dry_run, **self.counts.to_dict(),
            "seconds": round(self.seconds, 3), "copy_seconds": round(self.copy_seconds, 3),
            "keys_per_s": round(self.keys_per_s, 1), "processed": self.processed_this_run,
            "resumed": self.resumed, "workers": self.workers,
            "extra_found": self.extra_found, "deleted": self.deleted,
            "delete_refused": self.delete_refused,
            "verify": None if self.verify is None else self.verify.to_dict(),
            "incomplete_keys": named(self.problems.incomplete, "kind"),
            "failed_keys": named(self.problems.failed, "reason"),
        }

    def check(self) -> None:
        """Raise the error the exit status must report, if any (after the summary is shown)."""
        if self.dry_run:
            return
        self.problems.check("copy", self.counts.incomplete, self.counts.failed)
        if self.delete_refused:
            raise IncompleteError(f"extra keys left in the destination: {self.delete_refused}")
        if self.verify is not None and not self.verify.equal:
            raise DifferenceError(f"verify failed: {self.verify.counts_line()}")


def run(src_url: str, dst_url: str, plan: Plan, reporter: Reporter | None = None) -> Summary:
    """Run a migrate in its own event loop (the command's only one)."""
    return asyncio.run(migrate_urls(src_url, dst_url, plan, reporter or Reporter()))


async def migrate_urls(src_url: str, dst_url: str, plan: Plan, reporter: Reporter) -> Summary:
    refuse_same_store(src_url, dst_url)
    async with open_async(src_url, access="read") as src, open_async(dst_url) as dst:
        return await migrate(src, dst, plan, reporter, plan.fingerprint(src_url, dst_url))


async def migrate(src: AsyncStore, dst: AsyncStore, plan: Plan, reporter: Reporter, fp: str) -> Summary:
    kf = plan.key_filter
    check_policy(plan.on_conflict, src.capabilities.versions, dst)
    summary = Summary(describe(src), describe(dst), dry_run=plan.dry_run, workers=plan.workers)
    cp_path = plan.checkpoint_path or checkpoint.default_path(fp)
    cp: checkpoint.Checkpoint | None = None
    if not plan.dry_run:
        summary.checkpoint = str(cp_path)
        # A run that cannot save its progress could not resume, and its messages would promise
        # that it can: refuse before copying.
        writable_dir(cp_path.parent, "the migrate checkpoint")
        found = checkpoint.load(cp_path, fp)
        if plan.resume:
            cp = found
            if cp is None:
                reporter.note("no checkpoint of this migrate to resume: starting from the beginning")
        elif found is not None:
            reporter.note("a checkpoint of an interrupted run of this migrate exists; starting over "
                          "(use --resume to continue it)")
    if cp is None:
        cp = checkpoint.Checkpoint(fp, summary.src, summary.dst, started_at_ms=time.time_ns() // 1_000_000)
    else:
        summary.resumed = True
    writer = BatchWriter(
        dst, policy=plan.on_conflict, source=src, drop_ttl=plan.drop_ttl, dry_run=plan.dry_run,
        typed_ok=has_typed_values(src) and has_typed_values(dst),
    )
    writer.counts = Counts.from_dict(cp.counts)
    writer.problems = Problems.from_dict(cp.extra.get("problems", {}))
    t0 = time.perf_counter()
    read_before = writer.counts.read
    if not cp.done:
        resuming = summary.resumed and plan.on_conflict != "overwrite" and not plan.dry_run
        batches = ResumeWriter(src, dst, writer, plan) if resuming else writer
        await _copy(src, batches, kf, plan, cp, cp_path, reporter, t0)
    summary.counts, summary.problems = writer.counts, writer.problems
    summary.processed_this_run = writer.counts.read - read_before
    summary.copy_seconds = time.perf_counter() - t0
    await finish(src, dst, plan, summary, reporter, t0)
    summary.seconds = time.perf_counter() - t0
    if not plan.dry_run and not plan.keep_checkpoint:
        checkpoint.remove(cp_path)
    return summary


async def finish(src: AsyncStore, dst: AsyncStore, plan: Plan, summary: Summary,
                 reporter: Reporter, t0: float) -> None:
    """The steps after a complete copy: --delete-extra, then --verify."""
    if plan.delete_extra:
        await _delete_extra(src, dst, plan, summary, reporter, t0)
    if plan.verify and not plan.dry_run:
        reporter.progress(Progress("verify", summary.counts, None, time.perf_counter() - t0))
        summary.verify = await compare(src, dst, _diff_options(plan, dst))


def _diff_options(plan: Plan, dst: AsyncStore) -> DiffOptions:
    return DiffOptions(
        filter=plan.key_filter, batch_size=plan.batch_size, expiry_tolerance_ms=plan.expiry_tolerance_ms,
        ignore_expiry=plan.drop_ttl and not dst.capabilities.ttl,
    )


async def _copy(src: AsyncStore, writer: BatchWriter | ResumeWriter, kf: KeyFilter, plan: Plan,
                cp: checkpoint.Checkpoint, cp_path: Path, reporter: Reporter, t0: float) -> None:
    total: list[int | None] = [None]
    counter = _start_estimate(src, kf, plan, total)
    since = 0
    last_save = float("-inf")  # the first checkpoint is written as soon as N batches are in

    async def consume(page: Page) -> None:
        nonlocal since, last_save
        records = kf.keep(page.records)
        if records:
            await writer.write(records)
        if page.cursor is not None:
            cp.cursor = page.cursor  # every record up to this cursor is now in the destination
        cp.counts = writer.counts.to_dict()
        if writer.problems.incomplete or writer.problems.failed:
            cp.extra["problems"] = writer.problems.to_dict()
        since += 1
        if since >= plan.checkpoint_every and not plan.dry_run:
            now = time.monotonic()
            if now - last_save >= plan.checkpoint_interval:
                _save(cp, cp_path, plan)
                since, last_save = 0, now
        reporter.progress(Progress("copy", writer.counts, total[0], time.perf_counter() - t0))

    # the count is what the checkpoint holds, not the batch in flight
    said = contextlib.nullcontext() if plan.dry_run else stopped.saying(
        lambda: f"after {cp.counts.get('read', 0):,} keys; progress saved: rerun with --resume to continue",
        reporter.note)
    try:
        with said:
            try:
                await pump(source_pages(src, kf, plan, cp.cursor), consume, plan.queue_depth)
            except BaseException:
                if not plan.dry_run:
                    with contextlib.suppress(Exception):  # never hide the original error
                        _save(cp, cp_path, plan)
                raise
    finally:
        if counter is not None:
            counter.cancel()
    cp.done = True
    cp.counts = writer.counts.to_dict()
    if not plan.dry_run and (plan.delete_extra or plan.verify or plan.keep_checkpoint):
        _save(cp, cp_path, plan)  # a crash from here on resumes with the post-copy steps only


def _save(cp: checkpoint.Checkpoint, cp_path: Path, plan: Plan) -> None:
    if plan.before_checkpoint is not None:
        plan.before_checkpoint(cp)
    cp.save(cp_path)


class ResumeWriter:
    """The batches of a resumed run under ``skip``, ``newer`` or ``fail``: its own earlier writes
    are not conflicts.

    A checkpoint is saved every few batches, so the run that saved it may have written batches
    after its cursor before it stopped: all of the batch in flight on a Ctrl-C, up to a second of
    batches on a kill, part of a batch on a lost server (a batch need not be atomic).  A resumed
    run reads those records again and finds them in the destination.  Under ``overwrite`` that is
    harmless; under ``fail`` it would stop at the first of them on every resume, and ``skip`` and
    ``newer`` would count them as skipped rather than copied.

    So while it replays, a destination record with the source record's content (the same value,
    or for a typed value the same dump; the same expiry within ``expiry_tolerance_ms``, or any
    expiry where ``--drop-ttl`` writes none; the same version where both sides keep one) counts
    as this migrate's own write: it is written again (writing a record twice yields the same
    record) and counted as copied.  Any other content is a conflict as in an uninterrupted run.
    Writes are sequential, one batch at a time, so the replay ends with the first batch the
    destination holds none of: past it, an identical key is not this migrate's and the policy
    applies to it as usual.
    """

    def __init__(self, src: AsyncStore, dst: AsyncStore, writer: BatchWriter, plan: Plan) -> None:
        self.src = src
        self.dst = dst
        self.writer = writer
        self.replaying = True
        self.tolerance_ms = plan.expiry_tolerance_ms
        self.ignore_expiry = plan.drop_ttl and not dst.capabilities.ttl
        self.typed_ok = writer.typed_ok
        # the same pipeline as ``writer`` (expiry, TTLs, limits, typed values) and the same
        # totals, without the conflict check
        self.again = BatchWriter(dst, policy="overwrite", source=writer.source, typed_ok=writer.typed_ok,
                                 drop_ttl=writer.drop_ttl, dry_run=writer.dry_run)
        self.again.counts, self.again.problems = writer.counts, writer.problems

    @property
    def counts(self) -> Counts:
        return self.writer.counts

    @property
    def problems(self) -> Problems:
        return self.writer.problems

    async def write(self, records: list[Record]) -> None:
        if not self.replaying or not records:
            await self.writer.write(records)
            return
        held = await self.dst.get_many([r.key for r in records])
        live_after = now_ms() + self.tolerance_ms
        ours: list[Record] = []
        rest: list[Record] = []
        typed: list[tuple[Record, Record]] = []
        absent_live = False
        for rec, old in zip(records, held, strict=True):
            if old is None:
                rest.append(rec)
                absent_live = absent_live or rec.expires_at_ms is None or rec.expires_at_ms > live_after
            elif rec.kind is not None and self.typed_ok and rec.kind == old.kind:
                typed.append((rec, old))  # compared by their dumps below
            elif self.same(rec, old):
                ours.append(rec)
            else:
                rest.append(rec)
        if typed:
            keys = [r.key for r, _ in typed]
            mine, theirs = await dump_many(self.src, keys), await dump_many(self.dst, keys)
            for (rec, _), a, b in zip(typed, mine, theirs, strict=True):
                (ours if a is not None and b is not None and self.same(a, b) else rest).append(rec)
        if absent_live and all(old is None for old in held):
            self.replaying = False  # the destination holds none of this batch: past the replay
        if ours:
            await self.again.write(ours)
        if rest:
            await self.writer.write(rest)

    def same(self, rec: Record, old: Record) -> bool:
        """Does the destination hold exactly what writing ``rec`` would leave there?"""
        if rec.kind != old.kind or rec.value != old.value:
            return False
        if rec.version is not None and old.version is not None and rec.version != old.version:
            return False
        return self.ignore_expiry or same_expiry(rec.expires_at_ms, old.expires_at_ms, self.tolerance_ms)


def _start_estimate(src: AsyncStore, kf: KeyFilter, plan: Plan,
                    total: list[int | None]) -> asyncio.Task[None] | None:
    """Count the source in the background for the progress bar's total and ETA."""
    if not plan.estimate_total or plan.key_range or plan.hash_slice or plan.partition:
        return None
    return start_count(src, kf, total)


def start_count(store: AsyncStore, kf: KeyFilter, total: list[int | None]) -> asyncio.Task[None] | None:
    """Count the keys under ``kf`` in the background into ``total[0]``, for a progress bar's
    total, %, and ETA; nothing when a glob would make counting a scan of its own."""
    prefix = kf.scan_prefix
    if prefix is None or kf.needs_match:
        return None

    async def count() -> None:
        with contextlib.suppress(Exception):  # an estimate is optional
            total[0] = await store.count(prefix)

    return asyncio.get_running_loop().create_task(count())


async def source_pages(src: AsyncStore, kf: KeyFilter, plan: Plan, cursor: str | None) -> AsyncIterator[Page]:
    """The source's pages for this plan: the whole filter, a key range, or a hash slice."""
    part = Slice(plan.key_range, plan.hash_slice, plan.partition)
    async for page in slice_pages(src, kf, part, plan.batch_size, cursor):
        yield page


async def _delete_extra(src: AsyncStore, dst: AsyncStore, plan: Plan, summary: Summary,
                        reporter: Reporter, t0: float) -> None:
    """Make DST mirror SRC under the filter, only after a complete copy, never past --max-delete."""
    c = summary.counts
    if c.failed or c.incomplete:
        summary.delete_refused = "the copy was incomplete, so nothing was deleted"
        return
    reporter.progress(Progress("delete-extra", c, None, time.perf_counter() - t0))
    opts = _diff_options(plan, dst)
    found = 0
    async for keys in extra_keys(src, dst, opts):  # first pass: count only, delete nothing
        found += len(keys)
        if found > plan.max_delete:
            break
    summary.extra_found = found
    if found == 0:
        return
    if c.read == 0:
        summary.delete_refused = (f"the source has no keys under the filter; refusing to delete "
                                  f"{found}{'+' if found > plan.max_delete else ''} destination keys")
        return
    if found > plan.max_delete:
        summary.delete_refused = (f"more than {plan.max_delete} extra keys (--max-delete); nothing was "
                                  "deleted")
        return
    if plan.dry_run:
        return
    budget = plan.max_delete
    while budget > 0:  # repeat until a pass finds nothing: deleting during a scan may skip keys
        deleted_this_pass = 0
        async for keys in extra_keys(src, dst, opts):
            take = keys[:budget]
            summary.deleted += await dst.delete_many(take)
            deleted_this_pass += len(take)
            budget -= len(take)
            if budget <= 0:
                break
        if deleted_this_pass == 0:
            break


def checkpoint_file(plan: Plan, src_url: str, dst_url: str) -> Path:
    """Where a run of this plan keeps its checkpoint."""
    return plan.checkpoint_path or checkpoint.default_path(plan.fingerprint(src_url, dst_url))


def read_checkpoint(plan: Plan, src_url: str, dst_url: str) -> checkpoint.Checkpoint | None:
    """The checkpoint --resume would continue from (for the cli and the worker coordinator)."""
    return checkpoint.load(checkpoint_file(plan, src_url, dst_url), plan.fingerprint(src_url, dst_url))


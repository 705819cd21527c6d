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
:mod:`kvctl.engines.migrate.parallel`); each slice has its own checkpoint.

``--resume`` continues after the checkpoint's cursor.  The interrupted run may have written past
that cursor before it stopped; :class:`ResumeWriter` tells those writes (the destination holds
exactly the source record) from real conflicts, so a resumed run ends as an uninterrupted one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from kvctl.store import AsyncStore, Page
from kvctl.url import redact

from .. import _stopped as stopped
from .._batches import BatchWriter, check_policy
from .._files import writable_dir
from .._pipeline import pump
from .._slices import Slice, slice_pages
from .._stores import describe, has_typed_values, open_async, refuse_same_store, start_count
from ..diff import DiffOptions, compare, extra_keys
from ..keyfilter import KeyFilter
from ..preview import KeyList, open_read_only
from ..reporting import Counts, Problems, Progress, Reporter
from ..typedjson import json_view
from . import checkpoint
from .plan import Plan, Summary
from .resume import ResumeWriter


def run(src_url: str, dst_url: str, plan: Plan, reporter: Reporter | None = None) -> Summary:
    """Run a migrate in its own event loop (the command's only one)."""
    return asyncio.run(migrate_urls(src_url, dst_url, plan, reporter or Reporter()))


async def migrate_urls(src_url: str, dst_url: str, plan: Plan, reporter: Reporter) -> Summary:
    refuse_same_store(src_url, dst_url)
    missing: list[str] = []  # a dry run creates no store: a missing one is compared as empty
    async with (open_async(src_url, access="read") as src,
                open_read_only(dst_url, missing) if plan.dry_run else open_async(dst_url) as dst):
        summary = await migrate(src, dst, plan, reporter, plan.fingerprint(src_url, dst_url))
    if missing:
        summary.dst = redact(dst_url)
        reporter.note(f"{summary.dst} does not exist yet: a real run would create it")
    return summary


async def migrate(src: AsyncStore, dst: AsyncStore, plan: Plan, reporter: Reporter, fp: str) -> Summary:
    src = json_view(src, plan.types)
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
    read_before, summary.copied_before = writer.counts.read, writer.counts.copied
    if not cp.done:
        resuming = summary.resumed and plan.on_conflict != "overwrite" and not plan.dry_run
        batches = ResumeWriter(src, dst, writer, plan) if resuming else writer
        await _copy(src, batches, kf, plan, cp, cp_path, reporter, t0)
    summary.counts, summary.problems, summary.preview = writer.counts, writer.problems, writer.preview
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
    src = json_view(src, plan.types)  # compared as it was copied
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

    # the count is what the checkpoint holds: a Ctrl-C lets the batch in flight finish (pump)
    whole = plan.key_range is None and plan.hash_slice is None and plan.partition is None
    said = contextlib.nullcontext() if plan.dry_run else stopped.saying(
        lambda: stopped.resumable(cp.counts.get("read", 0), whole=whole),
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


def _start_estimate(src: AsyncStore, kf: KeyFilter, plan: Plan,
                    total: list[int | None]) -> asyncio.Task[None] | None:
    """Count the source in the background for the progress bar's total and ETA."""
    if not plan.estimate_total or plan.key_range or plan.hash_slice or plan.partition:
        return None
    return start_count(src, kf, total)


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
    extra = KeyList()  # a dry run names them (and counts them all)
    async for keys in extra_keys(src, dst, opts):  # first pass: count only, delete nothing
        found += len(keys)
        extra.add(keys)
        if found > plan.max_delete and not plan.dry_run:
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
    if summary.preview is not None:
        summary.preview.delete = extra
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

"""Incremental replication between two stores: ``kvctl sync SRC DST [--two-way] [--watch]``.

The first run of a pair copies everything; later runs move only the changes since the cursor
saved for the pair.  Every write goes through last-writer-wins (:func:`kvctl.store.newer`): a
change is applied only when its version is newer than what the other side holds, so replaying
a change twice, or a stale delete arriving late, never changes the result.

Where changes come from, in order of preference:

1. the source's change feed (capability ``change_feed``) since the saved cursor;
2. a key-ordered comparison of both stores ("diff pass"): when the source has no feed, when the
   feed no longer covers the cursor (:class:`~kvctl.errors.FeedGapError`), and on the first run.
   A fallback is announced (``SyncResult.fallback``), never silent.

The feed position is read *before* a full pass starts, so a write that lands during the pass is
replayed by the next run rather than lost.  The pair's state (cursors, the version at which the
last run finished) is written atomically after every applied page, so a killed sync resumes
where it stopped.

Two-way sync reads the pending changes of both sides, applies each side's changes to the other,
and resolves a key changed on both sides by version (last writer wins), listing every such
conflict.  On a diff pass (no usable feed), a key present on the destination only is deleted when
it predates the previous run (the source deleted it since); a newer one was written at the
destination and is kept (one-way, counted in ``kept_at_dst``) or copied to the source (two-way).
So sync never deletes what it cannot prove older; ``kvctl migrate --delete-extra`` makes a mirror.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvctl.errors import FeedGapError, UnsupportedError
from kvctl.hlc import physical_ms
from kvctl.registry import open_async
from kvctl.store import TOMBSTONE, AsyncStore, Record, newer, now_ms
from kvctl.url import redact

from .. import _stopped as stopped
from .._compare import json_sides, same_value
from .._files import writable_dir
from .._stores import refuse_same_store, start_count
from ..keyfilter import KeyFilter
from ..preview import open_read_only, preview_lww
from ..reporting import Counts, Progress, Reporter
from .apply import Applied, apply_storable, latest_per_key
from .result import Conflict, SyncResult
from .state import load_state, save_state, state_path


def _differs(a: Record, b: Record, json_values: bool) -> bool:
    """Do two records hold different content?  Values by meaning where a side holds JSON documents."""
    return ((a.expires_at_ms, a.kind) != (b.expires_at_ms, b.kind)
            or not same_value(a.value, b.value, json_values and a.kind is None))


async def _pending(store: AsyncStore, cursor: str, batch_size: int) -> AsyncIterator[tuple[list[Record], str]]:
    async for page in store.changes(cursor, batch_size=batch_size):  # type: ignore[attr-defined]
        yield page.records, page.cursor


# -- the engine --------------------------------------------------------------------------------
@dataclass
class SyncPlan:
    src_url: str
    dst_url: str
    state_dir: Path
    two_way: bool = False
    batch_size: int = 1000
    force_full: bool = False
    dry_run: bool = False  # apply nothing, save no state: report what a run would do
    estimate_total: bool = False  # count the source for a comparison's progress total

    def state_file(self) -> Path:
        return state_path(self.state_dir, self.src_url, self.dst_url, self.two_way)

    def __post_init__(self) -> None:
        refuse_same_store(self.src_url, self.dst_url)


class SyncEngine:
    """One sync run (or a watch loop) between two open stores."""

    def __init__(self, plan: SyncPlan, src: AsyncStore, dst: AsyncStore,
                 reporter: Reporter | Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.plan = plan
        self.src = src
        self.dst = dst
        # told of each page applied or compared, and what a run that stops part-way applied
        self.reporter = reporter if isinstance(reporter, Reporter) else _Callback(reporter)
        self.started = time.monotonic()
        self.path = plan.state_file()
        self._sent: dict[int, set[tuple[bytes, int | None]]] = {id(src): set(), id(dst): set()}
        self.applied_before = 0  # changes applied by the earlier runs of a watch: what a stop reports
        self.done = Counts()  # this run so far, for progress
        self.state = {} if plan.force_full else load_state(self.path)
        self.json_values = json_sides(src, dst)  # compare values by meaning
        for side, store in (("source", src), ("destination", dst)):
            for need in ("change_feed", "versions") if plan.two_way else ():
                if not getattr(store.capabilities, need):
                    raise UnsupportedError(
                        f"two-way sync needs {need.replace('_', ' ')}s on both stores; "
                        f"the {side} ({store.name}) has none"
                    )

    def _save(self, durable: bool = False, **changes: Any) -> None:
        if self.plan.dry_run:
            return
        self.state.update(changes, src=redact(self.plan.src_url), dst=redact(self.plan.dst_url))
        save_state(self.path, self.state, durable=durable)

    def _told(self, phase: str, read: int, applied: int, total: int | None = None,
              lag_ms: int | None = None) -> None:
        self.done.read += read
        self.done.copied += applied
        self.reporter.progress(Progress(phase, self.done, total, time.monotonic() - self.started, lag_ms))

    async def _send(self, records: list[Record], source: AsyncStore, target: AsyncStore,
                    result: SyncResult) -> Applied:
        """Apply ``records`` from ``source`` to ``target``; typed values go by dump/restore."""
        typed = [r for r in records if r.kind not in (None, TOMBSTONE)]
        restored = 0
        preview = result.preview_for(target is self.dst) if self.plan.dry_run else None
        if typed:
            records = [r for r in records if r.kind in (None, TOMBSTONE)]
            if source.capabilities.typed_values and target.capabilities.typed_values:
                if preview is not None:
                    await preview.writes(target, [r.key for r in typed])
                    restored = len(typed)
                else:
                    dumps = [d for d in await source.dump_many([r.key for r in typed]) if d is not None]  # type: ignore[attr-defined]
                    await target.restore_many(dumps)  # type: ignore[attr-defined]
                    restored = len(dumps)
            else:
                result.skipped_typed.extend(r.key for r in typed)
        if preview is not None:
            done = Applied(*await preview_lww(target, records, preview))
        else:
            done = await apply_storable(target, records, lambda rec, why: result.failed.append((rec.key, why)))
        if self.plan.two_way:  # remembered so their echoes in the target's feed can be stepped over
            self._sent[id(target)].update((r.key, r.version) for r in records)
        result.deleted += done.deleted
        result.stale_skipped += done.stale
        return Applied(done.written + restored, done.deleted, done.stale)

    async def run_once(self) -> SyncResult:
        started = self.started = time.monotonic()
        self.done = Counts()
        result = SyncResult(dry_run=self.plan.dry_run)
        src_feed = self.src.capabilities.change_feed
        cursor = self.state.get("src_cursor")
        # A rerun sends nothing twice: a feed run saves its cursor after every page, and a
        # comparison finds what was applied already equal.
        def status() -> str:
            applied = self.applied_before + result.applied_to_dst + result.applied_to_src
            return f"after at least {applied:,} changes applied; rerun the sync to finish"

        with stopped.saying(status, None if self.plan.dry_run else self.reporter.note):
            if cursor is not None and src_feed:
                try:
                    await (self._two_way_feed(result) if self.plan.two_way else self._one_way_feed(result, cursor))
                except FeedGapError as gap:
                    result.fallback = f"change feed gap: {gap}"
                    await self._diff_pass(result)
            else:
                if not src_feed:
                    result.fallback = f"the source ({self.src.name}) has no change feed: comparing both stores"
                elif self.state:
                    result.fallback = "no saved cursor for this pair: comparing both stores"
                await self._diff_pass(result)
        result.src_cursor = self.state.get("src_cursor")
        result.dst_cursor = self.state.get("dst_cursor")
        result.seconds = time.monotonic() - started
        result.converged = not result.skipped_typed and not result.failed
        self._save(durable=True, last_run_ms=now_ms())
        return result

    # one-way, from the source's feed
    async def _one_way_feed(self, result: SyncResult, cursor: str) -> None:
        result.mode = "feed"
        async for records, next_cursor in _pending(self.src, cursor, self.plan.batch_size):
            done = await self._send(records, self.src, self.dst, result)
            result.applied_to_dst += done.written
            self._save(src_cursor=next_cursor)
            self._told("sync", len(records), done.written + done.deleted, lag_ms=_lag(records))

    # two-way, from both feeds
    async def _two_way_feed(self, result: SyncResult) -> None:
        result.mode = "feed"
        src_cursor, dst_cursor = self.state["src_cursor"], self.state.get("dst_cursor")
        if dst_cursor is None:
            raise FeedGapError("no saved destination cursor")
        # The destination's pending changes are held in memory, keyed by key (bounded by what
        # changed since the last run); the source's are streamed against them.
        dst_pending: dict[bytes, Record] = {}
        dst_end = dst_cursor
        async for records, next_cursor in _pending(self.dst, dst_cursor, self.plan.batch_size):
            for rec in latest_per_key(records):
                if newer(rec, dst_pending.get(rec.key)):
                    dst_pending[rec.key] = rec
            dst_end = next_cursor
        src_end = src_cursor
        async for records, next_cursor in _pending(self.src, src_cursor, self.plan.batch_size):
            to_dst = []
            for rec in latest_per_key(records):
                theirs = dst_pending.get(rec.key)
                if theirs is not None:
                    winner = rec if newer(rec, theirs) else theirs
                    result.conflicts.append(Conflict(rec.key, "src" if winner is rec else "dst",
                                                     rec.version, theirs.version))
                    if winner is not rec:
                        continue  # the destination's change wins and goes back to the source below
                    del dst_pending[rec.key]
                to_dst.append(rec)
            result.applied_to_dst += (await self._send(to_dst, self.src, self.dst, result)).written
            src_end = next_cursor
        to_src = list(dst_pending.values())
        result.applied_to_src += (await self._send(to_src, self.dst, self.src, result)).written
        await self._save_past_echoes(src_end, dst_end)

    async def _save_past_echoes(self, src_cursor: str | None, dst_cursor: str | None) -> None:
        """Save both cursors, stepped over the echoes of what this run wrote to each side, so
        the next run does not report our own writes as changes (any left are no-ops)."""
        if src_cursor is not None and self.plan.two_way:
            src_cursor = await _skip_echoes(self.src, src_cursor, self._sent[id(self.src)], self.plan.batch_size)
        if dst_cursor is not None:
            dst_cursor = await _skip_echoes(self.dst, dst_cursor, self._sent[id(self.dst)], self.plan.batch_size)
        self._save(src_cursor=src_cursor, dst_cursor=dst_cursor)

    # full comparison, used for first runs and as the fallback
    async def _diff_pass(self, result: SyncResult) -> None:
        result.mode = "diff"
        src_cursor = await self.src.feed_cursor() if self.src.capabilities.change_feed else None  # type: ignore[attr-defined]
        dst_cursor = (await self.dst.feed_cursor()  # type: ignore[attr-defined]
                      if self.plan.two_way and self.dst.capabilities.change_feed else None)
        previous_run = self.state.get("last_run_ms")
        total: list[int | None] = [None]
        counter = start_count(self.src, KeyFilter(), total) if self.plan.estimate_total else None
        try:
            await self._compare(result, total)
        finally:
            if counter is not None:
                counter.cancel()
        # Keys only the destination has.  One that existed before the previous run came through
        # the source, which has deleted it since: delete it.  A newer one was written at the
        # destination; nothing proves a newer delete, so it stays (two-way: it goes to the source).
        async for page in self.dst.scan(batch_size=self.plan.batch_size):
            ours = await self.src.get_many([r.key for r in page.records])
            gone: list[Record] = []
            fresh: list[Record] = []
            for rec, other in zip(page.records, ours, strict=True):
                if other is not None:
                    continue
                older = previous_run is not None and (
                    rec.version is None or physical_ms(rec.version) <= previous_run)
                (gone if older else fresh).append(rec)
            if gone and self.plan.dry_run:
                result.preview_for(True).delete.add(r.key for r in gone)
                result.deleted += len(gone)
            elif gone:
                result.deleted += await self.dst.delete_many([r.key for r in gone])
            if fresh and self.plan.two_way:
                result.applied_to_src += (await self._send(fresh, self.dst, self.src, result)).written
            elif fresh:
                result.kept_at_dst += len(fresh)
        await self._save_past_echoes(src_cursor, dst_cursor)

    async def _compare(self, result: SyncResult, total: list[int | None]) -> None:
        """The source's keys against the destination's: each newer side's value goes across."""
        async for page in self.src.scan(batch_size=self.plan.batch_size):
            records = page.records
            theirs = await self.dst.get_many([r.key for r in records])
            to_dst, to_src = [], []
            for mine, other in zip(records, theirs, strict=True):
                if other is None:
                    to_dst.append(mine)
                elif mine.version == other.version and not _differs(mine, other, self.json_values):
                    continue  # the same record on both sides (no versions, or one write): nothing to send
                elif newer(mine, other) or (mine.version is None and _differs(mine, other, self.json_values)):
                    to_dst.append(mine)
                elif self.plan.two_way and newer(other, mine):
                    to_src.append(other)
                elif newer(other, mine) and _differs(mine, other, self.json_values):
                    result.kept_at_dst += 1  # written at the destination after the source's: kept
            sent = await self._send(to_dst, self.src, self.dst, result)
            result.applied_to_dst += sent.written
            applied = sent.written + sent.deleted
            if to_src:
                back = await self._send(to_src, self.dst, self.src, result)
                result.applied_to_src += back.written
                applied += back.written
            self._told("compare", len(records), applied, total[0])

    async def watch(self, interval_s: float, stop: asyncio.Event, on_result: Callable[[SyncResult], None]) -> None:
        """Follow the source until ``stop`` is set, one incremental run per interval."""
        while not stop.is_set():
            result = await self.run_once()
            self.applied_before += result.applied_to_dst + result.applied_to_src
            on_result(result)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)


async def _skip_echoes(store: AsyncStore, cursor: str, ours: set[tuple[bytes, int | None]], batch_size: int) -> str:
    """The feed position after the run of changes that are exactly our own writes."""
    if not ours:
        return cursor
    async for records, next_cursor in _pending(store, cursor, batch_size):
        if all((r.key, r.version) in ours for r in records):
            cursor = next_cursor
            continue
        # a foreign change is in this page: step one change at a time up to it
        async for single, single_cursor in _pending(store, cursor, 1):
            if (single[0].key, single[0].version) not in ours:
                return cursor
            cursor = single_cursor
        return cursor
    return cursor


def _lag(records: list[Record]) -> int | None:
    versions = [r.version for r in records if r.version is not None]
    return max(0, now_ms() - physical_ms(max(versions))) if versions else None


@contextlib.asynccontextmanager
async def opened(plan: SyncPlan) -> AsyncIterator[tuple[AsyncStore, AsyncStore]]:
    """Both stores of ``plan`` (the source read-only for a one-way sync), closed at the end.

    The state directory is checked once the source is open (a missing source creates nothing)
    and before the destination is: cursors that cannot be saved would make every run a full
    pass and lose the record of what the last run saw, so an unwritable one is refused before
    anything is applied.  A dry run opens both stores to read (a missing destination is an
    empty stand-in) and touches no state."""
    missing: list[str] = []
    async with open_async(plan.src_url, access="write" if plan.two_way and not plan.dry_run else "read") as src:
        if plan.dry_run:  # nothing is written: no state directory, no store created
            async with open_read_only(plan.dst_url, missing) as dst:
                yield src, dst
            return
        # after the source is known to exist: a failing command creates no state directory
        writable_dir(plan.state_file().parent, "the sync state")
        async with open_async(plan.dst_url) as dst:
            yield src, dst


async def sync(plan: SyncPlan, reporter: Reporter | None = None) -> SyncResult:
    """Open both stores, run one sync, close them."""
    async with opened(plan) as (src, dst):
        return await SyncEngine(plan, src, dst, reporter).run_once()


class _Callback(Reporter):
    """A bare ``(phase, data)`` callable, or nothing, as a reporter: the progress hook's older form."""

    def __init__(self, fn: Callable[[str, dict[str, Any]], None] | None) -> None:
        self.fn = fn

    def progress(self, event: Progress) -> None:
        if self.fn is not None:
            self.fn(event.phase, {"counts": event.counts.to_dict(), "lag_ms": event.lag_ms})

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
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kvctl.codec import json_key
from kvctl.errors import FeedGapError, UnsupportedError, filesystem
from kvctl.hlc import physical_ms
from kvctl.registry import open_async
from kvctl.store import TOMBSTONE, AsyncReplicable, AsyncStore, Record, newer, now_ms
from kvctl.url import redact

from . import stopped
from .fsutil import writable_dir
from .storeops import refuse_same_store
from .transfer import Refuse, store_what_fits, within_limits

STATE_VERSION = 1


@dataclass
class Conflict:
    key: bytes
    winner: str  # "src" or "dst"
    src_version: int | None
    dst_version: int | None


@dataclass
class SyncResult:
    mode: str = "feed"  # "feed" (incremental) or "diff" (full comparison)
    fallback: str | None = None  # why a diff pass replaced the feed, when it did
    applied_to_dst: int = 0
    applied_to_src: int = 0
    stale_skipped: int = 0
    deleted: int = 0
    kept_at_dst: int = 0  # destination-only keys newer than the previous run (one-way)
    conflicts: list[Conflict] = field(default_factory=list)
    # keys of non-bytes types (Redis hashes...) the other side cannot hold: reported, not dropped
    skipped_typed: list[bytes] = field(default_factory=list)
    # records the receiving store refused (over a limit, an empty key in LMDB): (key, reason)
    failed: list[tuple[bytes, str]] = field(default_factory=list)
    src_cursor: str | None = None
    dst_cursor: str | None = None
    seconds: float = 0.0
    converged: bool = False

    def to_json(self) -> dict[str, Any]:
        """Keys as everywhere else in kvctl's JSON: ``key`` when UTF-8, else ``key_b64``."""
        out = asdict(self)
        out["conflicts"] = [
            {**json_key(c.key), "winner": c.winner, "src_version": c.src_version, "dst_version": c.dst_version}
            for c in self.conflicts
        ]
        out["skipped_typed"] = [json_key(k) for k in self.skipped_typed]
        out["failed"] = [{**json_key(k), "reason": why} for k, why in self.failed]
        return out


Progress = Callable[[str, dict[str, Any]], None]


# -- pair state ------------------------------------------------------------------------------
def state_path(state_dir: Path, src_url: str, dst_url: str, two_way: bool) -> Path:
    """One file per (src, dst, direction); named by a hash so no secret reaches the file name."""
    digest = hashlib.sha256(f"{src_url}\0{dst_url}\0{two_way}".encode()).hexdigest()[:20]
    return state_dir / "sync" / f"{digest}.json"


def load_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # an unreadable state only costs a full pass; it can never lose data
    return state if state.get("format") == STATE_VERSION else {}


def save_state(path: Path, state: dict[str, Any], *, durable: bool = True) -> None:
    """Atomic (rename) always; fsynced when ``durable``.  A cursor lost to a power cut only
    replays changes, which last-writer-wins makes harmless, so mid-run saves skip the fsync."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        with filesystem(f"cannot save the sync state in {path.parent}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as fh:
                json.dump({**state, "format": STATE_VERSION}, fh)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- applying changes ------------------------------------------------------------------------
@dataclass(frozen=True)
class Applied:
    """What applying a batch of changes did: upserts and deletions that took effect, and changes
    skipped as older than what the store holds."""

    written: int = 0
    deleted: int = 0
    stale: int = 0

    def __add__(self, other: Applied) -> Applied:
        return Applied(self.written + other.written, self.deleted + other.deleted, self.stale + other.stale)


async def apply_lww(store: AsyncStore, changes: list[Record]) -> Applied:
    """Apply upserts and tombstones last-writer-wins."""
    if not changes:
        return Applied()
    changes = _latest_per_key(changes)
    plain = [c for c in changes if c.version is None]
    if plain:
        # A change without a version (a Redis source) carries no order to compare: it is the
        # source's current state, written as it is, like migrate's overwrite.
        upserts = [c for c in plain if c.kind != TOMBSTONE]
        if upserts:
            await store.set_many(upserts)
        gone = [c.key for c in plain if c.kind == TOMBSTONE]
        deleted = await store.delete_many(gone) if gone else 0
        versioned = [c for c in changes if c.version is not None]
        done = Applied(len(upserts), deleted)  # a delete of an absent key is no change, and not stale
        return done + await apply_lww(store, versioned) if versioned else done
    upserts = [c for c in changes if c.kind != TOMBSTONE]
    tombstones = [c for c in changes if c.kind == TOMBSTONE]
    if isinstance(store, AsyncReplicable):
        # Upserts and deletions in two calls, to count each: every key appears once in the batch,
        # so their order does not matter, and a run cut between them is replayed harmlessly.
        written = await store.apply_many(upserts) if upserts else 0
        deleted = await store.apply_many(tombstones) if tombstones else 0
        return Applied(written, deleted, len(changes) - written - deleted)
    # A store without apply_many: compare versions ourselves, then write the winners.
    current = await store.get_many([c.key for c in changes])
    winners = [c for c, cur in zip(changes, current, strict=True) if newer(c, cur)]
    upserts = [c for c in winners if c.kind != TOMBSTONE]
    deletes = [c.key for c in winners if c.kind == TOMBSTONE]
    if upserts:
        await store.set_many(upserts if store.capabilities.versions else [_unversioned(c) for c in upserts])
    if deletes:
        await store.delete_many(deletes)
    return Applied(len(upserts), len(deletes), len(changes) - len(winners))


async def apply_storable(store: AsyncStore, changes: list[Record], refuse: Refuse) -> Applied:
    """:func:`apply_lww`, with the records ``store`` cannot hold set aside through ``refuse`` (the
    rule migrate, import and restore follow: :func:`~kvctl.engines.transfer.store_what_fits`)."""
    total = Applied()

    async def apply(part: list[Record]) -> None:
        nonlocal total
        total = total + await apply_lww(store, part)

    await store_what_fits(apply, within_limits(store, changes, refuse), refuse)
    return total


def _latest_per_key(changes: Iterable[Record]) -> list[Record]:
    latest: dict[bytes, Record] = {}
    for change in changes:
        if newer(change, latest.get(change.key)):
            latest[change.key] = change
    return list(latest.values())


def _differs(a: Record, b: Record) -> bool:
    return (a.value, a.expires_at_ms, a.kind) != (b.value, b.expires_at_ms, b.kind)


def _unversioned(rec: Record) -> Record:
    return Record(rec.key, rec.value, rec.expires_at_ms)


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

    def state_file(self) -> Path:
        return state_path(self.state_dir, self.src_url, self.dst_url, self.two_way)

    def __post_init__(self) -> None:
        refuse_same_store(self.src_url, self.dst_url)


class SyncEngine:
    """One sync run (or a watch loop) between two open stores."""

    def __init__(self, plan: SyncPlan, src: AsyncStore, dst: AsyncStore, progress: Progress | None = None,
                 note: stopped.Note | None = None) -> None:
        self.plan = plan
        self.src = src
        self.dst = dst
        self.progress = progress or (lambda event, data: None)
        self.note = note  # told what a run that stops part-way applied
        self.path = plan.state_file()
        self._sent: dict[int, set[tuple[bytes, int | None]]] = {id(src): set(), id(dst): set()}
        self.state = {} if plan.force_full else load_state(self.path)
        for side, store in (("source", src), ("destination", dst)):
            for need in ("change_feed", "versions") if plan.two_way else ():
                if not getattr(store.capabilities, need):
                    raise UnsupportedError(
                        f"two-way sync needs {need.replace('_', ' ')}s on both stores; "
                        f"the {side} ({store.name}) has none"
                    )

    def _save(self, durable: bool = False, **changes: Any) -> None:
        self.state.update(changes, src=redact(self.plan.src_url), dst=redact(self.plan.dst_url))
        save_state(self.path, self.state, durable=durable)

    async def _send(self, records: list[Record], source: AsyncStore, target: AsyncStore,
                    result: SyncResult) -> Applied:
        """Apply ``records`` from ``source`` to ``target``; typed values go by dump/restore."""
        typed = [r for r in records if r.kind not in (None, TOMBSTONE)]
        restored = 0
        if typed:
            records = [r for r in records if r.kind in (None, TOMBSTONE)]
            if source.capabilities.typed_values and target.capabilities.typed_values:
                dumps = [d for d in await source.dump_many([r.key for r in typed]) if d is not None]  # type: ignore[attr-defined]
                await target.restore_many(dumps)  # type: ignore[attr-defined]
                restored = len(dumps)
            else:
                result.skipped_typed.extend(r.key for r in typed)
        done = await apply_storable(target, records, lambda rec, why: result.failed.append((rec.key, why)))
        if self.plan.two_way:  # remembered so their echoes in the target's feed can be stepped over
            self._sent[id(target)].update((r.key, r.version) for r in records)
        result.deleted += done.deleted
        result.stale_skipped += done.stale
        return Applied(done.written + restored, done.deleted, done.stale)

    async def run_once(self) -> SyncResult:
        started = time.monotonic()
        result = SyncResult()
        src_feed = self.src.capabilities.change_feed
        cursor = self.state.get("src_cursor")
        # A rerun sends nothing twice: a feed run saves its cursor after every page, and a
        # comparison finds what was applied already equal.
        def status() -> str:
            return (f"after at least {result.applied_to_dst + result.applied_to_src:,} changes applied; "
                    "rerun the sync to finish")

        with stopped.saying(status, self.note):
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
            self.progress("applied", {"changes": len(records), "applied": done.written + done.deleted,
                                      "lag_ms": _lag(records)})

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
            for rec in _latest_per_key(records):
                if newer(rec, dst_pending.get(rec.key)):
                    dst_pending[rec.key] = rec
            dst_end = next_cursor
        src_end = src_cursor
        async for records, next_cursor in _pending(self.src, src_cursor, self.plan.batch_size):
            to_dst = []
            for rec in _latest_per_key(records):
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
        seen_in_src = 0
        async for page in self.src.scan(batch_size=self.plan.batch_size):
            records = page.records
            seen_in_src += len(records)
            theirs = await self.dst.get_many([r.key for r in records])
            to_dst, to_src = [], []
            for mine, other in zip(records, theirs, strict=True):
                if other is None or newer(mine, other) or (mine.version is None and _differs(mine, other)):
                    to_dst.append(mine)
                elif self.plan.two_way and newer(other, mine):
                    to_src.append(other)
            result.applied_to_dst += (await self._send(to_dst, self.src, self.dst, result)).written
            if to_src:
                result.applied_to_src += (await self._send(to_src, self.dst, self.src, result)).written
            self.progress("compared", {"keys": seen_in_src})
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
            if gone:
                result.deleted += await self.dst.delete_many([r.key for r in gone])
            if fresh and self.plan.two_way:
                result.applied_to_src += (await self._send(fresh, self.dst, self.src, result)).written
            elif fresh:
                result.kept_at_dst += len(fresh)
        await self._save_past_echoes(src_cursor, dst_cursor)

    async def watch(self, interval_s: float, stop: asyncio.Event, on_result: Callable[[SyncResult], None]) -> None:
        """Follow the source until ``stop`` is set, one incremental run per interval."""
        while not stop.is_set():
            on_result(await self.run_once())
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

    The state directory is checked first: cursors that cannot be saved would make every run a
    full pass and lose the record of what the last run saw, so an unwritable one is refused
    before either store is opened or anything applied."""
    writable_dir(plan.state_file().parent, "the sync state")
    async with (open_async(plan.src_url, access="write" if plan.two_way else "read") as src,
                open_async(plan.dst_url) as dst):
        yield src, dst


async def sync(plan: SyncPlan, progress: Progress | None = None, note: stopped.Note | None = None) -> SyncResult:
    """Open both stores, run one sync, close them."""
    async with opened(plan) as (src, dst):
        return await SyncEngine(plan, src, dst, progress, note).run_once()

"""Writing a snapshot of a store: full, or incremental after a change-feed cursor.

* **create** (full) scans the store (read ahead on its own task) and streams records into a
  temporary file next to the target, which is fsynced, renamed over the target, and its directory
  fsynced.  Typed values (``Record.kind``) are stored as their ``dump_many`` payloads when the
  store offers them, otherwise reported by name and counted (the command then exits 8, with the
  file written).  The snapshot is as consistent as the backend's scan: each key as it was when its
  batch was read.  A store with a change feed has its feed position read *before* the scan and
  recorded as the header's ``end_cursor``, so an incremental snapshot can follow: a change made
  during the scan is then in both files, and applying it twice is a no-op (last writer wins).
* **create --since CURSOR** (incremental) writes every change of the store's feed after CURSOR
  (or after a snapshot file's ``end_cursor``) in commit order: upserts as records and deletions
  as tombstones, each with its version.  ``end_cursor`` is known only once the feed has been
  read, so the blocks are spooled and the header is written last.  A store without a change feed
  is refused (UnsupportedError); a cursor the feed no longer covers is a FeedGapError (exit 9):
  the chain has to start again from a new full snapshot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

from kvctl import __version__
from kvctl.abilities import AsyncChangeFeed
from kvctl.errors import FeedGapError, StoreIOError, UnsupportedError, UsageError
from kvctl.store import TOMBSTONE, AsyncStore, Page, Record, now_ms

from .._files import atomic_writer
from .._malloc import keep_freed_memory
from .._pipeline import pump, quick_switches
from .._stores import describe, has_typed_values, open_async, start_count, with_dumps
from ..keyfilter import KeyFilter
from ..reporting import Counts, Progress, Reporter
from .format import BLOCK_RAW_TARGET, SnapshotWriter, default_codec
from .result import FULL, INCREMENTAL, SnapshotSummary, meta_filter
from .verification import read_meta

_kind = attrgetter("kind")
_expiry = attrgetter("expires_at_ms")


@dataclass(frozen=True)
class Since:
    """Where an incremental snapshot starts: a feed cursor, perhaps named by a snapshot file."""

    cursor: str
    path: Path | None = None  # the snapshot whose end_cursor this is
    key_filter: KeyFilter | None = None  # that snapshot's filter


def since_of(value: str) -> Since:
    """``--since``: an existing file is a snapshot to continue (after its ``end_cursor``);
    anything else is a change-feed cursor."""
    path = Path(value)
    if path.is_file():
        meta = read_meta(path)
        end = meta.get("end_cursor")
        if not isinstance(end, str):
            raise UsageError(f"{path} records no change-feed position (its store had no change feed, or an "
                             "older kvctl wrote it): no incremental snapshot can follow it",
                             hint="take a new full snapshot of a store with a change feed")
        return Since(end, path, meta_filter(meta))
    if path.suffix == ".kvs":
        raise StoreIOError(f"no such snapshot: {path}")
    return Since(value)


def create(url: str, path: Path, *, key_filter: KeyFilter | None = None, batch_size: int = 5000,
           codec: str | None = None, block_size: int = BLOCK_RAW_TARGET,
           since: str | None = None, reporter: Reporter | None = None) -> SnapshotSummary:
    """A full snapshot, or with ``since`` (a cursor or a snapshot file) an incremental one.
    ``reporter`` is told of each batch (with the store's key count as the total, for a full one)."""
    cursor = None
    keep_freed_memory()  # a block's buffers are reused by the next instead of faulted in again
    if since is not None:
        after = since_of(since)
        cursor, key_filter = after.cursor, _continued_filter(key_filter, after)

    async def work() -> SnapshotSummary:
        async with open_async(url, access="read") as store:
            return await create_from(store, path, key_filter=key_filter, batch_size=batch_size, codec=codec,
                                     block_size=block_size, since=cursor, reporter=reporter)

    return asyncio.run(work())


def _continued_filter(given: KeyFilter | None, after: Since) -> KeyFilter | None:
    """An incremental covers the keys of the snapshot it continues: inherited when no filter is
    given, refused when a different one is (restore would refuse the chain anyway)."""
    if after.key_filter is None or given is None or given == KeyFilter():
        return after.key_filter if after.key_filter is not None else given
    if given != after.key_filter:
        raise UsageError(f"{after.path} holds keys {after.key_filter.describe()}, but --prefix/--glob ask for "
                         f"{given.describe()}: an incremental snapshot covers the keys of the one it continues")
    return given


def has_feed(store: Any) -> bool:
    return bool(store.capabilities.change_feed) and isinstance(store, AsyncChangeFeed)


async def create_from(store: AsyncStore, path: Path, *, key_filter: KeyFilter | None = None,
                      batch_size: int = 5000, codec: str | None = None,
                      block_size: int = BLOCK_RAW_TARGET, since: str | None = None,
                      reporter: Reporter | None = None) -> SnapshotSummary:
    """Write a snapshot of ``store``: full, or incremental (the changes after cursor ``since``)."""
    kf = key_filter or KeyFilter()
    caps = store.capabilities
    incremental = since is not None
    if incremental and not has_feed(store):
        raise UnsupportedError(f"the {store.name} backend ({describe(store)}) has no change feed: an "
                               "incremental snapshot reads one", hint="take full snapshots of this store")
    summary = SnapshotSummary(str(path), describe(store), kind=INCREMENTAL if incremental else FULL,
                              base_cursor=since)
    typed_ok = has_typed_values(store)
    meta: dict[str, Any] = {
        "kind": summary.kind,
        "base_cursor": since,
        "end_cursor": None,
        "created_at_ms": now_ms(),
        "source": describe(store),
        "backend": store.name,
        "filter": {"prefix": kf.prefix.hex(), "glob": None if kf.glob is None else kf.glob.hex()},
        "ordered": bool(caps.ordered_scan) and not incremental,  # an incremental is in commit order
        "capabilities": {"ttl": caps.ttl, "versions": caps.versions, "typed_values": caps.typed_values},
        "writer": f"kvctl {__version__}",
    }
    if not incremental and has_feed(store):
        # the position before the scan: a change made during it is in the next increment as well
        summary.end_cursor = meta["end_cursor"] = await store.feed_cursor()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    told = _Told(reporter, t0)
    try:
        with atomic_writer(path) as fh:
            # an incremental's end cursor is known at the end: its header is written last
            writer = SnapshotWriter(fh, meta, codec or default_codec(), block_size, defer_header=incremental,
                                    spool_dir=str(path.parent))
            try:
                if since is None:
                    await _write_records(store, kf, batch_size, writer, summary, typed_ok, told)
                    summary.size = writer.finish()
                else:
                    summary.end_cursor = await _write_changes(store, kf, since, batch_size, writer, summary,
                                                              typed_ok, told)
                    summary.size = writer.finish({"end_cursor": summary.end_cursor, "changes": {
                        "upserts": summary.upserts, "tombstones": summary.tombstones}})
            except BaseException:
                writer.abort()
                raise
    except OSError as exc:
        raise StoreIOError(f"cannot write snapshot {path}: {exc.strerror}") from None
    summary.records, summary.blocks, summary.raw_bytes = writer.records, writer.blocks, writer.raw_bytes
    told(0, writer, summary.expired)  # the last frame: every block written
    if not incremental:
        summary.upserts, summary.tombstones = summary.records, 0
    summary.seconds = time.perf_counter() - t0
    return summary


class _Told:
    """How far a snapshot got, for a progress reporter: records written out of the store's count."""

    def __init__(self, reporter: Reporter | None, t0: float) -> None:
        self.reporter = reporter
        self.t0 = t0
        self.total: list[int | None] = [None]
        self.done = 0  # records handed to the writer (which counts them only as blocks fill)

    def count(self, store: AsyncStore, kf: KeyFilter) -> asyncio.Task[None] | None:
        return start_count(store, kf, self.total) if self.reporter is not None else None

    def __call__(self, added: int, writer: SnapshotWriter, expired: int) -> None:
        self.done += added
        if self.reporter is not None:
            counts = Counts(read=self.done + expired, copied=self.done, expired=expired, bytes=writer.raw_bytes)
            self.reporter.progress(Progress("snapshot", counts, self.total[0], time.perf_counter() - self.t0))


async def _write_records(store: AsyncStore, kf: KeyFilter, batch_size: int, writer: SnapshotWriter,
                         summary: SnapshotSummary, typed_ok: bool, told: _Told) -> None:
    prefix = kf.scan_prefix

    async def pages() -> AsyncIterator[Page]:
        if prefix is not None:
            async for page in store.scan(prefix, batch_size=batch_size):
                yield page

    async def consume(page: Page) -> None:
        records = kf.keep(page.records)
        now = now_ms()
        # C-level passes decide whether this batch needs the per-record loop at all
        exps = [e for e in map(_expiry, records) if e is not None]
        if list(map(_kind, records)).count(None) != len(records) or (exps and min(exps) <= now):
            records = await _typed_and_live(store, records, now, summary, typed_ok)
        writer.add(records)
        told(len(records), writer, summary.expired)

    counter = told.count(store, kf)
    try:
        with quick_switches():  # the scan's thread hands each page over without waiting a full switch interval
            await pump(pages(), consume, depth=4)
    finally:
        if counter is not None:
            counter.cancel()


async def _typed_and_live(store: AsyncStore, records: list[Record], now: int,
                          summary: SnapshotSummary, typed_ok: bool) -> list[Record]:
    live = []
    for r in records:
        if r.expires_at_ms is not None and r.expires_at_ms <= now:
            summary.expired += 1
        else:
            live.append(r)
    if not typed_ok:
        summary.incomplete += sum(r.kind is not None for r in live)
    return await with_dumps(store, live, typed_ok, summary.problems)


async def _write_changes(store: AsyncStore, kf: KeyFilter, since: str, batch_size: int,
                         writer: SnapshotWriter, summary: SnapshotSummary, typed_ok: bool, told: _Told) -> str:
    """Every change after ``since`` into ``writer``; returns the cursor after the last one read."""
    # Where the feed is now: the end cursor when nothing changed since ``since``.  Read before
    # the changes, so a change committed in between is read below rather than skipped.
    end: str = await store.feed_cursor()  # type: ignore[attr-defined]
    summary.upserts = summary.tombstones = 0
    everything = kf == KeyFilter()
    try:
        async for page in store.changes(since, batch_size=batch_size):  # type: ignore[attr-defined]
            records = page.records if everything else [r for r in page.records if kf.matches(r.key)]
            kinds = list(map(_kind, records))
            tombstones = kinds.count(TOMBSTONE)
            if kinds.count(None) + tombstones != len(records):
                records = await _typed_changes(store, records, summary, typed_ok)
            writer.add(records)
            summary.tombstones += tombstones
            summary.upserts += len(records) - tombstones
            told(len(records), writer, 0)
            if page.cursor is not None:
                end = page.cursor
    except FeedGapError as gap:
        raise FeedGapError(f"no incremental snapshot after cursor {since}: the change feed of {describe(store)} "
                           f"no longer covers it ({gap.message})",
                           hint="take a new full snapshot (kvctl snapshot create URL -o FILE) and continue "
                                "the chain from it") from None
    return end


async def _typed_changes(store: AsyncStore, records: list[Record], summary: SnapshotSummary,
                         typed_ok: bool) -> list[Record]:
    """Typed upserts replaced by their dumps (taken now), in place; the rest kept as they are."""
    typed = [r for r in records if r.kind not in (None, TOMBSTONE)]
    if not typed_ok:
        summary.incomplete += len(typed)
    dumps = {d.key: d for d in await with_dumps(store, typed, typed_ok, summary.problems)}
    out = []
    for r in records:
        if r.kind is None or r.kind == TOMBSTONE:
            out.append(r)
        elif (d := dumps.get(r.key)) is not None:
            out.append(d if d.version is not None else d._replace(version=r.version))
    return out

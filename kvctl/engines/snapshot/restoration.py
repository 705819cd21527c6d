"""Restoring a snapshot, or a chain of them, into a store.

* **restore** applies a *chain*: at most one full snapshot, first, then incremental snapshots,
  each starting at the cursor where the previous one ended.  Every file is checked, and the
  chain's links, before anything is written.  The full snapshot is a merge by version — a
  snapshot record replaces the stored one when it is newer, or when either side has no version
  (a snapshot is an explicit request to bring these keys back) — or, with ``--replace``, first
  removes every key under the snapshot's filter.  Incrementals are applied last-writer-wins
  (:func:`kvctl.engines.replicate.apply_lww`, the sync engine's write path): a change takes effect only
  when it is newer than what the store holds, so a stale upsert never beats a newer delete where
  the store keeps tombstones.  ``--replace`` applies to the full snapshot only; a chain without
  one is refused with it (an incremental holds changes, not a whole store).  Records already
  expired are skipped (full) or applied as deletions at their version (incremental).

A single full snapshot restored into a store that holds no key, where the store offers
:class:`~kvctl.abilities.AsyncAtomicLoad`, is written as one load and checked as it is read (the
framing, every payload checksum, the trailer and the whole-file hash, before the load ends): a
file found corrupt part-way leaves the store as it was, without a first pass over the file.
Elsewhere every file is checked before anything is written.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from kvctl.errors import UnsupportedError, UsageError
from kvctl.store import TOMBSTONE, AsyncStore, Page, Record, now_ms
from kvctl.url import redact

from .. import _stopped as stopped
from .._batches import BatchWriter
from .._pipeline import Prefetch, Ready, pump_ready
from .._stores import describe, has_typed_values, one_load_if_empty, open_async, restore_many
from ..keyfilter import KeyFilter
from ..preview import KeyList, Preview, open_read_only, preview_lww
from ..replicate.apply import Applied, apply_storable
from ..reporting import Counts, Problems, Progress, Reporter
from .format import Block, SnapshotCorrupt, SnapshotReader
from .result import FULL, INCREMENTAL, SnapshotSummary, Step, meta_filter
from .verification import ChainFile, check_rest, estimate, open_file, survey


def restore(paths: Path | Sequence[Path], url: str, *, replace: bool = False, batch_size: int = 5000,
            drop_ttl: bool = False, reporter: Reporter | None = None, dry_run: bool = False) -> SnapshotSummary:
    """Restore one snapshot or a chain into the store at ``url`` (checked before it is opened).

    A restore that stops part-way says how many records it wrote (:mod:`.._stopped`): in the
    error's hint, or through ``reporter.note`` on an interruption.  ``dry_run``: write nothing
    (the store is opened to read; a missing one is compared as empty) and report the keys the
    restore would create, overwrite and delete (``summary.preview``).  Owns the command's only
    event loop."""
    files = survey([paths] if isinstance(paths, Path | str) else list(paths), full_later=True)

    async def work() -> SnapshotSummary:
        missing: list[str] = []
        async with open_read_only(url, missing) if dry_run else open_async(url) as store:
            summary = await _restore_chain(files, store, replace=replace, batch_size=batch_size,
                                           drop_ttl=drop_ttl, reporter=reporter, dry_run=dry_run)
        if missing:
            summary.store = redact(url)
            summary.notes.append(f"{summary.store} does not exist yet: a real restore would create it")
        return summary

    return asyncio.run(work())


async def restore_into(paths: Path | Sequence[Path], store: AsyncStore, *, replace: bool = False,
                       batch_size: int = 5000, drop_ttl: bool = False,
                       reporter: Reporter | None = None) -> SnapshotSummary:
    files = survey([paths] if isinstance(paths, Path | str) else list(paths), full_later=True)
    return await _restore_chain(files, store, replace=replace, batch_size=batch_size, drop_ttl=drop_ttl,
                                reporter=reporter)


async def _restore_chain(files: list[ChainFile], store: AsyncStore, *, replace: bool, batch_size: int,
                         drop_ttl: bool, reporter: Reporter | None = None,
                         dry_run: bool = False) -> SnapshotSummary:
    t0 = time.perf_counter()
    told = _Told(reporter, len(files), t0)
    if replace and files[0].kind != FULL:
        raise UsageError("--replace needs a full snapshot first in the chain: an incremental snapshot holds "
                         "changes, not a whole store")
    if not store.capabilities.ttl and not drop_ttl:
        for f in files:
            if f.kind == INCREMENTAL and f.checked is not None and f.checked.with_expiry:
                raise UnsupportedError(f"{f.path} holds {f.checked.with_expiry} record(s) with an expiry, but "
                                       f"the {store.name} backend cannot store expiries",
                                       hint="add --drop-ttl to restore them without their expiry")
    summary = SnapshotSummary(", ".join(str(f.path) for f in files), describe(store), counts=Counts(),
                              kind=files[0].kind if len(files) == 1 else "chain",
                              base_cursor=files[0].base, end_cursor=files[-1].end, upserts=0, tombstones=0)
    if dry_run:
        summary.dry_run, summary.preview = True, Preview()
        if len(files) > 1:
            summary.notes.append("dry run: each incremental is compared with the store as it is now, not as "
                                 "the files before it would leave it")
    if files[0].kind == INCREMENTAL:
        summary.notes.append(f"{files[0].path} was applied to the store as it was: it continues from cursor "
                             f"{files[0].base}, which kvctl cannot check the store had reached")
    steps: list[Step] = []  # the one being applied last: its counts grow batch by batch
    one_load = [False]

    def status() -> str:
        if one_load[0]:
            return "having written nothing: a restore into an empty store is undone as a whole"
        done = sum(s.applied for s in steps)
        where = f" in {steps[-1].path}" if len(files) > 1 and steps else ""
        return f"after at least {done:,} records written{where}; rerun the same restore to finish"

    async def apply_all() -> None:
        with stopped.saying(status, reporter.note if reporter is not None and not dry_run else None):
            for f in files:
                step = Step(str(f.path), f.kind, f.base, f.end)
                steps.append(step)
                if f.kind == FULL:
                    await _restore_full(f, store, step, summary, replace=replace, batch_size=batch_size,
                                        drop_ttl=drop_ttl, told=told)
                else:
                    await _apply_incremental(f, store, step, summary.problems, batch_size=batch_size, told=told,
                                             preview=summary.preview)
                assert f.checked is not None  # by survey, check_rest or _restore_full
                summary.blocks += f.checked.blocks
                summary.size += f.checked.size
                summary.steps.append(step)
                _add_step(summary, step)

    async with one_load_if_empty(store, files[0].checked is None and len(files) == 1 and not dry_run) as one:
        one_load[0] = one
        if one:
            await apply_all()
    if not one:
        check_rest(files)
        await apply_all()
    summary.seconds = time.perf_counter() - t0
    return summary


def _add_step(summary: SnapshotSummary, step: Step) -> None:
    c = summary.counts
    assert c is not None and summary.upserts is not None and summary.tombstones is not None
    c.read += step.records
    c.copied += step.applied
    c.skipped += step.stale
    c.expired += step.expired
    c.incomplete += step.incomplete
    c.failed += step.failed
    c.ttl_dropped += step.ttl_dropped
    summary.records, summary.expired, summary.incomplete = c.read, c.expired, c.incomplete
    summary.tombstones += step.tombstones
    summary.upserts += step.records - step.tombstones


class _Told:
    """How far a restore got, for a progress reporter: records of the file being applied, out of
    an estimate from how far into the file they reach."""

    def __init__(self, reporter: Reporter | None, files: int, t0: float) -> None:
        self.reporter = reporter
        self.files = files
        self.index = 0
        self.t0 = t0

    def next_file(self) -> None:
        self.index += 1

    def __call__(self, counts: Counts, offset: int, size: int, last: bool = False) -> None:
        if self.reporter is None:
            return
        phase = "restore" if self.files == 1 else f"restore {self.index}/{self.files}"
        total = counts.read if last else estimate(counts.read, offset, size)
        self.reporter.progress(Progress(phase, counts, total, time.perf_counter() - self.t0))


async def _restore_full(f: ChainFile, store: AsyncStore, step: Step, summary: SnapshotSummary, *,
                        replace: bool, batch_size: int, drop_ttl: bool, told: _Told) -> None:
    meta = f.meta
    kf = meta_filter(meta)
    snapshot_versions = bool(meta.get("capabilities", {}).get("versions"))
    # A merge where either side keeps no versions always lets the snapshot win: skip the reads.
    merge = not replace and snapshot_versions and store.capabilities.versions
    dry_run = summary.preview is not None
    if replace and dry_run:
        assert summary.preview is not None
        summary.preview.delete = await _would_remove(store, kf, batch_size, _keys_of(f))
    elif replace:
        await _remove_filtered(store, kf, batch_size)
    writer = BatchWriter(store, policy="newer" if merge else "overwrite", drop_ttl=drop_ttl,
                         typed_ok=has_typed_values(store), unversioned_wins=True, dry_run=dry_run)
    told.next_file()
    with open_file(f.path) as fh:
        reader = SnapshotReader(fh, str(f.path))
        size = os.fstat(fh.fileno()).st_size
        read_to = [0, 0]  # records decoded, and the file offset they reach
        blocks = [0]

        async def pages() -> AsyncIterator[Page]:
            pending: list[Record] = []  # blocks are ~1 MiB: gather them into batch_size writes
            # Payload checksums are checked as we go, the trailer and the whole-file hash after the
            # last block: checked before (see survey), or now, within a load undone if they fail.
            async for block, raw in _blocks_ahead(reader):
                decoded = reader.decode(block, check=False, raw=raw)
                blocks[0] += 1
                if decoded.tombstones:
                    raise SnapshotCorrupt(str(f.path), block.offset, "tombstones in a full snapshot")
                pending += decoded.records
                read_to[:] = [read_to[0] + len(decoded.records), fh.tell()]
                while len(pending) >= batch_size:
                    yield Page(pending[:batch_size], None)
                    pending = pending[batch_size:]
            if pending:
                yield Page(pending, None)

        def ready(page: Page) -> Ready:
            # made ready while the batch before it is written (pump_ready)
            write = writer.ready(page.records)

            async def written() -> None:
                await write()
                step.applied = writer.counts.copied  # what a stop reports
                # the bytes the reader is ahead by scale the estimate; good enough for an ETA
                told(writer.counts, fh.tell() * writer.counts.read // max(read_to[0], 1), size)

            return written

        await pump_ready(pages(), ready, depth=2)
        told(writer.counts, size, size, last=True)
        if f.checked is None:
            f.checked = SnapshotSummary(str(f.path), "", records=read_to[0], blocks=blocks[0], size=size)
    if writer.preview is not None and summary.preview is not None:  # a full snapshot comes first
        summary.preview.create, summary.preview.overwrite = writer.preview.create, writer.preview.overwrite
    c = writer.counts
    step.records, step.applied, step.stale, step.expired = c.read, c.copied, c.skipped, c.expired
    step.incomplete, step.failed, step.ttl_dropped = c.incomplete, c.failed, c.ttl_dropped
    summary.problems.extend(writer.problems)


async def _blocks_ahead(reader: SnapshotReader) -> AsyncIterator[tuple[Block, bytes]]:
    """Each block with its payload decompressed, the next one read, checked and decompressed on
    a worker thread (file reads, hashing, crc32 and decompression release the GIL) while the
    caller decodes and writes this one."""
    blocks = reader.blocks()

    def read_next() -> tuple[Block, bytes] | None:
        block = next(blocks, None)
        return None if block is None else (block, reader.decompress(block))

    ahead = asyncio.ensure_future(asyncio.to_thread(read_next))
    try:
        while (item := await ahead) is not None:
            ahead = asyncio.ensure_future(asyncio.to_thread(read_next))
            yield item
    finally:
        # stopped early: the read under way ends on its own; its outcome is of no interest
        ahead.add_done_callback(_ignore_outcome)


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _apply_incremental(f: ChainFile, store: AsyncStore, step: Step, problems: Problems, *,
                             batch_size: int, told: _Told, preview: Preview | None) -> None:
    typed_ok = has_typed_values(store)
    told.next_file()

    async def apply(changes: list[Record]) -> None:
        await _apply_changes(store, changes, step, problems, typed_ok, preview)
        told(Counts(read=step.records, copied=step.applied, skipped=step.stale, expired=step.expired),
             fh.tell(), size)

    with open_file(f.path) as fh:
        reader = SnapshotReader(fh, str(f.path))
        size = os.fstat(fh.fileno()).st_size
        pending: list[Record] = []
        for block in reader.blocks():
            pending += reader.decode(block, check=False).records  # every record was just checked
            while len(pending) >= batch_size:
                await apply(pending[:batch_size])
                pending = pending[batch_size:]
        if pending:
            await apply(pending)
        told(Counts(read=step.records, copied=step.applied, skipped=step.stale, expired=step.expired),
             size, size, last=True)


def _is_typed(rec: Record) -> bool:
    return rec.kind is not None and rec.kind != TOMBSTONE


async def _apply_changes(store: AsyncStore, changes: list[Record], step: Step, problems: Problems,
                         typed_ok: bool, preview: Preview | None = None) -> None:
    """One batch of an incremental, last-writer-wins, in file order."""
    now = now_ms()
    ttl_ok = store.capabilities.ttl
    ready = []
    for rec in changes:
        if rec.kind == TOMBSTONE:
            step.tombstones += 1
        elif rec.expires_at_ms is not None:
            if rec.expires_at_ms <= now:
                # Gone at the source too.  Applied as a deletion at its version (never a write a
                # store may refuse), so it still removes an older value the store holds.
                step.expired += 1
                rec = Record(rec.key, b"", None, rec.version, TOMBSTONE)
            elif not ttl_ok:  # the chain check refused this unless --drop-ttl was given
                step.ttl_dropped += 1
                rec = rec._replace(expires_at_ms=None)
        ready.append(rec)
    step.records += len(changes)

    def refuse(rec: Record, reason: str) -> None:
        step.failed += 1
        problems.note_failed(rec.key, reason)

    # Typed values travel by restore_many, outside last-writer-wins (as in sync); runs keep the
    # file order between them and the changes around them.
    for typed, run in groupby(ready, key=_is_typed):
        batch = list(run)
        if typed:
            if typed_ok:
                if preview is not None:
                    await preview.writes(store, [r.key for r in batch])
                else:
                    await restore_many(store, batch)
                step.applied += len(batch)
            else:
                step.incomplete += len(batch)
                for rec in batch:
                    problems.note_incomplete(rec.key, rec.kind or "?")
            continue
        if preview is not None:
            done = Applied(*await preview_lww(store, batch, preview))
        else:
            done = await apply_storable(store, batch, refuse)
        step.applied += done.written + done.deleted
        step.stale += done.stale


def _keys_of(f: ChainFile) -> set[bytes]:
    """Every key a full snapshot holds (a dry run of --replace: memory is the keys' size)."""
    keys: set[bytes] = set()
    with open_file(f.path) as fh:
        reader = SnapshotReader(fh, str(f.path))
        for block in reader.blocks():
            keys.update(r.key for r in reader.decode(block, check=False).records)
    return keys


async def _would_remove(store: AsyncStore, kf: KeyFilter, batch_size: int, kept: set[bytes]) -> KeyList:
    """The keys under the filter that --replace would delete and the snapshot not bring back."""
    gone = KeyList()
    prefix = kf.scan_prefix
    if prefix is None:
        return gone
    async for page in store.scan(prefix, batch_size=batch_size, keys_only=True):
        gone.add(r.key for r in kf.keep(page.records) if r.key not in kept)
    return gone


async def _remove_filtered(store: AsyncStore, kf: KeyFilter, batch_size: int) -> None:
    """Delete every key under the filter (``clear`` when the filter is everything)."""
    prefix = kf.scan_prefix
    if prefix is None:
        return
    if prefix == b"" and not kf.needs_match:
        await store.clear()
        return
    while True:  # deleting while scanning may skip keys on unordered backends: repeat until clean
        removed = 0
        async with Prefetch(store.scan(prefix, batch_size=batch_size, keys_only=True), 2) as ahead:
            while (page := await ahead.next()) is not None:
                keys = [r.key for r in kf.keep(page.records)]
                if keys:
                    removed += len(keys)
                    await store.delete_many(keys)
        if removed == 0:
            return

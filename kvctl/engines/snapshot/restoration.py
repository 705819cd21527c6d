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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from itertools import groupby
from pathlib import Path

from kvctl.errors import UnsupportedError, UsageError
from kvctl.store import TOMBSTONE, AsyncStore, Page, Record, now_ms

from .. import _stopped as stopped
from .._batches import BatchWriter
from .._pipeline import Prefetch, pump
from .._stores import describe, has_typed_values, open_async, restore_many
from ..keyfilter import KeyFilter
from ..replicate.apply import apply_storable
from ..reporting import Counts, Problems, Reporter
from .format import SnapshotCorrupt, SnapshotReader
from .result import FULL, INCREMENTAL, SnapshotSummary, Step, meta_filter
from .verification import ChainFile, open_file, survey


def restore(paths: Path | Sequence[Path], url: str, *, replace: bool = False, batch_size: int = 5000,
            drop_ttl: bool = False, reporter: Reporter | None = None) -> SnapshotSummary:
    """Restore one snapshot or a chain into the store at ``url`` (checked before it is opened).

    A restore that stops part-way says how many records it wrote (:mod:`.._stopped`): in the
    error's hint, or through ``reporter.note`` on an interruption.  Owns the command's only event
    loop."""
    files = survey([paths] if isinstance(paths, Path | str) else list(paths))

    async def work() -> SnapshotSummary:
        async with open_async(url) as store:
            return await _restore_chain(files, store, replace=replace, batch_size=batch_size, drop_ttl=drop_ttl,
                                        reporter=reporter)

    return asyncio.run(work())


async def restore_into(paths: Path | Sequence[Path], store: AsyncStore, *, replace: bool = False,
                       batch_size: int = 5000, drop_ttl: bool = False,
                       reporter: Reporter | None = None) -> SnapshotSummary:
    files = survey([paths] if isinstance(paths, Path | str) else list(paths))
    return await _restore_chain(files, store, replace=replace, batch_size=batch_size, drop_ttl=drop_ttl,
                                reporter=reporter)


async def _restore_chain(files: list[ChainFile], store: AsyncStore, *, replace: bool, batch_size: int,
                         drop_ttl: bool, reporter: Reporter | None = None) -> SnapshotSummary:
    t0 = time.perf_counter()
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
    if files[0].kind == INCREMENTAL:
        summary.notes.append(f"{files[0].path} was applied to the store as it was: it continues from cursor "
                             f"{files[0].base}, which kvctl cannot check the store had reached")
    steps: list[Step] = []  # the one being applied last: its counts grow batch by batch

    def status() -> str:
        done = sum(s.applied for s in steps)
        where = f" in {steps[-1].path}" if len(files) > 1 and steps else ""
        return f"after at least {done:,} records written{where}; rerun the same restore to finish"

    with stopped.saying(status, reporter.note if reporter is not None else None):
        for f in files:
            assert f.checked is not None
            step = Step(str(f.path), f.kind, f.base, f.end)
            steps.append(step)
            summary.blocks += f.checked.blocks
            summary.size += f.checked.size
            if f.kind == FULL:
                await _restore_full(f, store, step, summary, replace=replace, batch_size=batch_size,
                                    drop_ttl=drop_ttl)
            else:
                await _apply_incremental(f, store, step, summary.problems, batch_size=batch_size)
            summary.steps.append(step)
            _add_step(summary, step)
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


async def _restore_full(f: ChainFile, store: AsyncStore, step: Step, summary: SnapshotSummary, *,
                        replace: bool, batch_size: int, drop_ttl: bool) -> None:
    meta = f.meta
    kf = meta_filter(meta)
    snapshot_versions = bool(meta.get("capabilities", {}).get("versions"))
    # A merge where either side keeps no versions always lets the snapshot win: skip the reads.
    merge = not replace and snapshot_versions and store.capabilities.versions
    if replace:
        await _remove_filtered(store, kf, batch_size)
    writer = BatchWriter(store, policy="newer" if merge else "overwrite", drop_ttl=drop_ttl,
                         typed_ok=has_typed_values(store), unversioned_wins=True)
    with open_file(f.path) as fh:
        reader = SnapshotReader(fh, str(f.path))

        async def pages() -> AsyncIterator[Page]:
            pending: list[Record] = []  # blocks are ~1 MiB: gather them into batch_size writes
            for block in reader.blocks():  # payload checksums are checked again as we go
                decoded = reader.decode(block, check=False)  # the whole-file hash was just verified
                if decoded.tombstones:
                    raise SnapshotCorrupt(str(f.path), block.offset, "tombstones in a full snapshot")
                pending += decoded.records
                while len(pending) >= batch_size:
                    yield Page(pending[:batch_size], None)
                    pending = pending[batch_size:]
            if pending:
                yield Page(pending, None)

        async def consume(page: Page) -> None:
            await writer.write(page.records)
            step.applied = writer.counts.copied  # what a stop reports

        await pump(pages(), consume, depth=2)
    c = writer.counts
    step.records, step.applied, step.stale, step.expired = c.read, c.copied, c.skipped, c.expired
    step.incomplete, step.failed, step.ttl_dropped = c.incomplete, c.failed, c.ttl_dropped
    summary.problems.extend(writer.problems)


async def _apply_incremental(f: ChainFile, store: AsyncStore, step: Step, problems: Problems, *,
                             batch_size: int) -> None:
    typed_ok = has_typed_values(store)
    with open_file(f.path) as fh:
        reader = SnapshotReader(fh, str(f.path))
        pending: list[Record] = []
        for block in reader.blocks():
            pending += reader.decode(block, check=False).records  # every record was just checked
            while len(pending) >= batch_size:
                await _apply_changes(store, pending[:batch_size], step, problems, typed_ok)
                pending = pending[batch_size:]
        if pending:
            await _apply_changes(store, pending, step, problems, typed_ok)


def _is_typed(rec: Record) -> bool:
    return rec.kind is not None and rec.kind != TOMBSTONE


async def _apply_changes(store: AsyncStore, changes: list[Record], step: Step, problems: Problems,
                         typed_ok: bool) -> None:
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
                await restore_many(store, batch)
                step.applied += len(batch)
            else:
                step.incomplete += len(batch)
                for rec in batch:
                    problems.note_incomplete(rec.key, rec.kind or "?")
            continue
        done = await apply_storable(store, batch, refuse)
        step.applied += done.written + done.deleted
        step.stale += done.stale


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

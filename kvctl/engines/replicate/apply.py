"""Applying changes last-writer-wins: the write path of sync and of incremental snapshot restore."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kvctl.abilities import AsyncReplicable
from kvctl.store import TOMBSTONE, AsyncStore, Record, newer

from .._batches import Refuse, store_what_fits, within_limits


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
    changes = latest_per_key(changes)
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
    rule migrate, import and restore follow: :func:`~kvctl.engines._batches.store_what_fits`)."""
    total = Applied()

    async def apply(part: list[Record]) -> None:
        nonlocal total
        total = total + await apply_lww(store, part)

    await store_what_fits(apply, within_limits(store, changes, refuse), refuse)
    return total


def latest_per_key(changes: Iterable[Record]) -> list[Record]:
    latest: dict[bytes, Record] = {}
    for change in changes:
        if newer(change, latest.get(change.key)):
            latest[change.key] = change
    return list(latest.values())


def _unversioned(rec: Record) -> Record:
    return Record(rec.key, rec.value, rec.expires_at_ms)

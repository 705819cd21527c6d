"""Replication for a file store: last-writer-wins :meth:`~ReplicatingStore.apply_many` and the
change feed read from the log (see :mod:`.feed`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from kvctl.errors import (
    UnsupportedError,
)
from kvctl.plugin_kit import check_limits, page_size, show_key
from kvctl.store import TOMBSTONE, Page, Record, newer

from .batch import encode_records, encode_tombstones
from .feed import FeedPos, parse_cursor, read_page
from .follow import FollowingStore
from .format import (
    SEG_HEADER_SIZE,
)


class ReplicatingStore(FollowingStore):
    """A file store's replication (see the module docstring)."""

    # == replication: last-writer-wins apply and the change feed ==================================
    def apply_many(self, records: Iterable[Record]) -> int:
        """Last-writer-wins apply (see kvctl.store): each change takes effect only when it is newer
        (:func:`kvctl.store.newer`) than the key's record or retained tombstone.

        The winners are written as one batch (all or nothing, fsynced per the policy); every
        version seen is observed into the clock.  Returns how many changes took effect.
        """
        recs = records if isinstance(records, list) else list(records)
        if not recs:
            return 0
        with self._lock:
            seg = self._writable()
            winners, applied, seen = self._pick_winners(recs)
            self._clock.observe(seen or None)
            if not winners:
                return applied
            upserts = [r for r in winners.values() if r.kind != TOMBSTONE]
            deletes = [r for r in winners.values() if r.kind == TOMBSTONE]
            chunks: list[bytes] = []
            batch = None
            if upserts:
                batch = encode_records(upserts, self._clock, self._inline_max, self.capabilities, self.name,
                                       final=not deletes)
                chunks = batch.chunks
            del_versions = [r.version if r.version is not None else self._clock.now() for r in deletes]
            if deletes:
                chunks = chunks + encode_tombstones([r.key for r in deletes], del_versions)
            start = self._append(seg, chunks)
            self._commit(single=False)
            index = self._index
            if batch is not None:
                batch.place(seg.id, start)
                index.put_many(batch.keys, batch.entries, batch.record_bytes, batch.expiring)
            for rec, version in zip(deletes, del_versions, strict=True):
                index.remove(rec.key)
                index.add_tomb(rec.key, version)
            if deletes:
                self._after_deletes()
            self._maybe_compact()
            return applied

    def _pick_winners(self, recs: list[Record]) -> tuple[dict[bytes, Record], int, int]:
        """The final change per key that wins, how many changes took effect, the largest version.

        Checks limits and kinds first, so a bad record fails the call before anything is written.
        """
        m = self._map
        tombs = self._tombs
        winners: dict[bytes, Record] = {}
        applied = 0
        seen = 0
        for rec in recs:
            key = rec.key
            version = rec.version
            if rec.kind == TOMBSTONE:
                check_limits(self.capabilities, self.name, key, b"")
                if rec.value or rec.expires_at_ms is not None:
                    rec = Record(key, b"", None, version, TOMBSTONE)
            elif rec.kind is not None:
                raise UnsupportedError(
                    f"the {self.name} backend holds bytes values only, not a {rec.kind} ({show_key(key)})")
            else:
                check_limits(self.capabilities, self.name, key, rec.value)
            if version is not None and version > seen:
                seen = version
            current = winners.get(key)
            if current is None:
                entry = m.get(key)
                if entry is not None:
                    if version is not None and entry.version is not None and version != entry.version:
                        # versions decide: the content is not needed (no read of an on-disk value)
                        current = Record(key, b"", entry.expires_at_ms, entry.version)
                    else:
                        current = self._resolve(key, entry)
                elif tombs:
                    tomb = tombs.get(key)
                    if tomb is not None:
                        current = Record(key, b"", None, tomb, TOMBSTONE)
            if newer(rec, current):
                winners[key] = rec
                applied += 1
        return winners, applied, seen

    def feed_cursor(self) -> str:
        """The position just after the newest change."""
        with self._lock:
            self._check_open()
            self._follow()
            active = self._active
            if active is None:  # a reader of a directory with no segment yet
                return FeedPos(0, 0, SEG_HEADER_SIZE).cursor(self._meta.store_id)
            return FeedPos(active.id, active.floor, self._committed_end(active)).cursor(self._meta.store_id)

    def changes(self, cursor: str | None, *, batch_size: int = 1000) -> Iterator[Page]:
        """Every change after ``cursor``, read from the log in commit order (see :mod:`.feed`).

        ``None`` starts at the oldest change the log still holds (after a compaction: the live
        records and retained tombstones it kept, then everything after).
        """
        batch_size = page_size(batch_size)
        with self._lock:
            self._check_open()
            self._follow()
            if not self._segs:  # a reader of a directory with no segment yet
                return
            if cursor is None:
                first = self._segs[min(self._segs)]
                pos = FeedPos(first.id, first.floor, SEG_HEADER_SIZE)
            else:
                pos = parse_cursor(cursor, self._meta.store_id, self._where)
        while True:
            with self._lock:
                self._check_open()
                self._sync_group()
                records, pos = read_page(self._segs, self._committed_end, pos, batch_size, self._where)
            if not records:
                return
            yield Page(records, pos.cursor(self._meta.store_id))

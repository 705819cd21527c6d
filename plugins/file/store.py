"""``file:///path/to/dir``: a durable, log-structured store in one directory (Bitcask-like).

Writes append checksummed frames to the newest segment file; an in-memory key directory, rebuilt
by replaying the segments on open, serves reads from memory (values up to ``inline_max``) or by
one positioned read.  Deletes append tombstones.  Compaction rewrites the live records into one
new segment and swaps it in atomically while reads and writes go on.  One writer per directory
(``LOCK``); ``?readonly=true``, and every command that only reads, opens a consistent snapshot
without the lock and creates, cuts or rewrites nothing (a missing store is NoSuchStoreError).
The durability policy is ``?fsync=always|batch|never`` (see :mod:`.options`).

Replication: the log is the change feed (see :mod:`.feed`); automatic compaction leaves the
newest ``?feed_retention=`` bytes of it alone, an explicit :meth:`FileStore.compact` compacts
everything.  Deletions are remembered for ``?tombstone_retention=`` (default 7 days), in memory
and through compactions, so :meth:`FileStore.apply_many` (last-writer-wins) never lets a stale
write resurrect a deleted key.  The HLC node id is random per store, kept in ``META``.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import struct
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NoReturn, Self

from kvctl.errors import (
    CorruptError,
    ForeignStoreError,
    KvctlError,
    NoSuchStoreError,
    StoreIOError,
    UnsupportedError,
    UsageError,
    filesystem_error,
)
from kvctl.hlc import HLC, make_version
from kvctl.plugin_kit import ScanRange, StoreBase, check_limits, deadline_ms, page_size, prefix_end
from kvctl.store import TOMBSTONE, Capabilities, Page, Record, StoreURL, newer, now_ms

from .batch import encode_records, encode_tombstones, tombstone_versions
from .compact import CompactionAborted, write_compacted
from .feed import FeedPos, parse_cursor, read_page
from .format import (
    FRAME_HEADER_SIZE,
    MAX_KEY_SIZE,
    MAX_VALUE_SIZE,
    REC_EXPIRES,
    REC_TOMBSTONE,
    RECORD_HEADER_SIZE,
    SEG_HEADER_SIZE,
    SEG_REPLACES_EARLIER,
    encode_single,
    segment_name,
)
from .index import Entry, KeyIndex, Ref
from .lock import DirLock
from .log import GroupCommit, Segment, fsync_dir
from .meta import StoreMeta, holds_other_files, is_store, load_meta
from .options import FileOptions
from .recovery import load_directory

log = logging.getLogger("kvctl.file")

_SINGLE_VALUE_AT = FRAME_HEADER_SIZE + RECORD_HEADER_SIZE  # value offset in a one-record frame, less the key
_MAX_IOV = 512
# What a failed write call left behind, as its error says it.
_NOTHING_WRITTEN = "this write was rolled back; everything written before it is committed"
_NOT_DURABLE = "this write may not be durable and the store takes no more writes until it is reopened; " \
               "everything written before it is committed"


class RecoveryWarning(UserWarning):
    """A file store found damage on open and recovered (reported once, also in ``stats()``)."""


class _ClosedMap(dict):  # type: ignore[type-arg]
    """Stands in for the key directory after close(), so the lock-free read path fails loudly."""

    def get(self, key: Any, default: Any = None) -> Any:
        raise StoreIOError("the file store is closed")


_CLOSED = _ClosedMap()


class FileStore(StoreBase):
    name = "file"
    description = "Append-only log of checksummed records in a directory; in-memory index, compaction."
    capabilities = Capabilities(
        persistent=True, ttl=True, ordered_scan=True, versions=True, atomic_batch=True, change_feed=True,
        one_writer=True,
        host_local=True,
        max_key_size=MAX_KEY_SIZE, max_value_size=MAX_VALUE_SIZE,
        durability="fsync=batch (default): each batch call fsynced before returning, single writes "
                   "within 10 ms; ?fsync=always|never",
        blocking_io=True,
    )

    def __init__(self, directory: str, options: FileOptions | None = None, url: StoreURL | None = None) -> None:
        self.url = url
        self._opts = opts = options or FileOptions()
        self._dir = os.path.abspath(directory)
        self._where = url.redacted() if url is not None else f"file://{self._dir}"
        self._lock = threading.Lock()
        self._index = KeyIndex()
        self._map: dict[bytes, Entry] = self._index.map
        self._tombs = self._index.tombs
        self._meta = StoreMeta("0" * 16, 0)
        self._reader_end: tuple[int, int] | None = None  # readonly: (last segment, its committed end)
        self._tomb_purge_at = 1024  # purge expired tombstones from memory when there are this many
        self._compact_recheck_at = 0  # automatic compaction found too little to reclaim below this size
        self._inline_max = opts.inline_max
        self._segs: dict[int, Segment] = {}
        self._active: Segment | None = None
        self._total = 0  # bytes of every segment file
        self._clock = HLC()
        self._epoch = 0  # bumped by clear(): a compaction that started before it must not swap in
        self._closed = False
        self._broken: str | None = None
        self._dirlock: DirLock | None = None
        self._group = GroupCommit(opts.batch_ms / 1000, self._group_sync) \
            if opts.fsync == "batch" and not opts.readonly else None
        self._compacting = False
        self._compact_thread: threading.Thread | None = None
        self._compactions = 0
        self._last_compaction: dict[str, Any] = {}
        self._recovered_tail = 0
        self._repaired = 0
        self._unread_tail = 0
        self._damage: list[str] = []
        self._open()

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        return cls(url.local_path(), FileOptions.from_url(url), url)

    # == open and recovery =====================================================================
    def _open(self) -> None:
        opts = self._opts
        try:
            if os.path.exists(self._dir) and not os.path.isdir(self._dir):
                raise CorruptError(f"{self._where}: {self._dir} is a file, not a file-store directory")
            if opts.readonly:
                if not is_store(self._dir):
                    raise NoSuchStoreError(f"no such store: {self._where} (nothing was created)")
            else:
                os.makedirs(self._dir, exist_ok=True)
                if not opts.create and holds_other_files(self._dir):
                    raise ForeignStoreError(
                        f"{self._where}: {self._dir} holds other files and no file store; nothing was altered",
                        hint="name a new or empty directory, or add ?create=true to make a store beside them")
                self._dirlock = DirLock(self._dir, self._where, opts.timeout_ms / 1000)
            self._meta = load_meta(self._dir, writer=not opts.readonly, report=self._report)
            self._clock = HLC(node=self._meta.node)
            for attempt in range(10):
                try:
                    loaded = load_directory(self._dir, self._index, writer=not opts.readonly,
                                            repair=opts.repair, inline_max=self._inline_max,
                                            report=self._report)
                    break
                except FileNotFoundError:
                    # A reader raced a writer's compaction, which deleted a segment it had listed:
                    # list again (the writer's files are always a consistent set).
                    if not opts.readonly or attempt == 9:
                        raise
        except KvctlError:
            self._abandon()
            raise
        except OSError as exc:
            self._abandon()
            raise self._write_error(exc, "opening the store",
                                    "nothing was changed" if opts.readonly else "no record was written") from None
        except BaseException:  # Ctrl-C during a long replay: the lock must not stay held
            self._abandon()
            raise
        self._segs = loaded.segments
        self._active = self._segs[max(self._segs)] if self._segs else None
        self._total = sum(s.size for s in self._segs.values())
        self._recovered_tail = loaded.recovered_tail
        self._repaired = loaded.repaired
        self._unread_tail = loaded.unread_tail
        if opts.readonly and self._active is not None:
            self._reader_end = (self._active.id, self._active.size - loaded.unread_tail)
        self._index.finish_load(now_ms(), self._tomb_horizon())
        self._clock.observe(loaded.max_version)
        if self._repaired and not opts.readonly:
            self.compact()  # rewrite the damaged segments so the next open is clean

    def _abandon(self) -> None:
        if self._dirlock is not None:
            self._dirlock.release()
            self._dirlock = None
        self._closed = True
        self._map = _CLOSED

    def _report(self, message: str) -> None:
        self._damage.append(message)
        warnings.warn(f"{self._where}: {message}", RecoveryWarning, stacklevel=6)

    # == reads ================================================================================
    def get(self, key: bytes) -> Record | None:
        rec = self._map.get(key)
        if rec.__class__ is Record:  # the warm path: the value is in memory
            exp = rec.expires_at_ms  # type: ignore[union-attr]
            if exp is None or exp > now_ms():
                return rec  # type: ignore[return-value]
            return None
        if rec is None:
            return None
        return self._read_ref(key)

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        m = self._map
        now = 0
        out: list[Record | None] = []
        append = out.append
        for key in keys:
            rec = m.get(key)
            if rec.__class__ is Record:
                exp = rec.expires_at_ms  # type: ignore[union-attr]
                if exp is not None:
                    now = now or now_ms()
                    if exp <= now:
                        rec = None
            elif rec is not None:
                rec = self._read_ref(key)
            append(rec)  # type: ignore[arg-type]
        return out

    def _read_ref(self, key: bytes) -> Record | None:
        """Resolve an on-disk value; under the lock, so a compaction cannot swap files midway."""
        with self._lock:
            self._check_open()
            entry = self._map.get(key)
            if entry is None:
                return None
            exp = entry.expires_at_ms
            if exp is not None and exp <= now_ms():
                return None
            return self._resolve(key, entry)

    def _resolve(self, key: bytes, entry: Entry) -> Record:
        if entry.__class__ is Record:
            return entry  # type: ignore[return-value]
        ref: Ref = entry  # type: ignore[assignment]
        seg = self._segs[ref.seg]
        try:
            value = seg.pread(ref.offset, ref.vlen)
        except OSError as exc:
            raise StoreIOError(f"{self._where}: read of {seg.path} failed: {exc.strerror}") from None
        if len(value) != ref.vlen:
            raise CorruptError(f"{seg.path}: value at offset {ref.offset} is cut short (file truncated?)")
        return Record(key, value, ref.expires_at_ms, ref.version)

    def scan_range(self, span: ScanRange, keys_only: bool) -> Iterator[Page]:
        end, batch_size = span.end, span.page

        def fetch(lower: bytes, inclusive: bool) -> list[Record]:
            batch: list[Record] = []
            with self._lock:  # one page at a time, so writers interleave between pages
                self._check_open()
                keys = self._index.sorted_keys()
                m = self._map
                i = bisect.bisect_left(keys, lower) if inclusive else bisect.bisect_right(keys, lower)
                stop = len(keys) if end is None else bisect.bisect_left(keys, end, i)
                now = now_ms()
                while i < stop and len(batch) < batch_size:
                    key = keys[i]
                    i += 1
                    entry = m.get(key)
                    if entry is None:
                        continue  # deleted, not purged from the sorted list yet
                    exp = entry.expires_at_ms
                    if exp is not None and exp <= now:
                        continue
                    if keys_only:
                        batch.append(Record(key, b"", exp, entry.version))
                    else:
                        batch.append(self._resolve(key, entry))
            return batch

        return span.pages(fetch)

    def count(self, prefix: bytes = b"") -> int:
        with self._lock:
            self._check_open()
            m = self._map
            now = now_ms()
            if not prefix:
                if not self._index.expiring:
                    return len(m)
                return sum(1 for e in m.values() if e.expires_at_ms is None or e.expires_at_ms > now)
            keys = self._index.sorted_keys()
            end = prefix_end(prefix)
            i = bisect.bisect_left(keys, prefix)
            stop = len(keys) if end is None else bisect.bisect_left(keys, end, i)
            total = 0
            for key in keys[i:stop]:
                entry = m.get(key)
                if entry is not None and (entry.expires_at_ms is None or entry.expires_at_ms > now):
                    total += 1
            return total

    # == writes ===============================================================================
    def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        klen = len(key)
        vlen = len(value)
        if klen > MAX_KEY_SIZE or vlen > MAX_VALUE_SIZE:
            check_limits(self.capabilities, self.name, key, value)
        expires = deadline_ms(ttl_ms)
        with self._lock:
            seg = self._writable()
            version = self._clock.now()
            try:
                frame = encode_single(key, value, 0 if expires is None else REC_EXPIRES, expires or 0, version)
            except struct.error:
                raise UsageError(f"{self._where}: ttl_ms={ttl_ms} is out of range") from None
            start = self._append(seg, [frame])
            self._commit(single=True)
            entry: Entry
            if vlen <= self._inline_max:
                entry = Record(key, value, expires, version)
            else:
                entry = Ref(seg.id, start + _SINGLE_VALUE_AT + klen, vlen, expires, version)
            self._index.put(key, entry, RECORD_HEADER_SIZE + klen + vlen)
            self._maybe_compact()

    def set_many(self, records: Iterable[Record]) -> None:
        recs = records if isinstance(records, list) else list(records)
        if not recs:
            return
        with self._lock:
            seg = self._writable()
            batch = encode_records(recs, self._clock, self._inline_max, self.capabilities, self.name)
            start = self._append(seg, batch.chunks)
            self._commit(single=False)
            batch.place(seg.id, start)
            self._index.put_many(batch.keys, batch.entries, batch.record_bytes, batch.expiring)
            self._maybe_compact()

    def delete(self, key: bytes) -> bool:
        return self._delete((key,), single=True) == 1

    def delete_many(self, keys: Sequence[bytes]) -> int:
        return self._delete(keys, single=False)

    def _delete(self, keys: Sequence[bytes], *, single: bool) -> int:
        with self._lock:
            seg = self._writable()
            m = self._map
            targets = [k for k in dict.fromkeys(keys) if k in m]
            if not targets:
                return 0
            now = now_ms()
            live = 0
            for key in targets:
                exp = m[key].expires_at_ms
                live += exp is None or exp > now
            versions = tombstone_versions(len(targets), self._clock)
            if len(targets) == 1:
                frames = [encode_single(targets[0], b"", REC_TOMBSTONE, 0, versions[0])]
            else:
                frames = encode_tombstones(targets, versions)
            self._append(seg, frames)
            self._commit(single=single)
            index = self._index
            for key, version in zip(targets, versions, strict=True):
                index.remove(key)
                index.add_tomb(key, version)
            self._after_deletes()
            self._maybe_compact()
            return live

    def clear(self) -> int:
        with self._lock:
            self._writable(rotate=False)
            active = self._active
            assert active is not None
            removed = self._live_count()
            if not self._map and len(self._segs) == 1 and active.size == SEG_HEADER_SIZE:
                return 0
            # One new segment that replaces every earlier one: creating it is the atomic commit,
            # so a crash leaves either the old data or an empty store, never a mix.  It holds a
            # tombstone for every key it removes (and the retained older ones): clear() is a
            # delete of everything, which replication must not undo with stale writes.
            horizon = self._tomb_horizon()
            keys = list(self._map)
            tombs = list(zip(keys, tombstone_versions(len(keys), self._clock) if keys else [], strict=True))
            tombs += [(k, v) for k, v in self._tombs.items() if v >= horizon and k not in self._map]
            body = b"".join(encode_tombstones([k for k, _ in tombs], [v for _, v in tombs])) if tombs else b""
            self._epoch += 1
            try:
                seg = Segment.create(self._dir, active.id + 1, SEG_REPLACES_EARLIER, self._clock.now(), body)
            except OSError as exc:
                raise self._write_error(exc, "clear", "nothing was cleared") from None
            old = list(self._segs.values())
            self._segs = {seg.id: seg}
            self._active = seg
            self._total = seg.size
            self._index.clear()
            for key, version in tombs:
                self._index.add_tomb(key, version)
            if self._group is not None:
                self._group.clear()
            for s in old:
                s.close()
        self._unlink_segments(old)
        return removed

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
                raise UnsupportedError(f"the {self.name} backend holds bytes values only, not a {rec.kind} ({key!r})")
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

    def _committed_end(self, seg: Segment) -> int:
        """Where the last whole batch of ``seg`` ends: its size for a writer (batches are appended
        under the lock), the end of what was committed at open for a reader."""
        end = self._reader_end
        if end is not None and end[0] == seg.id:
            return end[1]
        return seg.size

    def _sync_group(self) -> None:
        """Make pending group-commit writes durable before the feed hands them out: a change a
        replica has seen must not be lost to a power loss here (fsync=never promises nothing)."""
        group = self._group
        if group is not None and group.dirty and self._active is not None and not self._broken:
            try:
                self._active.sync()
            except OSError as exc:
                self._broken = f"fsync failed ({exc.strerror})"
                raise self._write_error(exc, f"fsync of {self._active.path}", _NOT_DURABLE) from None
            group.clear()

    def _tomb_horizon(self) -> int:
        """Tombstones with a smaller version are past ``tombstone_retention``."""
        return make_version(max(0, now_ms() - self._opts.tombstone_retention_ms))

    def _after_deletes(self) -> None:
        """Forget expired tombstones in memory now and then (amortised: when their number doubled)."""
        if len(self._tombs) >= self._tomb_purge_at:
            self._index.purge_tombs(self._tomb_horizon())
            self._tomb_purge_at = max(1024, 2 * len(self._tombs))

    def _live_count(self) -> int:
        m = self._map
        if not self._index.expiring:
            return len(m)
        now = now_ms()
        return sum(1 for e in m.values() if e.expires_at_ms is None or e.expires_at_ms > now)

    # -- the write path's pieces (all under self._lock) -----------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StoreIOError(f"{self._where}: the store is closed")

    def _writable(self, rotate: bool = True) -> Segment:
        self._check_open()
        if self._opts.readonly:
            raise UnsupportedError(f"{self._where} was opened read-only (readonly=true, or a command that only reads)")
        if self._broken:
            raise StoreIOError(f"{self._where}: {self._broken}; reopen the store")
        active = self._active
        assert active is not None
        if rotate and active.size >= self._opts.segment_size:
            active = self._rotate()
        return active

    def _rotate(self) -> Segment:
        """Seal the active segment and start the next one."""
        old = self._active
        assert old is not None
        try:
            if self._opts.fsync != "never":
                old.sync()
            seg = Segment.create(self._dir, old.id + 1, 0, self._clock.now())
        except OSError as exc:
            raise self._write_error(exc, "starting a new segment", _NOTHING_WRITTEN) from None
        self._segs[seg.id] = seg
        self._active = seg
        self._total += seg.size
        if self._group is not None:
            self._group.clear()
        return seg

    def _append(self, seg: Segment, chunks: list[bytes]) -> int:
        start = seg.size
        try:
            for i in range(0, len(chunks), _MAX_IOV):
                seg.append(chunks[i:i + _MAX_IOV])
        except OSError as exc:
            self._undo(seg, start, exc)
        self._total += seg.size - start
        return start

    def _undo(self, seg: Segment, start: int, exc: OSError) -> NoReturn:
        """A failed append must not leave a partial batch in the middle of the log."""
        outcome = _NOTHING_WRITTEN
        try:
            seg.truncate(start)
        except OSError:
            self._broken = f"a failed write could not be rolled back ({exc.strerror})"
            outcome = "this write could not be rolled back: reopen the store, which drops it; " \
                      "everything written before it is committed"
        raise self._write_error(exc, f"write to {seg.path}", outcome) from None

    def _write_error(self, exc: OSError, doing: str, outcome: str) -> StoreIOError:
        """A failed write, saying what it left committed; a full disk or read-only filesystem in
        kvctl's one wording (:func:`kvctl.errors.filesystem_error`)."""
        shared = filesystem_error(self._where, exc.errno, exc.filename or self._dir, hint=f"{doing}: {outcome}")
        if isinstance(shared, StoreIOError):
            return shared
        return StoreIOError(f"{self._where}: {doing} failed: {exc.strerror or exc}; {outcome}")

    def _commit(self, *, single: bool) -> None:
        mode = self._opts.fsync
        if mode == "never":
            return
        if mode == "batch" and single:
            assert self._group is not None
            self._group.mark()
            return
        active = self._active
        assert active is not None
        try:
            active.sync()
        except OSError as exc:
            # After a failed fsync the page cache state is unknown: refuse further writes.
            self._broken = f"fsync failed ({exc.strerror})"
            raise self._write_error(exc, f"fsync of {active.path}", _NOT_DURABLE) from None
        if self._group is not None:
            self._group.clear()

    def _group_sync(self) -> None:
        with self._lock:
            if self._closed or self._broken or self._active is None:
                return
            try:
                self._active.sync()
            except OSError as exc:
                self._broken = f"fsync failed ({exc.strerror})"
                log.error("%s: group-commit fsync failed: %s", self._where, exc.strerror)

    # == compaction ===========================================================================
    def garbage(self) -> tuple[int, float]:
        """Bytes on disk that are not live records, and their share of the files."""
        garbage = max(0, self._total - self._index.live_bytes)
        return garbage, (garbage / self._total if self._total else 0.0)

    def _maybe_compact(self) -> None:
        ratio = self._opts.compact_ratio
        if not ratio or self._compacting:
            return
        garbage = self._total - self._index.live_bytes
        if garbage < self._opts.compact_min or garbage < ratio * self._total:
            return
        if self._total < self._compact_recheck_at:
            return
        # Only the segments behind the feed's retained tail are compacted, and retained
        # tombstones are rewritten: count what compaction would surely reclaim (a lower bound,
        # so a compaction never leaves enough behind to trigger itself again).
        target = self._compaction_target()
        compactable = sum(seg.size for i, seg in self._segs.items() if i <= target) if target is not None else 0
        reclaimable = compactable - self._index.live_bytes - self._index.tomb_bytes
        if reclaimable < self._opts.compact_min:
            self._compact_recheck_at = self._total + max(64 * 1024, self._opts.compact_min // 8)
            return
        self._compacting = True
        thread = threading.Thread(target=self._background_compact, name="kvctl-file-compact", daemon=True)
        self._compact_thread = thread
        thread.start()

    def _compaction_target(self) -> int | None:
        """The newest sealed segment automatic compaction may replace, or None.

        The feed keeps the newest log: a sealed segment is retained while the segments after it
        (the active one included) hold fewer than ``feed_retention`` bytes.
        """
        active = self._active
        assert active is not None
        keep = self._opts.feed_retention_bytes
        after = active.size
        for seg_id in sorted(self._segs, reverse=True):
            if seg_id == active.id:
                continue
            if after >= keep:
                return seg_id
            after += self._segs[seg_id].size
        return None

    def _background_compact(self) -> None:
        try:
            self._run_compaction(keep_feed=True)
        except CompactionAborted:
            pass
        except (KvctlError, OSError) as exc:
            self._last_compaction = {"error": str(exc)}
            log.warning("%s: background compaction failed: %s", self._where, exc)

    def compact(self) -> dict[str, Any]:
        """Compact now, in this thread (after any background compaction finishes).

        Everything up to the newest write is compacted, so change-feed cursors taken before the
        call become gaps (a sync then compares the stores once); automatic compaction leaves the
        newest ``feed_retention`` bytes alone.  Reads and writes from other threads go on
        meanwhile.  Returns a summary.
        """
        while True:
            thread = self._compact_thread
            if thread is not None:
                thread.join()
            with self._lock:
                self._writable(rotate=False)
                if not self._compacting:
                    self._compacting = True
                    break
            time.sleep(0.01)  # another thread's explicit compact() is running
        try:
            return self._run_compaction()
        except CompactionAborted:
            return {"aborted": True}
        except OSError as exc:
            raise self._write_error(exc, "compaction", "the store is unchanged") from None

    def _run_compaction(self, keep_feed: bool = False) -> dict[str, Any]:
        """Seal, snapshot, write the compacted segment off-lock, then swap it in.

        ``keep_feed``: replace only the segments behind the feed's retained tail (automatic
        compaction); otherwise seal the active segment and replace every segment.  The caller has
        set ``_compacting``; this clears it.
        """
        try:
            with self._lock:
                self._check_open()
                if keep_feed:
                    found = self._compaction_target()
                    if found is None:
                        raise CompactionAborted
                    target = found
                else:
                    # Seal the active segment: every sealed segment is covered, writes go on in the new one.
                    target = self._rotate().id - 1
                replaced = [i for i in self._segs if i <= target]
                keys = list(self._map)
                entries = list(self._map.values())
                horizon = self._tomb_horizon()
                m = self._map
                tombstones = [(k, v) for k, v in self._tombs.items() if v >= horizon and k not in m]
                floor = self._clock.now()
                epoch = self._epoch
                before = sum(self._segs[i].size for i in replaced)

            def read_ref(ref: Ref) -> bytes:
                with self._lock:
                    if self._epoch != epoch or self._closed:
                        raise CompactionAborted
                    return self._segs[ref.seg].pread(ref.offset, ref.vlen)

            def cancelled() -> bool:
                return self._epoch != epoch or self._closed

            out = write_compacted(self._dir, target, floor, keys, entries, now_ms(), read_ref, cancelled,
                                  tombstones)
            del keys, entries
            path = os.path.join(self._dir, segment_name(target))
            with self._lock:
                if cancelled():
                    os.unlink(out.tmp_path)
                    raise CompactionAborted
                # The commit point: the rename makes the new segment, which replaces every earlier
                # one, visible in one step; the directory sync makes that durable.
                os.rename(out.tmp_path, path)
                fsync_dir(self._dir)
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                for key, old_ref, new_ref in out.moved:
                    self._index.replace_if_same(key, old_ref, new_ref)
                for key, old_entry in out.expired:
                    self._index.replace_if_same(key, old_entry, None)
                self._index.purge_tombs(horizon)  # what the new segment no longer holds
                self._compact_recheck_at = 0
                old = [self._segs.pop(i) for i in replaced]
                self._segs[target] = Segment(path, target, fd, out.size, SEG_REPLACES_EARLIER, floor)
                self._segs = dict(sorted(self._segs.items()))
                self._total += out.size - before
                for seg in old:
                    seg.close()
                self._compactions += 1
                summary = {"segments_replaced": len(replaced), "bytes_before": before,
                           "bytes_after": out.size, "records": out.records - len(tombstones),
                           "tombstones_kept": len(tombstones)}
                self._last_compaction = summary
            self._unlink_segments([s for s in old if s.id != target])
            return summary
        finally:
            with self._lock:
                self._compacting = False

    def _unlink_segments(self, segments: list[Segment]) -> None:
        """Delete obsolete segment files (already replaced: a crash here only leaves leftovers)."""
        for seg in segments:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(seg.path)
        if segments:
            fsync_dir(self._dir)

    # == admin ================================================================================
    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._check_open()
            garbage, ratio = self.garbage()
            return {
                "keys": self._live_count(),
                "live_bytes": self._index.live_bytes,
                "file_bytes": self._total,
                "garbage_bytes": garbage,
                "garbage_ratio": round(ratio, 4),
                "segments": len(self._segs),
                "segment_files": {s.name: s.size for s in self._segs.values()},
                "values_on_disk": sum(1 for e in self._map.values() if e.__class__ is not Record),
                "fsync": self._opts.fsync,
                "batch_ms": self._opts.batch_ms if self._opts.fsync == "batch" else None,
                "readonly": self._opts.readonly,
                "compactions": self._compactions,
                "compacting": self._compacting,
                "last_compaction": dict(self._last_compaction),
                "recovered_tail_bytes": self._recovered_tail,
                "repaired_bytes": self._repaired,
                "unread_tail_bytes": self._unread_tail,
                "damage": list(self._damage),
                "tombstones": sum(1 for k in self._tombs if k not in self._map),
                "tombstone_retention_ms": self._opts.tombstone_retention_ms,
                "feed_retention_bytes": self._opts.feed_retention_bytes,
                "node_id": self._meta.node,
                "path": self._dir,
            }

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True  # stops writers and any running compaction
        thread = self._compact_thread
        if thread is not None:
            thread.join()
        if self._group is not None:
            self._group.stop()
        with self._lock:
            try:
                if self._opts.fsync != "never" and not self._opts.readonly and self._active is not None \
                        and not self._broken:
                    self._active.sync()
            except OSError as exc:
                log.error("%s: final fsync failed: %s", self._where, exc.strerror)
            finally:
                for seg in self._segs.values():
                    seg.close()
                self._segs.clear()
                self._index.clear()
                self._map = _CLOSED
                if self._dirlock is not None:
                    self._dirlock.release()
                    self._dirlock = None


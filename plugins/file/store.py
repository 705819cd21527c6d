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
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Self

from kvctl.errors import (
    CorruptError,
    ForeignStoreError,
    KvctlError,
    NoSuchStoreError,
    UsageError,
)
from kvctl.hlc import HLC
from kvctl.plugin_kit import LockedKeyAdmin, ScanRange, check_limits, deadline_ms, prefix_end
from kvctl.store import Capabilities, Page, Record, StoreURL, now_ms

from .base import _CLOSED, _SINGLE_VALUE_AT, RecoveryWarning, log
from .batch import encode_records, encode_tombstones, tombstone_versions
from .format import (
    MAX_KEY_SIZE,
    MAX_VALUE_SIZE,
    REC_EXPIRES,
    REC_TOMBSTONE,
    RECORD_HEADER_SIZE,
    SEG_HEADER_SIZE,
    SEG_REPLACES_EARLIER,
    encode_single,
)
from .index import Entry, Ref
from .lock import DirLock
from .log import Segment
from .meta import holds_other_files, is_store, load_meta
from .options import FileOptions
from .replicate import ReplicatingStore

__all__ = ["FileStore", "RecoveryWarning"]


class FileStore(LockedKeyAdmin, ReplicatingStore):
    name = "file"
    description = "Append-only log of checksummed records in a directory; in-memory index, compaction."
    capabilities = Capabilities(
        persistent=True, ttl=True, ordered_scan=True, versions=True, atomic_batch=True, change_feed=True,
        one_writer=True, conditional_writes=True,
        host_local=True,
        max_key_size=MAX_KEY_SIZE, max_value_size=MAX_VALUE_SIZE,
        durability="fsync=batch (default): each batch call fsynced before returning, single writes "
                   "within 10 ms; ?fsync=always|never",
        blocking_io=True,
    )

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
            loaded = self._replay(self._index)
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
        self._adopt(self._index, loaded)
        if self._repaired and not opts.readonly:
            self.compact()  # rewrite the damaged segments so the next open is clean

    # == reads ================================================================================
    def get(self, key: bytes) -> Record | None:
        rec = self._map.get(key)
        if rec.__class__ is Record:  # the warm path: the value is in memory
            exp = rec.expires_at_ms
            if exp is None or exp > now_ms():
                return rec
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
                exp = rec.expires_at_ms
                if exp is not None:
                    now = now or now_ms()
                    if exp <= now:
                        rec = None
            elif rec is not None:
                rec = self._read_ref(key)
            append(rec)
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

    # -- expire and set_if (LockedKeyAdmin): the ordinary calls under the writer's lock ---------
    def _admin_lock(self) -> Any:
        return self._lock

    def _admin_get(self, key: bytes) -> Record | None:
        return self.get(key)

    def _admin_put(self, record: Record) -> None:
        self.set_many([record])

    def _admin_delete(self, key: bytes) -> None:
        self.delete(key)

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

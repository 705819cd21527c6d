"""The state of a file store and its write path: appending frames to the active segment,
rotating segments, committing (fsync policy, group commit), and the error wording of a failed
write.  :class:`FileStoreBase` is the bottom of :class:`~.store.FileStore`'s class chain
(base -> :mod:`.compacting` -> :mod:`.replicate` -> :mod:`.store`); every method here runs
under ``self._lock`` unless it says otherwise.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import Any, NoReturn

from kvctl.errors import (
    CorruptError,
    StoreIOError,
    UnsupportedError,
    filesystem_error,
)
from kvctl.hlc import HLC, make_version
from kvctl.plugin_kit import StoreBase
from kvctl.store import Record, StoreURL, now_ms

from .format import (
    FRAME_HEADER_SIZE,
    RECORD_HEADER_SIZE,
)
from .index import Entry, KeyIndex, Ref
from .lock import DirLock
from .log import GroupCommit, Segment
from .meta import StoreMeta
from .options import FileOptions

log = logging.getLogger("kvctl.file")

_SINGLE_VALUE_AT = FRAME_HEADER_SIZE + RECORD_HEADER_SIZE  # value offset in a one-record frame, less the key
_MAX_IOV = 512
# What a failed write call left behind, as its error says it.
_NOTHING_WRITTEN = "this write was rolled back; everything written before it is committed"
_NOT_DURABLE = "this write may not be durable and the store takes no more writes until it is reopened; " \
               "everything written before it is committed"


class RecoveryWarning(UserWarning):
    """A file store found damage on open and recovered (reported once, also in ``stats()``)."""


class _ClosedMap(dict):
    """Stands in for the key directory after close(), so the lock-free read path fails loudly."""

    def get(self, key: Any, default: Any = None) -> Any:
        raise StoreIOError("the file store is closed")


_CLOSED = _ClosedMap()


class FileStoreBase(StoreBase):
    """What every part of :class:`~.store.FileStore` shares: its state and its write path."""

    def __init__(self, directory: str, options: FileOptions | None = None, url: StoreURL | None = None) -> None:
        self.url = url
        self._opts = opts = options or FileOptions()
        self._dir = os.path.abspath(directory)
        self._where = url.redacted() if url is not None else f"file://{self._dir}"
        # reentrant: expire and set_if read and write under it with the ordinary calls
        self._lock = threading.RLock()
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

    def _open(self) -> None:
        raise NotImplementedError

    def _abandon(self) -> None:
        if self._dirlock is not None:
            self._dirlock.release()
            self._dirlock = None
        self._closed = True
        self._map = _CLOSED

    def _report(self, message: str) -> None:
        self._damage.append(message)
        warnings.warn(f"{self._where}: {message}", RecoveryWarning, stacklevel=6)

    def _resolve(self, key: bytes, entry: Entry) -> Record:
        if entry.__class__ is Record:
            return entry
        ref: Ref = entry  # type: ignore[assignment]
        seg = self._segs[ref.seg]
        try:
            value = seg.pread(ref.offset, ref.vlen)
        except OSError as exc:
            raise StoreIOError(f"{self._where}: read of {seg.path} failed: {exc.strerror}") from None
        if len(value) != ref.vlen:
            raise CorruptError(f"{seg.path}: value at offset {ref.offset} is cut short (file truncated?)")
        return Record(key, value, ref.expires_at_ms, ref.version)

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

"""The in-memory key directory: key -> Record (value in memory) or Ref (value on disk).

Small values live in memory as the very ``Record`` a ``get`` returns, so a warm read is one dict
lookup; values over ``inline_max`` stay on disk and the entry is a :class:`Ref` that one
positioned read resolves.  Next to the dict the index keeps the counters stats and the
compaction trigger need, and a sorted key list for ordered scans.

The sorted list is maintained incrementally instead of being re-sorted after every insert: new
keys wait in ``pending`` and are merged on the next scan (a few by ``insort``, many by one
Timsort pass, which merges two sorted runs in linear time); deleted keys stay in the list,
remembered in ``dead``, and scans skip them until they are a sizeable fraction and get purged.

Deleted keys are also remembered in ``tombs`` (key -> tombstone version) for last-writer-wins
replication, in a dict of their own so ``get`` never looks at them.  Writes do not touch it:
an entry whose key was written again since is stale but harmless (the live record is newer and
is consulted first), and it is dropped on the next load, purge or compaction.
"""

from __future__ import annotations

import bisect
import gc
from collections.abc import Iterable

from kvctl.errors import CorruptError
from kvctl.plugin_kit import new_record
from kvctl.store import Record

from .format import FRAME_HEADER_SIZE, REC_EXPIRES, REC_TOMBSTONE, RECORD_HEADER, RECORD_HEADER_SIZE

_INSORT_MAX = 32  # up to this many pending keys, insert one by one; beyond, merge by sorting

class Ref:
    """A live value kept on disk: ``vlen`` bytes at ``offset`` of segment ``seg``."""

    __slots__ = ("expires_at_ms", "offset", "seg", "version", "vlen")

    def __init__(self, seg: int, offset: int, vlen: int, expires_at_ms: int | None, version: int) -> None:
        self.seg = seg
        self.offset = offset
        self.vlen = vlen
        self.expires_at_ms = expires_at_ms
        self.version = version


Entry = Record | Ref


def value_len(entry: Entry) -> int:
    return len(entry.value) if entry.__class__ is Record else entry.vlen  # type: ignore[union-attr]


class KeyIndex:
    """The key directory and its accounting.  Callers serialise writers (the store's lock)."""

    def __init__(self) -> None:
        self.map: dict[bytes, Entry] = {}
        self.live_bytes = 0  # record bytes (header + key + value) of every entry in ``map``
        self.expiring = 0  # entries with an expiry: while 0, count() is len(map)
        self._sorted: list[bytes] | None = None  # None: rebuild from ``map`` when first needed
        self._pending: list[bytes] = []
        self._dead: set[bytes] = set()
        self.expiry_candidates: list[bytes] = []  # during replay: keys written with an expiry
        self.tombs: dict[bytes, int] = {}  # deleted key -> tombstone version (may be stale, see above)
        self.tomb_bytes = 0  # record bytes the entries of ``tombs`` take as tombstones on disk

    # -- writes ------------------------------------------------------------------------------
    def put(self, key: bytes, entry: Entry, size: int) -> None:
        """Install ``entry`` (``size`` = its record bytes) for ``key``."""
        m = self.map
        old = m.get(key)
        m[key] = entry
        self.live_bytes += size
        if old is None:
            if self._sorted is not None:
                if key in self._dead:
                    self._dead.discard(key)
                else:
                    self._pending.append(key)
        else:
            self.live_bytes -= RECORD_HEADER_SIZE + len(key) + value_len(old)
            if old.expires_at_ms is not None:
                self.expiring -= 1
        if entry.expires_at_ms is not None:
            self.expiring += 1

    def put_many(self, keys: list[bytes], entries: list[Entry], record_bytes: int, expiring: int) -> None:
        """:meth:`put` for a batch (``record_bytes``, ``expiring``: totals over ``entries``).

        The common cases run at C speed: fetch the old entries with one ``map``, install the
        new ones with one ``update``, and look at the old ones only where there were some.
        """
        m = self.map
        if len(dict.fromkeys(keys)) != len(keys):  # a key repeats: apply one by one, in order
            for key, entry in zip(keys, entries, strict=True):
                self.put(key, entry, RECORD_HEADER_SIZE + len(key) + value_len(entry))
            return
        olds = list(map(m.get, keys))
        m.update(zip(keys, entries, strict=True))
        live = record_bytes
        fresh = olds.count(None)
        if fresh != len(olds):
            hsize = RECORD_HEADER_SIZE
            for key, old in zip(keys, olds, strict=True):
                if old is not None:
                    live -= hsize + len(key) + value_len(old)
                    if old.expires_at_ms is not None:
                        expiring -= 1
        if fresh and self._sorted is not None:
            dead = self._dead
            pending = self._pending
            for key, old in zip(keys, olds, strict=True):
                if old is None:
                    if key in dead:
                        dead.discard(key)
                    else:
                        pending.append(key)
        self.live_bytes += live
        self.expiring += expiring

    def remove(self, key: bytes) -> Entry | None:
        old = self.map.pop(key, None)
        if old is not None:
            self.live_bytes -= RECORD_HEADER_SIZE + len(key) + value_len(old)
            if old.expires_at_ms is not None:
                self.expiring -= 1
            if self._sorted is not None:
                self._dead.add(key)
        return old

    def add_tomb(self, key: bytes, version: int) -> None:
        tombs = self.tombs
        if key not in tombs:
            self.tomb_bytes += RECORD_HEADER_SIZE + len(key)
        tombs[key] = version

    def purge_tombs(self, horizon_version: int) -> int:
        """Forget tombstones older than ``horizon_version`` and those of keys written since."""
        m = self.map
        stale = [k for k, v in self.tombs.items() if v < horizon_version or k in m]
        for key in stale:
            del self.tombs[key]
            self.tomb_bytes -= RECORD_HEADER_SIZE + len(key)
        return len(stale)

    def replace_if_same(self, key: bytes, old: Entry, new: Entry | None) -> bool:
        """Swap ``old`` for ``new`` (None: drop it) unless a writer changed the key meanwhile."""
        if self.map.get(key) is not old:
            return False
        if new is None:
            self.remove(key)
        else:
            self.map[key] = new  # same key, value and expiry: the counters do not move
        return True

    def clear(self) -> None:
        self.map.clear()
        self.live_bytes = 0
        self.expiring = 0
        self._sorted = None
        self._pending.clear()
        self._dead.clear()
        self.expiry_candidates = []
        self.tombs.clear()
        self.tomb_bytes = 0

    # -- ordered access ----------------------------------------------------------------------
    def sorted_keys(self) -> list[bytes]:
        """Every key in order, plus deleted keys not purged yet: check ``map`` for each."""
        keys = self._sorted
        if keys is None:
            keys = self._sorted = sorted(self.map)
            self._pending.clear()
            self._dead.clear()
            return keys
        pending = self._pending
        if pending:
            if len(pending) <= _INSORT_MAX:
                for key in pending:
                    bisect.insort(keys, key)
            else:
                keys.extend(pending)
                keys.sort()
            pending.clear()
        dead = self._dead
        if len(dead) > 1024 and len(dead) * 8 > len(keys):
            keys[:] = [k for k in keys if k not in dead]
            dead.clear()
        return keys

    def finish_load(self, now: int, tomb_horizon_version: int) -> None:
        """After replay: drop entries that expired while the store was closed, count the rest,
        and forget tombstones past their retention or superseded by a later write."""
        m = self.map
        expiring = 0
        for key in set(self.expiry_candidates):
            entry = m.get(key)
            if entry is None or entry.expires_at_ms is None:
                continue
            if entry.expires_at_ms <= now:
                self.remove(key)
            else:
                expiring += 1
        self.expiry_candidates = []
        self.expiring = expiring
        self._sorted = None
        self.tomb_bytes = sum(RECORD_HEADER_SIZE + len(k) for k in self.tombs)
        self.purge_tombs(tomb_horizon_version)


def load_frames(
    data: bytes, frames: Iterable[tuple[int, int]], seg_id: int, index: KeyIndex, inline_max: int, path: str
) -> int:
    """Replay the records of committed frames into ``index``; return the largest version seen.

    The hot loop of open: one struct unpack, two slices, one object and two dict operations per
    record, with the cyclic GC paused (it would otherwise rescan the growing heap again and again).
    ``live_bytes`` is kept up to date here; expiries are settled by :meth:`KeyIndex.finish_load`.
    """
    m = index.map
    unpack = RECORD_HEADER.unpack_from
    get = m.get
    pop = m.pop
    hsize = RECORD_HEADER_SIZE
    new = new_record
    candidates = index.expiry_candidates
    tombs = index.tombs
    live = 0  # record bytes added minus record bytes superseded or deleted
    max_version = 0
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        for frame_start, frame_end in frames:
            pos = frame_start + FRAME_HEADER_SIZE
            while pos < frame_end:
                klen, vlen, flags, expires, version = unpack(data, pos)
                kpos = pos + hsize
                vpos = kpos + klen
                pos = vpos + vlen
                key = data[kpos:vpos]
                if version > max_version:
                    max_version = version
                if flags & REC_TOMBSTONE:
                    old = pop(key, None)
                    tombs[key] = version  # tomb_bytes is settled by finish_load
                else:
                    old = get(key)
                    live += hsize + klen + vlen
                    if flags & REC_EXPIRES:
                        candidates.append(key)
                    else:
                        expires = None
                    if vlen <= inline_max:
                        m[key] = new((key, data[vpos:pos], expires, version, None))
                    else:
                        m[key] = Ref(seg_id, vpos, vlen, expires, version)
                if old is not None:
                    live -= hsize + klen + (len(old.value) if old.__class__ is Record else old.vlen)  # type: ignore[union-attr]
            if pos != frame_end:
                raise CorruptError(f"{path}: records overrun their frame at offset {frame_start}")
    finally:
        if gc_was_on:
            gc.enable()
        index.live_bytes += live
    return max_version

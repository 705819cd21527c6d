"""``memory://[name]``: an in-process store for tests, benchmarks and migration scratch space.

Stores with the same name share their data within one process; an unnamed one is private.
It keeps per-key versions, a bounded change feed (``?feed_retention=N`` changes, default
100,000; a cursor older than that is a feed gap) and tombstones of deleted keys for
``?tombstone_retention=7d`` so that last-writer-wins replication never resurrects a deleted key.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from kvctl.errors import FeedGapError, UsageError
from kvctl.hlc import HLC, physical_ms
from kvctl.plugin_kit import (
    TOMBSTONE_RETENTION_MS,
    LockedKeyAdmin,
    ScanRange,
    StoreBase,
    check_limits,
    deadline_ms,
    new_clock,
    page_size,
    record_of,
    tombstone_retention_ms,
)
from kvctl.store import TOMBSTONE, Capabilities, Page, Record, StoreURL, newer, now_ms


@dataclass
class _State:
    """Everything a named memory store shares between its handles."""

    data: dict[bytes, Record] = field(default_factory=dict)
    tombstones: dict[bytes, Record] = field(default_factory=dict)
    log: list[Record] = field(default_factory=list)  # changes; log[i] has sequence number base + i + 1
    base: int = 0
    # a random node id per store, so two stores' same-millisecond writes get different versions
    clock: HLC = field(default_factory=new_clock)
    sorted_keys: list[bytes] | None = None
    # held by expire and set_if around their read and write (no I/O in between, so it is short)
    admin_lock: threading.Lock = field(default_factory=threading.Lock)


_NAMED: dict[str, _State] = {}


class MemoryStore(LockedKeyAdmin, StoreBase):
    name = "memory"
    description = "In-process dict; named stores (memory://NAME) are shared within one process."
    capabilities = Capabilities(
        ttl=True, ordered_scan=True, versions=True, atomic_batch=True, change_feed=True, conditional_writes=True,
        durability="none (process memory)", blocking_io=False,
    )

    def __init__(self, state: _State | None = None, url: StoreURL | None = None, *,
                 feed_retention: int = 100_000, tombstone_retention_ms: int = TOMBSTONE_RETENTION_MS) -> None:
        self._state = state or _State()
        self._data = self._state.data
        self._clock = self._state.clock
        self._feed_retention = feed_retention
        self._tombstone_retention_ms = tombstone_retention_ms
        self.url = url

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        url.check_options({"feed_retention", "tombstone_retention"})
        name = (url.host or "") + url.path.rstrip("/")
        state = _NAMED.setdefault(name, _State()) if name else None
        return cls(state, url,
                   feed_retention=max(1, url.int_option("feed_retention", 100_000)),
                   tombstone_retention_ms=tombstone_retention_ms(url))

    # -- reads -------------------------------------------------------------------------------
    def get(self, key: bytes) -> Record | None:
        rec = self._data.get(key)
        if rec is None or rec.expires_at_ms is None or rec.expires_at_ms > now_ms():
            return rec
        return None

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        get = self.get
        return [get(k) for k in keys]

    # -- writes ------------------------------------------------------------------------------
    def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        self._put(record_of(key, value, deadline_ms(ttl_ms), self._clock.now()))

    def set_many(self, records: Iterable[Record]) -> None:
        prepared = []
        for rec in records:
            check_limits(self.capabilities, self.name, rec.key, rec.value)
            if rec.version is None:
                rec = record_of(rec.key, rec.value, rec.expires_at_ms, self._clock.now())
            else:
                self._clock.observe(rec.version)
            prepared.append(rec)
        for rec in prepared:  # all or nothing: nothing below can fail half-way through
            self._put(rec)

    def delete_many(self, keys: Sequence[bytes]) -> int:
        removed = 0
        now = now_ms()
        for key in keys:
            rec = self._data.get(key)
            if rec is not None:
                self._remove(Record(key, b"", None, self._clock.now(), TOMBSTONE))
                removed += rec.expires_at_ms is None or rec.expires_at_ms > now
        return removed

    def delete(self, key: bytes) -> bool:
        return self.delete_many((key,)) == 1

    def apply_many(self, records: Iterable[Record]) -> int:
        """Last-writer-wins apply (see kvctl.store): the replication write path."""
        applied = 0
        for rec in records:
            current = self._data.get(rec.key) or self._state.tombstones.get(rec.key)
            if not newer(rec, current):
                continue
            self._clock.observe(rec.version)
            if rec.kind == TOMBSTONE:
                self._remove(rec)
            else:
                self._put(rec)
            applied += 1
        return applied

    def _put(self, rec: Record) -> None:
        if rec.key not in self._data:
            self._state.sorted_keys = None
        self._data[rec.key] = rec
        self._state.tombstones.pop(rec.key, None)
        self._log(rec)

    def _remove(self, tombstone: Record) -> None:
        if self._data.pop(tombstone.key, None) is not None:
            self._state.sorted_keys = None
        self._state.tombstones[tombstone.key] = tombstone
        self._log(tombstone)

    def _log(self, change: Record) -> None:
        log = self._state.log
        log.append(change)
        if len(log) >= 2 * self._feed_retention:  # trim in bulk: amortised O(1) per write
            drop = len(log) - self._feed_retention
            del log[:drop]
            self._state.base += drop
            self._purge_tombstones()

    def _purge_tombstones(self) -> None:
        horizon = now_ms() - self._tombstone_retention_ms
        stale = [k for k, t in self._state.tombstones.items() if physical_ms(t.version or 0) < horizon]
        for key in stale:
            del self._state.tombstones[key]

    # -- expire and set_if (LockedKeyAdmin) ---------------------------------------------------
    def _admin_lock(self) -> threading.Lock:
        return self._state.admin_lock

    def _admin_get(self, key: bytes) -> Record | None:
        return self.get(key)

    def _admin_put(self, record: Record) -> None:
        check_limits(self.capabilities, self.name, record.key, record.value)
        self._put(record_of(record.key, record.value, record.expires_at_ms, self._clock.now()))

    def _admin_delete(self, key: bytes) -> None:
        self.delete(key)

    # -- change feed -------------------------------------------------------------------------
    def feed_cursor(self) -> str:
        return f"m:{self._state.base + len(self._state.log)}"

    def changes(self, cursor: str | None, *, batch_size: int = 1000) -> Iterator[Page]:
        seq = _parse_seq(cursor)
        state = self._state
        batch_size = page_size(batch_size)
        if seq < state.base:
            raise FeedGapError(
                f"{self!r}: the change feed starts after change {state.base}; cursor {cursor} is older "
                f"(raise ?feed_retention=)"
            )
        while True:
            start = seq - state.base
            batch = state.log[start:start + batch_size]
            if not batch:
                return
            seq += len(batch)
            yield Page(list(batch), f"m:{seq}")

    # -- scans -------------------------------------------------------------------------------
    def _keys(self) -> list[bytes]:
        keys = self._state.sorted_keys
        if keys is None or len(keys) != len(self._data):
            keys = self._state.sorted_keys = sorted(self._data)
        return keys

    def scan_range(self, span: ScanRange, keys_only: bool) -> Iterator[Page]:
        end, batch_size = span.end, span.page

        def fetch(lower: bytes, inclusive: bool) -> list[Record]:
            keys = self._keys()
            i = bisect.bisect_left(keys, lower) if inclusive else bisect.bisect_right(keys, lower)
            now = now_ms()
            batch: list[Record] = []
            while i < len(keys) and len(batch) < batch_size:
                key = keys[i]
                i += 1
                if end is not None and key >= end:
                    break
                rec = self._data.get(key)
                if rec is None or (rec.expires_at_ms is not None and rec.expires_at_ms <= now):
                    continue
                batch.append(Record(key, b"", rec.expires_at_ms, rec.version) if keys_only else rec)
            return batch

        return span.pages(fetch)

    # -- admin -------------------------------------------------------------------------------
    def count(self, prefix: bytes = b"") -> int:
        if not prefix:
            now = now_ms()
            return sum(1 for r in self._data.values() if r.expires_at_ms is None or r.expires_at_ms > now)
        return super().count(prefix)

    def clear(self) -> int:
        n = self.count()
        self.delete_many(list(self._data))
        return n

    def stats(self) -> dict[str, Any]:
        return {
            "keys": self.count(),
            "bytes": sum(len(r.key) + len(r.value) for r in self._data.values()),
            "tombstones": len(self._state.tombstones),
            "feed": f"changes {self._state.base + 1}..{self._state.base + len(self._state.log)}",
        }


def _parse_seq(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        if cursor.startswith("m:"):
            return int(cursor[2:])
    except ValueError:
        pass
    raise UsageError(f"not a memory change-feed cursor: {cursor!r}")

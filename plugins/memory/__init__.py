"""``memory://[name]``: an in-process store for tests, benchmarks and migration scratch space.

Stores with the same name share their data within one process; an unnamed one is private.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Self

from kvctl.hlc import HLC
from kvctl.store import Capabilities, Page, Record, StoreBase, StoreURL, key_cursor, now_ms, prefix_end

_NAMED: dict[str, dict[bytes, Record]] = {}


class MemoryStore(StoreBase):
    name = "memory"
    description = "In-process dict; named stores (memory://NAME) are shared within one process."
    capabilities = Capabilities(
        ttl=True, ordered_scan=True, versions=True, atomic_batch=True,
        durability="none (process memory)", blocking_io=False,
    )

    def __init__(self, data: dict[bytes, Record] | None = None, url: StoreURL | None = None) -> None:
        self._data: dict[bytes, Record] = {} if data is None else data
        self._sorted: list[bytes] | None = None  # sorted key index, rebuilt lazily after inserts/deletes
        self._clock = HLC()
        self.url = url

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        url.check_options(set())
        name = (url.host or "") + url.path.rstrip("/")
        data = _NAMED.setdefault(name, {}) if name else None
        return cls(data, url)

    def get(self, key: bytes) -> Record | None:
        rec = self._data.get(key)
        if rec is None or rec.expires_at_ms is None or rec.expires_at_ms > now_ms():
            return rec
        return None

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        get = self.get
        return [get(k) for k in keys]

    def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        self._put(Record(key, value, None if ttl_ms is None else now_ms() + ttl_ms, self._clock.now()))

    def set_many(self, records: Iterable[Record]) -> None:
        prepared = []
        for rec in records:
            if rec.version is None:
                rec = Record(rec.key, rec.value, rec.expires_at_ms, self._clock.now())
            else:
                self._clock.observe(rec.version)
            prepared.append(rec)
        for rec in prepared:  # all or nothing: nothing above can fail half-way through the writes
            self._put(rec)

    def _put(self, rec: Record) -> None:
        if rec.key not in self._data:
            self._sorted = None
        self._data[rec.key] = rec

    def delete_many(self, keys: Sequence[bytes]) -> int:
        removed = 0
        now = now_ms()
        for key in keys:
            rec = self._data.pop(key, None)
            if rec is not None:
                self._sorted = None
                removed += rec.expires_at_ms is None or rec.expires_at_ms > now
        return removed

    def delete(self, key: bytes) -> bool:
        return self.delete_many((key,)) == 1

    def _keys(self) -> list[bytes]:
        if self._sorted is None or len(self._sorted) != len(self._data):
            self._sorted = sorted(self._data)
        return self._sorted

    def scan(
        self,
        prefix: bytes = b"",
        *,
        start_after: bytes | None = None,
        cursor: str | None = None,
        batch_size: int = 1000,
        keys_only: bool = False,
    ) -> Iterator[Page]:
        after = self._start_key(prefix, start_after, cursor)
        end = prefix_end(prefix)
        while True:
            keys = self._keys()
            i = bisect.bisect_right(keys, after) if after is not None else bisect.bisect_left(keys, prefix)
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
            if not batch:
                return
            after = batch[-1].key
            yield Page(batch, key_cursor(after))
            if len(batch) < batch_size:
                return

    def count(self, prefix: bytes = b"") -> int:
        if not prefix:
            now = now_ms()
            return sum(1 for r in self._data.values() if r.expires_at_ms is None or r.expires_at_ms > now)
        return super().count(prefix)

    def clear(self) -> int:
        n = self.count()
        self._data.clear()
        self._sorted = None
        return n

    def stats(self) -> dict[str, Any]:
        return {"keys": self.count(), "bytes": sum(len(r.key) + len(r.value) for r in self._data.values())}

"""The CacheStore: a bounded cache on its own, or a read-through/write-through tier over a store."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Self

from kvctl.errors import BadURLError
from kvctl.plugin_kit import ScanRange, StoreBase, new_clock
from kvctl.registry import open_sync
from kvctl.store import Capabilities, Page, Record, Store, StoreURL

from .bounded import SAMPLES, BoundedCache

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_OPTIONS = {"max_bytes", "backend", "max_age", "samples"}
# Named standalone caches (cache://NAME) share their contents within one process, like memory://NAME.
_NAMED: dict[str, BoundedCache] = {}


class CacheStore(StoreBase):
    name = "cache"
    description = ("Bounded in-process cache (TinyLFU admission, sampled-LFU eviction by bytes); "
                   "alone or as a read/write-through tier: cache://?max_bytes=64MiB&backend=URL")
    capabilities = Capabilities(
        ttl=True, ordered_scan=True, versions=True,
        durability="none (bounded in-process cache: entries may be evicted)", blocking_io=False,
    )

    def __init__(self, url: StoreURL, cache: BoundedCache, child: Store | None, where: str) -> None:
        self.url = url
        self.where = where
        self.cache = cache
        self.child = child
        self._clock = new_clock()
        if child is not None:
            # A tier is what its store is (persistence, TTLs, order, limits); it adds speed.
            # The optional replication and typed-value calls are not passed through (they would
            # bypass the cache), so those capabilities are not claimed.
            self.capabilities = dataclasses.replace(  # type: ignore[misc]
                child.capabilities, change_feed=False, typed_values=False,
                durability=f"{child.capabilities.durability or '?'} (through a write-through cache)")
        else:
            # Standalone, a get is exactly the cache's hit path: skip one call layer.
            setattr(self, "get", cache.get)  # noqa: B010

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        url.check_options(_OPTIONS)
        max_bytes = url.size_option("max_bytes", DEFAULT_MAX_BYTES)
        if max_bytes <= 0:
            raise BadURLError("the cache option max_bytes must be positive")
        max_age = url.duration_option_ms("max_age", None)
        samples = url.int_option("samples", SAMPLES)
        if samples < 1:
            raise BadURLError("the cache option samples must be at least 1")
        backend = url.option("backend")
        name = (url.host or "") + url.path.rstrip("/")
        if backend:
            if name:
                raise BadURLError("a cache tier takes no name: cache://?max_bytes=...&backend=URL")
            child = open_sync(backend, access=url.access)
            # Named by backend, never by URL: the backend option may hold a password.
            where = f"cache over {child.name}"
            return cls(url, BoundedCache(max_bytes, max_age_ms=max_age, samples=samples), child, where)
        if max_age is not None:
            raise BadURLError("max_age bounds how stale a tier's copies get; it needs backend=URL "
                              "(a standalone cache's entries expire by their own TTLs)")
        if name:
            cache = _NAMED.get(name)
            if cache is None:
                cache = _NAMED[name] = BoundedCache(max_bytes, samples=samples)
            elif cache.max_bytes != max_bytes and "max_bytes" in url.options:
                raise BadURLError(f"cache://{name} is already open with max_bytes={cache.max_bytes}")
        else:
            cache = BoundedCache(max_bytes, samples=samples)
        return cls(url, cache, None, f"cache {name}" if name else "cache")

    def __repr__(self) -> str:
        return f"<CacheStore {self.where}>"

    # -- reads: the cache first, then the store behind it ----------------------------------------
    def get(self, key: bytes) -> Record | None:
        rec = self.cache.get(key)
        if rec is not None or self.child is None:
            return rec
        rec = self.child.get(key)
        if rec is not None:
            self.cache.put(rec)
        return rec

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        get = self.cache.get
        found = [get(k) for k in keys]
        if self.child is None:
            return found
        missing = [i for i, rec in enumerate(found) if rec is None]
        if missing:
            fetched = self.child.get_many([keys[i] for i in missing])
            put = self.cache.put
            for i, rec in zip(missing, fetched, strict=True):
                if rec is not None:
                    found[i] = rec
                    put(rec)
        return found

    def scan(self, prefix: bytes = b"", *, start_after: bytes | None = None, cursor: str | None = None,
             batch_size: int = 1000, keys_only: bool = False) -> Iterator[Page]:
        if self.child is not None:  # the store holds everything; scans do not pollute the cache
            yield from self.child.scan(prefix, start_after=start_after, cursor=cursor,
                                       batch_size=batch_size, keys_only=keys_only)
            return
        span = ScanRange.of(prefix, start_after, cursor, batch_size)
        end = span.end
        keys = self.cache.keys_from(span.lower, not span.inclusive)
        batch: list[Record] = []
        for key in keys:
            if end is not None and key >= end:
                break
            rec = self.cache.peek(key)
            if rec is None:
                continue
            batch.append(Record(key, b"", rec.expires_at_ms, rec.version) if keys_only else rec)
            if len(batch) >= span.page:
                yield span.page_of(batch)
                batch = []
        if batch:
            yield span.page_of(batch)

    def count(self, prefix: bytes = b"") -> int:
        if self.child is not None:
            return self.child.count(prefix)
        if not prefix:
            return self.cache.live_count()
        return super().count(prefix)

    # -- writes: through to the store, then into the cache --------------------------------------
    def set_many(self, records: Iterable[Record]) -> None:
        records = list(records)
        caps = self.capabilities
        prepared: list[Record] = []
        for rec in records:
            self._check(rec.key, rec.value)
            if rec.expires_at_ms is not None:
                caps.require("ttl", self.child.name if self.child is not None else self.name)
            if caps.versions:
                # Versions are assigned here, so the cached copy is exactly what the store keeps.
                if rec.version is None:
                    rec = rec._replace(version=self._clock.now())
                else:
                    self._clock.observe(rec.version)
            prepared.append(rec)
        if self.child is not None:
            try:
                self.child.set_many(prepared)
            except BaseException:
                for rec in prepared:  # the store may hold some of them now: drop stale copies
                    self.cache.remove(rec.key)
                raise
        put = self.cache.put
        for rec in prepared:
            put(rec)

    # -- expire and set_if: decided by the store behind a tier, the cached copy dropped ----------
    def expire(self, key: bytes, expires_at_ms: int | None) -> bool:
        return bool(self._through(key, lambda child: child.expire(key, expires_at_ms)))

    def set_if(self, record: Record, *, exists: bool | None = None, keep_ttl: bool = False) -> bool:
        self._check(record.key, record.value)
        return bool(self._through(record.key, lambda child: child.set_if(record, exists=exists, keep_ttl=keep_ttl)))

    def _through(self, key: bytes, call: Any) -> Any:
        """``call(store)`` on the store behind the tier, which does it atomically; the key's
        cached copy goes before (so a concurrent read cannot keep it) and after (so it refills
        from the store)."""
        self.capabilities.require("conditional_writes", self.child.name if self.child is not None else self.name)
        self.cache.remove(key)
        try:
            return call(self.child)
        finally:
            self.cache.remove(key)

    def delete_many(self, keys: Sequence[bytes]) -> int:
        if self.child is not None:
            try:
                return self.child.delete_many(keys)
            finally:
                for key in keys:
                    self.cache.remove(key)
        live = [key for key in dict.fromkeys(keys) if self.cache.peek(key) is not None]
        for key in keys:
            self.cache.remove(key)
        return len(live)

    def clear(self) -> int:
        if self.child is not None:
            try:
                return self.child.clear()
            finally:
                self.cache.clear()
        n = self.cache.live_count()
        self.cache.clear()
        return n

    # -- admin -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        cache = self.cache.stats()
        if self.child is None:
            return {"keys": self.cache.live_count(), **cache}
        inner = self.child.stats()
        # Flat names (``cache.hits``, ``store.keys``) so a two-column table shows them well.
        return {"keys": inner.get("keys"), **{f"cache.{k}": v for k, v in cache.items()},
                **{f"store.{k}": v for k, v in inner.items()}}

    def close(self) -> None:
        if self.child is not None:
            child, self.child = self.child, None
            self.cache.clear()
            child.close()

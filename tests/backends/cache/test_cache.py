"""The cache backend: conformance alone and as a tier, the byte bound, admission, write-through."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import pytest
from kvctl_plugins.cache import CacheStore
from kvctl_plugins.cache.bounded import ENTRY_OVERHEAD, BoundedCache

from kvctl.errors import BadURLError, UnsupportedError
from kvctl.store import Record
from kvctl.testing import StoreConformance
from kvctl.testing import open_sync as _open_sync


def open_sync(url: str) -> CacheStore:
    store = _open_sync(url)
    assert isinstance(store, CacheStore)
    return store


def tier(child: str, max_bytes: str = "64KiB", extra: str = "") -> str:
    return f"cache://?max_bytes={max_bytes}&backend={quote(child, safe='')}{extra}"


class TestCacheConformance(StoreConformance):
    @pytest.fixture
    def store_url(self) -> str:
        return "cache://?max_bytes=64MiB"


class TestCacheTierOverRocksDBConformance(StoreConformance):
    """A small cache (64 KiB) over RocksDB: evictions happen during the suite, nothing is lost."""

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return tier(f"rocksdb://{tmp_path / 'db'}")


class TestCacheTierOverAsyncLibSQLConformance(StoreConformance):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return tier(f"libsql://{tmp_path / 'db.libsql'}", "1MiB")


# -- the policy -----------------------------------------------------------------------------------
def test_bytes_never_exceed_the_bound() -> None:
    cache = BoundedCache(50_000)
    for i in range(2000):
        cache.put(Record(b"k%05d" % i, b"x" * (i % 700)))
        assert cache.used <= 50_000
    assert cache.used == sum(len(k) + len(cache.peek(k).value) + ENTRY_OVERHEAD
                             for k in list(cache._map))
    assert cache.evictions + cache.rejections > 0


def test_tinylfu_keeps_hot_keys_through_a_scan() -> None:
    per = 4 + 100 + ENTRY_OVERHEAD
    cache = BoundedCache(100 * per)
    hot = [b"h%03d" % i for i in range(50)]
    for _ in range(5):
        for key in hot:
            if cache.get(key) is None:
                cache.put(Record(key, b"v" * 100))
    for i in range(5000):  # a one-pass scan of cold keys, each seen once
        key = b"c%04d" % i
        if cache.get(key) is None:
            cache.put(Record(key, b"v" * 100))
    assert sum(cache.peek(k) is not None for k in hot) == len(hot)
    assert cache.rejections > 4000


def test_update_that_grows_makes_room_and_oversized_is_refused() -> None:
    cache = BoundedCache(10 * (2 + 10 + ENTRY_OVERHEAD))
    for i in range(10):
        cache.put(Record(b"k%d" % i, b"v" * 10))
    assert cache.put(Record(b"k0", b"v" * 2000)) is True
    assert cache.used <= cache.max_bytes and cache.peek(b"k0") is not None
    assert cache.put(Record(b"huge", b"v" * cache.max_bytes)) is False
    assert cache.put(Record(b"k0", b"v" * cache.max_bytes)) is False and cache.peek(b"k0") is None


def test_stats_hit_rate_and_named_sharing() -> None:
    store = open_sync("cache://shared-test?max_bytes=1MiB")
    store.set(b"a", b"1")
    for _ in range(9):
        assert store.get(b"a") is not None
    assert store.get(b"zz") is None
    stats = store.stats()
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (9, 1, 0.9)
    assert stats["bytes"] == 1 + 1 + ENTRY_OVERHEAD and stats["keys"] == 1
    assert open_sync("cache://shared-test").get(b"a") is not None  # same name, same cache
    assert open_sync("cache://?max_bytes=1MiB").get(b"a") is None  # unnamed: private
    with pytest.raises(BadURLError):
        open_sync("cache://shared-test?max_bytes=2MiB")


def test_expired_entries_are_misses_and_first_victims() -> None:
    store = open_sync("cache://?max_bytes=1MiB")
    store.set(b"short", b"v", ttl_ms=50)
    time.sleep(0.1)
    assert store.get(b"short") is None and store.stats()["expired"] == 1


# -- the tier -------------------------------------------------------------------------------------
def test_tier_writes_through_and_reads_through(tmp_path: Path) -> None:
    child_url = f"sqlite://{tmp_path / 'db.sqlite'}"
    store = open_sync(tier(child_url, "16KiB"))
    store.set_many(Record(b"k%04d" % i, b"v" * 100) for i in range(500))  # far over 16 KiB
    child = _open_sync(child_url)
    assert child.count() == 500  # every write reached the store
    assert store.cache.used <= 16 * 1024 < 500 * 100
    got = store.get_many([b"k%04d" % i for i in range(500)])
    assert all(r is not None and r.value == b"v" * 100 for r in got)
    assert store.get(b"k0001").version == child.get(b"k0001").version  # type: ignore[union-attr]
    stats = store.stats()
    assert stats["keys"] == 500 and stats["cache.misses"] > 0 and stats["store.keys"] == 500
    assert store.delete(b"k0001") is True and child.get(b"k0001") is None and store.get(b"k0001") is None
    child.close()
    store.close()


def test_tier_failed_write_leaves_no_stale_copy(tmp_path: Path) -> None:
    store = open_sync(tier(f"cookie://{tmp_path / 'c.txt'}?secret_env=T_SECRET", "1MiB"))
    store.set(b"k", b"old")
    with pytest.raises(UnsupportedError):
        store.set(b"k", b"new", ttl_ms=1000)  # the cookie store has no per-key TTL
    assert store.get(b"k").value == b"old"


def test_tier_max_age_refetches(tmp_path: Path) -> None:
    child_url = "memory://cache-max-age-test"
    store = open_sync(tier(child_url, "1MiB", "&max_age=400ms"))  # wide: a loaded machine pauses
    store.set(b"k", b"v1")
    other = _open_sync(child_url)
    other.set(b"k", b"v2")  # another writer behind the cache's back
    assert store.get(b"k").value == b"v1"
    time.sleep(0.45)
    assert store.get(b"k").value == b"v2"


def test_tier_names_itself_redacted_and_checks_options(tmp_path: Path) -> None:
    secret = tmp_path / "secret-file-name"
    secret.write_text("a cookie secret of more than thirty-two bytes")
    store = open_sync(tier(f"cookie://{tmp_path / 'c.txt'}?secret_file={secret}"))
    assert "secret-file-name" not in store.where and "secret-file-name" not in repr(store)
    with pytest.raises(BadURLError):
        open_sync("cache://?max_bytes=1MiB&bogus=1")
    with pytest.raises(BadURLError, match="needs backend"):
        open_sync("cache://?max_age=1s")


@pytest.fixture(autouse=True)
def _cookie_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_SECRET", "a cookie secret of more than thirty-two bytes")

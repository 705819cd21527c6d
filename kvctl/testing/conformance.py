"""The conformance tests (see :mod:`kvctl.testing`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from kvctl.abilities import ConditionalWrites, Expiry, PreparedWrites
from kvctl.adapt import to_sync
from kvctl.errors import FeedGapError, LimitError, UnsupportedError, UsageError
from kvctl.registry import open_url
from kvctl.store import TOMBSTONE, Record, Store, now_ms
from kvctl.testing.stateful import run_state_machine

# Keys that break naive implementations: glob and LIKE metacharacters, NUL, non-UTF-8, every byte.
ADVERSARIAL_KEYS: list[bytes] = [
    b"%", b"_", b"*", b"?", b"[", b"]", b"\\", b"a%b", b"a_b", b"a*", b"a?", b"a[b]", b"\x00",
    b"a\x00b", b"\xff", b"\xff\xfe\x00", b"\x80abc", b" ", b"key with spaces", b"\n", b"'; DROP--",
    "ключ".encode(), bytes(range(256)),
]


def open_sync(url: str) -> Store:
    return to_sync(open_url(url))


class StoreConformance:
    """Subclass and override the ``store_url`` fixture; every test method here then runs."""

    #: Records in the batch tests.  A store whose whole content is small (a 4 KiB cookie) lowers it
    #: (at least 100) so the batch fits with room to spare.
    batch_records: ClassVar[int] = 500
    #: Hypothesis examples of the model check.  A variant that changes only how a backend already
    #: checked in full is reached (a unix socket instead of TCP) may lower it: its model is the same.
    state_machine_examples: ClassVar[int] = 25
    #: Set by a test that closed the fixture's store itself.
    closed_by_test: bool = False

    @pytest.fixture
    def store_url(self) -> str:
        raise NotImplementedError("override the store_url fixture")

    @pytest.fixture
    def store(self, store_url: str) -> Iterator[Store]:
        store = open_sync(store_url)
        store.clear()
        try:
            yield store
        finally:
            if not self.closed_by_test:  # a store need not survive a second close
                store.close()

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def needs(store: Store, capability: str) -> None:
        if not getattr(store.capabilities, capability):
            pytest.skip(f"{store.name} declares no {capability} capability")

    @staticmethod
    def all_keys(store: Store, prefix: bytes = b"", batch_size: int = 1000) -> list[bytes]:
        return [r.key for p in store.scan(prefix, keys_only=True, batch_size=batch_size) for r in p.records]

    def fits(self, store: Store, key: bytes, value: bytes = b"") -> bool:
        caps = store.capabilities
        return (caps.max_key_size is None or len(key) <= caps.max_key_size) and (
            caps.max_value_size is None or len(value) <= caps.max_value_size
        )

    # -- round trips -----------------------------------------------------------------------
    def test_set_get(self, store: Store) -> None:
        assert store.get(b"missing") is None
        store.set(b"k", b"v")
        rec = store.get(b"k")
        assert rec is not None and rec.key == b"k" and rec.value == b"v" and rec.expires_at_ms is None

    def test_overwrite(self, store: Store) -> None:
        store.set(b"k", b"one")
        store.set(b"k", b"two")
        assert store.get(b"k").value == b"two"  # type: ignore[union-attr]
        assert store.count() == 1

    def test_delete(self, store: Store) -> None:
        store.set(b"k", b"v")
        assert store.delete(b"k") is True
        assert store.get(b"k") is None
        assert store.delete(b"k") is False

    def test_adversarial_keys_round_trip(self, store: Store) -> None:
        keys = [k for k in ADVERSARIAL_KEYS if self.fits(store, k)]
        for i, key in enumerate(keys):
            store.set(key, b"v%d" % i)
        for i, key in enumerate(keys):
            rec = store.get(key)
            assert rec is not None and rec.value == b"v%d" % i, key
        assert sorted(self.all_keys(store)) == sorted(keys)

    def test_every_byte_value(self, store: Store) -> None:
        value = bytes(range(256)) * 4
        store.set(b"bin", value)
        assert store.get(b"bin").value == value  # type: ignore[union-attr]

    def test_empty_value(self, store: Store) -> None:
        store.set(b"empty", b"")
        rec = store.get(b"empty")
        assert rec is not None and rec.value == b""

    def test_large_value(self, store: Store) -> None:
        value = bytes(range(256)) * 4096  # 1 MiB
        if not self.fits(store, b"big", value):
            pytest.skip(f"{store.name} declares a value limit under 1 MiB")
        store.set(b"big", value)
        assert store.get(b"big").value == value  # type: ignore[union-attr]

    def test_value_over_limit_is_refused_and_nothing_written(self, store: Store) -> None:
        limit = store.capabilities.max_value_size
        if limit is None:
            pytest.skip(f"{store.name} declares no value size limit")
        store.set(b"keep", b"old")
        # bytes(n) comes zeroed from calloc, so a limit of a gigabyte costs no page until a store
        # reads the value; b"x" * n would write every byte first (seconds per test)
        over = bytes(limit + 1)
        with pytest.raises(LimitError):
            store.set(b"keep", over)
        with pytest.raises(LimitError):
            store.set_many([Record(b"new1", b"ok"), Record(b"new2", over)])
        assert store.get(b"keep").value == b"old"  # type: ignore[union-attr]
        assert store.get(b"new1") is None

    # -- batches ---------------------------------------------------------------------------
    def test_batch_ops(self, store: Store) -> None:
        n = self.batch_records
        records = [Record(b"b%04d" % i, b"v%d" % i) for i in range(n)]
        store.set_many(records)
        got = store.get_many([r.key for r in records] + [b"nope"])
        assert [g.value if g else None for g in got] == [r.value for r in records] + [None]
        assert store.delete_many([b"b%04d" % i for i in range(0, n, 2)] + [b"nope"]) == (n + 1) // 2
        assert store.count() == n // 2
        assert store.count(b"b00") == 50

    def test_set_many_keeps_expiry(self, store: Store) -> None:
        self.needs(store, "ttl")
        deadline = int(time.time() * 1000) + 3_600_000
        store.set_many([Record(b"t", b"v", deadline)])
        rec = store.get(b"t")
        assert rec is not None and rec.expires_at_ms is not None
        assert abs(rec.expires_at_ms - deadline) <= 1000

    def test_prepared_writes_are_set_many(self, store: Store) -> None:
        """``write_prepared(prepare_many(batch))`` is ``set_many(batch)``: each key's last record
        wins, expiries are kept, and preparing writes nothing (a batch made ready and dropped)."""
        if not isinstance(store, PreparedWrites):
            pytest.skip(f"{store.name} does not offer PreparedWrites")
        store.set(b"p-old", b"before")
        dropped = store.prepare_many([Record(b"p-never", b"x"), Record(b"p-old", b"changed")])
        assert store.get(b"p-never") is None and store.get(b"p-old").value == b"before"  # type: ignore[union-attr]
        deadline = now_ms() + 3_600_000 if store.capabilities.ttl else None
        batch = [Record(b"p-a", b"1"), Record(b"p-b", b"\x00\xff", deadline), Record(b"p-a", b"2"),
                 Record(b"p-old", b"after")]
        store.write_prepared(store.prepare_many(batch))
        got = {k: store.get(k) for k in (b"p-a", b"p-b", b"p-old")}
        assert {k: r.value for k, r in got.items() if r is not None} == {
            b"p-a": b"2", b"p-b": b"\x00\xff", b"p-old": b"after"}
        if deadline is not None:
            exp = got[b"p-b"].expires_at_ms  # type: ignore[union-attr]
            assert exp is not None and abs(exp - deadline) <= 1000
        assert got[b"p-a"].expires_at_ms is None  # type: ignore[union-attr]
        store.write_prepared(store.prepare_many([]))  # an empty batch writes nothing, fails nothing
        assert dropped is not None and store.get(b"p-never") is None  # the batch made ready, never written

    def test_empty_batches(self, store: Store) -> None:
        store.set_many([])
        assert store.get_many([]) == []
        assert store.delete_many([]) == 0

    # -- scans -----------------------------------------------------------------------------
    def test_prefix_scan_does_not_over_match(self, store: Store) -> None:
        keys = [b"a%", b"a%b", b"ab", b"a_", b"a_c", b"abc", b"a*", b"a*x", b"a?", b"a[", b"b", b"a",
                b"a\xff", b"a\xff\xff", b"b\x00"]
        keys = [k for k in keys if self.fits(store, k)]
        for key in keys:
            store.set(key, b"1")
        for prefix in [b"a%", b"a_", b"a*", b"a?", b"a[", b"a\xff", b"a", b"b", b"zz"]:
            expected = sorted(k for k in keys if k.startswith(prefix))
            assert sorted(self.all_keys(store, prefix)) == expected, prefix
            assert store.count(prefix) == len(expected), prefix

    def test_scan_in_batches_and_values(self, store: Store) -> None:
        records = {b"s%03d" % i: b"v%d" % i for i in range(250)}
        store.set_many(Record(k, v) for k, v in records.items())
        seen: dict[bytes, bytes] = {}
        for page in store.scan(b"s", batch_size=32):
            assert 0 < len(page.records) <= 32 or not store.capabilities.ordered_scan
            for rec in page.records:
                assert rec.key not in seen
                seen[rec.key] = rec.value
        assert seen == records

    def test_scan_batch_size_below_one_is_one(self, store: Store) -> None:
        """One rule on every backend: a batch size under 1 is taken as 1, never an error or a
        loop that returns nothing."""
        store.set_many(Record(b"z%d" % i, b"v") for i in range(3))
        for size in (0, -5):
            pages = list(store.scan(b"z", batch_size=size))
            assert sorted(r.key for p in pages for r in p.records) == [b"z0", b"z1", b"z2"]
            assert all(len(p.records) <= 1 for p in pages) or not store.capabilities.ordered_scan

    def test_scan_keys_only(self, store: Store) -> None:
        store.set(b"k1", b"value")
        recs = [r for p in store.scan(keys_only=True) for r in p.records]
        assert [r.key for r in recs] == [b"k1"]

    def test_ordered_scan_is_ordered(self, store: Store) -> None:
        self.needs(store, "ordered_scan")
        keys = [k for k in ADVERSARIAL_KEYS if self.fits(store, k)] + [b"m%d" % i for i in range(50)]
        store.set_many(Record(k, b"") for k in keys)
        assert self.all_keys(store, batch_size=7) == sorted(keys)

    def test_scan_resumes_from_cursor(self, store: Store) -> None:
        keys = {b"r%04d" % i for i in range(300)}
        store.set_many(Record(k, b"v") for k in keys)
        pages = store.scan(b"r", batch_size=50)
        first = next(pages)
        seen = {r.key for r in first.records}
        assert first.cursor is not None
        for page in store.scan(b"r", cursor=first.cursor, batch_size=50):
            seen.update(r.key for r in page.records)
        assert seen == keys

    def test_scan_resumes_from_key(self, store: Store) -> None:
        self.needs(store, "ordered_scan")
        store.set_many(Record(b"q%02d" % i, b"v") for i in range(20))
        rest = [r.key for p in store.scan(b"q", start_after=b"q09") for r in p.records]
        assert rest == [b"q%02d" % i for i in range(10, 20)]

    # -- TTLs ------------------------------------------------------------------------------
    def test_ttl_expiry(self, store: Store) -> None:
        self.needs(store, "ttl")
        started = time.monotonic()
        store.set(b"short", b"v", ttl_ms=1000)
        store.set(b"long", b"v", ttl_ms=3_600_000)
        rec = store.get(b"long")
        assert rec is not None and rec.expires_at_ms is not None
        assert 3_500_000 < rec.expires_at_ms - time.time() * 1000 <= 3_600_000
        short = store.get(b"short")
        # on a loaded machine the calls above may outlast the TTL: only a timely read must see it
        assert short is not None or time.monotonic() - started >= 0.9
        time.sleep(max(0.0, started + 1.3 - time.monotonic()))
        assert store.get(b"short") is None
        assert store.get_many([b"short", b"long"])[0] is None
        assert self.all_keys(store) == [b"long"]
        assert store.count() == 1

    def test_set_without_ttl_clears_old_ttl(self, store: Store) -> None:
        self.needs(store, "ttl")
        store.set(b"k", b"v", ttl_ms=100)
        store.set(b"k", b"v2")
        time.sleep(0.25)
        rec = store.get(b"k")
        assert rec is not None and rec.value == b"v2" and rec.expires_at_ms is None

    def test_ttl_beyond_2109_is_a_usage_error(self, store: Store) -> None:
        """Expiries are 42-bit milliseconds (kvctl.store.deadline_ms): one error on every backend."""
        self.needs(store, "ttl")
        with pytest.raises(UsageError):
            store.set(b"far", b"v", ttl_ms=1 << 50)
        assert store.get(b"far") is None

    def test_ttl_unsupported_is_an_error(self, store: Store) -> None:
        if store.capabilities.ttl:
            pytest.skip(f"{store.name} supports TTLs")
        with pytest.raises(UnsupportedError):
            store.set(b"k", b"v", ttl_ms=1000)

    # -- versions --------------------------------------------------------------------------
    def test_versions_grow(self, store: Store) -> None:
        self.needs(store, "versions")
        store.set(b"k", b"1")
        v1 = store.get(b"k").version  # type: ignore[union-attr]
        store.set(b"k", b"2")
        v2 = store.get(b"k").version  # type: ignore[union-attr]
        assert v1 is not None and v2 is not None and v2 > v1

    def test_given_versions_are_kept(self, store: Store) -> None:
        self.needs(store, "versions")
        store.set_many([Record(b"k", b"v", None, 123456789)])
        assert store.get(b"k").version == 123456789  # type: ignore[union-attr]

    # -- expire, persist and conditional writes ---------------------------------------------
    def admin(self, store: Store) -> Any:
        """The store as Expiry and ConditionalWrites, or skip when it declares it cannot."""
        self.needs(store, "conditional_writes")
        assert isinstance(store, Expiry) and isinstance(store, ConditionalWrites)
        return store

    def test_expire_and_persist_keep_the_value(self, store: Store) -> None:
        s = self.admin(store)
        key = b"e\x00\xff"
        store.set(key, b"v")
        deadline = now_ms() + 3_600_000
        assert s.expire(key, deadline) is True
        rec = store.get(key)
        assert rec is not None and rec.value == b"v" and rec.expires_at_ms == deadline
        assert s.expire(key, None) is True
        rec = store.get(key)
        assert rec is not None and rec.value == b"v" and rec.expires_at_ms is None
        assert s.expire(key, None) is True  # a key without an expiry exists: persist succeeds
        assert s.expire(b"missing", deadline) is False and s.expire(b"missing", None) is False
        assert store.get(b"missing") is None

    def test_expire_in_the_past_deletes(self, store: Store) -> None:
        s = self.admin(store)
        store.set(b"k", b"v")
        assert s.expire(b"k", now_ms() - 1000) is True
        assert store.get(b"k") is None and store.count() == 0
        assert s.expire(b"k", None) is False

    def test_expire_does_not_revive_an_expired_key(self, store: Store) -> None:
        s = self.admin(store)
        store.set(b"k", b"v", ttl_ms=100)
        time.sleep(0.3)
        assert s.expire(b"k", None) is False
        assert store.get(b"k") is None

    def test_set_if_absent_and_present(self, store: Store) -> None:
        s = self.admin(store)
        assert s.set_if(Record(b"k", b"one"), exists=True) is False
        assert store.get(b"k") is None
        assert s.set_if(Record(b"k", b"one"), exists=False) is True
        assert s.set_if(Record(b"k", b"two"), exists=False) is False
        assert store.get(b"k").value == b"one"  # type: ignore[union-attr]
        assert s.set_if(Record(b"k", b"three", now_ms() + 60_000), exists=True) is True
        rec = store.get(b"k")
        assert rec is not None and rec.value == b"three" and rec.expires_at_ms is not None
        assert s.set_if(Record(b"k", b"four")) is True
        assert store.get(b"k").expires_at_ms is None  # type: ignore[union-attr]

    def test_set_if_absent_takes_an_expired_key(self, store: Store) -> None:
        s = self.admin(store)
        store.set(b"k", b"old", ttl_ms=100)
        time.sleep(0.3)
        assert s.set_if(Record(b"k", b"new"), exists=True) is False
        assert s.set_if(Record(b"k", b"new"), exists=False) is True
        rec = store.get(b"k")
        assert rec is not None and rec.value == b"new" and rec.expires_at_ms is None

    def test_set_if_keep_ttl(self, store: Store) -> None:
        s = self.admin(store)
        store.set(b"k", b"v", ttl_ms=3_600_000)
        before = store.get(b"k").expires_at_ms  # type: ignore[union-attr]
        assert s.set_if(Record(b"k", b"v2"), keep_ttl=True) is True
        rec = store.get(b"k")
        assert rec is not None and rec.value == b"v2" and before is not None
        assert abs((rec.expires_at_ms or 0) - before) <= 1  # a server keeping seconds may round
        assert s.set_if(Record(b"new", b"v"), exists=False, keep_ttl=True) is True
        assert store.get(b"new").expires_at_ms is None  # type: ignore[union-attr]
        with pytest.raises(UsageError):
            s.set_if(Record(b"k", b"v3", now_ms() + 1000), keep_ttl=True)
        assert store.get(b"k").value == b"v2"  # type: ignore[union-attr]

    def test_expire_and_set_if_are_versioned_writes(self, store: Store) -> None:
        s = self.admin(store)
        self.needs(store, "versions")
        store.set(b"k", b"v")
        v0 = store.get(b"k").version  # type: ignore[union-attr]
        assert s.expire(b"k", now_ms() + 60_000)
        v1 = store.get(b"k").version  # type: ignore[union-attr]
        assert s.set_if(Record(b"k", b"w"), exists=True, keep_ttl=True)
        v2 = store.get(b"k").version  # type: ignore[union-attr]
        assert v0 is not None and v1 is not None and v2 is not None and v0 < v1 < v2
        self.needs(store, "change_feed")
        start = store.feed_cursor()  # type: ignore[attr-defined]
        assert s.expire(b"k", None)
        assert not s.set_if(Record(b"k", b"x"), exists=False)  # not written: not in the feed
        assert s.expire(b"k", now_ms() - 1)
        changes = [r for p in store.changes(start) for r in p.records]  # type: ignore[attr-defined]
        assert [(r.key, r.kind, r.value, r.expires_at_ms) for r in changes] == [
            (b"k", None, b"w", None), (b"k", TOMBSTONE, b"", None)]
        assert changes[0].version > v2 and changes[1].version > changes[0].version

    # -- replication: change feed and last-writer-wins apply ----------------------------------
    def test_change_feed_lists_upserts_and_tombstones_in_order(self, store: Store) -> None:
        self.needs(store, "change_feed")
        start = store.feed_cursor()  # type: ignore[attr-defined]
        store.set(b"f1", b"a")
        store.set_many([Record(b"f2", b"b"), Record(b"f1", b"c")])
        store.delete(b"f2")
        changes = [r for p in store.changes(start, batch_size=2) for r in p.records]  # type: ignore[attr-defined]
        if store.capabilities.versions:
            assert [(r.key, r.kind, r.value) for r in changes][-4:] == [
                (b"f1", None, b"a"), (b"f2", None, b"b"), (b"f1", None, b"c"), (b"f2", TOMBSTONE, b"")]
            versions = [r.version for r in changes[-4:]]
            assert all(v is not None for v in versions)
            assert versions[3] > versions[1]
        else:
            # an unversioned feed (e.g. notifications) reports each changed key's state when read:
            # the last change listed for a key is its current state
            last = {r.key: (r.kind, r.value) for r in changes}
            assert last == {b"f1": (None, b"c"), b"f2": (TOMBSTONE, b"")}

    def test_change_feed_batch_size_below_one_is_one(self, store: Store) -> None:
        self.needs(store, "change_feed")
        start = store.feed_cursor()  # type: ignore[attr-defined]
        store.set_many([Record(b"c1", b"a"), Record(b"c2", b"b")])
        pages = list(store.changes(start, batch_size=0))  # type: ignore[attr-defined]
        assert {r.key for p in pages for r in p.records} >= {b"c1", b"c2"}

    def test_change_feed_resumes_from_page_cursor(self, store: Store) -> None:
        self.needs(store, "change_feed")
        start = store.feed_cursor()  # type: ignore[attr-defined]
        store.set_many(Record(b"c%02d" % i, b"v") for i in range(30))
        pages = store.changes(start, batch_size=10)  # type: ignore[attr-defined]
        first = next(pages)
        rest = [r.key for p in store.changes(first.cursor, batch_size=7) for r in p.records]  # type: ignore[attr-defined]
        keys = [r.key for r in first.records] + rest
        assert keys[-30:] == [b"c%02d" % i for i in range(30)]
        end = store.feed_cursor()  # type: ignore[attr-defined]
        assert [r for p in store.changes(end) for r in p.records] == []  # type: ignore[attr-defined]

    def test_change_feed_bad_cursor(self, store: Store) -> None:
        self.needs(store, "change_feed")
        with pytest.raises((FeedGapError, UsageError)):
            list(store.changes("not-a-cursor-of-this-feed"))  # type: ignore[attr-defined]

    def test_apply_many_is_last_writer_wins(self, store: Store) -> None:
        self.needs(store, "versions")
        if not hasattr(store, "apply_many"):
            pytest.skip(f"{store.name} has no apply_many (engines fall back to get_many)")
        base = 5_000_000_000_000_000_000
        apply = store.apply_many
        assert apply([Record(b"k", b"v2", None, base + 2)]) == 1
        assert apply([Record(b"k", b"v1", None, base + 1)]) == 0  # stale upsert
        assert apply([Record(b"k", b"", None, base + 1, TOMBSTONE)]) == 0  # stale delete
        assert store.get(b"k").value == b"v2"  # type: ignore[union-attr]
        assert apply([Record(b"k", b"", None, base + 3, TOMBSTONE)]) == 1
        assert store.get(b"k") is None
        assert apply([Record(b"k", b"v-old", None, base + 2)]) == 0  # no resurrection
        assert store.get(b"k") is None
        assert apply([Record(b"k", b"v4", None, base + 4)]) == 1
        assert apply([Record(b"k", b"v4", None, base + 4)]) == 0  # applying twice changes nothing
        rec = store.get(b"k")
        assert rec is not None and (rec.value, rec.version) == (b"v4", base + 4)
        store.set(b"k", b"local")  # a local write after observing a newer remote version wins
        assert store.get(b"k").version > base + 4  # type: ignore[union-attr,operator]

    # -- admin -----------------------------------------------------------------------------
    def test_clear_and_stats(self, store: Store) -> None:
        store.set_many(Record(b"c%d" % i, b"v") for i in range(10))
        stats = store.stats()
        assert isinstance(stats, dict) and stats.get("keys") == 10
        assert store.clear() == 10
        assert store.count() == 0

    # -- persistence -----------------------------------------------------------------------
    def test_reopen_persists(self, store: Store, store_url: str) -> None:
        self.needs(store, "persistent")
        store.set(b"p", b"\x00persist\xff")
        store.set_many([Record(b"q", b"v", int(time.time() * 1000) + 3_600_000)] if store.capabilities.ttl
                       else [Record(b"q", b"v")])
        store.close()
        self.closed_by_test = True
        again = open_sync(store_url)
        try:
            assert again.get(b"p").value == b"\x00persist\xff"  # type: ignore[union-attr]
            assert again.get(b"q") is not None
        finally:
            again.close()

    # -- model check -----------------------------------------------------------------------
    def test_state_machine(self, store: Store) -> None:
        run_state_machine(store, self.state_machine_examples)

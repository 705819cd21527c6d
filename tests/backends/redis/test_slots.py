"""A Redis Cluster cut into slot ranges (``partitions_for``), on the real cluster of
tests/services.sh: every key read by exactly one part, with and without a prefix, hash tags, a
slot bigger than a page or than the in-memory bound, resumed parts, and a slot that moved."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from kvctl_plugins.redis import slots
from redis.crc import key_slot

from kvctl.errors import UnavailableError, UsageError
from kvctl.registry import open_sync
from kvctl.store import Record
from tests.conftest import service_url

HOT = 300  # keys of one hash tag: one slot


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, list[Record]]]:
    """A namespace of its own on the cluster, holding plain keys, keys of many hash tags and a
    hot slot; removed at the end."""
    ns = f"slots{os.getpid()}{time.monotonic_ns()}:"
    store: Any = open_sync(f"{service_url('KVCTL_TEST_REDIS_CLUSTER_URL')}&namespace={ns}")
    records = ([Record(b"k%05d" % i, b"v%d" % i) for i in range(2000)]
               + [Record(b"{t%d}:x%d" % (i % 40, i), b"t%d" % i) for i in range(400)]
               + [Record(b"{hot}:%04d" % i, b"h%d" % i) for i in range(HOT)])
    store.set_many(records)
    # read slot by slot whatever else the shared cluster holds (that choice: test_the_way_a_scan_reads)
    store._by_slot = lambda prefix: True
    try:
        yield store, records
    finally:
        store.delete_many([r.key for r in records])
        store.close()


def _read(store: Any, part: str, prefix: bytes = b"", **kw: Any) -> list[Any]:
    return [p for p in store.scan_partition(part, prefix, **kw)]


def _slots_of(part: str) -> list[int]:
    out: list[int] = []
    for run in part.partition("/")[2].split(","):
        a, _, b = run.partition("-")
        out.extend(range(int(a), int(b) + 1))
    return out


def test_the_parts_cover_every_slot_once_within_one_master(cluster: tuple[Any, list[Record]]) -> None:
    store, _ = cluster
    parts = store.partitions_for(slices=32)
    assert 30 <= len(parts) <= 34, parts
    covered = Counter(s for part in parts for s in _slots_of(part))
    assert sorted(covered) == list(range(16384)) and set(covered.values()) == {1}
    masters = set(store.partitions())
    assert {p.partition("/")[0] for p in parts} == masters
    # few slices: one part per master, read by SCAN as before
    assert sorted(store.partitions_for(slices=len(masters))) == sorted(masters)


@pytest.mark.parametrize("batch_size", [100, 1000])
def test_every_key_is_read_by_exactly_one_part(cluster: tuple[Any, list[Record]], batch_size: int) -> None:
    store, records = cluster
    pages = [page for part in store.partitions_for(slices=32) for page in _read(store, part, batch_size=batch_size)]
    got = [r for page in pages for r in page.records]
    assert Counter(r.key for r in got) == Counter(r.key for r in records)
    assert sorted(got) == sorted(records)
    assert max(len(p.records) for p in pages) <= 2 * batch_size


def test_a_prefix_keeps_only_its_keys(cluster: tuple[Any, list[Record]]) -> None:
    store, records = cluster
    got = [r.key for part in store.partitions_for(b"{t1", slices=16)
           for page in _read(store, part, b"{t1", keys_only=True) for r in page.records]
    want = [r.key for r in records if r.key.startswith(b"{t1")]
    assert want and Counter(got) == Counter(want)


def _part_of(store: Any, key: bytes) -> tuple[str, set[int]]:
    """The part of 32 holding ``key``, and its slots."""
    slot = key_slot(store.ns + key)
    part = next(p for p in store.partitions_for(slices=32) if slot in _slots_of(p))
    return part, set(_slots_of(part))


def test_a_resumed_part_rereads_at_most_one_slot(cluster: tuple[Any, list[Record]]) -> None:
    store, _ = cluster
    part, _ = _part_of(store, b"{hot}:0000")
    pages = _read(store, part, batch_size=50)
    assert len(pages) > 4
    for k in range(len(pages) - 1):
        before = [r.key for p in pages[: k + 1] for r in p.records]
        resumed = [r.key for p in _read(store, part, cursor=pages[k].cursor, batch_size=50) for r in p.records]
        assert set(before) | set(resumed) == {r.key for p in pages for r in p.records}
        again = {key_slot(store.ns + key) for key in set(before) & set(resumed)}
        assert len(again) <= 1, (k, again)


def test_a_slot_past_the_memory_bound_is_read_by_scan(cluster: tuple[Any, list[Record]],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store, records = cluster
    monkeypatch.setattr(slots, "MAX_SLOT_KEYS", HOT // 3)  # the hot slot is now "big"
    part, its_slots = _part_of(store, b"{hot}:0000")
    pages = _read(store, part, batch_size=40)
    got = [r for p in pages for r in p.records]
    want = [r for r in records if key_slot(store.ns + r.key) in its_slots]
    assert Counter(r.key for r in got) == Counter(r.key for r in want) and sorted(got) == sorted(want)
    inside = [p.cursor for p in pages if p.cursor and p.cursor.count(":") == 2]
    assert inside  # SCAN's pages resume inside the slot
    cut = next(i for i, p in enumerate(pages) if p.cursor == inside[0])
    resumed = [r.key for p in _read(store, part, cursor=inside[0], batch_size=40) for r in p.records]
    before = [r.key for p in pages[: cut + 1] for r in p.records]
    assert Counter(before + resumed) == Counter(r.key for r in want)


def test_a_slot_served_by_another_master_is_unavailable(cluster: tuple[Any, list[Record]]) -> None:
    store, _ = cluster
    parts = store.partitions_for(slices=32)
    a, b = parts[0], next(p for p in parts if p.partition("/")[0] != parts[0].partition("/")[0])
    stolen = f"{a.partition('/')[0]}/{b.partition('/')[2]}"  # b's slots, read on a's master
    with pytest.raises(UnavailableError, match="slot moved"):
        _read(store, stolen)
    with pytest.raises(UnavailableError, match="no longer a master"):
        _read(store, "127.0.0.1:1/0-10")
    for bad in ("slot:x", "slot:99999", "c:node:1"):
        with pytest.raises(UsageError):
            _read(store, a, cursor=bad)


def test_a_shard_cuts_a_cluster_child_into_its_share_of_slot_ranges(cluster: tuple[Any, list[Record]],
                                                                    tmp_path: Any) -> None:
    from urllib.parse import quote

    store, records = cluster
    child = f"{service_url('KVCTL_TEST_REDIS_CLUSTER_URL')}&namespace={store.ns.decode()}"
    other = f"sqlite://{tmp_path / 'c.db'}"
    shard: Any = open_sync("shard://?" + "&".join(f"child={quote(c, safe='')}&weight=1" for c in (child, other)))
    try:
        parts = shard.partitions_for(slices=16)
        assert "1" in parts and sum(p.startswith("0:") and "/" in p for p in parts) == 8, parts
        got = [r.key for part in parts if part.startswith("0:")
               for page in shard.scan_partition(part, keys_only=True) for r in page.records]
        # the other child is empty: every key of the cluster child is shown, each once
        assert Counter(got) == Counter(r.key for r in records)
    finally:
        shard.close()


# -- a scan of the whole cluster: every master at once, slot by slot (slots.scan_all) -------------
def _slot_of(store: Any, key: bytes) -> int:
    return int(key_slot(store.ns + key))


@pytest.mark.parametrize("batch_size", [100, 1000])
def test_a_scan_reads_every_key_once_and_resumes_from_any_page(cluster: tuple[Any, list[Record]],
                                                                batch_size: int) -> None:
    store, records = cluster
    pages = list(store.scan(batch_size=batch_size))
    got = [r for p in pages for r in p.records]
    assert Counter(r.key for r in got) == Counter(r.key for r in records) and sorted(got) == sorted(records)
    assert max(len(p.records) for p in pages) <= 2 * batch_size
    assert all(p.cursor and p.cursor.startswith("done:") for p in pages[:-1]) and pages[-1].cursor is None
    everything = {r.key for r in records}
    for k in range(0, len(pages) - 1, max(1, len(pages) // 8)):
        before = [r.key for p in pages[: k + 1] for r in p.records]
        resumed = [r.key for p in store.scan(cursor=pages[k].cursor, batch_size=batch_size) for r in p.records]
        assert set(before) | set(resumed) == everything
        assert len({_slot_of(store, key) for key in set(before) & set(resumed)}) <= 1, k


def test_a_scan_keeps_its_prefix_and_reads_a_slot_past_the_memory_bound(
        cluster: tuple[Any, list[Record]], monkeypatch: pytest.MonkeyPatch) -> None:
    store, records = cluster
    got = [r.key for p in store.scan(b"{t1", keys_only=True) for r in p.records]
    assert Counter(got) == Counter(r.key for r in records if r.key.startswith(b"{t1"))
    monkeypatch.setattr(slots, "MAX_SLOT_KEYS", HOT // 3)  # the hot slot is now "big": read by SCAN
    for keys_only in (False, True):
        got_records = [r for p in store.scan(batch_size=40, keys_only=keys_only) for r in p.records]
        want = [Record(r.key) for r in records] if keys_only else records
        assert Counter(r.key for r in got_records) == Counter(r.key for r in want)
        assert sorted(got_records) == sorted(want)


def test_a_scan_reads_expiries_exactly() -> None:
    """A key with an expiry anywhere sends the reads per key: every expiry read to the ms."""
    ns = f"slotsttl{os.getpid()}{time.monotonic_ns()}:"
    store: Any = open_sync(f"{service_url('KVCTL_TEST_REDIS_CLUSTER_URL')}&namespace={ns}")
    at = int(time.time() * 1000) + 3_600_000
    records = ([Record(b"p%04d" % i, b"v%d" % i) for i in range(600)]
               + [Record(b"e%04d" % i, b"w%d" % i, at + i) for i in range(0, 600, 7)])
    try:
        store.set_many(records)
        for batch_size in (50, 1000):
            assert sorted(r for p in store.scan(batch_size=batch_size) for r in p.records) == sorted(records)
    finally:
        store.delete_many([r.key for r in records])
        store.close()


def test_a_slot_served_elsewhere_than_the_map_says_stops_the_scan(cluster: tuple[Any, list[Record]],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The slot map read when the scan starts is wrong about one slot (as when it moved since):
    its probe answers MOVED and the scan stops rather than miss its keys."""
    store, _ = cluster
    slot = _slot_of(store, b"k00001")
    real = store._refresh

    def stale_refresh() -> None:
        real()
        store._slots[slot] = next(name for name in sorted(set(store._slots)) if name != store._slots[slot])

    monkeypatch.setattr(store, "_refresh", stale_refresh)
    with pytest.raises(UnavailableError, match="slot moved"):
        list(store.scan())


def test_scan_cursors_refused_in_one_line(cluster: tuple[Any, list[Record]]) -> None:
    store, _ = cluster
    for bad in ("done:x", "done:0-99999", "done:5-1", "slot:5", "m:127.0.0.1:1=5", "c:127.0.0.1:1:0"):
        with pytest.raises(UsageError):
            list(store.scan(cursor=bad))
    assert list(store.scan(cursor="done:0-16383")) == []  # every slot read: nothing left


def test_the_way_a_scan_reads_follows_the_share_of_keys_under_its_prefix() -> None:
    """Slot by slot when most of the cluster's keys are the namespace's (the sample's majority),
    else SCAN, whose pattern keeps the other keys on the server; every key is read either way."""
    url = service_url("KVCTL_TEST_REDIS_CLUSTER_URL")
    base: Any = open_sync(url)
    others = base.count()  # whatever the shared cluster holds besides
    ns = f"share{os.getpid()}{time.monotonic_ns()}:"
    store: Any = open_sync(f"{url}&namespace={ns}")
    few = [Record(b"f%03d" % i, b"x") for i in range(20)]
    many = [Record(b"m%06d" % i, b"y") for i in range(max(70_000, 4 * others))]
    try:
        store.set_many(few)
        if others >= 200:  # 20 keys among hundreds: a minority
            pages = list(store.scan(batch_size=10))
            assert pages[0].cursor.startswith("m:")
            assert {r.key for p in pages for r in p.records} == {r.key for r in few}
        store.set_many(many)
        pages = list(store.scan(batch_size=5000))
        assert pages[0].cursor.startswith("done:")
        assert {r.key for p in pages for r in p.records} == {r.key for r in few + many}
        assert store._by_slot(store.ns) and not store._by_slot(b"no such prefix:")
        assert store._by_slot(b"")  # everything is under the empty prefix
        store.delete_many([r.key for r in many])
        assert not store._by_slot(store.ns)  # a small cluster: SCAN, whatever the share
    finally:
        store.delete_many([r.key for r in few + many])
        store.close()
        base.close()

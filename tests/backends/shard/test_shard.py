"""The shard backend: conformance, weighted placement, minimal movement on rebalance, profiles."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote
from uuid import uuid4

import pytest
from kvctl_plugins.shard import ShardStore

from kvctl.errors import BadURLError, UnavailableError, UsageError
from kvctl.store import Record
from kvctl.testing import StoreConformance
from kvctl.testing import open_sync as _open_sync


def open_sync(url: str) -> ShardStore:
    store = _open_sync(url)
    assert isinstance(store, ShardStore)
    return store


def shard_url(children: list[tuple[str, float, str | None]], extra: str = "") -> str:
    parts = []
    for url, weight, name in children:
        parts.append(f"child={quote(url, safe='')}&weight={weight:g}" + (f"&name={name}" if name else ""))
    return "shard://?" + "&".join(parts) + extra


def fresh(n: int) -> list[str]:
    tag = uuid4().hex[:8]
    return [f"memory://shard-{tag}-{i}" for i in range(n)]


class TestShardOverMemoryConformance(StoreConformance):
    @pytest.fixture
    def store_url(self) -> str:
        a, b, c = fresh(3)
        return shard_url([(a, 3, None), (b, 7, None), (c, 1, None)])


class TestShardMixedConformance(StoreConformance):
    """RocksDB and LMDB children: persistent, so reopening is tested; LMDB's key limit is the shard's."""

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return shard_url([(f"lmdb://{tmp_path / 'l'}", 1, "lmdb"), (f"rocksdb://{tmp_path / 'r'}", 2, "rocks")])


class TestShardChainedScanConformance(StoreConformance):
    """Children scanned one after the other, as when a child cannot scan in order."""

    @pytest.fixture
    def store_url(self) -> str:
        a, b = fresh(2)
        return shard_url([(a, 1, None), (b, 1, None)], "&fallback=true")

    @pytest.fixture
    def store(self, store_url: str):
        from dataclasses import replace

        store = open_sync(store_url)
        store.capabilities = replace(store.capabilities, ordered_scan=False)
        store.clear()
        yield store
        store.close()


# -- placement ------------------------------------------------------------------------------------
def test_shares_follow_weights_and_nothing_is_dropped() -> None:
    a, b = fresh(2)
    store = open_sync(shard_url([(a, 3, "a"), (b, 7, "b")]))
    store.set(b"only-one", b"v")  # one key over 3:7 is placed (Querator's floor split drops it)
    assert store.count() == 1 and store.get(b"only-one") is not None
    owners = Counter(store.owner(b"k%06d" % i) for i in range(20_000))
    assert abs(owners["a"] / 20_000 - 0.3) < 0.015 and abs(owners["b"] / 20_000 - 0.7) < 0.015
    store.set_many(Record(b"k%05d" % i, b"v") for i in range(2000))
    stats = store.stats()
    assert stats["a.weight_share"] == 0.3 and abs(stats["a.share"] - 0.3) < 0.05
    assert stats["a.misplaced"] == 0 and stats["b.misplaced"] == 0 and stats["keys"] == 2001


def test_ids_not_positions_place_keys() -> None:
    a, b, c = fresh(3)
    one = open_sync(shard_url([(a, 1, None), (b, 2, None), (c, 3, None)]))
    two = open_sync(shard_url([(c, 3, None), (a, 1, None), (b, 2, None)]))
    keys = [b"key-%d" % i for i in range(3000)]
    assert [one.owner(k) for k in keys] == [two.owner(k) for k in keys]


def _snapshot(urls: list[str]) -> dict[str, dict[bytes, Record]]:
    out = {}
    for url in urls:
        child = _open_sync(url)
        out[url] = {r.key: r for p in child.scan() for r in p.records}
    return out


def test_rebalance_moves_exactly_the_keys_whose_owner_changed() -> None:
    urls = fresh(3)
    before = open_sync(shard_url([(urls[0], 3, "x"), (urls[1], 7, "y"), (urls[2], 5, "z")]))
    deadline = int(time.time() * 1000) + 3_600_000
    before.set_many(Record(b"key-%05d" % i, b"v%d" % i, deadline if i % 3 == 0 else None) for i in range(6000))
    layout = _snapshot(urls)

    after = open_sync(shard_url([(urls[0], 3, "x"), (urls[1], 7, "y"), (urls[2], 12, "z")]))
    keys = [b"key-%05d" % i for i in range(6000)]
    expected = {k for k in keys if before.owner(k) != after.owner(k)}
    assert 0 < len(expected) < len(keys) // 2
    # Raising z's weight only moves keys to z.
    assert {after.owner(k) for k in expected} == {"z"}

    # Between the weight change and the rebalance every key is still readable.
    got = after.get_many(keys)
    assert all(r is not None for r in got)

    plan = after.rebalance(dry_run=True)
    assert plan.moved == len(expected) and _snapshot(urls) == layout
    report = after.rebalance()
    assert report.moved == len(expected) and report.stale_dropped == 0
    assert set(report.moves) <= {"x -> z", "y -> z"}

    now = _snapshot(urls)
    ids = {"x": urls[0], "y": urls[1], "z": urls[2]}
    for key in keys:  # every key on its owner, once, with value, expiry and version kept
        holders = [u for u in urls if key in now[u]]
        assert holders == [ids[after.owner(key)]]
        old = next(layout[u][key] for u in urls if key in layout[u])
        assert now[holders[0]][key] == old
    unmoved = [k for k in keys if k not in expected]
    assert all(k in now[ids[before.owner(k)]] for k in unmoved)
    assert after.rebalance().moved == 0  # nothing left to do


def test_newer_write_after_weight_change_wins_over_the_stale_copy() -> None:
    a, b = fresh(2)
    old = open_sync(shard_url([(a, 1, "a"), (b, 0, "b")]))  # weight 0: b owns nothing
    old.set(b"k", b"old")
    new = open_sync(shard_url([(a, 0, "a"), (b, 1, "b")]))  # now b owns everything
    # Copies are compared by version (last writer wins).  Two shard instances writing in the same
    # millisecond have no order but their random HLC node ids, so the test keeps them apart.
    time.sleep(0.005)
    new.set(b"k", b"new")
    assert new.get(b"k").value == b"new"
    assert [(r.key, r.value) for p in new.scan() for r in p.records] == [(b"k", b"new")]
    assert new.count() == 2  # the stale copy is counted until the rebalance (documented)
    report = new.rebalance()
    assert (report.moved, report.stale_dropped) == (0, 1)
    assert new.count() == 1 and new.get(b"k").value == b"new"
    assert new.delete(b"k") is True and new.count() == 0


# -- configuration ----------------------------------------------------------------------------------
def test_profiles_as_children_and_shard_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kvctl.config import resolve

    a, b = fresh(2)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[profiles.hot]\nurl = "{a}"\n[profiles.cold]\nurl = "{b}"\n'
        '[profiles.both]\nurl = "shard://?child=hot&weight=1&child=cold&weight=3"\n'
        '[profiles.loop]\nurl = "shard://?child=loop&weight=1"\n'
    )
    config.chmod(0o600)
    monkeypatch.setenv("KVCTL_CONFIG", str(config))
    store = open_sync(resolve("both"))
    assert [s.id for s in store.specs] == ["hot", "cold"]
    store.set_many(Record(b"k%d" % i, b"v") for i in range(400))
    assert _open_sync(a).count() + _open_sync(b).count() == 400
    assert _open_sync(b).count() > _open_sync(a).count()
    with pytest.raises(BadURLError, match="includes itself"):
        open_sync(resolve("loop"))


def test_bad_shard_urls() -> None:
    (a,) = fresh(1)
    child = quote(a, safe="")
    for url, message in [
        ("shard://", "names no children"),
        (f"shard://?weight=2&child={child}", "before any child"),
        (f"shard://?child={child}&weight=abc", "not a number"),
        (f"shard://?child={child}&weight=-1", ">= 0"),
        (f"shard://?child={child}&weight=0", "weight 0"),
        (f"shard://?child={child}&child={child}", "share an id"),
        (f"shard://?child={child}&bogus=1", "unknown option"),
    ]:
        with pytest.raises(BadURLError, match=message):
            open_sync(url)
    with pytest.raises(UsageError):
        list(open_sync(f"shard://?child={child}&name=a&child={child}&name=b")._chained_scan(b"", "zz", 10, False))


def test_redacted_children_in_messages() -> None:
    store = open_sync(shard_url([("memory://pw-test", 1, None)]))
    assert "memory://pw-test" in repr(store)
    from kvctl_plugins.shard.spec import ChildSpec

    spec = ChildSpec("id", "redis://:hunter2@localhost:6379/0", 1.0)
    assert "hunter2" not in spec.where


# -- partitions: each child read once by parallel readers --------------------------------------------
def test_partitions_show_exactly_what_a_scan_shows() -> None:
    a, b, c = fresh(3)
    old = open_sync(shard_url([(a, 1, "a"), (b, 1, "b"), (c, 1, "c")]))
    old.set_many(Record(b"k%04d" % i, b"old-%d" % i) for i in range(900))
    # new weights: some keys now belong elsewhere; until a rebalance their copies stay where they
    # were, and a few get a newer copy on their new owner
    store = open_sync(shard_url([(a, 1, "a"), (b, 1, "b"), (c, 4, "c")]))
    moved = [b"k%04d" % i for i in range(900) if store.owner(b"k%04d" % i) != old.owner(b"k%04d" % i)]
    assert moved
    time.sleep(0.005)
    store.set_many(Record(k, b"new") for k in moved[:50])
    assert store.capabilities.partitioned and store.partitions() == ["0", "1", "2"]
    whole = [(r.key, r.value) for p in store.scan(batch_size=64) for r in p.records]
    parts = [(r.key, r.value) for name in store.partitions()
             for p in store.scan_partition(name, batch_size=64) for r in p.records]
    assert len(whole) == 900 and sorted(parts) == whole
    assert sorted(k for name in store.partitions()
                  for p in store.scan_partition(name, b"k00", keys_only=True) for k in (r.key for r in p.records)
                  ) == [b"k%04d" % i for i in range(100)]
    with pytest.raises(UnavailableError):
        list(store.scan_partition("7"))
    assert not open_sync(shard_url([(a, 1, None)])).capabilities.partitioned

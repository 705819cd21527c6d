"""LMDB bulk writes: ordered batches past the last key appended (MDB_APPEND), and --on-conflict
newer decided in the write transaction; both end exactly where the ordinary paths end."""

from __future__ import annotations

from pathlib import Path

from kvctl_plugins.lmdb import LMDBStore
from kvctl_plugins.lmdb.bulk import ascending

from kvctl.engines.snapshot import create, restore
from kvctl.store import Record, StoreURL


def open_lmdb(path: Path) -> LMDBStore:
    return LMDBStore.from_url(StoreURL.parse(f"lmdb://{path}"))


def everything(store: LMDBStore) -> dict[bytes, Record]:
    return {r.key: r for page in store.scan(batch_size=1000) for r in page.records}


def test_ascending_means_strictly() -> None:
    assert ascending([]) and ascending([b"a"]) and ascending([b"a", b"b", b"c"])
    assert not ascending([b"a", b"a"]) and not ascending([b"b", b"a"])


def test_ordered_unordered_and_overlapping_batches_store_the_same(tmp_path: Path) -> None:
    s = open_lmdb(tmp_path / "x")
    try:
        s.set_many([Record(b"k%05d" % i, b"v%d" % i) for i in range(0, 3000, 2)])  # into an empty db
        s.set_many([Record(b"k%05d" % i, b"w%d" % i) for i in range(3000, 5000)])  # past the last key
        s.set_many([Record(b"k%05d" % i, b"u%d" % i) for i in range(1, 3000, 2)])  # in between
        s.set_many([Record(b"k04999", b"first"), Record(b"k05000", b"a"), Record(b"k05000", b"last")])
        got = everything(s)
        assert len(got) == 5001
        assert got[b"k00002"].value == b"v2" and got[b"k00003"].value == b"u3"
        assert got[b"k03000"].value == b"w3000" and got[b"k05000"].value == b"last"
        assert got[b"k04999"].value == b"first"
    finally:
        s.close()


def test_set_newer_many_writes_what_is_newer_and_counts_it(tmp_path: Path) -> None:
    s = open_lmdb(tmp_path / "x")
    try:
        s.set_many([Record(b"a", b"old", None, 100), Record(b"b", b"old", None, 100),
                    Record(b"c", b"old", 1, 100)])  # c has expired
        written = s.set_newer_many([Record(b"a", b"new", None, 99), Record(b"b", b"new", None, 101),
                                    Record(b"c", b"new", None, 50), Record(b"d", b"new", None, 1),
                                    Record(b"e", b"new")])
        assert written == (4, 4 * 4)
        got = everything(s)
        assert {k: (r.value, r.version) for k, r in got.items() if k != b"e"} == {
            b"a": (b"old", 100), b"b": (b"new", 101), b"c": (b"new", 50), b"d": (b"new", 1)}
        assert got[b"e"].value == b"new" and got[b"e"].version is not None
        # past the last key: taken whole, versions kept exactly
        assert s.set_newer_many([Record(b"f", b"1", None, 7), Record(b"g", b"2", 4102444800000, 8)]) == (2, 4)
        assert everything(s)[b"g"] == Record(b"g", b"2", 4102444800000, 8)
    finally:
        s.close()


def test_restore_into_an_empty_and_into_a_holding_store_ends_equal(tmp_path: Path) -> None:
    src = open_lmdb(tmp_path / "src")
    try:
        src.set_many([Record(b"key:%06d" % i, bytes([i % 256]) * 50, 4102444800000 if i % 7 == 0 else None)
                      for i in range(12_000)])
        expected = everything(src)
    finally:
        src.close()
    create(f"lmdb://{tmp_path}/src", tmp_path / "s.kvs")
    restore(tmp_path / "s.kvs", f"lmdb://{tmp_path}/empty")
    held = open_lmdb(tmp_path / "held")
    try:  # a newer version of one key, an older one of another, a key the snapshot lacks
        held.set_many([Record(b"key:000005", b"mine", None, expected[b"key:000005"].version + 1),  # type: ignore[operator]
                       Record(b"key:000006", b"stale", None, 1), Record(b"zz", b"extra", None, 1)])
    finally:
        held.close()
    restore(tmp_path / "s.kvs", f"lmdb://{tmp_path}/held")
    for name in ("empty", "held"):
        s = open_lmdb(tmp_path / name)
        try:
            got = everything(s)
        finally:
            s.close()
        if name == "held":
            assert got.pop(b"zz").value == b"extra"
            assert got.pop(b"key:000005").value == b"mine"
            expected_here = {k: r for k, r in expected.items() if k != b"key:000005"}
        else:
            expected_here = expected
        assert got == expected_here  # bytes, absolute expiries and versions exact

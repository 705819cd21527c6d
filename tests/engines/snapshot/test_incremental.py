"""Incremental snapshots: a full snapshot records its store's feed position, ``create --since``
writes the changes after a cursor (upserts and tombstones with versions), and ``restore`` applies
a chain in order, last-writer-wins, refusing a hole, a wrong order or a damaged file before it
writes anything.  Memory and file stores (both have change feeds), in-process."""

from __future__ import annotations

import asyncio
import functools
import random
import time
import uuid
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from kvctl.adapt import to_async
from kvctl.engines import snapshot
from kvctl.engines.keyfilter import KeyFilter
from kvctl.engines.snapshot.format import SnapshotCorrupt, SnapshotReader, SnapshotWriter
from kvctl.errors import (
    CorruptError,
    FeedGapError,
    IncompleteError,
    StoreIOError,
    UnsupportedError,
    UsageError,
)
from kvctl.registry import open_url
from kvctl.store import TOMBSTONE, Capabilities, Page, Record, now_ms
from kvctl.testing import replication
from tests.engines.support import DictStore, typed_caps

Contents = dict[bytes, tuple[bytes, int | None, int | None]]


def contents(url: str) -> Contents:
    """Every live record with its expiry and version."""
    with open_url(url) as store:
        return {r.key: (r.value, r.expires_at_ms, r.version) for p in store.scan() for r in p.records}


def store_url(family: str, tmp: Path, name: str) -> str:
    if family == "memory":
        return f"memory://incr-{name}-{uuid.uuid4().hex[:8]}"
    if family == "sqlite":
        return f"sqlite://{tmp / (name + '.db')}"
    return f"file://{tmp / name}"


# random writes whose keys expire at once or in an hour
scribble = functools.partial(replication.scribble, ttls=(1, 3_600_000))


def take_chain(src: str, tmp: Path, rng: random.Random, rounds: int = 3) -> list[Path]:
    """A full snapshot, then ``rounds`` incrementals, each after a burst of random writes."""
    scribble(src, rng, 120)
    chain = [tmp / "full.kvs"]
    snapshot.create(src, chain[0], codec="zlib", block_size=2048).check()
    for i in range(rounds):
        scribble(src, rng, 80)
        chain.append(tmp / f"inc{i + 1}.kvs")
        created = snapshot.create(src, chain[-1], since=str(chain[-2]), codec="zlib", block_size=2048)
        assert created.kind == "incremental" and created.upserts and created.tombstones
    time.sleep(0.005)  # the 1 ms keys have expired at the source too
    return chain


def header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return SnapshotReader(fh, str(path)).header.meta


# -- chains restore to the source ---------------------------------------------------------------
@pytest.mark.parametrize(("src_family", "dst_family"),
                         [("memory", "memory"), ("file", "file"), ("file", "memory"), ("memory", "sqlite")])
@pytest.mark.parametrize("seed", [1, 2])
def test_full_and_three_incrementals_restore_the_source(tmp_path: Path, src_family: str, dst_family: str,
                                                        seed: int) -> None:
    src = store_url(src_family, tmp_path, "src")
    chain = take_chain(src, tmp_path, random.Random(seed))
    links = [header(p) for p in chain]
    assert links[0]["kind"] == "full" and links[0]["base_cursor"] is None
    for before, after in pairwise(links):
        assert after["kind"] == "incremental" and after["base_cursor"] == before["end_cursor"]
    dst = store_url(dst_family, tmp_path, "dst")
    summary = snapshot.restore(chain, dst)
    summary.check()
    assert summary.kind == "chain" and [s.kind for s in summary.steps] == ["full"] + ["incremental"] * 3
    assert summary.end_cursor == links[-1]["end_cursor"]
    assert contents(dst) == contents(src)  # values, expiries and versions
    # applying the increments again changes nothing: every change is already there
    again = snapshot.restore(chain[1:], dst)
    assert [s.applied for s in again.steps] == [0, 0, 0] and contents(dst) == contents(src)
    # nor does the whole chain (the full snapshot brings back keys deleted since, the increments
    # delete them again)
    snapshot.restore(chain, dst)
    assert contents(dst) == contents(src)


def test_changes_during_the_full_scan_are_replayed_by_the_next_incremental(tmp_path: Path) -> None:
    url = store_url("memory", tmp_path, "busy")
    raw = open_url(url)
    raw.set_many([Record(b"k%04d" % i, b"v0") for i in range(3000)])

    class WritesDuringScan:
        """The memory store, with writes landing between the pages of a scan."""

        def __init__(self) -> None:
            self.inner = to_async(raw)
            self.turn = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        async def scan(self, *args: Any, **kwargs: Any) -> AsyncIterator[Page]:
            async for page in self.inner.scan(*args, **kwargs):
                yield page
                self.turn += 1
                raw.set(b"k%04d" % (self.turn * 7), b"during")  # maybe already scanned
                raw.delete(b"k%04d" % (2999 - self.turn))  # not scanned yet
                raw.set(b"k0000", b"during %d" % self.turn)

    full = tmp_path / "full.kvs"
    asyncio.run(snapshot.create_from(WritesDuringScan(), full, batch_size=500))  # type: ignore[arg-type]
    raw.set(b"after", b"1")
    inc = tmp_path / "inc.kvs"
    snapshot.create(url, inc, since=str(full))
    dst = store_url("memory", tmp_path, "busy-dst")
    snapshot.restore([full, inc], dst)
    assert contents(dst) == contents(url)


def test_deletes_ttls_and_recreated_keys_travel(tmp_path: Path) -> None:
    src = store_url("file", tmp_path, "src")
    later = now_ms() + 3_600_000
    with open_url(src) as s:
        s.set_many([Record(b"keep", b"1"), Record(b"gone", b"2"), Record(b"back", b"3"),
                    Record(b"ttl", b"4", later), Record(b"soon", b"5")])
    full = tmp_path / "full.kvs"
    snapshot.create(src, full)
    with open_url(src) as s:
        s.delete(b"gone")
        s.delete(b"back")
        s.set(b"soon", b"6", ttl_ms=1)  # expired before the restore: applied as a deletion
        s.set(b"fresh", b"7", ttl_ms=3_600_000)
    inc1 = tmp_path / "inc1.kvs"
    s1 = snapshot.create(src, inc1, since=str(full))
    assert (s1.upserts, s1.tombstones) == (2, 2)
    with open_url(src) as s:
        s.set(b"back", b"again")
    inc2 = tmp_path / "inc2.kvs"
    snapshot.create(src, inc2, since=str(inc1))
    time.sleep(0.005)
    dst = store_url("file", tmp_path, "dst")
    r = snapshot.restore([full, inc1, inc2], dst)  # the expired upsert removes the full's "soon"
    got = contents(dst)
    assert got == contents(src)
    assert set(got) == {b"keep", b"back", b"ttl", b"fresh"} and got[b"back"][0] == b"again"
    assert got[b"ttl"][1] == later and got[b"fresh"][1] is not None
    assert r.steps[1].expired == 1 and r.steps[1].tombstones == 2


def test_a_stale_upsert_never_beats_a_newer_delete(tmp_path: Path) -> None:
    src = store_url("memory", tmp_path, "src")
    with open_url(src) as s:
        start = s.feed_cursor()
        s.set_many([Record(b"a", b"old"), Record(b"b", b"old")])
    inc = tmp_path / "inc.kvs"
    snapshot.create(src, inc, since=start)
    dst = store_url("memory", tmp_path, "dst")
    old = contents(src)
    with open_url(dst) as d:
        d.apply_many([Record(b"a", b"old", None, old[b"a"][2]), Record(b"b", b"old", None, old[b"b"][2])])
        d.delete(b"a")  # a newer delete at the destination: its tombstone outranks the upsert
        d.set(b"b", b"newer")
    r = snapshot.restore(inc, dst)
    got = contents(dst)
    assert b"a" not in got and got[b"b"][0] == b"newer"
    assert r.steps[0].stale == 2 and r.steps[0].applied == 0
    assert r.notes and "cannot check" in r.notes[0]  # incrementals alone: applied to the store as it is


def test_a_stale_tombstone_never_removes_a_newer_value(tmp_path: Path) -> None:
    src = store_url("memory", tmp_path, "src")
    with open_url(src) as s:
        s.set(b"k", b"v")
        start = s.feed_cursor()
        s.delete(b"k")
    inc = tmp_path / "inc.kvs"
    snapshot.create(src, inc, since=start)
    dst = DictStore()
    dst.data[b"k"] = Record(b"k", b"written later", None, 1 << 62)
    asyncio.run(snapshot.restore_into(inc, dst))  # a store without apply_many: versions compared
    assert dst.data[b"k"].value == b"written later"


# -- cursors -------------------------------------------------------------------------------------
def test_a_full_snapshot_records_the_feed_position_before_its_scan(tmp_path: Path) -> None:
    url = store_url("memory", tmp_path, "pos")
    with open_url(url) as s:
        s.set_many([Record(b"a", b"1"), Record(b"b", b"2")])
        position = s.feed_cursor()
    full = tmp_path / "full.kvs"
    made = snapshot.create(url, full)
    assert made.end_cursor == position == header(full)["end_cursor"] and header(full)["base_cursor"] is None
    # a store without a change feed: no position, and nothing can follow that snapshot
    plain = tmp_path / "plain.kvs"
    src = DictStore()
    src.data[b"a"] = Record(b"a", b"1")
    asyncio.run(snapshot.create_from(src, plain))
    assert header(plain)["end_cursor"] is None
    with pytest.raises(UsageError, match="no change-feed position"):
        snapshot.create(url, tmp_path / "x.kvs", since=str(plain))
    inc = tmp_path / "inc.kvs"
    snapshot.create(url, inc, since=str(full))
    with pytest.raises(UsageError, match="no change-feed position"):
        snapshot.restore([plain, inc], url)


def test_since_a_cursor_or_a_file_and_an_empty_increment(tmp_path: Path) -> None:
    url = store_url("file", tmp_path, "src")
    with open_url(url) as s:
        s.set(b"a", b"1")
    full = tmp_path / "full.kvs"
    snapshot.create(url, full)
    with open_url(url) as s:
        s.set(b"b", b"2")
    by_cursor = tmp_path / "by-cursor.kvs"
    by_file = tmp_path / "by-file.kvs"
    snapshot.create(url, by_cursor, since=header(full)["end_cursor"])
    snapshot.create(url, by_file, since=str(full))
    assert header(by_cursor)["end_cursor"] == header(by_file)["end_cursor"]
    assert snapshot.verify(by_cursor).upserts == snapshot.verify(by_file).upserts == 1
    # nothing changed since: an empty increment whose end is where the feed stands
    empty = tmp_path / "empty.kvs"
    e = snapshot.create(url, empty, since=str(by_file))
    assert e.records == 0 and e.base_cursor == header(by_file)["end_cursor"]
    with open_url(url) as s:
        assert e.end_cursor == s.feed_cursor()
        s.set(b"c", b"3")
    last = tmp_path / "last.kvs"
    snapshot.create(url, last, since=str(empty))
    dst = store_url("memory", tmp_path, "dst")
    snapshot.restore([full, by_file, empty, last], dst)
    assert contents(dst) == contents(url)
    with pytest.raises(StoreIOError, match="no such snapshot"):
        snapshot.create(url, tmp_path / "y.kvs", since=str(tmp_path / "missing.kvs"))


def test_a_cursor_passed_by_retention_is_a_feed_gap(tmp_path: Path) -> None:
    url = f"memory://incr-retention-{uuid.uuid4().hex[:8]}?feed_retention=10"
    with open_url(url) as s:
        start = s.feed_cursor()
        for i in range(50):
            s.set(b"k%d" % i, b"v")
    out = tmp_path / "gap.kvs"
    with pytest.raises(FeedGapError) as err:
        snapshot.create(url, out, since=start)
    assert err.value.exit_code == 9 and "full snapshot" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no file, no spool left behind


def test_a_store_without_a_change_feed_cannot_write_an_incremental(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="no change feed") as err:
        asyncio.run(snapshot.create_from(DictStore(), tmp_path / "x.kvs", since="anything"))
    assert err.value.exit_code == 4 and list(tmp_path.iterdir()) == []


def test_filters_are_inherited_and_must_match(tmp_path: Path) -> None:
    url = store_url("memory", tmp_path, "filter")
    with open_url(url) as s:
        s.set_many([Record(b"user:1", b"a"), Record(b"other", b"b")])
    full = tmp_path / "full.kvs"
    snapshot.create(url, full, key_filter=KeyFilter(b"user:"))
    with open_url(url) as s:
        s.set_many([Record(b"user:2", b"c"), Record(b"other2", b"d")])
        s.delete(b"other")
    inc = tmp_path / "inc.kvs"
    made = snapshot.create(url, inc, since=str(full))  # inherits the prefix
    assert made.records == 1 and snapshot.meta_filter(header(inc)) == KeyFilter(b"user:")
    with pytest.raises(UsageError, match="covers the keys"):
        snapshot.create(url, tmp_path / "x.kvs", since=str(full), key_filter=KeyFilter(b"other"))
    everything = tmp_path / "all.kvs"
    snapshot.create(url, everything, since=header(full)["end_cursor"])  # a cursor: no filter to inherit
    with pytest.raises(UsageError, match="same keys"):
        snapshot.restore([full, everything], store_url("memory", tmp_path, "never"))
    dst = store_url("memory", tmp_path, "dst")
    snapshot.restore([full, inc], dst)
    assert set(contents(dst)) == {b"user:1", b"user:2"}


# -- refusing a chain before writing anything ---------------------------------------------------
@pytest.fixture
def chain(tmp_path: Path) -> list[Path]:
    return take_chain(store_url("memory", tmp_path, "chain"), tmp_path, random.Random(7))


def _refused(paths: list[Path], tmp: Path, error: type[Exception], match: str) -> Exception:
    dst = store_url("memory", tmp, "refused")
    with pytest.raises(error, match=match) as err:
        snapshot.restore(paths, dst)
    assert contents(dst) == {}  # nothing written
    return err.value


def test_a_chain_with_a_hole_is_refused(chain: list[Path], tmp_path: Path) -> None:
    err = _refused([chain[0], chain[1], chain[3]], tmp_path, UsageError, "hole")
    assert str(chain[3]) in str(err) and "missing" in str(err)
    _refused([chain[0], chain[2]], tmp_path, UsageError, "hole")
    _refused([chain[2], chain[3], chain[0]], tmp_path, UsageError, "only the first")


def test_a_chain_in_the_wrong_order_is_refused_naming_the_right_one(chain: list[Path], tmp_path: Path) -> None:
    err = _refused([chain[0], chain[2], chain[1], chain[3]], tmp_path, UsageError, "hole")
    assert "chain in this order: " + " ".join(map(str, chain)) in str(err)
    err = _refused([chain[3], chain[1], chain[2]], tmp_path, UsageError, "hole")
    assert "chain in this order: " + " ".join(map(str, chain[1:])) in str(err)


@pytest.mark.parametrize("where", [0.5, 0.9, 0.05])
def test_a_tampered_incremental_is_refused(chain: list[Path], tmp_path: Path, where: float) -> None:
    data = bytearray(chain[2].read_bytes())
    data[int(len(data) * where)] ^= 0x01
    bad = tmp_path / "tampered.kvs"
    bad.write_bytes(bytes(data))
    err = _refused([chain[0], chain[1], bad, chain[3]], tmp_path, SnapshotCorrupt, "offset")
    assert isinstance(err, CorruptError) and err.exit_code == 65 and str(bad) in str(err)


def test_a_damaged_last_file_stops_the_whole_chain(chain: list[Path], tmp_path: Path) -> None:
    data = bytearray(chain[3].read_bytes())
    data[len(data) - 30] ^= 0x40  # inside the whole-file hash
    bad = tmp_path / "bad.kvs"
    bad.write_bytes(bytes(data))
    _refused([*chain[:3], bad], tmp_path, SnapshotCorrupt, "hash")


def test_replace_needs_a_full_snapshot_first(chain: list[Path], tmp_path: Path) -> None:
    dst = store_url("memory", tmp_path, "replace")
    with open_url(dst) as d:
        d.set(b"stray", b"x")
    with pytest.raises(UsageError, match="--replace needs a full"):
        snapshot.restore(chain[1:], dst, replace=True)
    assert set(contents(dst)) == {b"stray"}
    snapshot.restore(chain, dst, replace=True)  # the full snapshot replaces, the increments follow
    assert b"stray" not in contents(dst)


# -- verify, inspect, the format ----------------------------------------------------------------
def test_verify_and_inspect_show_kind_cursors_and_counts(chain: list[Path]) -> None:
    v = snapshot.verify(chain[1])
    h = header(chain[1])
    assert (v.kind, v.base_cursor, v.end_cursor) == ("incremental", h["base_cursor"], h["end_cursor"])
    assert v.upserts is not None and v.tombstones is not None and v.upserts + v.tombstones == v.records
    quick = snapshot.verify(chain[1], records=False)  # counts from the header
    assert (quick.upserts, quick.tombstones) == (v.upserts, v.tombstones)
    assert h["changes"] == {"upserts": v.upserts, "tombstones": v.tombstones} and h["ordered"] is False
    i = snapshot.inspect(chain[1])
    assert (i.records, i.tombstones) == (v.upserts, v.tombstones)
    d = i.to_dict()
    assert d["kind"] == "incremental" and d["base_cursor"] == h["base_cursor"] and d["upserts"] == v.upserts
    full = snapshot.verify(chain[0])
    assert full.kind == "full" and full.tombstones == 0 and full.end_cursor == h["base_cursor"] is not None


def test_tombstones_round_trip_in_the_format(tmp_path: Path) -> None:
    path = tmp_path / "t.kvs"
    changes = [Record(b"a", b"1", 123, 5), Record(b"a", b"", None, 6, TOMBSTONE),
               Record(b"b", b"", None, None, TOMBSTONE), Record(b"h", b"\x00dump", None, 7, "hash")]
    with open(path, "wb") as fh:
        w = SnapshotWriter(fh, {"kind": "incremental", "base_cursor": "c1"}, "none", defer_header=True,
                           spool_dir=str(tmp_path))
        w.add(changes)
        w.finish({"end_cursor": "c2"})
    with open(path, "rb") as fh:
        reader = SnapshotReader(fh, str(path))
        assert reader.header.meta["end_cursor"] == "c2"
        decoded = [reader.decode(b) for b in reader.blocks()]
    assert decoded[0].records == changes and decoded[0].tombstones == 2
    with open(tmp_path / "x.kvs", "wb") as fh, pytest.raises(ValueError, match="defer_header"):
        SnapshotWriter(fh, {}, "none").finish({"end_cursor": "c2"})


def test_a_full_snapshot_holding_a_tombstone_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.kvs"
    with open(path, "wb") as fh:
        w = SnapshotWriter(fh, {"kind": "full"}, "none")
        w.add([Record(b"a", b"1"), Record(b"b", b"", None, 1, TOMBSTONE)])
        w.finish()
    with pytest.raises(SnapshotCorrupt, match="tombstones in a full snapshot"):
        asyncio.run(snapshot.restore_into(path, DictStore()))


# -- typed values and destinations without expiries ---------------------------------------------
class FeedDictStore(DictStore):
    """A DictStore with a change feed of the writes made through ``write``/``remove``."""

    def __init__(self, caps: Capabilities) -> None:
        super().__init__(caps)
        self.log: list[Record] = []

    def write(self, rec: Record) -> None:
        self.data[rec.key] = rec
        self.log.append(rec if rec.kind is None else Record(rec.key, b"", rec.expires_at_ms, rec.version, rec.kind))

    def remove(self, key: bytes, version: int) -> None:
        self.data.pop(key, None)
        self.log.append(Record(key, b"", None, version, TOMBSTONE))

    async def feed_cursor(self) -> str:
        return f"d:{len(self.log)}"

    async def changes(self, cursor: str, *, batch_size: int = 1000) -> AsyncIterator[Page]:
        seq = int(cursor[2:])
        while seq < len(self.log):
            batch = self.log[seq:seq + batch_size]
            seq += len(batch)
            yield Page(batch, f"d:{seq}")


def _typed_source() -> FeedDictStore:
    src = FeedDictStore(typed_caps(change_feed=True))
    src.write(Record(b"s", b"plain", None, 1))
    src.write(Record(b"h", b"\x00dump-1", None, 2, "hash"))
    src.remove(b"h", 3)
    src.write(Record(b"h", b"\x00dump-2", None, 4, "hash"))  # the file order decides: h exists at the end
    return src


def test_typed_values_travel_in_order_and_are_reported_where_they_cannot(tmp_path: Path) -> None:
    src = _typed_source()
    path = tmp_path / "typed.kvs"
    made = asyncio.run(snapshot.create_from(src, path, since="d:0", batch_size=2))
    assert (made.upserts, made.tombstones, made.incomplete) == (3, 1, 0)
    typed_dst = DictStore(typed_caps())
    asyncio.run(snapshot.restore_into(path, typed_dst, batch_size=3))
    assert typed_dst.data == src.data
    plain_dst = DictStore()
    r = asyncio.run(snapshot.restore_into(path, plain_dst))
    assert set(plain_dst.data) == {b"s"} and r.incomplete == 2 and r.problems.incomplete[0] == (b"h", "hash")
    with pytest.raises(IncompleteError):
        r.check()


def test_an_expiring_change_into_a_store_without_expiries(tmp_path: Path) -> None:
    src = FeedDictStore(Capabilities(ttl=True, ordered_scan=True, versions=True, change_feed=True))
    src.write(Record(b"a", b"1", now_ms() + 60_000, 1))
    src.write(Record(b"b", b"2", None, 2))
    path = tmp_path / "ttl.kvs"
    asyncio.run(snapshot.create_from(src, path, since="d:0"))
    no_ttl = DictStore(Capabilities(ordered_scan=True, versions=True))
    with pytest.raises(UnsupportedError, match="--drop-ttl"):
        asyncio.run(snapshot.restore_into(path, no_ttl))
    assert no_ttl.data == {}
    r = asyncio.run(snapshot.restore_into(path, no_ttl, drop_ttl=True))
    assert no_ttl.data[b"a"].expires_at_ms is None and r.steps[0].ttl_dropped == 1


class _Limited(DictStore):
    def __init__(self) -> None:
        super().__init__(Capabilities(ttl=True, ordered_scan=True, versions=True, max_value_size=4))


def test_records_over_the_destination_limits_are_named(tmp_path: Path) -> None:
    src = FeedDictStore(Capabilities(ttl=True, ordered_scan=True, versions=True, change_feed=True))
    src.write(Record(b"small", b"1", None, 1))
    src.write(Record(b"big", b"123456789", None, 2))
    path = tmp_path / "big.kvs"
    asyncio.run(snapshot.create_from(src, path, since="d:0"))
    dst = _Limited()
    r = asyncio.run(snapshot.restore_into(path, dst))
    assert set(dst.data) == {b"small"} and r.steps[0].failed == 1 and r.problems.failed[0][0] == b"big"


def test_a_key_the_destination_refuses_is_named_not_fatal(tmp_path: Path) -> None:
    src = FeedDictStore(Capabilities(ttl=True, ordered_scan=True, versions=True, change_feed=True))
    src.write(Record(b"", b"empty key", None, 1))  # LMDB refuses an empty key; no capability says so
    src.write(Record(b"ok", b"1", None, 2))
    path = tmp_path / "inc.kvs"
    asyncio.run(snapshot.create_from(src, path, since="d:0"))
    dst = f"lmdb://{tmp_path / 'dst'}"
    r = snapshot.restore(path, dst)
    assert contents(dst) == {b"ok": (b"1", None, 2)}
    assert r.steps[0].failed == 1 and r.problems.failed[0][0] == b"" and r.steps[0].applied == 1
    with pytest.raises(IncompleteError):
        r.check()

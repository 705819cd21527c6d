"""The sqlite backend's schema (version 3): change feed, tombstones, apply_many, upgrades from v1 and v2.

Writes "by other programs" are plain SQL through Python's sqlite3 module on a connection of its
own, and through the sqlite3 shell, never through kvctl.  What every versioned feed promises (order,
pages, tombstones, apply_many's rules) is kvctl.testing.replication, run in test_replication.py.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvctl.errors import AuthError, BadURLError, FeedGapError, LimitError, UnsupportedError, UsageError
from kvctl.hlc import make_version, physical_ms
from kvctl.registry import open_url
from kvctl.store import TOMBSTONE, Record, Store, now_ms
from kvctl.testing import StoreConformance, open_sync

HOUR_MS = 3_600_000
BASE = 5_000_000_000_000_000_000  # versions far above any clock's: tests of the apply rules


class TestSQLiteWithoutFeedConformance(StoreConformance):
    """``?feed=false``: no change feed (its tests skip), tombstones and apply_many all the same."""

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite://{tmp_path}/nofeed.db?feed=false"


class TestSQLiteTinyFeedConformance(StoreConformance):
    """A feed kept by age, a short one: every conformance test still passes."""

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite://{tmp_path}/tiny.db?feed_retention=1h&tombstone_retention=1h"


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "kv.db")


@pytest.fixture
def store(db: str) -> Iterator[Store]:
    with open_sync(f"sqlite://{db}") as s:
        yield s


def other_program(db: str, *statements: str | tuple[str, tuple[object, ...]]) -> list[tuple]:
    """Run statements on a plain sqlite3 connection of its own, committing each; the last's rows."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        rows: list[tuple] = []
        for stmt in statements:
            text, args = (stmt, ()) if isinstance(stmt, str) else stmt
            rows = conn.execute(text, args).fetchall()
        return rows
    finally:
        conn.close()


def changes(store: Store, cursor: str, batch_size: int = 1000) -> list[Record]:
    return [r for p in store.changes(cursor, batch_size=batch_size) for r in p.records]  # type: ignore[attr-defined]


def node_of(db: str, table: str = "kv") -> int:
    return int(other_program(db, ("SELECT node_id FROM kvctl_meta WHERE table_name = ?", (table,)))[0][0])


def near_now(version: int | None) -> bool:
    return version is not None and abs(physical_ms(version) - now_ms()) < 60_000


# -- other programs' writes ----------------------------------------------------------------------
def test_plain_sql_writes_are_in_the_feed_with_stamped_versions(store: Store, db: str) -> None:
    start = store.feed_cursor()  # type: ignore[attr-defined]
    store.set(b"mine", b"kvctl")
    other_program(
        db,
        "INSERT INTO kv(key, value) VALUES (x'61', x'31')",                       # no version
        "INSERT INTO kv(key, value, expires_at, version) VALUES (x'62', x'32', NULL, 77)",  # its own
        "UPDATE kv SET value = x'33' WHERE key = x'61'",                          # version left as it was
        "UPDATE kv SET key = x'63' WHERE key = x'62'",                            # moved: b deleted
        "DELETE FROM kv WHERE key = CAST('mine' AS BLOB)",
    )
    got = changes(store, start)
    assert [(r.key, r.kind, r.value) for r in got] == [
        (b"mine", None, b"kvctl"), (b"a", None, b"1"), (b"b", None, b"2"), (b"a", None, b"3"),
        (b"b", TOMBSTONE, b""), (b"c", None, b"2"), (b"mine", TOMBSTONE, b"")]
    node = node_of(db)
    versions = {(r.key, r.value): r.version for r in got}
    assert versions[(b"b", b"2")] == 77  # a version given is kept
    for key_value in [(b"a", b"1"), (b"a", b"3"), (b"c", b"2"), (b"b", b""), (b"mine", b"")]:
        version = versions[key_value]
        assert near_now(version) and version is not None and version & 0xFF == node, key_value
    assert versions[(b"a", b"3")] > versions[(b"a", b"1")]  # type: ignore[operator]
    assert versions[(b"mine", b"")] > versions[(b"mine", b"kvctl")]  # type: ignore[operator]
    assert [r.key for p in store.scan() for r in p.records] == [b"a", b"c"]
    # tombstones were left for the deleted keys: a stale copy of them cannot come back
    assert store.apply_many([Record(b"b", b"stale", None, 78), Record(b"mine", b"stale", None,  # type: ignore[attr-defined]
                                                                        versions[(b"mine", b"kvctl")])]) == 0


def test_insert_or_replace_of_a_key_is_a_change_with_a_newer_version(store: Store, db: str) -> None:
    store.set(b"k", b"kvctl")
    before = store.get(b"k").version  # type: ignore[union-attr]
    start = store.feed_cursor()  # type: ignore[attr-defined]
    other_program(db, "INSERT OR REPLACE INTO kv(key, value) VALUES (x'6b', x'7265706c61636564')")
    got = changes(store, start)
    assert [(r.key, r.value) for r in got] == [(b"k", b"replaced")]
    assert got[0].version > before  # type: ignore[operator]


@pytest.mark.parametrize("ahead_ms", [0, HOUR_MS])
def test_insert_or_replace_beats_the_replaced_version_even_ahead_of_the_clock(
        store: Store, db: str, ahead_ms: int) -> None:
    """REPLACE removes the row without a delete trigger: the version it replaced must still be
    beaten (the same millisecond as the write it replaces, or a replica's clock an hour ahead)."""
    replaced = make_version(now_ms() + ahead_ms)
    store.apply_many([Record(b"k", b"kvctl", None, replaced)])  # type: ignore[attr-defined]
    other_program(db, "INSERT OR REPLACE INTO kv(key, value) VALUES (x'6b', x'7265706c61636564')")
    got = store.get(b"k")
    assert got is not None and got.value == b"replaced"
    assert got.version > replaced  # type: ignore[operator]
    # a replica holding the replaced record takes the replacement (last writer wins)
    assert store.apply_many([Record(b"k", b"kvctl", None, replaced)]) == 0  # type: ignore[attr-defined]
    assert store.get(b"k").value == b"replaced"  # type: ignore[union-attr]


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="no sqlite3 shell")
def test_sqlite3_shell_writes_are_in_the_feed(store: Store, db: str) -> None:
    start = store.feed_cursor()  # type: ignore[attr-defined]
    script = ("INSERT INTO kv(key, value) VALUES (CAST('shell' AS BLOB), CAST('hello' AS BLOB));\n"
              "INSERT INTO kv(key, value) VALUES (CAST('gone' AS BLOB), x'00');\n"
              "DELETE FROM kv WHERE key = CAST('gone' AS BLOB);\n")
    subprocess.run(["sqlite3", db], input=script, text=True, check=True, timeout=30)
    got = changes(store, start)
    assert [(r.key, r.kind, r.value) for r in got] == [
        (b"shell", None, b"hello"), (b"gone", None, b"\x00"), (b"gone", TOMBSTONE, b"")]
    assert all(near_now(r.version) for r in got)
    rec = store.get(b"shell")
    assert rec is not None and rec.version == got[0].version


def test_a_write_after_a_future_version_still_wins(store: Store, db: str) -> None:
    future = make_version(now_ms() + 5 * HOUR_MS, 3)  # a replica whose clock runs five hours ahead
    store.apply_many([Record(b"k", b"from the future", None, future)])  # type: ignore[attr-defined]
    other_program(db, "UPDATE kv SET value = x'6c6f63616c'")  # another program, version left alone
    rec = store.get(b"k")
    assert rec is not None and rec.value == b"local" and rec.version > future  # type: ignore[operator]
    other_program(db, "DELETE FROM kv")
    other_program(db, "INSERT INTO kv(key, value) VALUES (x'6b', x'616761696e')")  # k again, at once
    again = store.get(b"k")
    tomb = changes(store, f"s:kv:{store.feed_cursor().split(':')[2]}:0")[-2]  # type: ignore[attr-defined]
    assert tomb.kind == TOMBSTONE and tomb.version > rec.version  # type: ignore[operator]
    assert again is not None and again.version > tomb.version  # type: ignore[operator]


def test_versions_of_one_key_grow_across_writers_sharing_a_node_id(db: str) -> None:
    """Two handles (two processes' worth: separate connections and clocks, one node id) writing
    one key in the same millisecond: each write is versioned above the one it replaces."""
    with open_url(f"sqlite://{db}") as one, open_url(f"sqlite://{db}") as two:
        start = one.feed_cursor()
        for i in range(200):
            (one if i % 2 else two).set(b"k", b"%d" % i)
            if i % 50 == 0:
                (two if i % 2 else one).delete(b"k")
        versions = [r.version for r in changes(one, start) if r.key == b"k"]
        assert len(versions) == 204
        assert all(a < b for a, b in itertools.pairwise(versions))  # type: ignore[operator]


def test_reinsert_by_kvctl_after_a_newer_tombstone_is_raised_above_it(store: Store, db: str) -> None:
    store.apply_many([Record(b"k", b"", None, make_version(now_ms() + HOUR_MS), TOMBSTONE)])  # type: ignore[attr-defined]
    store2 = open_sync(f"sqlite://{db}")  # a clock that has not seen it
    try:
        store2.set(b"k", b"v")
        rec = store2.get(b"k")
        assert rec is not None and physical_ms(rec.version) >= now_ms() + HOUR_MS - 60_000  # type: ignore[arg-type]
    finally:
        store2.close()


def test_given_versions_are_kept_even_when_lower(store: Store) -> None:
    store.set(b"k", b"new")
    store.set_many([Record(b"k", b"older", None, 5), Record(b"n", b"v")])
    got = store.get_many([b"k", b"n"])
    assert got[0] is not None and got[0].version == 5
    assert got[1] is not None and near_now(got[1].version)


# -- cursors, retention and gaps -----------------------------------------------------------------
def test_cursors_of_other_feeds_are_gaps_and_junk_is_refused(db: str, tmp_path: Path) -> None:
    with open_url(f"sqlite://{db}") as a, open_url(f"sqlite://{db}?table=other") as b:
        a.set(b"k", b"v")
        cursor = a.feed_cursor()
        assert cursor.startswith("s:kv:")
        with pytest.raises(FeedGapError, match="table kv"):
            list(b.changes(cursor))
        for junk in ("m:3", "s:kv:abc", "s:kv:x:y", ""):
            with pytest.raises(UsageError):
                list(a.changes(junk))
        with pytest.raises(FeedGapError, match="beyond"):
            list(a.changes(cursor[:-1] + "99"))
    for name in os.listdir(tmp_path):
        os.remove(tmp_path / name)
    with open_url(f"sqlite://{db}") as recreated:  # the same path, a new file: another feed
        recreated.set_many([Record(b"k%d" % i, b"v") for i in range(5)])
        with pytest.raises(FeedGapError, match="another feed"):
            list(recreated.changes(cursor))
        assert len(changes(recreated, "s:kv:" + recreated.feed_cursor().split(":")[2] + ":0")) == 5


def set_per_key(store: Any, prefix: bytes, n: int) -> None:
    """``n`` keys in batches under bulk.DIRECT_MIN_ROWS: one feed change per key (a bigger batch
    into an unused key range is one bulk-load entry: tests/backends/sqlite/test_bulk.py)."""
    for i in range(0, n, 400):
        store.set_many([Record(prefix + b"%05d" % j, b"v") for j in range(i, min(n, i + 400))])


def test_feed_retention_by_count_purges_and_old_cursors_are_gaps(db: str) -> None:
    with open_url(f"sqlite://{db}?feed_retention=100") as store:
        start = store.feed_cursor()
        set_per_key(store, b"a", 6000)
        middle = store.feed_cursor()
        set_per_key(store, b"b", 6000)  # 12,000 writes: a purge ran after the first 10,000
        with pytest.raises(FeedGapError, match="feed_retention"):
            list(store.changes(start))
        with pytest.raises(FeedGapError):
            list(store.changes(middle))
        stats = store.stats()
        assert stats["feed_changes"] == 100 + 2000  # kept by the purge, and written since
        end = store.feed_cursor()
        near_end = end.rsplit(":", 1)[0] + f":{int(end.rsplit(':', 1)[1]) - 100}"
        assert [r.key for r in changes(store, near_end)] == [b"b%05d" % i for i in range(5900, 6000)]


def test_a_purge_between_two_pages_is_a_gap_not_a_hole(db: str) -> None:
    with open_url(f"sqlite://{db}?feed_retention=100") as store:
        start = store.feed_cursor()
        store.set_many([Record(b"a%05d" % i, b"v") for i in range(50)])
        pages = store.changes(start, batch_size=10)
        assert len(next(pages).records) == 10
        with open_url(f"sqlite://{db}?feed_retention=100") as writer:  # another writer purges meanwhile
            set_per_key(writer, b"b", 10_000)
        with pytest.raises(FeedGapError):
            next(pages)


@pytest.mark.parametrize("query", ["table=kv__changes", "table=x__tombs", "table=kvctl_meta", "feed=maybe",
                                   "feed_retention=0", "feed_retention=soon", "tombstone_retention=soon"])
def test_bad_replication_options_are_refused(db: str, query: str) -> None:
    with pytest.raises(BadURLError):
        open_url(f"sqlite://{db}?{query}")
    assert not os.path.exists(db)


def test_feed_retention_by_age(db: str) -> None:
    with open_url(f"sqlite://{db}?feed_retention=1s") as store:
        start = store.feed_cursor()
        store.set_many([Record(b"old%05d" % i, b"v") for i in range(100)])
        time.sleep(1.2)
        after_old = store.feed_cursor()
        store.set_many([Record(b"new%05d" % i, b"v") for i in range(10_000)])  # the purge comes due
        with pytest.raises(FeedGapError):
            list(store.changes(start))
        assert len(changes(store, after_old)) == 10_000  # younger than a second: kept


def test_a_purge_keeps_the_newest_change_so_seq_never_restarts(db: str) -> None:
    with open_url(f"sqlite://{db}?feed_retention=1ms") as store:
        store.set_many([Record(b"a%05d" % i, b"v") for i in range(9_999)])
        time.sleep(0.01)
        end = store.feed_cursor()
        store.set(b"last", b"v")  # the 10,000th write: a purge of everything older than 1 ms
        assert store.stats()["feed_changes"] == 1
        store.set(b"again", b"v")
        got = [(r.key, int(p.cursor.rsplit(":", 1)[1])) for p in store.changes(end, batch_size=1)
               for r in p.records]
        first = int(end.rsplit(":", 1)[1])
        assert got == [(b"last", first + 1), (b"again", first + 2)]


def test_tombstones_are_kept_for_their_retention_then_purged(db: str) -> None:
    with open_url(f"sqlite://{db}?tombstone_retention=1h") as store:
        store.set_many([Record(b"d%05d" % i, b"v") for i in range(10)])
        store.delete_many([b"d%05d" % i for i in range(10)])
        store.set_many([Record(b"x%05d" % i, b"v") for i in range(10_000)])  # a purge: tombstones are young
        assert store.stats()["tombstones"] == 10
        old = make_version(now_ms() - 2 * HOUR_MS)
        store.apply_many([Record(b"ancient", b"", None, old, TOMBSTONE)])
        assert store.stats()["tombstones"] == 11
        store.set_many([Record(b"y%05d" % i, b"v") for i in range(10_000)])
        assert store.stats()["tombstones"] == 10  # the two-hour-old one is past retention


def test_purged_expired_rows_leave_tombstones_with_their_own_version(store: Store) -> None:
    past = now_ms() - 1000
    store.set_many([Record(b"e%d" % i, b"v", past) for i in range(3)])
    versions = {r.key: r.version for r in changes(store, "s:kv:" + store.feed_cursor().split(":")[2] + ":0")}  # type: ignore[attr-defined]
    start = store.feed_cursor()  # type: ignore[attr-defined]
    store.set_many([Record(b"f%05d" % i, b"v") for i in range(10_000)])  # the purge removes e0..e2
    got = [r for r in changes(store, start) if r.kind == TOMBSTONE]
    assert {(r.key, r.version) for r in got} == set(versions.items())
    # an expiry is not a new write: a replica's later write of the key is not beaten by it
    assert store.apply_many([Record(b"e0", b"later", None, versions[b"e0"] + 1)]) == 1  # type: ignore[attr-defined,operator]


def test_clear_lists_every_key_as_deleted(store: Store) -> None:
    store.set_many([Record(b"c%d" % i, b"v") for i in range(5)])
    start = store.feed_cursor()  # type: ignore[attr-defined]
    assert store.clear() == 5
    got = changes(store, start)
    assert sorted(r.key for r in got) == [b"c%d" % i for i in range(5)]
    assert all(r.kind == TOMBSTONE for r in got)


# -- apply_many ----------------------------------------------------------------------------------
def test_apply_many_equal_versions_break_ties_by_content(store: Store) -> None:
    apply = store.apply_many  # type: ignore[attr-defined]
    assert apply([Record(b"k", b"bbb", None, BASE)]) == 1
    assert apply([Record(b"k", b"aaa", None, BASE)]) == 0  # smaller content loses
    assert apply([Record(b"k", b"", None, BASE, TOMBSTONE)]) == 0  # a tombstone loses a tie
    assert apply([Record(b"k", b"ccc", None, BASE)]) == 1  # bigger content wins
    rec = store.get(b"k")
    # the row changed content under the same version: the trigger gives it a newer one (two
    # contents never share a version in one file), which every replica then takes
    assert rec is not None and rec.value == b"ccc" and rec.version > BASE  # type: ignore[operator]


def test_apply_many_refuses_a_bad_batch_before_writing(store: Store) -> None:
    store._conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1000)  # type: ignore[attr-defined]
    with pytest.raises(LimitError):
        store.apply_many([Record(b"a", b"1", None, BASE), Record(b"b", b"x" * 5000, None, BASE)])  # type: ignore[attr-defined]
    assert store.get(b"a") is None
    with pytest.raises(UnsupportedError):
        store.apply_many([Record(b"h", b"", None, BASE, "hash")])  # type: ignore[attr-defined]


def test_readonly_reads_the_feed_and_refuses_apply(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        start = store.feed_cursor()
        store.set(b"k", b"v")
    with open_url(f"sqlite://{db}?readonly=true") as ro:
        assert [r.key for r in changes(ro, start)] == [b"k"]
        with pytest.raises(AuthError):
            ro.apply_many([Record(b"x", b"y", None, BASE)])


# -- the feed switch and the node id -------------------------------------------------------------
def test_feed_off_and_on_again(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        store.set(b"a", b"1")
        cursor = store.feed_cursor()
    with open_url(f"sqlite://{db}?feed=false") as off:
        assert not off.capabilities.change_feed
        assert other_program(db, "SELECT name FROM sqlite_master WHERE name = 'kv__changes'") == []
        off.set(b"b", b"2")
        off.delete(b"a")  # still leaves a tombstone: a correct replication destination
        assert off.apply_many([Record(b"a", b"stale", None, 1)]) == 0
        with pytest.raises(UnsupportedError):
            off.feed_cursor()
    with open_url(f"sqlite://{db}") as kept:  # no option: the mode stays off
        assert not kept.capabilities.change_feed
        assert kept.stats()["feed"] == "off" and kept.stats()["tombstones"] == 1
    with open_url(f"sqlite://{db}?feed=true") as on:
        assert on.capabilities.change_feed
        with pytest.raises(FeedGapError, match="another feed"):
            list(on.changes(cursor))
        fresh = on.feed_cursor()
        other_program(db, "INSERT INTO kv(key, value) VALUES (x'63', x'33')")
        assert [r.key for r in changes(on, fresh)] == [b"c"]
        assert on.get(b"b").value == b"2" and on.get(b"a") is None


def test_another_process_turning_the_feed_off_is_a_gap_for_a_reader(db: str) -> None:
    with open_url(f"sqlite://{db}") as reader:
        cursor = reader.feed_cursor()
        open_url(f"sqlite://{db}?feed=false").close()
        with pytest.raises(FeedGapError, match="off"):
            list(reader.changes(cursor))


def test_node_id_is_random_per_table_kept_and_marks_versions(tmp_path: Path) -> None:
    nodes = set()
    for i in range(6):
        path = str(tmp_path / f"n{i}.db")
        with open_url(f"sqlite://{path}") as store:
            store.set(b"k", b"v")
            version = store.get(b"k").version
        node = node_of(path)
        assert version & 0xFF == node
        with open_url(f"sqlite://{path}") as again:
            again.set(b"k", b"w")
            assert again.get(b"k").version & 0xFF == node
            assert again.stats()["node_id"] == node
        nodes.add(node)
    assert len(nodes) > 1  # six random bytes, all equal: one chance in 256**5


# -- upgrade from schema version 1 ---------------------------------------------------------------
# Exactly what kvctl's schema version 1 created (sqlite_master of a file made by that code path).
V1_TABLE = ('CREATE TABLE "{t}" (id INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, value BLOB NOT NULL, '
            'expires_at INTEGER, version INTEGER NOT NULL)')
V1_INDEXES = ['CREATE INDEX "{t}_expiry" ON "{t}"(expires_at) WHERE expires_at IS NOT NULL',
              'CREATE INDEX "{t}_version" ON "{t}"(version)']
V1_PUT = ('INSERT INTO "{t}"(key, value, expires_at, version) VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE '
          'SET value = excluded.value, expires_at = excluded.expires_at, version = excluded.version')


def make_v1_file(path: str, tables: dict[str, list[tuple[bytes, bytes, int | None, int]]]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("BEGIN IMMEDIATE")
    for table, rows in tables.items():
        conn.execute(V1_TABLE.format(t=table))
        for stmt in V1_INDEXES:
            conn.execute(stmt.format(t=table))
        conn.executemany(V1_PUT.format(t=table), rows)
    conn.execute("PRAGMA user_version=1")
    conn.execute("COMMIT")
    conn.close()


def dump(path: str, table: str) -> list[tuple]:
    return other_program(path, f'SELECT id, key, value, expires_at, version FROM "{table}" ORDER BY id')


def test_upgrade_from_version_1_in_place(db: str) -> None:
    later = now_ms() + HOUR_MS
    v1_rows: dict[str, list[tuple[bytes, bytes, int | None, int]]] = {
        "kv": [(b"a", b"1", None, 100), (b"b", b"2", later, 200)], "other": [(b"x", b"9", None, 300)]}
    make_v1_file(db, v1_rows)
    other_program(db, "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)",  # someone else's things
                  "CREATE VIEW kv_keys AS SELECT key FROM kv",
                  "CREATE INDEX kv_by_value ON kv(value)",
                  "CREATE TRIGGER kv_audit AFTER INSERT ON kv BEGIN INSERT INTO notes(text) VALUES ('ins'); END")
    before = {t: dump(db, t) for t in v1_rows}
    with open_url(f"sqlite://{db}?readonly=true") as ro:  # read-only: read as it is, no feed
        assert ro.get(b"a").value == b"1" and not ro.capabilities.change_feed
        assert ro.stats()["schema_version"] == 1 and ro.stats()["feed"].startswith("off")
    assert other_program(db, "PRAGMA user_version") == [(1,)]
    with open_url(f"sqlite://{db}") as store:
        assert store.stats()["schema_version"] == 5
        assert {t: dump(db, t) for t in v1_rows} == before  # same rows, same ids, same versions
        start = store.feed_cursor()
        store.set(b"c", b"3")
        store.delete(b"a")
        other_program(db, "INSERT INTO kv(key, value) VALUES (x'64', x'34')")
        assert [(r.key, r.kind) for r in changes(store, start)] == [
            (b"c", None), (b"a", TOMBSTONE), (b"d", None)]
        assert store.get(b"b").version == 200 and store.get(b"c").version > 300
    # every kvctl table of the file was upgraded in the same transaction, each with its own meta row
    assert [r[0] for r in other_program(db, "SELECT table_name FROM kvctl_meta ORDER BY 1")] == ["kv", "other"]
    notnull = {row[1]: row[3] for row in other_program(db, 'PRAGMA table_info("other")')}
    assert notnull["version"] == 0
    names = {r[0] for r in other_program(db, "SELECT name FROM sqlite_master")}
    assert {"kv_keys", "kv_by_value", "kv_audit", "notes", "kv_expiry", "kv_version", "other__tombs",
            "other__changes"} <= names
    assert other_program(db, "SELECT count(*) FROM notes") == [(2,)]  # the user's trigger still fires
    assert other_program(db, "SELECT count(*) FROM kv_keys") == [(3,)]
    assert other_program(db, "PRAGMA integrity_check") == [("ok",)]
    with open_url(f"sqlite://{db}?table=other") as other:
        other.set(b"y", b"10")
        assert other.get(b"y").version > 300


def load_v2_file(path: str) -> None:
    """A real schema version 2 file (tests/backends/sqlite/schema_v2.sql, written by kvctl before version 3)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript((Path(__file__).parent / "schema_v2.sql").read_text())
    conn.execute("PRAGMA journal_mode=wal")
    conn.close()


def test_upgrade_from_version_2_keeps_rows_feeds_and_cursors(db: str) -> None:
    load_v2_file(db)
    meta = "SELECT table_name, node_id, feed_id, feed_floor FROM kvctl_meta ORDER BY 1"
    meta_before = other_program(db, meta)
    rows_before = {t: dump(db, t) for t in ("kv", "quiet")}
    tombs_before = other_program(db, "SELECT key, version FROM kv__tombs")
    with open_url(f"sqlite://{db}?readonly=true") as ro:  # read-only: read as it is, its feed too
        assert ro.stats()["schema_version"] == 2 and ro.capabilities.change_feed
        old_cursor = "s:kv:" + ro.feed_cursor().split(":")[2] + ":0"
        assert [(r.key, r.kind) for r in changes(ro, old_cursor)] == [(b"a", None), (b"b", None), (b"b", TOMBSTONE)]
    assert other_program(db, "PRAGMA user_version") == [(2,)]
    with open_url(f"sqlite://{db}") as store:
        assert store.stats()["schema_version"] == 5
        # the feed (its id, its floor, its changes) went through: a cursor from before still reads
        assert [(r.key, r.kind) for r in changes(store, old_cursor)] == [(b"a", None), (b"b", None), (b"b", TOMBSTONE)]
        other_program(db, "INSERT OR REPLACE INTO kv(key, value) VALUES (x'61', x'32')")
        assert store.get(b"a").version > rows_before["kv"][0][4]
    assert other_program(db, meta) == meta_before
    assert dump(db, "quiet") == rows_before["quiet"]
    assert other_program(db, "SELECT key, version FROM kv__tombs") == tombs_before
    triggers = {r[0] for r in other_program(db, "SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert {"kv__kvctl_replace", "quiet__kvctl_replace"} <= triggers
    assert "quiet__changes" not in {r[0] for r in other_program(db, "SELECT name FROM sqlite_master")}
    with open_url(f"sqlite://{db}?table=quiet") as quiet:  # its feed stayed off, its triggers work
        assert not quiet.capabilities.change_feed
        other_program(db, "INSERT OR REPLACE INTO quiet(key, value) VALUES (x'61', x'33')")
        assert quiet.get(b"a").version > rows_before["quiet"][0][4]
    assert other_program(db, "PRAGMA integrity_check") == [("ok",)]


def test_a_failed_upgrade_leaves_the_version_1_file_as_it_was(db: str) -> None:
    make_v1_file(db, {"kv": [(b"a", b"1", None, 100)]})
    other_program(db, "CREATE TABLE kv__tombs (name TEXT)")  # in the way of the upgrade
    before = other_program(db, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    with pytest.raises(Exception, match="kv__tombs"):
        open_url(f"sqlite://{db}")
    assert other_program(db, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == before
    assert other_program(db, "PRAGMA user_version") == [(1,)]
    assert dump(db, "kv") == [(1, b"a", b"1", None, 100)]


def test_a_version_1_writer_still_open_during_the_upgrade_is_captured(db: str) -> None:
    make_v1_file(db, {"kv": []})
    old = sqlite3.connect(db, isolation_level=None)  # a version-1 kvctl process, open before
    old.execute(V1_PUT.format(t="kv"), (b"before", b"1", None, 10))
    with open_url(f"sqlite://{db}") as store:
        start = store.feed_cursor()
        old.execute(V1_PUT.format(t="kv"), (b"after", b"2", None, 20))
        old.execute(V1_PUT.format(t="kv"), (b"before", b"3", None, 30))
        old.execute('DELETE FROM "kv" WHERE key = ?', (b"after",))
        assert [(r.key, r.kind, r.version) for r in changes(store, start)][:3] == [
            (b"after", None, 20), (b"before", None, 30), (b"after", TOMBSTONE, changes(store, start)[2].version)]
    old.close()


def test_concurrent_first_opens_create_the_table_once(tmp_path: Path) -> None:
    db = str(tmp_path / "race.db")
    script = textwrap.dedent("""
        import sys
        from kvctl.registry import open_url
        with open_url(sys.argv[1]) as store:
            store.set(sys.argv[2].encode(), b"v")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, f"sqlite://{db}", f"p{i}"], stderr=subprocess.PIPE)
             for i in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    assert other_program(db, "SELECT count(*) FROM kvctl_meta") == [(1,)]
    with open_url(f"sqlite://{db}") as store:
        assert store.count() == 4
        assert len(changes(store, "s:kv:" + store.feed_cursor().split(":")[2] + ":0")) == 4


# -- several processes ---------------------------------------------------------------------------
KVCTL_WRITER = textwrap.dedent("""
    import json, os, sys, time
    from kvctl.registry import open_url
    from kvctl.store import Record
    url, go, out = sys.argv[1:4]
    while not os.path.exists(go):
        time.sleep(0.001)
    log = []
    with open_url(url) as store:
        for i in range(400):
            key = b"A-%d" % (i % 17)
            if i % 5 == 4:
                if store.delete(key):
                    log.append([key.hex(), "d", ""])
            elif i % 9 == 0:
                batch = [Record(b"A-%d" % ((i + j) % 17), b"%d.%d" % (i, j)) for j in range(3)]
                store.set_many(batch)
                log += [[r.key.hex(), "u", r.value.hex()] for r in batch]
            else:
                store.set(key, b"%d" % i)
                log.append([key.hex(), "u", (b"%d" % i).hex()])
        store.set(b"A-done", b"")
        log.append([b"A-done".hex(), "u", ""])
    json.dump(log, open(out, "w"))
""")

SQL_WRITER = textwrap.dedent("""
    import json, os, sqlite3, sys, time
    path, go, out = sys.argv[1:4]
    while not os.path.exists(go):
        time.sleep(0.001)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    log, live = [], set()
    upsert = "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
    for i in range(400):
        key = b"B-%d" % (i % 13)
        if i % 4 == 3:
            if conn.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount:
                log.append([key.hex(), "d", ""])
        elif i % 10 == 0:  # several statements in one transaction: each is a change
            conn.execute("BEGIN IMMEDIATE")
            for j in range(3):
                k, v = b"B-%d" % ((i + j) % 13), b"%d.%d" % (i, j)
                conn.execute(upsert, (k, v))
                log.append([k.hex(), "u", v.hex()])
            conn.execute("COMMIT")
        else:
            conn.execute(upsert, (key, b"%d" % i))
            log.append([key.hex(), "u", (b"%d" % i).hex()])
    conn.execute(upsert, (b"B-done", b""))
    log.append([b"B-done".hex(), "u", ""])
    json.dump(log, open(out, "w"))
""")

FEED_READER = textwrap.dedent("""
    import json, sys, time
    from kvctl.registry import open_url
    url, cursor, out = sys.argv[1:4]
    seen, done = [], set()
    with open_url(url + "?readonly=true") as store:
        deadline = time.monotonic() + 120
        while len(done) < 2 and time.monotonic() < deadline:
            for page in store.changes(cursor, batch_size=7):
                for r in page.records:
                    seen.append([r.key.hex(), "d" if r.kind else "u", r.value.hex(), r.version])
                    if r.key in (b"A-done", b"B-done"):
                        done.add(r.key)
                cursor = page.cursor
            time.sleep(0.002)
    json.dump(seen, open(out, "w"))
""")


def test_two_writers_and_a_feed_reader_in_other_processes_miss_nothing(db: str, tmp_path: Path) -> None:
    import json

    with open_url(f"sqlite://{db}") as store:
        cursor = store.feed_cursor()
    go = tmp_path / "go"
    out = {name: tmp_path / f"{name}.json" for name in ("a", "b", "reader")}
    procs = [
        subprocess.Popen([sys.executable, "-c", KVCTL_WRITER, f"sqlite://{db}", str(go), str(out["a"])],
                         stderr=subprocess.PIPE),
        subprocess.Popen([sys.executable, "-c", SQL_WRITER, db, str(go), str(out["b"])], stderr=subprocess.PIPE),
        subprocess.Popen([sys.executable, "-c", FEED_READER, f"sqlite://{db}", cursor, str(out["reader"])],
                         stderr=subprocess.PIPE),
    ]
    time.sleep(0.3)  # all three are importing: start the writers together
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode()
    seen = json.loads(out["reader"].read_text())
    for name, prefix in (("a", "A-"), ("b", "B-")):
        written = json.loads(out[name].read_text())
        listed = [s[:3] for s in seen if bytes.fromhex(s[0]).startswith(prefix.encode())]
        assert listed == written, name  # every change of each writer, in its order, once
    by_key: dict[str, list[int]] = {}
    for key, _, _, version in seen:
        by_key.setdefault(key, []).append(version)
    for key, versions in by_key.items():  # a key's versions only grow, whoever wrote it
        assert all(a < b for a, b in itertools.pairwise(versions)), bytes.fromhex(key)

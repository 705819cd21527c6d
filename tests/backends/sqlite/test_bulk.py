"""Big batches of keys the table does not hold: one feed entry for the whole batch (plugins/sqlite/bulk.py).

What must hold is what the per-key path gives: the same rows and versions, a feed reader that
misses no key (across pages and resumed cursors), later changes served after the load, the
triggers in place for other programs, and sync from a bulk-loaded file converging."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from kvctl.engines.replicate import SyncPlan, sync
from kvctl.registry import open_url
from kvctl.store import TOMBSTONE, Record, Store

N = 3000  # above bulk.DIRECT_MIN_ROWS


def keys(prefix: bytes, n: int = N) -> list[bytes]:
    return [prefix + b"%06d" % i for i in range(n)]


def feed_rows(db: str) -> int:
    return int(sqlite3.connect(db).execute("SELECT count(*) FROM kv__changes").fetchone()[0])


def served(store: Store, cursor: str, batch_size: int = 1000) -> list[Record]:
    return [r for page in store.changes(cursor, batch_size=batch_size) for r in page.records]  # type: ignore[attr-defined]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "bulk.db")


def test_a_load_into_an_unused_range_is_one_feed_entry_serving_every_key(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        start = store.feed_cursor()
        store.set_many([Record(k, k[::-1] + b"\x00\xff", None) for k in keys(b"a")])
        assert feed_rows(db) == 1
        got = served(store, start, batch_size=700)
        assert [r.key for r in got] == keys(b"a")
        assert all(r.value == r.key[::-1] + b"\x00\xff" and r.kind is None for r in got)
        # the versions served are those the rows hold, one HLC tick apart
        held = {r.key: r.version for p in store.scan() for r in p.records}
        assert {r.key: r.version for r in got} == held and len(set(held.values())) == N


def test_versions_and_expiries_given_are_kept(db: str) -> None:
    later = 4_102_444_800_000  # 2100-01-01
    records = [Record(k, b"v", later + i, (1 << 50) + i * 256) for i, k in enumerate(keys(b"g"))]
    with open_url(f"sqlite://{db}") as store:
        start = store.feed_cursor()
        store.set_many(records)
        assert feed_rows(db) == 1
        got = served(store, start)
        assert [(r.key, r.expires_at_ms, r.version) for r in got] == [
            (r.key, r.expires_at_ms, r.version) for r in records]


def test_a_load_out_of_key_order_and_not_a_whole_number_of_statements_keeps_every_row(db: str) -> None:
    records = [Record(k, k * 3, None if i % 3 else 4_102_444_800_000 + i, (1 << 50) + i * 256)
               for i, k in enumerate(keys(b"h", 1237))]
    with open_url(f"sqlite://{db}") as store:
        start = store.feed_cursor()
        store.set_many(records[::-1])
        assert feed_rows(db) == 1
        assert [r for p in store.scan() for r in p.records] == records
        assert served(store, start) == records


def test_changes_after_the_load_come_after_it_and_replaced_rows_are_not_served_twice(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        start = store.feed_cursor()
        store.set_many([Record(k, b"old") for k in keys(b"a")])
        store.set(b"a000010", b"new")
        store.delete(b"a000020")
        got = served(store, start)
        by_key: dict[bytes, Record] = {}
        for r in got:  # applied in order, as a sync applies them
            by_key[r.key] = r
        assert by_key[b"a000010"].value == b"new"
        assert by_key[b"a000020"].kind == TOMBSTONE
        assert [r.key for r in got].count(b"a000010") == 1  # the load's row was replaced: served once
        assert len(by_key) == N


def test_a_cursor_taken_inside_a_load_resumes_without_losing_keys(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        start = store.feed_cursor()
        store.set_many([Record(k, b"v") for k in keys(b"a")])
        store.set(b"z", b"after")
        pages = store.changes(start, batch_size=500)
        first = next(pages)
        assert len(first.records) == 500
        rest = served(store, first.cursor, batch_size=500)  # resumes at the load's start
        assert {r.key for r in first.records} | {r.key for r in rest} == set(keys(b"a")) | {b"z"}
        assert rest[-1].key == b"z"


def test_a_range_in_use_goes_key_by_key(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        store.set(b"a001500", b"there")  # inside the batch's range
        store.set_many([Record(k, b"v") for k in keys(b"a")])
        assert feed_rows(db) == 1 + N
        tomb_db = db.replace("bulk.db", "tomb.db")
    with open_url(f"sqlite://{tomb_db}") as store:
        store.set(b"b000100", b"x")
        store.delete(b"b000100")  # a tombstone in the range: the load must remove it, key by key
        store.set_many([Record(k, b"v") for k in keys(b"b")])
        assert store.get(b"b000100").value == b"v"
        assert sqlite3.connect(tomb_db).execute("SELECT count(*) FROM kv__tombs").fetchone()[0] == 0


def test_interleaved_batches_each_go_straight_in(db: str) -> None:
    """A source read in no key order (SCAN, a cluster's slots): every batch after the first
    spans keys already loaded, yet names none of them, so it goes in directly too."""
    every = keys(b"a", 2 * N)
    with open_url(f"sqlite://{db}") as store:
        start = store.feed_cursor()
        store.set_many([Record(k, b"even") for k in every[0::2]])
        store.set_many([Record(k, b"odd") for k in every[1::2]])
        assert feed_rows(db) == 2
        assert [(r.key, r.value) for p in store.scan() for r in p.records] == [
            (k, b"odd" if i % 2 else b"even") for i, k in enumerate(every)]
        assert sorted(r.key for r in served(store, start)) == every


def test_a_batch_naming_a_held_key_past_its_first_probe_goes_key_by_key(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        store.set(b"a002999", b"there")  # the batch's last key: in its last, padded, probe
        store.set_many([Record(k, b"v") for k in keys(b"a")])
        assert feed_rows(db) == 1 + N
        assert store.get(b"a002999").value == b"v"


def test_the_trigger_is_in_place_after_a_load_for_other_programs(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        before = sqlite3.connect(db).execute(
            "SELECT sql FROM sqlite_master WHERE name = 'kv__kvctl_insert'").fetchone()
        start = store.feed_cursor()
        store.set_many([Record(k, b"v") for k in keys(b"a")])
    other = sqlite3.connect(db)
    assert other.execute("SELECT sql FROM sqlite_master WHERE name = 'kv__kvctl_insert'").fetchone() == before
    with other:
        other.execute("INSERT INTO kv(key, value) VALUES (x'7a31', x'31')")  # another program's write
    with open_url(f"sqlite://{db}") as store:
        assert served(store, start)[-1].key == b"z1"


def triggers(db: str) -> list[tuple[str, str]]:
    """(name, text) of the file's triggers, in the order they were created."""
    return sqlite3.connect(db).execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                                       "ORDER BY rowid").fetchall()


def test_every_trigger_is_laid_again_as_it_was_and_fires_for_other_programs(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        store.set(b"0", b"first")
        before = triggers(db)
        start = store.feed_cursor()
        store.set_many([Record(k, b"v") for k in keys(b"a")])
        store.set_many([Record(k, b"v") for k in keys(b"b")])  # a second load: the kept text
        assert feed_rows(db) == 3
    after = triggers(db)
    assert sorted(after) == sorted(before)
    on_insert = {f"kv__kvctl_{s}" for s in ("coerce", "replace", "insert", "stamp_insert")}
    insert_order = [name for name, _ in before if name in on_insert]
    assert [name for name, _ in after if name in insert_order] == insert_order
    other = sqlite3.connect(db)
    with other:  # another program's writes: a TEXT key coerced, a row without a version stamped
        other.execute("INSERT INTO kv(key, value) VALUES ('z1', 'text')")
        other.execute("INSERT INTO kv(key, value) VALUES (x'7a32', x'32')")
    assert other.execute("SELECT typeof(key), typeof(value), version IS NOT NULL FROM kv WHERE key = x'7a31'"
                         ).fetchone() == ("blob", "blob", 1)
    with open_url(f"sqlite://{db}") as store:
        assert [r.key for r in served(store, start)][-2:] == [b"z1", b"z2"]


def test_a_trigger_changed_by_another_connection_between_loads_is_seen(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        store.set_many([Record(k, b"v") for k in keys(b"a")])  # the triggers' text is kept now
        coerce = dict(triggers(db))["kv__kvctl_coerce"]
        other = sqlite3.connect(db)
        with other:
            other.execute("DROP TRIGGER kv__kvctl_coerce")  # no longer laid out as kvctl expects
        store.set_many([Record(k, b"v") for k in keys(b"b")])
        assert feed_rows(db) == 1 + N  # the upsert's way, key by key
        assert "kv__kvctl_coerce" not in dict(triggers(db))  # not laid again from the kept text
        with other:
            other.execute(coerce)
        store.set_many([Record(k, b"v") for k in keys(b"c")])
        assert feed_rows(db) == 2 + N  # direct again
        assert dict(triggers(db))["kv__kvctl_coerce"] == coerce


def test_a_load_with_the_feed_off_writes_no_feed_and_keeps_the_trigger(tmp_path: Path) -> None:
    db = str(tmp_path / "nofeed.db")
    with open_url(f"sqlite://{db}?feed=false") as store:
        store.set_many([Record(k, b"v") for k in keys(b"a")])
        assert store.get(b"a000001").value == b"v"
    names = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert "kv__kvctl_insert" in names


def test_sync_from_a_bulk_loaded_file_converges(tmp_path: Path) -> None:
    a, b = f"sqlite://{tmp_path}/a.db", f"sqlite://{tmp_path}/b.db"
    with open_url(a) as src:
        src.set_many([Record(k, b"1") for k in keys(b"a")])
    first = asyncio.run(sync(SyncPlan(a, b, tmp_path)))
    assert first.converged
    with open_url(a) as src:
        src.set_many([Record(k, b"2") for k in keys(b"b")])  # a second load, read through the feed
        src.set(b"a000001", b"changed")
    second = asyncio.run(sync(SyncPlan(a, b, tmp_path)))
    assert (second.mode, second.converged) == ("feed", True)
    with open_url(a) as src, open_url(b) as dst:
        assert ({(r.key, r.value) for p in src.scan() for r in p.records}
                == {(r.key, r.value) for p in dst.scan() for r in p.records})
        assert len({r.key for p in dst.scan() for r in p.records}) == 2 * N


def test_an_older_file_is_raised_to_version_5_by_a_write(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        store.set(b"a", b"1")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version=4")
    conn.close()
    with open_url(f"sqlite://{db}?readonly=true") as ro:
        assert ro.get(b"a").value == b"1"
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 4  # a read changes nothing
    with open_url(f"sqlite://{db}") as store:
        store.set_many([Record(k, b"v") for k in keys(b"b")])
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 5

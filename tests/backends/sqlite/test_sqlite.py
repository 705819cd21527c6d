"""The sqlite backend: the conformance suite, plus files, options, processes and failures."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from kvctl.errors import (
    AuthError,
    BadURLError,
    CorruptError,
    ForeignStoreError,
    LimitError,
    LockedError,
    StoreIOError,
    UsageError,
)
from kvctl.hlc import make_version, physical_ms
from kvctl.registry import open_url
from kvctl.store import Record, now_ms
from kvctl.testing import StoreConformance
from tests.backends.support import async_adapter_works, two_processes_write


class TestSQLiteConformance(StoreConformance):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite://{tmp_path}/kv.db"


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "kv.db")


def rows(path: str, table: str = "kv") -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f'SELECT key, value, expires_at, version FROM "{table}" ORDER BY key').fetchall()


# -- URLs and options ----------------------------------------------------------------------------
def test_relative_path_and_pragmas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    os.mkdir("sub")
    with open_url("sqlite://sub/rel.db?synchronous=full&timeout=2s") as store:
        store.set(b"k", b"v")
        stats = store.stats()
        assert stats["journal_mode"] == "wal" and stats["synchronous"] == "full"
        assert stats["schema_version"] == 5 and stats["keys"] == 1
        assert stats["path"] == str(tmp_path / "sub" / "rel.db") and stats["file_bytes"] > 0
    assert rows(str(tmp_path / "sub" / "rel.db"))[0][:2] == (b"k", b"v")


@pytest.mark.parametrize("query", ["nope=1", "table=bad-name", "table=sqlite_x", "synchronous=sometimes",
                                   "timeout=soon", "journal_mode=off", "readonly=maybe"])
def test_bad_options_are_refused(db: str, query: str) -> None:
    with pytest.raises(BadURLError):
        open_url(f"sqlite://{db}?{query}")
    assert not os.path.exists(db)


def test_memory_path_is_refused() -> None:
    with pytest.raises(BadURLError):
        open_url("sqlite://:memory:")


def test_tables_in_one_file_are_independent(db: str) -> None:
    with open_url(f"sqlite://{db}?table=a") as a, open_url(f"sqlite://{db}?table=b") as b:
        a.set(b"k", b"from a")
        b.set(b"k", b"from b")
        assert a.get(b"k").value == b"from a" and b.get(b"k").value == b"from b"
        assert a.clear() == 1 and b.count() == 1


# -- the files it is given -----------------------------------------------------------------------
def test_not_a_database_is_corrupt_and_untouched(db: str) -> None:
    junk = b"this is not a database, just text\n" * 200
    Path(db).write_bytes(junk)
    with pytest.raises(CorruptError, match=r"kv\.db"):
        open_url(f"sqlite://{db}")
    assert Path(db).read_bytes() == junk
    assert not os.path.exists(db + "-wal")


def test_directory_and_missing_parent(tmp_path: Path) -> None:
    with pytest.raises(StoreIOError, match="is a directory"):
        open_url(f"sqlite://{tmp_path}")
    with pytest.raises(StoreIOError, match="does not exist"):
        open_url(f"sqlite://{tmp_path}/missing/kv.db")
    assert not (tmp_path / "missing").exists()  # a mistyped path grows no directories


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(db: str) -> None:
    Path(db).write_bytes(b"")
    os.chmod(db, 0)
    with pytest.raises(AuthError):
        open_url(f"sqlite://{db}")


def test_foreign_table_is_left_alone(db: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE kv (name TEXT, amount INTEGER)")
        conn.execute("INSERT INTO kv VALUES ('x', 1)")
    with pytest.raises(UsageError, match="not a kvctl table"):
        open_url(f"sqlite://{db}")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM kv").fetchall() == [("x", 1)]
    # another table beside an application's tables: only when asked for (nothing is changed before)
    with pytest.raises(ForeignStoreError, match=r"none of kvctl.s: kv \(no key to map it by\)"):
        open_url(f"sqlite://{db}?table=kvctl")
    with open_url(f"sqlite://{db}?table=kvctl&create=true") as store:
        store.set(b"k", b"v")
    with open_url(f"sqlite://{db}?table=kvctl") as store:  # now a file kvctl has written to
        assert store.get(b"k").value == b"v"


def test_newer_schema_is_refused(db: str) -> None:
    open_url(f"sqlite://{db}").close()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(UsageError, match="schema version 99"):
        open_url(f"sqlite://{db}")


def test_readonly(db: str) -> None:
    with pytest.raises(StoreIOError):
        open_url(f"sqlite://{db}?readonly=true")
    assert not os.path.exists(db)
    with open_url(f"sqlite://{db}") as store:
        store.set(b"k", b"v")
    with open_url(f"sqlite://{db}?readonly=true") as ro:
        assert ro.get(b"k").value == b"v"
        with pytest.raises(AuthError):
            ro.set(b"k", b"w")
    assert rows(db)[0][1] == b"v"


# -- batches, TTLs, versions ---------------------------------------------------------------------
def test_get_many_over_chunks_keeps_order_and_duplicates(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        store.set_many(Record(b"k%05d" % i, b"%d" % i) for i in range(0, 2500, 2))
        keys = [b"k%05d" % i for i in reversed(range(2500))] + [b"k00000", b"k00000", b"nope"]
        got = store.get_many(keys)
        assert len(got) == len(keys)
        for key, rec in zip(keys, got, strict=True):
            i = int(key[1:]) if key != b"nope" else 1
            assert (rec is not None) == (i % 2 == 0), key
            assert rec is None or rec.key == key


def test_failed_batch_is_not_half_applied(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        store.set(b"keep", b"old")
        # Lower SQLite's own length limit so the third row fails inside executemany.
        store._conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1000)
        batch = [Record(b"a", b"1"), Record(b"keep", b"new"), Record(b"big", b"x" * 5000), Record(b"z", b"2")]
        with pytest.raises(LimitError):
            store.set_many(batch)
        assert store.get(b"keep").value == b"old"
        assert store.get_many([b"a", b"big", b"z"]) == [None, None, None]


def test_expired_rows_are_purged(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        store.set_many([Record(b"old%d" % i, b"v", now_ms() - 1000) for i in range(5)])
        store.set(b"live", b"v", ttl_ms=3_600_000)
        assert store.count() == 1 and store.get(b"old1") is None  # seen expired: purge is due
        store.set(b"next", b"v")  # the next write purges
        assert [r[0] for r in rows(db)] == [b"live", b"next"]


def test_versions_grow_across_reopen(db: str) -> None:
    future = make_version(now_ms() + 86_400_000, 7)  # a version from a clock a day ahead
    with open_url(f"sqlite://{db}") as store:
        store.set(b"a", b"1")
        v1 = store.get(b"a").version
        store.set_many([Record(b"b", b"2", None, future)])
        store.set_many([Record(b"c", b"x"), Record(b"d", b"y")])
        c, d = store.get_many([b"c", b"d"])
        assert c.version > future and d.version > c.version
    with open_url(f"sqlite://{db}") as again:  # seeded with MAX(version) on open
        again.set(b"a", b"3")
        v3 = again.get(b"a").version
        assert v3 > d.version > v1
        assert physical_ms(v3) >= physical_ms(future)


def test_used_from_another_thread(db: str) -> None:
    with open_url(f"sqlite://{db}") as store:
        store.set(b"k", b"v")
        seen: list[object] = []
        worker = threading.Thread(target=lambda: seen.append(store.get(b"k")))
        worker.start()
        worker.join()
        assert seen[0].value == b"v"  # type: ignore[attr-defined]


# -- other writers -------------------------------------------------------------------------------
def test_locked_database_times_out(db: str) -> None:
    open_url(f"sqlite://{db}").close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with open_url(f"sqlite://{db}?timeout=200ms") as store:
            start = time.monotonic()
            with pytest.raises(LockedError):
                store.set(b"k", b"v")
            with pytest.raises(LockedError):
                store.set_many([Record(b"a", b"1"), Record(b"b", b"2")])
            assert time.monotonic() - start < 5
            assert store.get(b"k") is None  # readers are not blocked by the writer in WAL mode
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_two_processes_write_one_file(db: str, tmp_path: Path) -> None:
    url = f"sqlite://{db}?timeout=30s"
    two_processes_write(url, tmp_path)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_async_adapter_runs_it_on_a_worker_thread(db: str) -> None:
    async_adapter_works(f"sqlite://{db}")

"""The conformance suite on mapped SQLite and libSQL tables (local files and a libSQL server) whose
key and value columns are BLOBs."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvctl.testing.mapped import MappedStoreConformance
from tests.backends.libsql.sqld import hrana, private_sqld

DDL = ("CREATE TABLE app_cache (k BLOB PRIMARY KEY, v BLOB NOT NULL, exp INTEGER, ver INTEGER, "
       "note TEXT NOT NULL DEFAULT 'kept')")
QUERY = "table=app_cache&key=k&value=v&expires=exp:ms&version=ver:ms&write=true"


def app_file(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute(DDL)
    conn.close()
    return path


class TestMappedSQLiteConformance(MappedStoreConformance):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite://{app_file(tmp_path / 'app.db')}?{QUERY}"


class TestMappedLibSQLConformance(MappedStoreConformance):
    batch_records = 200

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"libsql://{app_file(tmp_path / 'app.db')}?{QUERY}"


@pytest.fixture(scope="module")
def sqld_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with private_sqld(tmp_path_factory.mktemp("sqld")) as port:
        yield port


_tables = itertools.count()


class TestMappedLibSQLRemoteConformance(MappedStoreConformance):
    """The same table on a libSQL server of the test's own, made by another program (over Hrana):
    a new table a test, so no test sees another's rows."""

    batch_records = 200

    @pytest.fixture
    def store_url(self, sqld_port: int) -> str:
        table = f"app_cache_{next(_tables)}"
        hrana(sqld_port, DDL.replace("app_cache", table))
        return f"libsql://127.0.0.1:{sqld_port}?tls=0&{QUERY.replace('app_cache', table)}"


def test_a_libsql_server_lists_its_tables_and_reads_leave_them_alone(sqld_port: int) -> None:
    from kvctl.registry import open_sync
    from kvctl.store import Record

    hrana(sqld_port, "CREATE TABLE listed (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
          "INSERT INTO listed VALUES ('a', 'one'), ('b', 'two')")
    base = f"libsql://127.0.0.1:{sqld_port}?tls=0"
    before = hrana(sqld_port, "SELECT type, name, sql FROM sqlite_master ORDER BY name", "SELECT * FROM listed")
    with open_sync(f"{base}&table=*", access="read") as listing:
        tables = {r.key: r.value for p in listing.scan() for r in p.records}
    assert b'"url":"' + f"{base}&table=listed&key=id&value=body".encode() + b'"' in tables[b"listed"]
    url = f"{base}&table=listed&key=id&value=body"
    with open_sync(url, access="read") as store:
        assert [(r.key, r.value) for p in store.scan() for r in p.records] == [(b"a", b"one"), (b"b", b"two")]
        assert store.count() == 2 and store.get(b"b") == Record(b"b", b"two")
    assert hrana(sqld_port, "SELECT type, name, sql FROM sqlite_master ORDER BY name", "SELECT * FROM listed") == before

"""The conformance suite on mapped SQLite and libSQL tables whose key and value columns are BLOBs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kvctl.testing.mapped import MappedStoreConformance

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

"""The sqlite backend under the shared replication suites, with another program's plain SQL among
the writes; its own feed rules (triggers, retention, upgrades) are in test_feed.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from kvctl.testing.replication import ReplicationConformance, SyncConformance


def sqlite_urls(tmp_path: Path) -> Callable[[str], str]:
    return lambda name: f"sqlite://{tmp_path}/{name}.db"


def plain_sql(url: str, key: bytes, value: bytes | None) -> None:
    """Another program's write (``value`` None: a delete): plain SQL on a connection of its own, no
    version given, so the triggers stamp one."""
    other = sqlite3.connect(url.removeprefix("sqlite://"), timeout=30)
    try:
        with other:
            if value is None:
                other.execute("DELETE FROM kv WHERE key = ?", (key,))
            else:
                other.execute("INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                              "SET value = excluded.value", (key, value))
    finally:
        other.close()


class TestSQLiteReplication(ReplicationConformance):
    @pytest.fixture
    def new_url(self, tmp_path: Path) -> Callable[[str], str]:
        return sqlite_urls(tmp_path)


class TestSQLiteSync(SyncConformance):
    @pytest.fixture
    def new_url(self, tmp_path: Path) -> Callable[[str], str]:
        return sqlite_urls(tmp_path)

    other_program = staticmethod(plain_sql)

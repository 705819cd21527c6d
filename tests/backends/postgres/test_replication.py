"""The postgres backend under the shared replication suites, on the server started by
tests/services.sh, with another program's plain SQL among the writes; its own feed rules
(triggers, transactions, retention, upgrades) are in test_feed.py."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from urllib.parse import parse_qs

import asyncpg
import pytest
from kvctl_plugins.postgres.settings import quote_ident

from kvctl.testing.replication import ReplicationConformance, SyncConformance

pytestmark = pytest.mark.server

PREFIX = f"kvctl_r{os.getpid()}_{uuid.uuid4().hex[:6]}"


def tables(pg_url: str) -> Callable[[str], str]:
    run = uuid.uuid4().hex[:8]
    return lambda name: f"{pg_url}{'&' if '?' in pg_url else '?'}table={PREFIX}_{run}_{name}"


class TestPostgresReplication(ReplicationConformance):
    @pytest.fixture
    def new_url(self, pg_url: str) -> Callable[[str], str]:
        return tables(pg_url)


class TestPostgresSync(SyncConformance):
    sync_records = 2000
    kill_rounds = 20

    @pytest.fixture
    def new_url(self, pg_url: str) -> Callable[[str], str]:
        return tables(pg_url)

    def other_program(self, url: str, key: bytes, value: bytes | None) -> None:
        """Plain SQL, no version given: the table's triggers stamp one and list it in the feed."""
        base, _, query = url.partition("?")
        options = parse_qs(query)
        table = quote_ident(options.pop("table")[0])
        rest = "&".join(f"{k}={v[0]}" for k, v in options.items())

        async def write() -> None:
            con = await asyncpg.connect(base + (f"?{rest}" if rest else ""))
            try:
                if value is None:
                    await con.execute(f"DELETE FROM {table} WHERE key = $1", key)
                else:
                    await con.execute(f"INSERT INTO {table} (key, value) VALUES ($1, $2) ON CONFLICT (key) "
                                      "DO UPDATE SET value = EXCLUDED.value", key, value)
            finally:
                await con.close()

        asyncio.run(write())

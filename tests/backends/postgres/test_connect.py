"""The one connection helper of the PostgreSQL backend (kvctl_plugins.postgres.connect), on the
real server started by tests/services.sh: a read-only session is refused any change by the server
itself (as the mapped store's catalog reads and its read-only stores get), the default leaves
the session as the server sets it."""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
import pytest
from kvctl_plugins.postgres.connect import connect
from kvctl_plugins.postgres.settings import parse_settings

from kvctl.store import StoreURL

pytestmark = pytest.mark.server

PREFIX = f"kvctl_cn{os.getpid()}_{uuid.uuid4().hex[:6]}"  # the pg_url fixture's: this file makes no table


def test_a_read_only_session_is_refused_any_change_by_the_server(pg_url: str) -> None:
    settings = parse_settings(StoreURL.parse(pg_url))

    async def work() -> tuple[str, str, str]:
        ro, rw, default = [await connect(settings, "here", read_only=flag) for flag in (True, False, None)]
        try:
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await ro.execute("CREATE TEMP TABLE kvctl_connect_probe (a int)")
            shown = [await c.fetchval("SHOW default_transaction_read_only") for c in (ro, rw, default)]
            return shown[0], shown[1], shown[2]
        finally:
            for c in (ro, rw, default):
                await c.close()

    assert asyncio.run(work()) == ("on", "off", "off")


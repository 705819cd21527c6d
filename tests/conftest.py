"""Shared test set-up: the server URLs started by tests/services.sh, and SIGINT.

When KVCTL_SERVICES=required (the README's test command sets it), a test that needs a server
fails if that server's URL is missing; otherwise such a test is skipped with the reason.
"""

from __future__ import annotations

import os
import shlex
import signal
from pathlib import Path

import pytest

from kvctl.testing.cli import clean_env

SERVICES_DIR = Path(os.environ.get("KVCTL_SERVICES_DIR", "/tmp/kvctl-services"))


def _load_services_env() -> None:
    envfile = SERVICES_DIR / "env"
    if not envfile.exists():
        return
    for line in envfile.read_text().splitlines():
        parts = shlex.split(line)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            name, _, value = parts[1].partition("=")
            os.environ.setdefault(name, value)


_load_services_env()

# A suite started in the background by a shell without job control (`cmd &` in a script, some CI
# runners) inherits SIGINT ignored, and every kvctl it starts would too (an ignored signal stays
# ignored across exec): the Ctrl-C tests would then watch kvctl not stop.  A handler, unlike
# SIG_IGN, is reset to the default at exec, so the children see Ctrl-C as a terminal delivers it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean user environment for a kvctl subprocess: XDG dirs in tmp, no KVCTL_* variables."""
    return clean_env(tmp_path)


def drop_postgres_objects(url: str, prefix: str) -> None:
    """Drop every table and function a PostgreSQL test module made under ``prefix`` (kvctl's
    feed tables, trigger functions and ``kvctl_meta`` rows included): the shared server outlives it."""
    import asyncio

    import asyncpg
    from kvctl_plugins.postgres.settings import quote_ident

    async def drop() -> None:
        con = await asyncpg.connect(url)
        try:
            for (name,) in await con.fetch("SELECT tablename FROM pg_tables WHERE tablename LIKE $1", prefix + "%"):
                await con.execute(f"DROP TABLE IF EXISTS {quote_ident(name)} CASCADE")
            for (name,) in await con.fetch("SELECT proname FROM pg_proc WHERE proname LIKE $1", prefix + "%"):
                await con.execute(f"DROP FUNCTION IF EXISTS {quote_ident(name)}() CASCADE")
            await con.execute("DELETE FROM kvctl_meta WHERE table_name LIKE $1", prefix + "%")
        finally:
            await con.close()

    asyncio.run(drop())


def service_url(var: str) -> str:
    """The URL a services script exported as ``var``; fail or skip when it is absent."""
    url = os.environ.get(var)
    if url:
        return url
    message = f"{var} is not set: start the servers with `tests/services.sh start`"
    if os.environ.get("KVCTL_SERVICES") == "required":
        pytest.fail(message)
    pytest.skip(message)

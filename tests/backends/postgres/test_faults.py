"""Faults on a real PostgreSQL: unreachable, silent, wrong password, no permission, no database,
a server process killed between and during commands, and a whole server stopped mid-write.

Every error must be one line naming the redacted URL with its documented exit code, and a batch
cut off mid-command must not have been applied at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from kvctl_plugins.postgres.settings import quote_ident
from kvctl_plugins.postgres.store import COPY_MIN_ROWS

from kvctl.errors import AuthError, KvctlError, TimedOutError, UnavailableError
from kvctl.store import Record
from kvctl.testing import open_sync

pytestmark = pytest.mark.server

SERVICES = Path(__file__).parents[2] / "services"  # tests/services
PREFIX = f"kvctl_f{os.getpid()}_{uuid.uuid4().hex[:6]}"


def _run(coro):
    return asyncio.run(coro)


def with_user(url: str, user: str, password: str | None) -> str:
    parts = urlsplit(url)
    auth = user if password is None else f"{user}:{password}"
    return parts._replace(netloc=f"{auth}@{parts.hostname}:{parts.port}").geturl()


def assert_clean(exc: KvctlError, url_text: str, *secrets: str) -> None:
    message = str(exc)
    assert "\n" not in message
    assert url_text in message, message
    for secret in secrets:
        assert secret not in message


# -- unreachable and silent servers -------------------------------------------------------------
def test_unreachable_server() -> None:
    url = "postgresql://kv:topsecret@127.0.0.1:1/db?table=t"
    store = open_sync(url)
    try:
        with pytest.raises(UnavailableError) as info:
            store.set(b"k", b"v")
        assert info.value.exit_code == 69
        assert_clean(info.value, "postgresql://kv:***@127.0.0.1:1/db?table=t", "topsecret")
    finally:
        store.close()


def test_server_that_never_answers_times_out() -> None:
    # A real socket that accepts connections (in the kernel backlog) and never speaks.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        url = f"postgresql://kv@127.0.0.1:{port}/db?connect_timeout=300ms"
        store = open_sync(url)
        try:
            started = time.monotonic()
            with pytest.raises(TimedOutError) as info:
                store.get(b"k")
            assert time.monotonic() - started < 5
            assert info.value.exit_code == 69
            assert_clean(info.value, url)
        finally:
            store.close()


# -- authentication and permissions -------------------------------------------------------------
@pytest.fixture
def password_role(pg_url: str) -> Iterator[tuple[str, str, str]]:
    """A login role that must give its password over TCP (tests/services/postgres.sh puts members
    of kvctl_password_auth under scram-sha-256), owning a schema of its own."""
    role = f"{PREFIX}_role"
    password = "right-" + uuid.uuid4().hex[:12]

    async def admin(*statements: str) -> None:
        con = await asyncpg.connect(pg_url)
        try:
            for stmt in statements:
                await con.execute(stmt)
        finally:
            await con.close()

    _run(admin(
        f"CREATE ROLE {quote_ident(role)} LOGIN PASSWORD '{password}' IN ROLE kvctl_password_auth",
        f"CREATE SCHEMA {quote_ident(role)} AUTHORIZATION {quote_ident(role)}",
    ))
    try:
        yield role, password, role
    finally:
        _run(admin(f"DROP SCHEMA IF EXISTS {quote_ident(role)} CASCADE",
                   f"DROP ROLE IF EXISTS {quote_ident(role)}"))


def test_wrong_password_is_an_auth_error(pg_url: str, password_role: tuple[str, str, str]) -> None:
    role, password, schema = password_role
    wrong = with_user(pg_url, role, "wrong-password-xyz") + f"?schema={schema}"
    store = open_sync(wrong)
    try:
        with pytest.raises(AuthError) as info:
            store.get(b"k")
        assert info.value.exit_code == 77
        assert "password authentication failed" in str(info.value)
        assert_clean(info.value, with_user(pg_url, role, "***"), "wrong-password-xyz")
    finally:
        store.close()
    # The right password works, in the role's own schema (where kvctl_meta is created too).
    right = open_sync(with_user(pg_url, role, password) + f"?schema={schema}&table=kv")
    try:
        right.set(b"k", b"v")
        assert right.get(b"k").value == b"v"  # type: ignore[union-attr]
        assert right.stats()["table"] == f"{schema}.kv"
    finally:
        right.close()


def test_no_password_for_a_password_role(pg_url: str, password_role: tuple[str, str, str]) -> None:
    role, _, schema = password_role
    with open_sync(with_user(pg_url, role, None) + f"?schema={schema}") as store, pytest.raises(AuthError):
        store.get(b"k")


def test_permission_denied_is_an_auth_error(pg_url: str, password_role: tuple[str, str, str]) -> None:
    role, password, _ = password_role
    # The role may log in but has no rights in public (PostgreSQL 15 grants no CREATE there, and
    # kvctl_meta there belongs to postgres).
    url = with_user(pg_url, role, password) + f"?schema=public&table={PREFIX}_denied"
    store = open_sync(url)
    try:
        with pytest.raises(AuthError) as info:
            store.set(b"k", b"v")
        assert "permission denied" in str(info.value)
        assert_clean(info.value, with_user(pg_url, role, "***"), password)
    finally:
        store.close()


def test_unknown_role_is_an_auth_error(pg_url: str) -> None:
    url = with_user(pg_url, f"{PREFIX}_nobody", None)
    with open_sync(url) as store, pytest.raises(AuthError, match="does not exist"):
        store.get(b"k")


def test_missing_database(pg_url: str) -> None:
    url = pg_url.rsplit("/", 1)[0] + f"/{PREFIX}_nodb"
    with open_sync(url) as store, pytest.raises(UnavailableError, match="does not exist"):
        store.get(b"k")


# -- the server process dies ---------------------------------------------------------------------
async def _admin_fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    con = await asyncpg.connect(url)
    try:
        return await con.fetch(query, *args)
    finally:
        await con.close()


def _backend_pids(url: str, app: str, *, waiting: bool = False) -> list[int]:
    query = "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
    if waiting:
        query += " AND wait_event_type = 'Lock'"
    return [r[0] for r in _run(_admin_fetch(url, query, app))]


def test_backend_killed_between_commands_reconnects(pg_url: str) -> None:
    app = f"{PREFIX}_between"
    url = f"{pg_url}?table={PREFIX}_between&application_name={app}"
    store = open_sync(url)
    try:
        store.set(b"k", b"v")
        (pid,) = _backend_pids(pg_url, app)
        _run(_admin_fetch(pg_url, "SELECT pg_terminate_backend($1)", pid))
        with pytest.raises(UnavailableError) as info:
            store.get(b"k")
        assert_clean(info.value, url)
        # The broken connection was dropped: the next call reconnects.
        assert store.get(b"k").value == b"v"  # type: ignore[union-attr]
    finally:
        store.close()


def _write_blocked_then_cut(
    url: str, admin_url: str, app: str, table: str, batch: list[Record], cut: Callable[[int], None]
) -> BaseException | None:
    """Start ``set_many(batch)`` while another session holds a lock on the table, wait until the
    write is blocked inside the server, call ``cut(pid)``, and return what the write raised."""
    connected, locked = threading.Event(), threading.Event()

    def write() -> BaseException | None:
        store = open_sync(url)
        try:
            store.count()  # connects and creates the table, so that it can be locked
            connected.set()
            assert locked.wait(10)
            store.set_many(batch)
            return None
        except BaseException as exc:  # handed to the test thread
            return exc
        finally:
            connected.set()
            store.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool, asyncio.Runner() as admin:
        result = pool.submit(write)
        assert connected.wait(10)
        con = admin.run(asyncpg.connect(admin_url))
        try:
            admin.run(con.execute("BEGIN"))
            admin.run(con.execute(f"LOCK TABLE {quote_ident(table)} IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            deadline = time.monotonic() + 10
            while not (pids := _backend_pids(admin_url, app, waiting=True)):
                assert time.monotonic() < deadline, "the write never blocked on the lock"
                time.sleep(0.02)
            cut(pids[0])
        finally:
            locked.set()
            with contextlib.suppress(Exception):
                admin.run(con.close(timeout=2))
        return result.result(timeout=30)


@pytest.mark.parametrize("rows", [10, COPY_MIN_ROWS], ids=["unnest", "copy"])
def test_backend_killed_mid_batch_applies_nothing(pg_url: str, rows: int) -> None:
    app = f"{PREFIX}_mid{rows}"
    table = f"{PREFIX}_mid{rows}"
    url = f"{pg_url}?table={table}&application_name={app}"
    batch = [Record(b"m%05d" % i, b"v") for i in range(rows)]

    def kill(pid: int) -> None:
        _run(_admin_fetch(pg_url, "SELECT pg_terminate_backend($1)", pid))

    exc = _write_blocked_then_cut(url, pg_url, app, table, batch, kill)
    assert isinstance(exc, UnavailableError), exc
    assert "applied entirely or not at all" in str(exc)
    assert_clean(exc, url)
    check = open_sync(url)
    try:
        assert check.count() == 0  # nothing of the batch was applied
    finally:
        check.close()


# -- the whole server stops mid-write (a private instance from tests/services/postgres.sh) ------
@pytest.fixture
def private_server() -> Iterator[tuple[str, dict[str, str]]]:
    if shutil.which("runuser") is None and os.geteuid() == 0:
        pytest.fail("runuser is needed to run PostgreSQL as root")
    base = tempfile.mkdtemp(prefix="kvctl-pg-fault-", dir="/tmp")
    os.chmod(base, 0o755)  # the postgres user must reach it
    env = {**os.environ, "KVCTL_SERVICES_DIR": base}
    script = str(SERVICES / "postgres.sh")
    out = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("export KVCTL_TEST_POSTGRES_URL=") and "\n" not in line
    url = line.split("=", 1)[1]
    try:
        yield url, env
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_server_stopped_mid_batch(private_server: tuple[str, dict[str, str]]) -> None:
    url, env = private_server
    script = str(SERVICES / "postgres.sh")
    app = "kvctl_fault_stop"
    table = "kv_stop"
    store_url = f"{url}?table={table}&application_name={app}"
    batch = [Record(b"s%04d" % i, b"v") for i in range(100)]

    def stop_server(pid: int) -> None:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=60, check=True)

    exc = _write_blocked_then_cut(store_url, url, app, table, batch, stop_server)
    assert isinstance(exc, UnavailableError), exc
    assert_clean(exc, store_url)
    # Server down: a clean error, not a hang or a traceback.
    with open_sync(store_url) as down, pytest.raises(UnavailableError):
        down.get(b"s0000")
    # Up again (same data directory): nothing of the batch is there.
    out = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    again = open_sync(out.stdout.strip().split("=", 1)[1] + f"?table={table}")
    try:
        assert again.count() == 0
    finally:
        again.close()


def test_a_broken_protocol_state_is_a_lost_connection() -> None:
    # seen when the server stops mid-COPY: asyncpg's state machine breaks instead of raising a
    # connection error; it must read as unavailable (exit 69), not as an internal error
    import asyncpg
    from kvctl_plugins.postgres.errors import translate

    err = translate(asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
                    "postgresql://u@h/db", "write", writing=True)
    assert isinstance(err, UnavailableError) and "applied entirely or not at all" in str(err)

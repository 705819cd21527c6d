"""A kvctl libsql URL -> what libsql-client connects to, and the backend's options.

    libsql:///abs/path.db              local file   -> libsql-client file:/abs/path.db
    libsql:relative/path.db            local file   -> file:/cwd/relative/path.db
    libsql://HOST[:PORT]?authToken=T   remote       -> libsql://HOST (WebSocket over TLS; ?tls=0
                                                       (or false/no/off) with an explicit port:
                                                       plain ws://)
    libsql+wss://HOST[:PORT]           remote       -> wss://HOST (Hrana over WebSocket)
    libsql+https://HOST[:PORT]         remote       -> https://HOST (Hrana over HTTP)

A URL with a host is always remote (``libsql://localhost:8080`` is a local sqld server, not a
file); a file path has no host.  The auth token comes from ``authToken=`` (Turso's spelling) or
from the environment variable named by ``authToken_env=``; it is passed to the client as its own
argument, never left in a URL, and kvctl redacts it from everything it prints.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from kvctl.errors import BadURLError, UsageError
from kvctl.plugin_kit.mapped import MAPPED_OPTIONS, is_mapped
from kvctl.url import StoreURL

COMMON_OPTIONS = {"table", "timeout", "create", *MAPPED_OPTIONS}
LOCAL_OPTIONS = COMMON_OPTIONS | {"journal_mode"}
MAPPED_LOCAL_OPTIONS = COMMON_OPTIONS - {"create"}  # kvctl's own layout options do not apply to an application's table
REMOTE_OPTIONS = COMMON_OPTIONS | {"authToken", "authToken_env", "tls"}
JOURNAL_MODES = ("wal", "delete", "truncate", "persist")
DEFAULT_TIMEOUT_MS = 30_000
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_REMOTE_SCHEMES = {"libsql": "libsql", "libsql+wss": "wss", "libsql+https": "https"}


@dataclass(frozen=True)
class Target:
    client_url: str  # what libsql_client.create_client gets (no token in it)
    auth_token: str | None = field(repr=False)
    local_path: str | None  # the database file, for a local target
    table: str
    timeout_ms: int  # busy timeout for local writes; request timeout for remote calls
    journal_mode: str | None  # local only
    create: bool = False  # ?create=true: a write may add kvctl's table beside other programs' tables

    @property
    def remote(self) -> bool:
        return self.local_path is None


def parse_target(url: StoreURL) -> Target:
    if url.scheme not in _REMOTE_SCHEMES:
        raise BadURLError(f"{url.redacted()}: not a libsql URL")
    if url.username is not None or url.password is not None:
        raise BadURLError(f"{url.redacted()}: libsql takes no user or password (use authToken=...)")
    table = url.name_option("table", "kv")
    if not is_mapped(url) and (not _IDENTIFIER.match(table) or table.lower().startswith("sqlite_")):
        raise BadURLError(f"option table={table!r} in {url.redacted()} is not a plain table name")
    timeout = url.duration_option_ms("timeout", DEFAULT_TIMEOUT_MS)
    timeout_ms = DEFAULT_TIMEOUT_MS if timeout is None else timeout
    if url.scheme == "libsql" and not url.host:
        return _local(url, table, timeout_ms)
    return _remote(url, table, timeout_ms)


def _local(url: StoreURL, table: str, timeout_ms: int) -> Target:
    url.check_options(MAPPED_LOCAL_OPTIONS if is_mapped(url) else LOCAL_OPTIONS)
    path = url.local_path()
    # libsql-client reads the path out of a file: URL without decoding it, so '?' and '#' cannot
    # be carried; everything else is passed through byte for byte.
    if "?" in path or "#" in path:
        raise BadURLError(f"{url.redacted()}: a libsql file path cannot contain '?' or '#'")
    path = os.path.abspath(path)
    return Target(
        client_url=f"file:{path}",
        auth_token=None,
        local_path=path,
        table=table,
        timeout_ms=timeout_ms,
        journal_mode=url.choice_option("journal_mode", JOURNAL_MODES, "wal"),
        create=url.bool_option("create", False),
    )


def _remote(url: StoreURL, table: str, timeout_ms: int) -> Target:
    url.check_options(REMOTE_OPTIONS)
    assert url.host is not None
    host = f"[{url.host}]" if ":" in url.host else url.host
    authority = host if url.port is None else f"{host}:{url.port}"
    path = url.path if url.path not in ("", "/") else ""
    query = ""
    if url.option("tls"):
        tls = url.bool_option("tls", True)
        if url.scheme != "libsql":
            raise BadURLError(f"{url.redacted()}: tls= applies to libsql:// URLs only (the scheme says TLS)")
        if not tls and url.port is None:
            raise BadURLError(f"{url.redacted()}: tls=0 needs an explicit port")
        query = f"?tls={int(tls)}"  # libsql-client reads exactly 0 or 1
    client_url = f"{_REMOTE_SCHEMES[url.scheme]}://{authority}{path}{query}"
    return Target(
        client_url=client_url,
        auth_token=_token(url),
        local_path=None,
        table=table,
        timeout_ms=timeout_ms,
        journal_mode=None,
        create=url.bool_option("create", False),
    )


def _token(url: StoreURL) -> str | None:
    token = url.option("authToken")
    var = url.option("authToken_env")
    if token and var:
        raise BadURLError(f"{url.redacted()}: give authToken or authToken_env, not both")
    if var:
        token = os.environ.get(var)
        if not token:
            raise UsageError(f"{url.redacted()}: environment variable {var} (authToken_env) is not set")
    return token or None

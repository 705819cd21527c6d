"""Opening a kvctl SQLite database: URL options, pre-flight checks, pragmas, the table.

The table (one per ``?table=``, default ``kv``)::

    CREATE TABLE kv (
        id         INTEGER PRIMARY KEY,   -- rowid table: 2-3x faster than WITHOUT ROWID for 1 KiB values
        key        BLOB NOT NULL UNIQUE,  -- the unique index serves lookups and ordered range scans
        value      BLOB NOT NULL,
        expires_at INTEGER,               -- absolute ms since the epoch; NULL = no expiry
        version    INTEGER NOT NULL       -- HLC version (kvctl.hlc)
    );
    CREATE INDEX kv_expiry  ON kv(expires_at) WHERE expires_at IS NOT NULL;  -- purging expired rows
    CREATE INDEX kv_version ON kv(version);  -- O(log n) HLC seed on open; "changed since" queries

``PRAGMA user_version`` holds the schema version (:data:`SCHEMA_VERSION`) for later migrations.
An open that fails leaves existing files as they were: every check that can refuse a file runs
before anything is written to it.
"""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass
from urllib.parse import quote

from kvctl.errors import AuthError, BadURLError, StoreIOError, UsageError
from kvctl.url import StoreURL

from .errors import translate

SCHEMA_VERSION = 1
COLUMNS = ("id", "key", "value", "expires_at", "version")
OPTIONS = {"table", "timeout", "synchronous", "journal_mode", "readonly"}
DEFAULT_TIMEOUT_MS = 30_000  # ruv-swarm's busy_timeout
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Options:
    path: str
    table: str
    timeout_ms: int
    synchronous: str
    journal_mode: str
    readonly: bool


def parse_options(url: StoreURL) -> Options:
    url.check_options(OPTIONS)
    path = url.local_path()
    if path == ":memory:" or path.startswith("file:"):
        raise BadURLError(f"{url.redacted()} must name a database file (use memory:// for a scratch store)")
    table = url.option("table", "kv") or "kv"
    if not _IDENTIFIER.match(table) or table.lower().startswith("sqlite_"):
        raise BadURLError(f"option table={table!r} in {url.redacted()} is not a plain table name")
    timeout_ms = url.duration_option_ms("timeout", DEFAULT_TIMEOUT_MS)
    return Options(
        path=path,
        table=table,
        timeout_ms=DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms,
        synchronous=url.choice_option("synchronous", ("off", "normal", "full", "extra"), "normal"),
        journal_mode=url.choice_option("journal_mode", ("wal", "delete", "truncate", "persist"), "wal"),
        readonly=url.bool_option("readonly", False),
    )


def preflight(opts: Options, where: str) -> None:
    """Refuse paths SQLite would mishandle, with a clear message, before touching anything.

    A missing parent directory is refused rather than created: a typo in a path must not
    silently grow a directory tree (the database file itself is created, as SQLite does).
    """
    path = opts.path
    if os.path.isdir(path):
        raise StoreIOError(f"{where}: {path} is a directory, not a database file")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise StoreIOError(f"{where}: directory {parent} does not exist", hint="create it first")
    if os.path.exists(path):
        if not os.access(path, os.R_OK):
            raise AuthError(f"{where}: permission denied reading {path}")
    elif opts.readonly:
        raise StoreIOError(f"{where}: {path} does not exist (and readonly=true will not create it)")


def connect(opts: Options, where: str) -> sqlite3.Connection:
    """An open, checked connection with the pragmas set and the table present."""
    preflight(opts, where)
    mode = "ro" if opts.readonly else "rwc"
    uri = f"file:{quote(opts.path, safe='/')}?mode={mode}"
    try:
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.  One worker thread
        # of kvctl.adapt may call the store, hence check_same_thread=False.
        conn = sqlite3.connect(
            uri, uri=True, timeout=opts.timeout_ms / 1000, isolation_level=None,
            check_same_thread=False, cached_statements=256,
        )
    except sqlite3.Error as exc:
        raise translate(exc, where, opts.path) from None
    try:
        _prepare(conn, opts, where)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise translate(exc, where, opts.path) from None
        raise
    return conn


def _prepare(conn: sqlite3.Connection, opts: Options, where: str) -> None:
    # Reading the schema is the first access to the file: a file that is not a database fails
    # here (SQLITE_NOTADB -> CorruptError) before anything could be written to it.
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    if user_version > SCHEMA_VERSION:
        raise UsageError(
            f"{where}: {opts.path} has schema version {user_version}, newer than this kvctl's "
            f"{SCHEMA_VERSION}", hint="upgrade kvctl",
        )
    exists = _check_table(conn, opts.table, where)
    if not opts.readonly:
        mode = conn.execute(f"PRAGMA journal_mode={opts.journal_mode}").fetchone()[0]
        if str(mode).lower() != opts.journal_mode:
            raise StoreIOError(f"{where}: cannot switch {opts.path} to journal_mode={opts.journal_mode} ({mode})")
    conn.execute(f"PRAGMA synchronous={opts.synchronous}")
    if exists:
        return
    if opts.readonly:
        raise UsageError(f"{where}: {opts.path} has no table {opts.table}", hint="open it once without readonly")
    _create_table(conn, opts.table)


def _check_table(conn: sqlite3.Connection, table: str, where: str) -> bool:
    cols = tuple(row[1] for row in conn.execute(f'PRAGMA table_info("{table}")'))
    if not cols:
        return False
    if cols != COLUMNS:
        raise UsageError(
            f"{where}: table {table} is not a kvctl table (columns {', '.join(cols)})",
            hint="pick another table with ?table=NAME",
        )
    return True


def _create_table(conn: sqlite3.Connection, table: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{table}" ('
            "id INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, value BLOB NOT NULL, "
            "expires_at INTEGER, version INTEGER NOT NULL)"
        )
        conn.execute(
            f'CREATE INDEX IF NOT EXISTS "{table}_expiry" ON "{table}"(expires_at) '
            "WHERE expires_at IS NOT NULL"
        )
        conn.execute(f'CREATE INDEX IF NOT EXISTS "{table}_version" ON "{table}"(version)')
        if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise

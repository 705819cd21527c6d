"""``libsql://``: a table in a libSQL database (a local file, or sqld / Turso), via libsql-client.

The async client is used directly.  For a local file it runs SQLite synchronously inside its
coroutines (opening one sqlite3 connection per call), so there is no thread hop; its sync wrapper
(``create_client_sync``) adds a thread and measured about twice the cost per call.  Remote calls
are Hrana requests over WebSocket or HTTP and are genuinely asynchronous.

The table layout is the sqlite backend's (a rowid table with a unique key index, expiry and
version columns, ``PRAGMA user_version`` = 1), so a file written by either backend reads with the
other.  Writes are one ``batch()``: a transaction, all or nothing, locally and remotely.

A command that only reads creates, switches and upgrades nothing (a missing local file or table
is ``NoSuchStoreError``); a database of other programs' tables is ``ForeignStoreError`` unless a
write gives ``?create=true`` (a local file or a server).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Self

import libsql_client
from libsql_client import LibsqlError, Statement

from kvctl.errors import ForeignStoreError, NoSuchStoreError, StoreIOError, UsageError
from kvctl.hlc import HLC
from kvctl.plugin_kit import (
    AsyncStoreBase,
    ScanRange,
    check_conditional,
    deadline_ms,
    foreign_store_error,
    prefix_end,
    show_key,
)
from kvctl.plugin_kit.mapped import DISCOVERY, is_mapped, suggested_options
from kvctl.plugin_kit.mapped.sqlite_dialect import CATALOG, table_info
from kvctl.store import MAX_VERSION, Capabilities, Page, Record, StoreURL, now_ms

from .errors import is_busy, translated
from .localread import ReadOnlyFile, holds_pending_work
from .remote import hello_answered
from .target import Target, parse_target

SCHEMA_VERSION = 1  # what this backend writes into a file it creates
# Versions 2 to 5 are the sqlite backend's (tombstones, change feed, triggers beside the same
# table columns; 5 only adds bulk-load entries to the feed, which this backend does not read).
# Its triggers stamp, log and bury rows written by any program, so this backend reads and writes
# such a file as it is, without upgrading it; a newer layout is refused.
NEWEST_READABLE = 5
COLUMNS = ("id", "key", "value", "expires_at", "version")
MAX_LENGTH = 1_000_000_000  # SQLite's default SQLITE_MAX_LENGTH: the largest row
MAX_KEY = 64 * 1024
MAX_VALUE = MAX_LENGTH - MAX_KEY - 1024  # key + value + row header must stay under MAX_LENGTH
# Statements stay under 999 bound variables (the limit of SQLite before 3.32 and of some servers).
ROWS_PER_INSERT = 200  # x4 variables; measured 1.6x faster per row than one statement per row
KEYS_PER_SELECT = 500
PURGE_EVERY_S = 60.0
PURGE_ROWS = 10_000
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
META_TABLE = "kvctl_meta"  # the sqlite backend's (schema version 2 and later)
# Every table but SQLite's own, with its columns: is the database one kvctl made?
_TABLES = ("SELECT m.name, (SELECT group_concat(p.name, ',') FROM pragma_table_info(m.name) AS p) "
           "FROM sqlite_master AS m WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite^_%' ESCAPE '^' "
           "ORDER BY m.rowid")


class LibSQLStore(AsyncStoreBase):
    name = "libsql"
    description = ("libSQL (libsql-client): a local file, or sqld/Turso over WebSocket or HTTP with an auth token. "
                   "Mapped mode: ?table=T&key=COLS reads an application's own table (write=true to edit; "
                   "table=* lists the tables).")
    capabilities = Capabilities(
        persistent=True,
        ttl=True,
        ordered_scan=True,
        versions=True,
        atomic_batch=True,
        conditional_writes=True,
        max_key_size=MAX_KEY,
        max_value_size=MAX_VALUE,
        durability=(
            "local file: WAL, synchronous=FULL (libsql-client opens a connection per call, so "
            "SQLite's default applies): every commit is fsynced; remote: the server's"
        ),
        blocking_io=False,
    )

    def __init__(self, url: StoreURL, target: Target) -> None:
        self.url = url
        self._url = url  # typed: StoreBase.url may be None
        self._target = target
        self._where = url.redacted()
        self._client: libsql_client.Client | None = None
        self._open_lock = asyncio.Lock()
        self._clock = HLC()
        self._next_purge = 0.0
        self._closed = False
        t = f'"{target.table}"'
        self._t = t
        self._get_one = f"SELECT CAST(value AS BLOB), expires_at, version FROM {t} WHERE key = ? AND {_LIVE}"
        self._upsert_tail = (" ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                             "expires_at = excluded.expires_at, version = excluded.version")
        self._purge = (f"DELETE FROM {t} WHERE id IN (SELECT id FROM {t} "
                       "WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)")
        # Local writes wait for a busy file (libsql-client opens its connections with timeout=0).
        self._write_prefix = [] if target.remote else [Statement(f"PRAGMA busy_timeout = {target.timeout_ms}")]

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        target = parse_target(url)
        if is_mapped(url):  # another program's table, or the listing of them: see .mapped
            from .mapped import MappedLibSQLStore, open_listing

            if url.option("table") == DISCOVERY:
                return open_listing(url, target)  # type: ignore[return-value]
            return MappedLibSQLStore.open(url, target)  # type: ignore[return-value]
        if target.local_path is not None:  # checked now, not at the first call: nothing is started on a typo
            _preflight(target.local_path, url.redacted(), reads_only=url.reads_only)
        return cls(url, target)

    # -- opening ---------------------------------------------------------------------------
    async def _open(self) -> libsql_client.Client:
        client = self._client
        if client is not None:
            return client
        async with self._open_lock:
            if self._client is not None:
                return self._client
            if self._closed:
                raise UsageError(f"{self._where}: the store was closed")
            target = self._target
            if target.local_path is not None:
                _preflight(target.local_path, self._where, reads_only=self._url.reads_only)
            with translated(self._where, "connect", path=target.local_path):
                # for a local file this already runs a statement (SELECT 1), which may find it busy
                client = await self._call(lambda: create_client(target, self._url.reads_only))
            try:
                await self._prepare(client)
            except BaseException:
                await client.close()
                raise
            self._client = client
            return client

    async def _prepare(self, client: libsql_client.Client) -> None:
        """Check the file or server, create the table if needed, seed the clock.

        A command that only reads creates and switches nothing (libsql-client has no read-only
        open, so this rests on issuing no write): a missing table is NoSuchStoreError.  A database
        holding other programs' tables and none of kvctl's is ForeignStoreError, for a write too
        unless ``?create=true``."""
        t, target = self._t, self._target
        with translated(self._where, "open", path=target.local_path):
            # The first read of the schema: a file that is not a database fails here.
            info, cols = await self._call(lambda: client.batch(
                [Statement("PRAGMA user_version"), Statement(f"PRAGMA table_info({t})")]))
            version = int(info.rows[0][0]) if info.rows else 0
            if version > NEWEST_READABLE:
                raise UsageError(f"{self._where}: the database has kvctl schema version {version}, "
                                 f"newer than this kvctl's {NEWEST_READABLE}", hint="upgrade kvctl")
            columns = tuple(str(row[1]) for row in cols.rows)
            if columns and columns != COLUMNS:
                raise ForeignStoreError(
                    f"{self._where}: table {target.table} is not a kvctl table (columns {', '.join(columns)}); "
                    "nothing was changed",
                    hint="to read its rows add key=COLUMNS; table=* lists every table with its URL")
            if not columns:
                await self._refuse_missing(client)
            if target.journal_mode is not None and not self._url.reads_only:
                await self._call(lambda: client.execute(f"PRAGMA journal_mode = {target.journal_mode}"))
            if not columns:
                create = [
                    f"CREATE TABLE IF NOT EXISTS {t} (id INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, "
                    "value BLOB NOT NULL, expires_at INTEGER, version INTEGER NOT NULL)",
                    f'CREATE INDEX IF NOT EXISTS "{target.table}_expiry" ON {t}(expires_at) '
                    "WHERE expires_at IS NOT NULL",
                    f'CREATE INDEX IF NOT EXISTS "{target.table}_version" ON {t}(version)',
                ]
                if version == 0:
                    create.append(f"PRAGMA user_version = {SCHEMA_VERSION}")
                await self._call(lambda: client.batch([*self._write_prefix, *map(Statement, create)]))
            newest = await self._call(lambda: client.execute(f"SELECT max(version) FROM {t}"))
            if newest.rows and newest.rows[0][0] is not None:
                self._clock.observe(int(newest.rows[0][0]))

    async def _refuse_missing(self, client: libsql_client.Client) -> None:
        """The store's table is missing: refuse what may not create it (see :meth:`_prepare`)."""
        rs = await self._call(lambda: client.execute(_TABLES))
        tables = [(str(name), str(cols or "")) for name, cols in rs.rows]
        kvctl_made = any(name == META_TABLE or tuple(cols.split(",")) == COLUMNS for name, cols in tables)
        if tables and not kvctl_made and not (self._target.create and not self._url.reads_only):
            names = [name for name, _ in tables]
            mapped: dict[str, str | None] = {}
            for name in names:  # each table with the URL that reads its rows
                stmts = [Statement(sql, [name]) for sql in CATALOG]
                results = await self._call(lambda stmts=stmts: client.batch(stmts))  # type: ignore[misc]
                info = table_info(name, [[tuple(r) for r in rs.rows] for rs in results])
                mapped[name] = None if info is None else suggested_options(info)
            raise foreign_store_error(self._url, names, mapped=mapped)
        if self._url.reads_only:
            raise NoSuchStoreError(f"no such store: {self._where} (no table {self._target.table}; "
                                   "nothing was created)")

    async def _call(self, call: Callable[[], Awaitable[Any]]) -> Any:
        return await call_with_retries(self._target, call)

    async def _execute(self, action: str, sql: str, args: list[Any]) -> Any:
        client = self._client or await self._open()
        with translated(self._where, action):
            return await self._call(lambda: client.execute(sql, args))

    async def _batch(self, action: str, stmts: list[Statement], *, writing: bool) -> list[Any]:
        client = self._client or await self._open()
        if writing:
            stmts = [*self._write_prefix, *self._maybe_purge(), *stmts]
        with translated(self._where, action, writing=writing):
            results: list[Any] = await self._call(lambda: client.batch(stmts))
        return results  # writers' leading pragma/purge results included: callers index from the end

    def _maybe_purge(self) -> list[Statement]:
        """At most once a minute a write batch also removes a bounded number of expired rows."""
        clock = time.monotonic()
        if clock < self._next_purge:
            return []
        self._next_purge = clock + PURGE_EVERY_S
        return [Statement(self._purge, [now_ms(), PURGE_ROWS])]

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            with translated(self._where, "close"):
                await client.close()

    # -- reads -----------------------------------------------------------------------------
    async def get(self, key: bytes) -> Record | None:
        rs = await self._execute("get", self._get_one, [key, now_ms()])
        if not rs.rows:
            return None
        value, expires, version = rs.rows[0]
        return Record(key, value, expires, version)

    async def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        if not keys:
            return []
        now = now_ms()
        stmts = []
        for start in range(0, len(keys), KEYS_PER_SELECT):
            chunk = list(keys[start:start + KEYS_PER_SELECT])
            marks = ",".join("?" * len(chunk))
            stmts.append(Statement(
                f"SELECT key, CAST(value AS BLOB), expires_at, version FROM {self._t} "
                f"WHERE key IN ({marks}) AND {_LIVE}",
                [*chunk, now]))
        if len(stmts) == 1:
            results = [await self._execute("get_many", stmts[0].sql, stmts[0].args)]
        else:  # one transaction: every chunk reads the same snapshot
            results = await self._batch("get_many", stmts, writing=False)
        found = {}
        for rs in results:
            for key, value, expires, version in rs.rows:
                found[key] = Record(key, value, expires, version)
        return [found.get(k) for k in keys]

    def scan_range(self, span: ScanRange, keys_only: bool) -> AsyncIterator[Page]:
        end, batch_size = span.end, span.page
        cols = "key, expires_at, version" if keys_only else "key, CAST(value AS BLOB), expires_at, version"
        upper = " AND key < ?" if end is not None else ""

        async def fetch(lower: bytes, inclusive: bool) -> list[Record]:
            op = ">=" if inclusive else ">"
            sql = f"SELECT {cols} FROM {self._t} WHERE key {op} ?{upper} AND {_LIVE} ORDER BY key LIMIT ?"
            args = [lower, *([end] if end is not None else []), now_ms(), batch_size]
            rs = await self._execute("scan", sql, args)
            if keys_only:
                return [Record(k, b"", e, v) for k, e, v in rs.rows]
            return [Record(k, val, e, v) for k, val, e, v in rs.rows]

        return span.apages(fetch)

    async def count(self, prefix: bytes = b"") -> int:
        end = prefix_end(prefix) if prefix else None
        upper = " AND key < ?" if end is not None else ""
        rs = await self._execute(
            "count", f"SELECT count(*) FROM {self._t} WHERE key >= ?{upper} AND {_LIVE}",
            [prefix, *([end] if end is not None else []), now_ms()])
        return int(rs.rows[0][0])

    async def stats(self) -> dict[str, Any]:
        now = now_ms()
        results = await self._batch("stats", [
            Statement(f"SELECT count(*) FROM {self._t} WHERE {_LIVE}", [now]),
            Statement(f"SELECT count(*) FROM {self._t} WHERE NOT {_LIVE}", [now]),
            Statement("SELECT sqlite_version()"),
            Statement("PRAGMA user_version"),
        ], writing=False)
        out: dict[str, Any] = {
            "keys": int(results[0].rows[0][0]),
            "expired_not_purged": int(results[1].rows[0][0]),
            "table": self._target.table,
            "sqlite_version": results[2].rows[0][0],
            "schema_version": int(results[3].rows[0][0]),
            "location": "remote" if self._target.remote else "local file",
        }
        path = self._target.local_path
        if path is not None:
            out["file_bytes"] = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
        return out

    # -- writes ----------------------------------------------------------------------------
    async def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        self._check(key, value)
        await self._write_rows("set", [(key, value, deadline_ms(ttl_ms), None)])

    async def set_many(self, records: Iterable[Record]) -> None:
        rows = []
        for rec in records:  # every check before anything is sent: all or nothing
            self._check(rec.key, rec.value)
            if rec.version is not None and not 0 <= rec.version <= MAX_VERSION:
                raise UsageError(f"{self._where}: version {rec.version} of key {show_key(rec.key)} is "
                                 "outside 0..2**63-1 (an INTEGER column)")
            rows.append((rec.key, rec.value, rec.expires_at_ms, rec.version))
        if rows:
            await self._write_rows("set_many", rows)

    async def _write_rows(self, action: str, rows: list[tuple[bytes, bytes, int | None, int | None]]) -> None:
        await self._open()  # opening seeds the clock: versions are taken after it
        clock = self._clock
        for row in rows:
            if row[3] is not None:
                clock.observe(row[3])
        stmts = []
        for start in range(0, len(rows), ROWS_PER_INSERT):
            chunk = rows[start:start + ROWS_PER_INSERT]
            args: list[Any] = []
            for key, value, expires, version in chunk:
                args += (key, value, expires, clock.now() if version is None else version)
            marks = ",".join(["(?, ?, ?, ?)"] * len(chunk))
            # Duplicate keys in one statement are fine in SQLite: the later row updates the earlier.
            stmts.append(Statement(
                f"INSERT INTO {self._t} (key, value, expires_at, version) VALUES {marks}{self._upsert_tail}", args))
        await self._batch(action, stmts, writing=True)

    async def delete(self, key: bytes) -> bool:
        return await self.delete_many([key]) == 1

    async def delete_many(self, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0
        now = now_ms()
        stmts = []
        for start in range(0, len(keys), KEYS_PER_SELECT):
            chunk = list(keys[start:start + KEYS_PER_SELECT])
            marks = ",".join("?" * len(chunk))
            # Only live rows count as deleted; expired ones are left to the purge.
            stmts.append(Statement(f"DELETE FROM {self._t} WHERE key IN ({marks}) AND {_LIVE}", [*chunk, now]))
        results = await self._batch("delete_many", stmts, writing=True)
        return sum(rs.rows_affected for rs in results[len(results) - len(stmts):])

    # -- expire and set_if: one statement each, the same SQL locally and on a server ------------
    async def expire(self, key: bytes, expires_at_ms: int | None) -> bool:
        if expires_at_ms is not None and expires_at_ms <= now_ms():
            return await self.delete(key)  # as Redis does: an expiry in the past deletes the key
        await self._open()  # opening seeds the clock
        return await self._write_one("expire", f"UPDATE {self._t} SET expires_at = ?, version = ? "
                                     f"WHERE key = ? AND {_LIVE}", [expires_at_ms, self._clock.now(), key, now_ms()])

    async def set_if(self, record: Record, *, exists: bool | None = None, keep_ttl: bool = False) -> bool:
        check_conditional(record, keep_ttl)
        self._check(record.key, record.value)
        await self._open()
        t, key, value, version, now = self._t, record.key, record.value, self._clock.now(), now_ms()
        if exists:  # UPDATE only touches a live row; keep_ttl leaves its expiry as it is
            expiry = "" if keep_ttl else "expires_at = ?, "
            args = [value, *([] if keep_ttl else [record.expires_at_ms]), version, key, now]
            return await self._write_one("set", f"UPDATE {t} SET value = ?, {expiry}version = ? "
                                         f"WHERE key = ? AND {_LIVE}", args)
        # in an upsert's DO UPDATE, bare column names are the row already there
        expiry = f"CASE WHEN {_LIVE} THEN expires_at ELSE excluded.expires_at END" if keep_ttl \
            else "excluded.expires_at"
        only_if = f" WHERE NOT {_LIVE}" if exists is False else ""
        args = [key, value, record.expires_at_ms, version, *([now] if keep_ttl else []),
                *([now] if exists is False else [])]
        return await self._write_one("set", f"INSERT INTO {t} (key, value, expires_at, version) VALUES (?, ?, ?, ?) "
                                     f"ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = {expiry}, "
                                     f"version = excluded.version{only_if}", args)

    async def _write_one(self, action: str, sql: str, args: list[Any]) -> bool:
        results = await self._batch(action, [Statement(sql, args)], writing=True)
        return bool(results[-1].rows_affected)

    async def clear(self) -> int:
        now = now_ms()
        results = await self._batch("clear", [
            Statement(f"SELECT count(*) FROM {self._t} WHERE {_LIVE}", [now]),
            Statement(f"DELETE FROM {self._t}"),
        ], writing=True)
        return int(results[-2].rows[0][0])


async def call_with_retries(target: Target, call: Callable[[], Awaitable[Any]]) -> Any:
    """Run one client call.  Remote calls are bounded by ?timeout=.  Local ones are retried
    while the file is busy, for up to ?timeout=: libsql-client opens a connection per call with
    SQLite's busy timeout at 0, and a batch loads the schema inside its own ``BEGIN``, so when
    another process commits in between, SQLite refuses the write lock at once (a stale read
    snapshot) without ever waiting.  A call that failed busy changed nothing (a batch is rolled
    back whole), so running it again is safe."""
    if target.remote:
        async with asyncio.timeout(target.timeout_ms / 1000):
            return await call()
    deadline = time.monotonic() + target.timeout_ms / 1000
    pause = 0.0005
    while True:
        try:
            return await call()
        except LibsqlError as exc:
            if not is_busy(exc) or time.monotonic() + pause > deadline:
                raise
        # jittered, growing pauses: processes that collided do not collide again in step
        await asyncio.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 2, 0.05)


async def create_client(target: Target, reads_only: bool = False) -> libsql_client.Client:
    if target.local_path is not None and reads_only and holds_pending_work(target.local_path):
        client: libsql_client.Client = ReadOnlyFile(target.local_path)
        await client.execute("SELECT 1")  # opens, as libsql-client's own creation does
        return client
    client = libsql_client.create_client(target.client_url, auth_token=target.auth_token)
    try:
        await hello_answered(client)
    except BaseException:
        await client.close()
        raise
    return client


def _preflight(path: str, where: str, *, reads_only: bool) -> None:
    """Refuse what SQLite would mishandle, before touching anything (the file itself is created
    by a write; a read of a missing file is NoSuchStoreError and creates nothing)."""
    if os.path.isdir(path):
        raise StoreIOError(f"{where}: {path} is a directory, not a database file")
    if reads_only and not os.path.exists(path):
        raise NoSuchStoreError(f"no such store: {where} ({path} does not exist; nothing was created)")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise StoreIOError(f"{where}: directory {parent} does not exist", hint="create it first")

"""The SQLite store: one table of (key, value, expiry, version) rows, see :mod:`.schema`.

Hot paths are kept to one sqlite3 call each: the driver caches prepared statements by SQL text,
so single-key calls cost one statement plus the Record.  Batches are one statement per chunk
(``IN (...)`` for reads) or one ``executemany`` inside a ``BEGIN IMMEDIATE`` transaction (writes),
so a batch is all or nothing and several processes can write one file (each write waits up to
the busy timeout for the lock instead of failing).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from itertools import starmap
from operator import attrgetter
from typing import Any, Self

from kvctl.errors import UsageError
from kvctl.hlc import HLC, NODE_BITS
from kvctl.store import (
    Capabilities,
    Page,
    Record,
    StoreBase,
    StoreURL,
    key_cursor,
    now_ms,
    prefix_end,
)

from .errors import SQLITE_BUSY, SQLITE_LOCKED, translate
from .records import make_record
from .schema import Options, connect, parse_options

MAX_LENGTH = 1_000_000_000  # SQLite's default SQLITE_MAX_LENGTH: the largest BLOB (and row)
PURGE_EVERY = 10_000  # rows written between opportunistic purges of expired rows
PURGE_LIMIT = 10_000  # expired rows removed per purge, so one write never pays for a huge backlog
_VERSION_STEP = 1 << NODE_BITS  # one HLC counter tick
_values = attrgetter("value")
_key_of = attrgetter("key")


def _in_size(n: int) -> int:
    """Round an IN-list length up so only a few dozen distinct statements get prepared."""
    return n if n <= 16 else (n + 7) & ~7


class SQLiteStore(StoreBase):
    name = "sqlite"
    description = "SQLite file (stdlib sqlite3): WAL, ordered scans, TTLs, versions, multi-process."
    capabilities = Capabilities(
        persistent=True, ttl=True, ordered_scan=True, versions=True, atomic_batch=True,
        max_value_size=MAX_LENGTH,
        durability=(
            "WAL with synchronous=NORMAL: a commit survives a process crash, a power loss may "
            "roll back the last commits but never corrupts; ?synchronous=full fsyncs every commit"
        ),
    )

    def __init__(self, conn: sqlite3.Connection, opts: Options, url: StoreURL) -> None:
        self._conn = conn
        self._opts = opts
        self.url = url
        self._where = url.redacted()
        t = f'"{opts.table}"'
        self._table = t
        self._sql_get = f"SELECT value, expires_at, version FROM {t} WHERE key = ?"
        self._sql_put = (
            f"INSERT INTO {t}(key, value, expires_at, version) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
            "expires_at = excluded.expires_at, version = excluded.version"
        )
        self._sql_delete = f"DELETE FROM {t} WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"
        self._sql_live = "(expires_at IS NULL OR expires_at > ?)"
        self._many_sql: dict[int, str] = {}
        # Keys per statement: room is left for the padding (_in_size) and the time parameter.
        self._chunk = max(1, min(1000, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 9))
        self._clock = HLC()
        self._purge_countdown = PURGE_EVERY
        try:
            self._clock.observe(conn.execute(f"SELECT MAX(version) FROM {t}").fetchone()[0])
        except sqlite3.Error as exc:
            conn.close()
            raise translate(exc, self._where, opts.path) from None

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        opts = parse_options(url)
        return cls(connect(opts, url.redacted()), opts, url)

    def _fail(self, exc: sqlite3.Error) -> Exception:
        with contextlib.suppress(sqlite3.Error):  # (a closed connection raises here too)
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        return translate(exc, self._where, self._opts.path)

    # -- reads -------------------------------------------------------------------------------
    def get(self, key: bytes) -> Record | None:
        try:
            row = self._conn.execute(self._sql_get, (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        if row is None:
            return None
        expires = row[1]
        if expires is not None and expires <= now_ms():
            self._purge_countdown = 0
            return None
        return make_record(key, row[0], expires, row[2])

    def _select_many(self, keys: Sequence[bytes], now: int) -> list[Record]:
        """The live records of ``keys``, in the order of ``keys`` when the plan allows (checked).

        The keys are a VALUES list joined to the table (CROSS JOIN keeps it the outer loop):
        SQLite probes the key index once per key, in the given order, without first sorting an
        ``IN (...)`` list, which measured ~20% faster for 1,000 keys.
        """
        size = _in_size(len(keys))
        sql = self._many_sql.get(size)
        if sql is None:
            values = ",".join(["(?)"] * size)
            sql = (f"WITH q(k) AS (VALUES {values}) SELECT key, value, expires_at, version "
                   f"FROM q CROSS JOIN {self._table} ON key = q.k WHERE {self._sql_live}")
            self._many_sql[size] = sql
        params: list[Any] = list(keys)
        params.extend([None] * (size - len(keys)))  # NULL matches no key: the padding adds no rows
        params.append(now)
        return list(starmap(make_record, self._conn.execute(sql, params).fetchall()))

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        n = len(keys)
        if n <= 1:
            return [self.get(keys[0])] if n else []
        chunk = self._chunk
        conn = self._conn
        now = now_ms()
        try:
            if n <= chunk:
                found = self._select_many(keys, now)
            else:  # several statements: one read transaction makes them one snapshot
                conn.execute("BEGIN")
                found = []
                for i in range(0, n, chunk):
                    found += self._select_many(keys[i:i + chunk], now)
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        # Expired rows were filtered by the query.  When every key was found, in order (the
        # usual case), the records are the answer; otherwise place them by key.
        if len(found) == n and list(map(_key_of, found)) == (keys if isinstance(keys, list) else list(keys)):
            return found  # type: ignore[return-value]
        by_key = {rec.key: rec for rec in found}
        return list(map(by_key.get, keys))

    # -- writes ------------------------------------------------------------------------------
    def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        if len(value) > MAX_LENGTH:
            self._check(key, value)
        expires = None if ttl_ms is None else now_ms() + ttl_ms
        try:
            self._conn.execute(self._sql_put, (key, value, expires, self._clock.now()))
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        self._purge_countdown -= 1
        if self._purge_countdown <= 0:
            self._purge()

    def set_many(self, records: Iterable[Record]) -> None:
        batch = records if isinstance(records, list) else list(records)
        n = len(batch)
        if not n:
            return
        if max(map(len, map(_values, batch))) > MAX_LENGTH:
            for rec in batch:
                self._check(rec.key, rec.value)
        # One HLC tick per record, taken in one go: the versions a loop of clock.now() would
        # give when the wall clock does not move, then the clock is moved past the last one.
        first = self._clock.now()
        last = first + (n - 1) * _VERSION_STEP
        self._clock.observe(last)
        rows = [
            (r.key, r.value, r.expires_at_ms, v if r.version is None else r.version)
            for r, v in zip(batch, range(first, last + 1, _VERSION_STEP), strict=True)
        ]
        given = [r.version for r in batch if r.version is not None]
        if given:
            self._clock.observe(max(given))
        self._write_many(self._sql_put, rows)
        self._purge_countdown -= n
        if self._purge_countdown <= 0:
            self._purge()

    def delete(self, key: bytes) -> bool:
        try:
            cur = self._conn.execute(self._sql_delete, (key, now_ms()))
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        return cur.rowcount == 1

    def delete_many(self, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0
        now = now_ms()
        return self._write_many(self._sql_delete, [(k, now) for k in keys])

    def _write_many(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        """``executemany`` in one immediate transaction: all rows or none; the number changed."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            changed = conn.executemany(sql, rows).rowcount
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        except BaseException:  # Ctrl-C half-way: leave nothing behind
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return changed

    def _purge(self) -> None:
        """Delete a bounded number of expired rows; skipped quietly if another writer is busy."""
        self._purge_countdown = PURGE_EVERY
        t = self._table
        try:
            self._conn.execute(
                f"DELETE FROM {t} WHERE rowid IN "
                f"(SELECT rowid FROM {t} WHERE expires_at <= ? LIMIT {PURGE_LIMIT})",
                (now_ms(),),
            )
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code not in (SQLITE_BUSY, SQLITE_LOCKED):
                raise self._fail(exc) from None

    # -- scans -------------------------------------------------------------------------------
    def scan(
        self,
        prefix: bytes = b"",
        *,
        start_after: bytes | None = None,
        cursor: str | None = None,
        batch_size: int = 1000,
        keys_only: bool = False,
    ) -> Iterator[Page]:
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, not {batch_size}")
        after = self._start_key(prefix, start_after, cursor)
        end = prefix_end(prefix)
        value = "X''" if keys_only else "value"
        upper = "" if end is None else " AND key < ?"
        select = f"SELECT key, {value}, expires_at, version FROM {self._table} WHERE key "
        tail = f"{upper} AND {self._sql_live} ORDER BY key LIMIT ?"
        first_sql, next_sql = f"{select}>= ?{tail}", f"{select}> ?{tail}"
        while True:
            params: list[Any] = [prefix if after is None else after]
            if end is not None:
                params.append(end)
            params += (now_ms(), batch_size)
            try:
                rows = self._conn.execute(first_sql if after is None else next_sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._fail(exc) from None
            if not rows:
                return
            after = rows[-1][0]
            yield Page([make_record(k, v, e, ver) for k, v, e, ver in rows], key_cursor(after))
            if len(rows) < batch_size:
                return

    def count(self, prefix: bytes = b"") -> int:
        end = prefix_end(prefix)
        sql = f"SELECT count(*) FROM {self._table} WHERE key >= ?"
        params: list[Any] = [prefix]
        if end is not None:
            sql += " AND key < ?"
            params.append(end)
        params.append(now_ms())
        try:
            return int(self._conn.execute(f"{sql} AND {self._sql_live}", params).fetchone()[0])
        except sqlite3.Error as exc:
            raise self._fail(exc) from None

    # -- admin -------------------------------------------------------------------------------
    def clear(self) -> int:
        conn = self._conn
        t = self._table
        try:
            conn.execute("BEGIN IMMEDIATE")
            live = conn.execute(f"SELECT count(*) FROM {t} WHERE {self._sql_live}", (now_ms(),)).fetchone()[0]
            conn.execute(f"DELETE FROM {t}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        return int(live)

    def stats(self) -> dict[str, Any]:
        path = self._opts.path
        conn = self._conn

        def pragma(name: str) -> Any:
            return conn.execute(f"PRAGMA {name}").fetchone()[0]

        try:
            facts = {
                "page_size": pragma("page_size"),
                "page_count": pragma("page_count"),
                "freelist_pages": pragma("freelist_count"),
                "journal_mode": pragma("journal_mode"),
                "synchronous": self._opts.synchronous,
                "schema_version": pragma("user_version"),
            }
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        return {
            "keys": self.count(),
            "path": os.path.abspath(path),
            "table": self._opts.table,
            "file_bytes": _size(path),
            "wal_bytes": _size(path + "-wal"),
            **facts,
            "sqlite_version": sqlite3.sqlite_version,
        }

    def close(self) -> None:
        try:
            self._conn.close()
        except sqlite3.Error as exc:
            raise translate(exc, self._where, self._opts.path) from None


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0

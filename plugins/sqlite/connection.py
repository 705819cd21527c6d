"""A SQLite store's connection: its state, error translation (rolling back an open transaction),
writes of grouped statements, and the opportunistic purge of expired rows and old feed changes
that every few thousand writes pay for.  :class:`SQLiteBase` is what :class:`~.store.SQLiteStore`
builds on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from operator import attrgetter
from typing import Any

from kvctl.hlc import HLC, NODE_BITS, make_version
from kvctl.plugin_kit import StoreBase
from kvctl.store import StoreURL, now_ms

from . import bulk, feed, mixed
from .errors import SQLITE_BUSY, SQLITE_LOCKED, translate
from .options import Options
from .replicate import Applier
from .schema import TableState
from .transaction import immediate
from .triggers import TableSQL

MAX_LENGTH = 1_000_000_000  # SQLite's default SQLITE_MAX_LENGTH: the largest BLOB (and row)
PURGE_EVERY = 10_000  # rows written between opportunistic purges of expired rows
PURGE_LIMIT = 10_000  # rows removed per purge and table, so one write never pays for a huge backlog
# Feed changes removed per purge: more than are written between purges, so the feed keeps up.
FEED_PURGE_LIMIT = 2 * PURGE_EVERY
_VERSION_STEP = 1 << NODE_BITS  # one HLC counter tick
# Values are read as BLOBs: another program's UPDATE may have left a TEXT (or number) value,
# which reads as its bytes (UTF-8 text) instead of a str.
VALUE = "CAST(value AS BLOB)"
_values = attrgetter("value")
_key_of = attrgetter("key")


def _in_size(n: int) -> int:
    """Round an IN-list length up so only a few dozen distinct statements get prepared."""
    return n if n <= 16 else (n + 7) & ~7


class SQLiteBase(StoreBase):
    """The connection of a SQLite store and its write bookkeeping (see the module docstring)."""

    def __init__(self, conn: sqlite3.Connection, state: TableState, opts: Options, url: StoreURL) -> None:
        self._conn = conn
        self._opts = opts
        self.url = url
        self._where = url.redacted()
        self._state = state
        sql = self._sqlt = TableSQL(opts.table, state.node)
        t = self._table = sql.t
        if state.feed_id is None:  # this table's feed is off (?feed=false), or a read-only v1 file
            self.capabilities = dataclasses.replace(type(self).capabilities, change_feed=False)  # type: ignore[misc]
        self._sql_get = f"SELECT {VALUE}, expires_at, version FROM {t} WHERE key = ?"
        # _sql_put keeps the version it is given; _sql_put_new raises kvctl's clock above the key's
        # current version and tombstone (see TableSQL.put_new)
        self._sql_put = sql.put_given
        self._sql_put_new = sql.put_new(state.tombs)
        self._sql_delete = f"DELETE FROM {t} WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"
        self._sql_live = "(expires_at IS NULL OR expires_at > ?)"
        self._many_sql: dict[int, str] = {}
        # Keys per statement: room is left for the padding (_in_size) and the time parameter.
        self._chunk = max(1, min(1000, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 9))
        self._feed = feed.Feed(conn, sql, self._where)
        self._applier = Applier(sql, self._chunk)
        self._direct = bulk.DirectLoad(sql)
        self._clock = HLC(state.node)
        self._purge_countdown = PURGE_EVERY
        try:
            # keys that are not BLOBs: only in an older file another program wrote to, read as it is
            self._mixed = mixed.has_other_keys(conn, t)
            # the newest version on record, deleted ones included: later versions are above it
            self._clock.observe(conn.execute(f"SELECT MAX(version) FROM {t}").fetchone()[0])
            if state.tombs:
                self._clock.observe(conn.execute(f"SELECT MAX(version) FROM {sql.tombs}").fetchone()[0])
        except sqlite3.Error as exc:
            conn.close()
            raise translate(exc, self._where, opts.path) from None

    def _fail(self, exc: sqlite3.Error) -> Exception:
        with contextlib.suppress(sqlite3.Error):  # (a closed connection raises here too)
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        return translate(exc, self._where, self._opts.path)

    def _write_runs(self, runs: list[tuple[str, list[tuple[Any, ...]]]]) -> int:
        """``executemany`` of each (statement, rows) in one immediate transaction: all rows or
        none; the number of rows changed (not counting the triggers' writes).  A big batch of
        puts of keys the table does not hold goes in directly, with one feed entry (see :mod:`.bulk`)."""
        conn = self._conn
        changed = 0
        try:
            with immediate(conn, self._fail):
                if (len(runs) == 1 and len(runs[0][1]) >= bulk.DIRECT_MIN_ROWS and self._state.tombs
                        and runs[0][0] in (self._sql_put, self._sql_put_new)
                        and self._direct.load(conn, runs[0][1], feed=self._state.feed_id is not None)):
                    return len(runs[0][1])
                for sql, rows in runs:
                    changed += conn.executemany(sql, rows).rowcount
        except BaseException:
            self._direct.forget()
            raise
        return changed

    def _count_writes(self, n: int) -> None:
        self._purge_countdown -= n
        if self._purge_countdown <= 0:
            self._purge()

    def _purge(self) -> None:
        """Housekeeping every PURGE_EVERY rows written, a bounded amount each time, in one
        transaction: expired rows (their tombstones keep the row's version), tombstones past
        ?tombstone_retention=, changes past ?feed_retention=.  Skipped quietly if another writer
        holds the lock beyond the busy timeout (the next purge catches up)."""
        self._purge_countdown = PURGE_EVERY
        t, sql, opts = self._table, self._sqlt, self._opts
        conn = self._conn
        now = now_ms()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"DELETE FROM {t} WHERE rowid IN "
                         f"(SELECT rowid FROM {t} WHERE expires_at <= ? LIMIT {PURGE_LIMIT})", (now,))
            if self._state.tombs:
                horizon = make_version(max(0, now - opts.tombstone_retention_ms))
                conn.execute(f"DELETE FROM {sql.tombs} WHERE key IN "
                             f"(SELECT key FROM {sql.tombs} WHERE version < ? LIMIT {PURGE_LIMIT})", (horizon,))
            feed.purge(conn, sql, keep_changes=opts.feed_retention_changes, keep_ms=opts.feed_retention_ms,
                       now=now, limit=FEED_PURGE_LIMIT)
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code not in (SQLITE_BUSY, SQLITE_LOCKED):
                raise self._fail(exc) from None
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

"""Reading and trimming a table's change feed (``<table>__changes``, filled by :mod:`.triggers`).

A cursor is ``s:<table>:<feed id>:<seq>``: the position just after change ``seq`` of that feed.
The feed id is random per feed (a new one each time the feed is turned on), so a cursor from a
recreated file or from before the feed was switched off and on is a gap, not a silent skip; a
cursor naming another table is a gap too.  ``changes`` pages ``WHERE seq > ? ORDER BY seq``,
each page in its own read transaction together with the feed's floor (the highest purged seq):
a cursor below the floor, or beyond the newest change ever made, raises FeedGapError.

Retention is applied by kvctl's writers (:func:`purge`), a bounded number of changes at a time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from kvctl.errors import FeedGapError, UnsupportedError, UsageError
from kvctl.plugin_kit import BulkRows, is_bulk_marker, page_size, record_of
from kvctl.store import TOMBSTONE, Page, Record

from .options import META_TABLE
from .triggers import TableSQL


def format_cursor(table: str, feed_id: str, seq: int) -> str:
    return f"s:{table}:{feed_id}:{seq}"


def parse_cursor(cursor: str | None, table: str, where: str) -> tuple[str | None, int]:
    """(feed id, seq) of a cursor of ``table``'s feed; None: from the beginning."""
    if cursor is None:
        return None, 0
    parts = cursor.split(":")
    if len(parts) != 4 or parts[0] != "s" or not parts[3].isdigit():
        raise UsageError(f"{where}: not a sqlite change-feed cursor: {cursor!r}")
    if parts[1] != table:
        raise FeedGapError(f"{where}: cursor {cursor} is of table {parts[1]}, not {table}")
    return parts[2], int(parts[3])


class Feed:
    """The change feed of one table, read through the store's connection."""

    def __init__(self, conn: sqlite3.Connection, sql: TableSQL, where: str) -> None:
        self._conn = conn
        self._sql = sql
        self._where = where
        self._head = f"SELECT feed_id, feed_floor FROM {META_TABLE} WHERE table_name = ?"
        self._last = f"SELECT max(seq) FROM {sql.changes}"
        # keys and values as BLOBs: an older file may have logged another program's TEXT
        self._page = (f"SELECT seq, CAST(key AS BLOB), CAST(value AS BLOB), expires_at, version, deleted "
                      f"FROM {sql.changes} WHERE seq > ? ORDER BY seq LIMIT ?")
        bulk_rows = (f"SELECT key, CAST(value AS BLOB), expires_at, version FROM {sql.t} "
                     "WHERE key {} ?1 AND key <= ?2 AND version >= ?3 AND version <= ?4 ORDER BY key LIMIT ?5")
        self._bulk_first, self._bulk_next = bulk_rows.format(">="), bulk_rows.format(">")

    def _state(self) -> tuple[str | None, int, int]:
        """(feed id, floor, last seq) as the current read transaction sees them."""
        row = self._conn.execute(self._head, (self._sql.table,)).fetchone()
        if row is None or row[0] is None:  # no feed (and no change table)
            return None, 0, 0
        return row[0], int(row[1]), int(self._conn.execute(self._last).fetchone()[0] or 0)

    def cursor(self) -> str:
        feed_id, _, last = self._state()
        if feed_id is None:
            raise UnsupportedError(f"{self._where}: the change feed of table {self._sql.table} is off "
                                   "(open it with ?feed=true)")
        return format_cursor(self._sql.table, feed_id, last)

    def pages(self, cursor: str | None, batch_size: int) -> Iterator[Page]:
        batch_size = page_size(batch_size)
        table = self._sql.table
        want_id, seq = parse_cursor(cursor, table, self._where)
        conn = self._conn
        while True:
            # One read transaction per page: the floor and the rows are one snapshot, so a purge
            # that committed before the page is seen in the floor, never as a silent hole.
            conn.execute("BEGIN")
            try:
                feed_id, floor, last = self._state()
                rows = conn.execute(self._page, (seq, batch_size)).fetchall() if feed_id is not None else []
            finally:
                conn.execute("COMMIT")
            self._check(cursor, want_id, seq, feed_id, floor, last)
            if not rows:
                return
            assert feed_id is not None
            records: list[Record] = []
            bulk = None
            for row in rows:
                if row[5] and is_bulk_marker(row[2]):  # a bulk load: served on pages of its own
                    bulk = row
                    break
                records.append(_record(row))
            if records:
                seq = rows[len(records) - 1][0]
                yield Page(records, format_cursor(table, feed_id, seq))
                if bulk is None and len(rows) < batch_size:
                    return
                continue
            assert bulk is not None
            for loaded, done in self._bulk_load(bulk[1], bulk[2], batch_size):
                # Pages before a load's last resume at the load's start: served again, they change
                # nothing (last writer wins), and the pages stay bounded whatever the load's size.
                yield Page(loaded, format_cursor(table, feed_id, bulk[0] if done else seq))
            seq = bulk[0]

    def _bulk_load(self, key: bytes, marker: bytes, batch_size: int) -> Iterator[tuple[list[Record], bool]]:
        """The rows a bulk load wrote that nothing has replaced since (see
        :class:`kvctl.plugin_kit.BulkRows`), a page at a time, each with whether it is the last."""
        walk = BulkRows(key, marker, batch_size)
        while not walk.done:
            sql = self._bulk_first if walk.first else self._bulk_next
            records, last = walk.page(self._conn.execute(sql, walk.params).fetchall())
            if records:
                yield records, last

    def _check(self, cursor: str | None, want_id: str | None, seq: int, feed_id: str | None, floor: int,
               last: int) -> None:
        where, table = self._where, self._sql.table
        if feed_id is None:
            raise FeedGapError(f"{where}: the change feed of table {table} is off")
        if want_id is not None and want_id != feed_id:
            raise FeedGapError(f"{where}: cursor {cursor} is of another feed (the file was recreated, or "
                               "the feed switched off and on since)")
        if seq < floor:
            raise FeedGapError(f"{where}: the change feed of table {table} starts after change {floor}; "
                               f"cursor {cursor} is older (raise ?feed_retention=)")
        if seq > last:
            raise FeedGapError(f"{where}: cursor {cursor} is beyond the newest change ({last}) of table {table}")


def _record(row: Any) -> Record:
    if row[5]:
        return Record(row[1], b"", None, row[4], TOMBSTONE)
    return record_of(row[1], row[2], row[3], row[4])


def purge(conn: sqlite3.Connection, sql: TableSQL, *, keep_changes: int | None, keep_ms: int | None,
          now: int, limit: int) -> int:
    """Delete up to ``limit`` changes past retention from the head of the feed and raise its
    floor; inside the caller's write transaction.  Returns how many were deleted.  The newest
    change is always kept: the next one's ``seq`` is the newest's plus one, never a reused one."""
    row = conn.execute(f"SELECT feed_id, feed_floor FROM {META_TABLE} WHERE table_name = ?", (sql.table,)).fetchone()
    if row is None or row[0] is None:
        return 0
    floor = int(row[1])
    last = int(conn.execute(f"SELECT max(seq) FROM {sql.changes}").fetchone()[0] or 0)
    if keep_changes is not None:
        upto: int | None = min(last - max(1, keep_changes), floor + limit)
    else:
        assert keep_ms is not None
        # the head of the feed up to its first change young enough to keep
        upto = conn.execute(
            f"WITH head AS (SELECT seq, changed_at FROM {sql.changes} WHERE seq > ?1 ORDER BY seq LIMIT ?2) "
            "SELECT coalesce((SELECT min(seq) FROM head WHERE changed_at >= ?3) - 1, (SELECT max(seq) FROM head))",
            (floor, limit, now - keep_ms),
        ).fetchone()[0]
        upto = None if upto is None else min(upto, last - 1)
    if upto is None or upto <= floor:
        return 0
    deleted = conn.execute(f"DELETE FROM {sql.changes} WHERE seq <= ?", (upto,)).rowcount
    conn.execute(f"UPDATE {META_TABLE} SET feed_floor = ? WHERE table_name = ?", (upto, sql.table))
    return int(deleted)

"""Big batches of keys the table does not hold yet, with one feed entry for the whole batch.

The ``insert`` trigger (:mod:`.triggers`) logs every row it sees in ``t__changes`` -- a second
write of every key and value -- and removes the key's tombstone.  A batch none of whose keys has
a row, and whose key range holds no tombstone (a new file, the rest of a migrate or restore in
whatever order the source reads), needs neither: inside
the batch's immediate transaction the table's insert triggers are dropped, the rows are inserted,
one bulk-load marker (:mod:`kvctl.plugin_kit.bulkfeed`) is logged in their place, and the
triggers are laid again from the very text the file held.  DDL is transactional in SQLite and the
write lock is held throughout, so no other connection ever sees the table without its triggers,
and a failure or Ctrl-C rolls all of it back.  The rows written are exactly those the upsert would
have written: no key had a row to update, and no tombstone to raise a version above or remove.

Besides ``insert``, the three other insert triggers are dropped too: their ``WHEN`` (a key or
value that is not a BLOB, a row without a version) never holds for the rows loaded here -- which
is checked -- yet SQLite evaluates it for every row, which cost as much as the insert itself.

SQLite has no way to suspend a trigger for one statement; dropping and re-creating it inside the
transaction is how its documentation suggests altering a trigger, and costs a schema change of
a few pages per batch (other connections re-prepare their statements once).  The triggers are
not left off across batches: each batch is its own committed transaction, and a table committed
without them would let another program's writes go unlogged.  Their text is read once and kept
while the file's schema cookie shows no other change.
"""

from __future__ import annotations

import sqlite3
from itertools import chain
from typing import Any

from kvctl.plugin_kit import bulk_marker

from .triggers import INSERT_TRIGGERS, TableSQL

# Batches of fewer rows take the upsert: the probe and the schema change would cost more than
# the triggers save.
DIRECT_MIN_ROWS = 500
# Keys per statement of the probe by key, within the 999 parameters an SQLite older than 3.32 allows.
PROBE_KEYS = 999
# Rows per INSERT statement: one statement of many rows binds them all at C speed and runs them
# in one step (the driver's executemany steps, and hands the GIL back and forth, once per row),
# a third less CPU than executemany from ~100 rows on; 200 rows of 4 parameters stay within the
# 999 parameters an SQLite older than 3.32 allows.
ROWS_PER_INSERT = 200
_BLOBS = {bytes, bytearray, memoryview}  # what the sqlite3 driver binds as a BLOB


class DirectLoad:
    """The direct load of one table (see the module docstring), with the triggers' text kept."""

    def __init__(self, sql: TableSQL) -> None:
        self._names = [sql.trigger_name(s) for s in INSERT_TRIGGERS]
        self._drop = [f"DROP TRIGGER {sql.trigger(s)}" for s in INSERT_TRIGGERS]
        self._insert = f"INSERT INTO {sql.t}(key, value, expires_at, version) VALUES (?, ?, ?, ?)"
        self._insert_many = self._insert + ", (?, ?, ?, ?)" * (ROWS_PER_INSERT - 1)
        self._marker = f"INSERT INTO {sql.changes}(key, value, version, deleted) VALUES (?, ?, 0, 1)"
        self._probe = (f"SELECT EXISTS (SELECT 1 FROM {sql.t} WHERE key >= ?1 AND key <= ?2), "
                       f"EXISTS (SELECT 1 FROM {sql.tombs} WHERE key >= ?1 AND key <= ?2)")
        self._probe_keys = f"SELECT EXISTS (SELECT 1 FROM {sql.t} WHERE key IN ({', '.join('?' * PROBE_KEYS)}))"
        self._cookie: int | None = None  # the schema_version the kept text was read at
        self._create: list[str] | None = None  # the triggers' text; None: not all there

    def _triggers(self, conn: sqlite3.Connection) -> list[str] | None:
        """The insert triggers' CREATE statements as the file holds them now, or None when one is
        missing (a table not laid out as kvctl expects)."""
        cookie = conn.execute("PRAGMA schema_version").fetchone()[0]
        if cookie != self._cookie:  # another connection changed the schema (or the first load)
            found = dict(conn.execute(
                f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN "
                f"({', '.join('?' * len(self._names))})", self._names).fetchall())
            texts = [found[name] for name in self._names if name in found]
            self._create = texts if len(texts) == len(self._names) else None
            self._cookie = cookie
        return self._create

    def load(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]], *, feed: bool) -> bool:
        """Insert ``rows`` ((key, value, expires_at, version), versions given) in the caller's
        immediate transaction when their keys are distinct BLOBs, their values BLOBs and their
        keys have no row and their key range no tombstone; False, having written nothing, otherwise."""
        keys, values, _, versions = zip(*rows, strict=True)
        first, last = min(keys), max(keys)
        if set(map(type, keys)) != {bytes} or not set(map(type, values)) <= _BLOBS:
            return False  # the coerce trigger's work: the upsert's way
        if None in versions or len(set(keys)) != len(keys):
            return False
        rows_in_range, tombs_in_range = conn.execute(self._probe, (first, last)).fetchone()
        if tombs_in_range or (rows_in_range and self._holds_any(conn, keys)):
            return False
        create = self._triggers(conn)
        if create is None:
            return False
        for stmt in self._drop:
            conn.execute(stmt)
        # key order fills the key index from left to right
        self._insert_rows(conn, rows if list(keys) == sorted(keys) else sorted(rows))
        if feed:
            conn.execute(self._marker, bulk_marker(first, last, min(versions), max(versions)))
        for stmt in create:
            conn.execute(stmt)
        self._cookie = conn.execute("PRAGMA schema_version").fetchone()[0]
        return True

    def _holds_any(self, conn: sqlite3.Connection, keys: tuple[bytes, ...]) -> bool:
        """Whether the table holds a row of any of ``keys``: asked only when their range holds
        rows, as it does for every batch after the first from a source read in no key order."""
        for i in range(0, len(keys), PROBE_KEYS):
            chunk = keys[i:i + PROBE_KEYS]
            chunk += (chunk[-1],) * (PROBE_KEYS - len(chunk))  # one statement, prepared once
            if conn.execute(self._probe_keys, chunk).fetchone()[0]:
                return True
        return False

    def _insert_rows(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        """The rows in this order, ROWS_PER_INSERT to a statement (the rest by ``executemany``)."""
        whole = len(rows) - len(rows) % ROWS_PER_INSERT
        for i in range(0, whole, ROWS_PER_INSERT):
            conn.execute(self._insert_many, list(chain.from_iterable(rows[i:i + ROWS_PER_INSERT])))
        if whole < len(rows):
            conn.executemany(self._insert, rows[whole:])

    def forget(self) -> None:
        """Drop the kept text: the transaction of the last load was rolled back, so the schema
        cookie went back too, and the value kept could come round again with other triggers."""
        self._cookie = self._create = None

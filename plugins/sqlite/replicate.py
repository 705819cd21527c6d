"""Last-writer-wins apply for replication (``apply_many``), inside the caller's write transaction.

Each key's current state -- its row (live or expired, with value and version) or its tombstone --
is read for a whole chunk of keys in one statement (the keys as a VALUES list joined to the
table's key index and the tombstones' primary key); the decision is kvctl.store.newer itself,
so the equal-version tie-break is exactly the one every other backend makes.  The winners are
then written with executemany: upserts with their own versions, deletions as a tombstone written
first (with the incoming version) and the row deleted after it (the delete trigger keeps a newer
tombstone it finds, and logs it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from kvctl.plugin_kit import record_of
from kvctl.store import TOMBSTONE, Record, newer

from .triggers import TableSQL


class Applier:
    """The statements of one table's apply_many."""

    def __init__(self, sql: TableSQL, chunk: int) -> None:
        self._sql = sql
        self._chunk = chunk
        self._lookup: dict[int, str] = {}
        self._bury = (f"INSERT INTO {sql.tombs}(key, version) VALUES (?, ?) "
                      "ON CONFLICT(key) DO UPDATE SET version = excluded.version")
        self._delete = f"DELETE FROM {sql.t} WHERE key = ?"

    def _lookup_sql(self, n: int) -> str:
        sql = self._lookup.get(n)
        if sql is None:
            t, tombs = self._sql.t, self._sql.tombs
            values = ",".join(["(?)"] * n)
            sql = (f"WITH q(k) AS (VALUES {values}) SELECT q.k, CAST(t.value AS BLOB), t.expires_at, t.version, "
                   f"tb.version FROM q LEFT JOIN {t} t ON t.key = q.k LEFT JOIN {tombs} tb ON tb.key = q.k")
            self._lookup[n] = sql
        return sql

    def current(self, conn: sqlite3.Connection, keys: Sequence[bytes]) -> tuple[dict[bytes, Record], set[bytes]]:
        """Each key's row or tombstone (absent: neither), and the keys that have a row."""
        state: dict[bytes, Record] = {}
        rows: set[bytes] = set()
        for i in range(0, len(keys), self._chunk):
            part: list[Any] = list(keys[i:i + self._chunk])
            size = len(part) if len(part) <= 16 else (len(part) + 7) & ~7  # a few dozen statements at most
            part.extend([None] * (size - len(part)))  # NULL matches no key: the padding finds nothing
            for key, value, expires, version, tomb in conn.execute(self._lookup_sql(size), part):
                if value is not None:
                    state[key] = record_of(key, value, expires, version)
                    rows.add(key)
                elif tomb is not None:
                    state[key] = Record(key, b"", None, tomb, TOMBSTONE)
        return state, rows

    def apply(self, conn: sqlite3.Connection, batch: Sequence[Record], put_given: str) -> tuple[int, list[Record]]:
        """Apply ``batch`` (its versions all set); returns (how many took effect, the winners
        written).  A key named several times ends in the state of the last change that won."""
        keys = list(dict.fromkeys(rec.key for rec in batch))
        state, rows = self.current(conn, keys)
        applied = 0
        final: dict[bytes, Record] = {}
        for rec in batch:
            if newer(rec, final.get(rec.key) or state.get(rec.key)):
                final[rec.key] = rec
                applied += 1
        if not final:
            return 0, []
        upserts: list[tuple[Any, ...]] = []
        tombs: list[tuple[bytes, int | None]] = []
        doomed: list[tuple[bytes]] = []
        for key, rec in final.items():
            if rec.kind == TOMBSTONE:
                tombs.append((key, rec.version))
                if key in rows:
                    doomed.append((key,))
            else:
                upserts.append((key, rec.value, rec.expires_at_ms, rec.version))
        if tombs:
            conn.executemany(self._bury, tombs)
        if doomed:
            conn.executemany(self._delete, doomed)
        if upserts:
            conn.executemany(put_given, upserts)
        return applied, list(final.values())

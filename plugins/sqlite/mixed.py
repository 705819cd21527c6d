"""Reading a table whose keys are not all BLOBs: another program's rows in a file kvctl has not
upgraded (schema version 3 or older, opened by a command that only reads, so it is read as it is).

SQLite orders a column's values by type first (numbers < TEXT < BLOB) and compares TEXT ``'a'``
and BLOB ``x'61'`` as different, so kvctl's BLOB range queries do not see a TEXT key at all.
Here a key of any type is its bytes (TEXT: its UTF-8 bytes, a number: its decimal text):

* BLOB keys: kvctl's usual index range.
* TEXT keys: the same range with the bounds cast to TEXT.  TEXT compares with the BINARY
  collation, ``memcmp`` of the UTF-8 bytes, so this is an index range in byte order too.
* numbers (rare: ``INSERT ... VALUES (7, ...)``): sorted by their text, read in one go.

The three are merged by key; a key present in two forms is the row with the newer version (the
rule the upgrade applies when it rewrites such rows, :attr:`.triggers.TableSQL.normalise`).
A version 4 file holds BLOB keys only: its trigger stores other programs' keys as BLOBs.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

from kvctl.plugin_kit import record_of
from kvctl.store import Record, now_ms

Row = tuple[bytes, Any, int | None, int | None]
_LIVE = "(expires_at IS NULL OR expires_at > ?3)"


def has_other_keys(conn: sqlite3.Connection, table: str) -> bool:
    """Whether ``table`` holds a key that is not a BLOB (one index probe: they all sort first)."""
    return conn.execute(f"SELECT 1 FROM {table} WHERE key < X'' LIMIT 1").fetchone() is not None


def get(conn: sqlite3.Connection, table: str, value: str, key: bytes) -> Row | None:
    """The newest row of ``key`` in any form (expired or not: the caller decides)."""
    return conn.execute(
        f"SELECT ?1, {value}, expires_at, version FROM {table} WHERE key IN (?1, CAST(?1 AS TEXT)) "
        "OR (key < '' AND CAST(key AS BLOB) = ?1) ORDER BY coalesce(version, 0) DESC LIMIT 1", (key,)).fetchone()


def rows(conn: sqlite3.Connection, table: str, value: str, lower: bytes, inclusive: bool,
         end: bytes | None, batch_size: int) -> Iterator[Record]:
    """The live records with ``lower <= key < end`` (``lower < key`` unless ``inclusive``), in byte
    order, one per key."""
    op = ">=" if inclusive else ">"
    blob_upper = "" if end is None else " AND key < ?2"
    text_upper = " AND key < X''" if end is None else " AND key < CAST(?2 AS TEXT)"
    number_upper = "" if end is None else " AND k < ?2"
    blobs = (f"SELECT key, {value}, expires_at, version FROM {table} WHERE key {{op}} ?1{blob_upper} "
             f"AND {_LIVE} ORDER BY key LIMIT ?4")
    texts = (f"SELECT CAST(key AS BLOB), {value}, expires_at, version FROM {table} WHERE key {{op}} CAST(?1 AS TEXT)"
             f"{text_upper} AND {_LIVE} ORDER BY key LIMIT ?4")
    numbers = (f"SELECT CAST(key AS BLOB) AS k, {value}, expires_at, version FROM {table} WHERE key < '' "
               f"AND k {op} ?1{number_upper} AND {_LIVE} ORDER BY k")
    arms = [_paged(conn, blobs, lower, op, end, batch_size), _paged(conn, texts, lower, op, end, batch_size),
            iter(conn.execute(numbers, (lower, end, now_ms())).fetchall())]
    pending: Row | None = None
    for row in heapq.merge(*arms, key=itemgetter(0)):
        if pending is not None and row[0] == pending[0]:
            if (row[3] or 0) > (pending[3] or 0):
                pending = row
            continue
        if pending is not None:
            yield record_of(*pending)
        pending = row
    if pending is not None:
        yield record_of(*pending)


def _paged(conn: sqlite3.Connection, sql: str, lower: bytes, op: str, end: bytes | None,
           batch_size: int) -> Iterator[Row]:
    """One arm's rows, keyset-paged: each page resumes after the last key of the one before."""
    while True:
        page = conn.execute(sql.format(op=op), (lower, end, now_ms(), batch_size)).fetchall()
        yield from page
        if len(page) < batch_size:
            return
        lower, op = page[-1][0], ">"

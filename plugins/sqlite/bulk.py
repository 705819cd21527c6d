"""Big batches into a key range that holds nothing yet, with one feed entry for the whole batch.

The ``insert`` trigger (:mod:`.triggers`) logs every row it sees in ``t__changes`` -- a second
write of every key and value -- and removes the key's tombstone.  A batch whose key range holds
no row and no tombstone (a new file, the next range of a migrate or restore) needs neither: inside
the batch's immediate transaction the trigger is dropped, the rows are inserted, one bulk-load
marker (:mod:`kvctl.plugin_kit.bulkfeed`) is logged in their place, and the trigger is laid again
from the very text the file held.  DDL is transactional in SQLite and the write lock is held
throughout, so no other connection ever sees the table without its trigger, and a failure or
Ctrl-C rolls all of it back.  The rows written are exactly those the upsert would have written:
no key had a row to update, and no tombstone to raise a version above or remove.

SQLite has no way to suspend a trigger for one statement; dropping and re-creating it inside the
transaction is how its documentation suggests altering a trigger, and costs a schema change of
a few pages per batch (other connections re-prepare their statements once).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from kvctl.plugin_kit import bulk_marker

from .triggers import TableSQL

# Batches of fewer rows take the upsert: the range probe and the schema change would cost more
# than the trigger saves.
DIRECT_MIN_ROWS = 500


def load_directly(conn: sqlite3.Connection, sql: TableSQL, rows: list[tuple[Any, ...]], *, feed: bool) -> bool:
    """Insert ``rows`` (distinct keys, (key, value, expires_at, version), versions given) in the
    caller's immediate transaction when their key range holds no row and no tombstone; False,
    having written nothing, otherwise."""
    keys = [r[0] for r in rows]
    first, last = min(keys), max(keys)
    taken = conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM {sql.t} WHERE key >= ?1 AND key <= ?2), "
        f"EXISTS (SELECT 1 FROM {sql.tombs} WHERE key >= ?1 AND key <= ?2)", (first, last)).fetchone()
    if taken[0] or taken[1] or len(set(keys)) != len(keys):
        return False
    found = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?",
                         (f"{sql.table}__kvctl_insert",)).fetchone()
    if found is None:  # not a table kvctl laid out as it expects: the upsert's way
        return False
    conn.execute(f"DROP TRIGGER {sql.trigger('insert')}")
    # key order fills the key index from left to right
    conn.executemany(f"INSERT INTO {sql.t}(key, value, expires_at, version) VALUES (?, ?, ?, ?)",
                     rows if keys == sorted(keys) else sorted(rows))
    if feed:
        versions = [r[3] for r in rows]
        key, value = bulk_marker(first, last, min(versions), max(versions))
        conn.execute(f"INSERT INTO {sql.changes}(key, value, version, deleted) VALUES (?, ?, 0, 1)", (key, value))
    conn.execute(found[0])
    return True

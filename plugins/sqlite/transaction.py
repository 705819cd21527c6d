"""One ``BEGIN IMMEDIATE`` transaction: the write lock from the first statement, no other writer
in between, all or nothing: rolled back on any failure, Ctrl-C included."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["immediate"]


@contextmanager
def immediate(conn: sqlite3.Connection, fail: Callable[[sqlite3.Error], Exception]) -> Iterator[None]:
    """Run the block in one immediate transaction; a sqlite3 error becomes ``fail(exc)`` (which
    rolls back), anything else rolls back and propagates."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise fail(exc) from None
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise

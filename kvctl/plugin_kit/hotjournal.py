"""Refusing a read of a SQLite file whose interrupted write has not been rolled back yet.

A writer that crashed mid-transaction leaves a hot ``-journal`` beside the file: the pages it
had overwritten.  The first connection that may write rolls it back; a read-only one cannot, and
SQLite refuses it (``SQLITE_READONLY_ROLLBACK``).  kvctl's reads never change a file, so they
stop there and say how to recover, for every plugin that reads SQLite files.
"""

from __future__ import annotations

from kvctl.errors import StoreIOError

__all__ = ["hot_journal_error"]


def hot_journal_error(where: str, path: str | None = None) -> StoreIOError:
    """The one line for a read of a file with a hot journal: what is wrong and how to fix it.
    ``where`` is the store's redacted URL; ``path`` the file, when the caller knows it."""
    shown = path or "FILE"
    return StoreIOError(
        f"{where}: an interrupted write left a hot journal ({shown}-journal), which a writer must "
        "roll back before the file can be read; nothing was changed",
        hint=f"open it once for writing, e.g. sqlite3 {shown} 'PRAGMA integrity_check'",
    )

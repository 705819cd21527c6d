"""sqlite3 exceptions -> kvctl errors, by SQLite's primary result code.

Python 3.11 attaches the result code to every exception raised by the library
(``sqlite_errorcode``); the low byte is the primary code, which is what decides the kind of
failure.  Messages name the store by its redacted URL and stay on one line.
"""

from __future__ import annotations

import errno
import os
import sqlite3

from kvctl.errors import (
    AuthError,
    CorruptError,
    KvctlError,
    LimitError,
    LockedError,
    StoreIOError,
    filesystem_error,
)
from kvctl.plugin_kit import hot_journal_error

# Primary result codes (sqlite3.h); the sqlite3 module exports them only from Python 3.11.
SQLITE_PERM = 3
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_TOOBIG = 18
SQLITE_AUTH = 23
SQLITE_NOTADB = 26
SQLITE_READONLY_ROLLBACK = SQLITE_READONLY | 3 << 8  # extended: a hot journal a read cannot roll back


def translate(exc: sqlite3.Error, where: str, path: str) -> KvctlError:
    """The kvctl error for a sqlite3 exception raised while using the store at ``where``."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if primary in (SQLITE_NOTADB, SQLITE_CORRUPT):
        return CorruptError(f"{where}: {path} is not a usable SQLite database ({detail})")
    if primary in (SQLITE_BUSY, SQLITE_LOCKED):
        return LockedError(
            f"{where}: the database is locked by another connection ({detail})",
            hint="raise ?timeout= or retry when the other writer is done",
        )
    if code == SQLITE_READONLY_ROLLBACK:
        return hot_journal_error(where, path)
    if primary in (SQLITE_PERM, SQLITE_AUTH):
        return AuthError(f"{where}: permission denied ({detail})")
    if primary in (SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_IOERR) and _on_read_only_filesystem(path):
        return filesystem_error(where, errno.EROFS, path, hint="commands that only read can use it") \
            or StoreIOError(f"{where}: {detail}")
    if primary == SQLITE_READONLY:
        return AuthError(
            f"{where}: {path} cannot be written ({detail})",
            hint="check the file's and its directory's permissions, or drop ?readonly=true",
        )
    if primary == SQLITE_TOOBIG:
        return LimitError(f"{where}: a record is over SQLite's size limit ({detail})")
    if primary == SQLITE_FULL:
        return filesystem_error(where, errno.ENOSPC, path) or StoreIOError(f"{where}: {detail}")
    if primary == SQLITE_CANTOPEN:
        return StoreIOError(f"{where}: cannot open {path} ({detail})")
    return StoreIOError(f"{where}: {detail}")


def _on_read_only_filesystem(path: str) -> bool:
    """Is the file (or, before it exists, its nearest existing directory) on a read-only mount?
    SQLite reports that only as "readonly database" or "unable to open", with no errno."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        return bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except OSError:
        return False

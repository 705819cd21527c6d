"""Reading a local file that holds another writer's uncommitted-to-file work, without touching it.

libsql-client opens every local connection read-write, and the last connection of a file to
close finishes what a writer left behind: it checkpoints a ``-wal`` into the file and deletes it
(and the ``-shm``), or rolls a hot ``-journal`` back.  After a writer crashed, or while it is
between checkpoints with no connection open, a read would so rewrite the file.  A read of such
a file therefore opens every connection ``mode=ro``: SQLite reads the ``-wal`` as it is and
leaves it, and refuses a hot journal (a read then fails rather than change the file).  Without
such a sibling, the read-write connection is kept: a read-only one could not remove the ``-wal``
and ``-shm`` that reading a WAL file creates, and a read leaves the directory as it found it.
"""

from __future__ import annotations

import os
import sqlite3
from urllib.parse import quote

from libsql_client import LibsqlError
from libsql_client.sqlite3_utils import Sqlite3Client

__all__ = ["ReadOnlyFile", "holds_pending_work", "read_only_connection"]


def holds_pending_work(path: str) -> bool:
    """Does ``path`` have a ``-wal`` or ``-journal`` beside it that closing a connection would apply?"""
    return os.path.exists(path + "-wal") or os.path.exists(path + "-journal")


class ReadOnlyFile(Sqlite3Client):
    """libsql-client's local client with every connection opened read-only."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._path = path

    def _connect(self) -> sqlite3.Connection:
        if self.closed:
            raise LibsqlError("The client was closed", "CLIENT_CLOSED")
        return read_only_connection(self._path)


def read_only_connection(path: str) -> sqlite3.Connection:
    """A ``mode=ro`` connection to ``path``, made as libsql-client makes its own: the caller
    retries a busy file (timeout 0) and commits itself."""
    return sqlite3.connect(f"file:{quote(path, safe='/')}?mode=ro", uri=True, isolation_level=None,
                           check_same_thread=False, timeout=0)

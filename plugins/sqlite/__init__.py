"""``sqlite:///abs/path.db`` / ``sqlite://relative/path.db``: a key-value table in a SQLite file.

Options (query string): ``table`` (default ``kv``; several tables may share a file),
``timeout`` (busy timeout, default ``30s``), ``synchronous`` (``normal`` default, ``full``,
``extra``, ``off``), ``journal_mode`` (``wal`` default, ``delete``, ``truncate``, ``persist``),
``readonly`` (``true`` opens the file read-only and never creates it).

The file is created when missing; its directory is not (a mistyped path must not grow a tree).
Layout and pragmas: :mod:`kvctl_plugins.sqlite.schema`; behaviour: :mod:`kvctl_plugins.sqlite.store`.
"""

from .store import SQLiteStore

__all__ = ["SQLiteStore"]

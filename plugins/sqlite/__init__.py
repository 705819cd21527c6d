"""``sqlite:///abs/path.db`` / ``sqlite://relative/path.db``: a key-value table in a SQLite file.

Options (query string): ``table`` (default ``kv``; several tables may share a file),
``timeout`` (busy timeout, default ``30s``), ``synchronous`` (``normal`` default, ``full``,
``extra``, ``off``), ``journal_mode`` (``wal`` default, ``delete``, ``truncate``, ``persist``),
``readonly`` (``true`` opens the file read-only and never creates it), ``create`` (``true`` lets a
write add kvctl's table to a database of other programs' tables), ``embedded`` (kvctl's default
store), and for replication ``feed`` (``true`` for a new table), ``feed_retention`` (``100000``
changes, or a duration such as ``7d``) and ``tombstone_retention`` (``7d``): see
:mod:`kvctl_plugins.sqlite.options`.

A write creates the file when missing; its directory is not (a mistyped path must not grow a
tree).  A command that only reads changes nothing: no file, table, trigger, pragma or journal
mode; a missing file is ``NoSuchStoreError``.  A database holding other programs' tables and
none of kvctl's is ``ForeignStoreError``, for a write too unless ``?create=true``.
Layout, pragmas and the schema upgrade: :mod:`kvctl_plugins.sqlite.schema`; tombstones, change
feed and the triggers that capture other programs' writes: :mod:`kvctl_plugins.sqlite.triggers`;
behaviour: :mod:`kvctl_plugins.sqlite.store`.
"""

from .store import SQLiteStore

__all__ = ["SQLiteStore"]

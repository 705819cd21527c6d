"""Opening a kvctl SQLite database: pre-flight checks, pragmas, the table and its side objects.

The table (one per ``?table=``, default ``kv``)::

    CREATE TABLE kv (
        id         INTEGER PRIMARY KEY,   -- rowid table: 2-3x faster than WITHOUT ROWID for 1 KiB values
        key        BLOB NOT NULL UNIQUE,  -- the unique index serves lookups and ordered range scans
        value      BLOB NOT NULL,
        expires_at INTEGER,               -- absolute ms since the epoch; NULL = no expiry
        version    INTEGER                -- HLC version (kvctl.hlc); written NULL, a trigger stamps one
    );
    CREATE INDEX kv_expiry  ON kv(expires_at) WHERE expires_at IS NOT NULL;  -- purging expired rows
    CREATE INDEX kv_version ON kv(version);  -- O(log n) HLC seed on open and trigger stamps

plus its tombstones, change feed, triggers and ``kvctl_meta`` row (:mod:`.triggers`).

``PRAGMA user_version`` holds the file's schema version, :data:`SCHEMA_VERSION`.  Version 1 (kvctl
before change feeds) had the table alone, with ``version NOT NULL``.  The first read-write open
of a version 1 file upgrades every kvctl table in it, in one ``BEGIN IMMEDIATE`` transaction: each
table is rebuilt to let ``version`` be written NULL (SQLite cannot drop a NOT NULL constraint in
place; rows keep their ids, the table's other indexes and triggers are re-created), given its
tombstones, node id, feed and triggers; then ``user_version`` becomes 2.  A failure rolls all of it
back.  A read-only open of a version 1 file reads it as it is (no feed).  Older kvctl refuses a
version 2 file ("newer than this kvctl"); a process of it that had the file open before the
upgrade goes on working, its writes captured by the triggers like any other program's.

Version 3 adds ``kvctl_meta.replaced_version`` and a trigger that keeps it (so a REPLACE by
another program always gets a newer version, :mod:`.triggers`).  The first read-write open of a
version 2 file adds the column and lays every table's triggers again, feeds kept as they are,
in one ``BEGIN IMMEDIATE`` transaction.  A read-only open reads a version 2 file as it is.

Version 4 adds a trigger that stores another program's TEXT (or number) key or value as its
bytes (``coerce`` in :mod:`.triggers`): SQLite compares TEXT ``'a'`` and BLOB ``x'61'`` as
different values, so a ``sqlite3`` shell insert of ``'user:1'`` would otherwise be a second row
beside kvctl's ``user:1``, outside the BLOB key range kvctl scans.  The first read-write open of
a version 2 or 3 file rewrites such rows as BLOBs (a key present in both forms keeps the newer
row) and lays the triggers again, in the same transaction.  Reads cast every value to BLOB, so a
TEXT value written by an ``UPDATE`` reads as its bytes.  A read-only open of an older file reads
it as it is, its TEXT and number keys as their bytes, in byte order (:mod:`.mixed`).

Version 5 changes no table: a big batch into an unused key range may be logged in the feed as
one bulk-load entry instead of one per key (:mod:`.bulk`), which an older kvctl's feed reader
would not serve.  The first read-write open of a version 4 file only sets the version number.

An open that fails leaves existing files as they were: every check that can refuse a file runs
before anything is written to it.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sqlite3
from dataclasses import dataclass
from urllib.parse import quote

from kvctl.errors import AuthError, ForeignStoreError, NoSuchStoreError, StoreIOError, UsageError
from kvctl.plugin_kit import foreign_store_error, random_node
from kvctl.store import StoreURL

from .catalog import mapping_suggestions
from .errors import translate
from .options import META_TABLE, RESERVED_SUFFIXES, Options
from .triggers import TableSQL

SCHEMA_VERSION = 5
COLUMNS = ("id", "key", "value", "expires_at", "version")


@dataclass(frozen=True)
class TableState:
    """What the file records about the store's table."""

    node: int  # HLC node id (0 for a read-only version 1 file)
    feed_id: str | None  # the change feed's id; None: no feed
    tombs: bool  # the tombstone table exists (False only for a read-only version 1 file)


def preflight(opts: Options, where: str) -> bool:
    """Refuse paths SQLite would mishandle, with a clear message, before touching anything;
    True when the database file exists.

    A missing parent directory is refused rather than created: a typo in a path must not
    silently grow a directory tree (the database file itself is created by a write, as SQLite
    does).  Only the embedded default store's directory is created, by its first write.  A read
    of a missing file is NoSuchStoreError and creates nothing.
    """
    path = opts.path
    if os.path.isdir(path):
        raise StoreIOError(f"{where}: {path} is a directory, not a database file")
    if os.path.exists(path):
        if not os.access(path, os.R_OK):
            raise AuthError(f"{where}: permission denied reading {path}")
        return True
    if opts.embedded and not opts.readonly:
        if opts.writes:
            _make_parent(path, where)
        return False  # a read of the embedded store before its first write: empty (see connect)
    if opts.reads_only:
        raise NoSuchStoreError(f"no such store: {where} ({path} does not exist; nothing was created)")
    if opts.readonly:
        raise StoreIOError(f"{where}: {path} does not exist (and readonly=true will not create it)")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise StoreIOError(f"{where}: directory {parent} does not exist", hint="create it first")
    return False


def file_size(path: str) -> int:
    """A file's size in bytes; 0 when it is missing."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _make_parent(path: str, where: str) -> None:
    parent = os.path.dirname(path) or "."
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise StoreIOError(f"{where}: cannot create directory {parent} ({exc.strerror})") from None


def _open_mode(opts: Options, exists: bool) -> str:
    """The URI parameters to open the file with.

    A write opens ``rwc``.  Anything else opens ``ro``, with two exceptions for a WAL-mode file
    without a ``-wal`` (its last writer closed cleanly).  A read-only connection has to create
    ``-wal`` and ``-shm`` to read it and, not being allowed to write, cannot remove them again;
    a read-write connection (kept from writing by ``query_only``, see :func:`connect`) is what
    removes them on close, as the last connection of the file.  So the file is opened ``rw``
    then, when it is writable, and a read leaves the directory as it found it; on read-only
    media it is opened ``immutable``."""
    if opts.writes:
        return "mode=rwc"
    if not exists:
        return "mode=memory"  # the embedded default store before its first write: an empty store
    path = opts.path
    if not _is_wal(path) or os.path.exists(path + "-wal"):
        return "mode=ro"
    if not os.access(os.path.dirname(path) or ".", os.W_OK):
        # Read-only media: a WAL reader cannot create the -shm it needs.  With no -wal, every
        # commit is in the file and no writer can be at work on a directory nobody may write
        # to, so the file is read as immutable (no locks, no -shm).
        return "mode=ro&immutable=1"
    if not os.path.exists(path + "-shm") and os.access(path, os.W_OK):
        return "mode=rw"
    return "mode=ro"


def _is_wal(path: str) -> bool:
    """The database header says WAL (file format version numbers at offsets 18 and 19 are 2)."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(20)
    except OSError:
        return False
    return header[:16] == b"SQLite format 3\x00" and header[18:20] == b"\x02\x02"


def connect(opts: Options, url: StoreURL) -> tuple[sqlite3.Connection, TableState]:
    """An open, checked connection with the pragmas set and the table (current schema version)
    present; or, when the command only reads (or ?readonly=true), the file as it is, unchanged."""
    where = url.redacted()
    exists = preflight(opts, where)
    mode = _open_mode(opts, exists)
    uri = f"file:{quote(opts.path if mode != 'mode=memory' else 'kvctl-empty', safe='/')}?{mode}"
    try:
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.  One worker thread
        # of kvctl.adapt may call the store, hence check_same_thread=False.
        conn = sqlite3.connect(
            uri, uri=True, timeout=opts.timeout_ms / 1000, isolation_level=None,
            check_same_thread=False, cached_statements=256,
        )
    except sqlite3.Error as exc:
        raise translate(exc, where, opts.path) from None
    try:
        if mode == "mode=memory":  # an empty store in memory, laid out as a new file would be
            state = _prepare(conn, dataclasses.replace(opts, readonly=False, reads_only=False), url,
                             in_memory=True)
        else:
            if not opts.writes:  # the mode=rw case of _open_mode: SQLite refuses every write
                conn.execute("PRAGMA query_only = ON")
            state = _prepare(conn, opts, url)
        if not opts.writes:
            conn.execute("PRAGMA query_only = ON")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise translate(exc, where, opts.path) from None
        raise
    return conn, state


def _prepare(conn: sqlite3.Connection, opts: Options, url: StoreURL, *, in_memory: bool = False) -> TableState:
    where = url.redacted()
    # Reading the schema is the first access to the file: a file that is not a database fails
    # here (SQLITE_NOTADB -> CorruptError) before anything could be written to it.
    user_version = _user_version(conn, opts, where)
    exists = _check_table(conn, opts.table, where)
    if not exists and not (opts.writes and opts.create):
        foreign = _foreign_tables(conn)
        if foreign:
            raise foreign_store_error(url, foreign, mapped=mapping_suggestions(conn, foreign))
    if not opts.writes:
        if not exists:
            raise NoSuchStoreError(
                f"no such store: {where} ({opts.path} has no kvctl table {opts.table}; nothing was created)",
                hint="open it once without readonly" if opts.readonly and not opts.reads_only else None)
        # read as it is: an older schema version too (no feed in a version 1 file)
        return read_state(conn, opts.table) or TableState(
            node=0, feed_id=None, tombs=_has_table(conn, opts.table + "__tombs"))
    if not in_memory:
        mode = conn.execute(f"PRAGMA journal_mode={opts.journal_mode}").fetchone()[0]
        if str(mode).lower() != opts.journal_mode:
            raise StoreIOError(f"{where}: cannot switch {opts.path} to journal_mode={opts.journal_mode} ({mode})")
        conn.execute(f"PRAGMA synchronous={opts.synchronous}")
    state = read_state(conn, opts.table) if user_version >= 2 and exists else None
    if (user_version == SCHEMA_VERSION and state is not None
            and (opts.feed is None or opts.feed == (state.feed_id is not None))):
        return state  # the usual open: nothing to create, upgrade or switch, no write lock taken
    # Something to create, upgrade or switch: one immediate transaction, every check made again
    # inside it (another process may have done it meanwhile).
    conn.execute("BEGIN IMMEDIATE")
    user_version = _user_version(conn, opts, where)
    conn.execute(TableSQL.create_meta)
    if user_version in (2, 3):
        _upgrade_from(conn, user_version)
    if user_version < SCHEMA_VERSION:
        for table in _kvctl_tables(conn):
            if read_state(conn, table) is None:
                _adopt(conn, table, feed=True if table != opts.table or opts.feed is None else opts.feed)
    if not _check_table(conn, opts.table, where):
        _create(conn, opts.table, feed=True if opts.feed is None else opts.feed)
    elif read_state(conn, opts.table) is None:
        _adopt(conn, opts.table, feed=True if opts.feed is None else opts.feed)
    state = read_state(conn, opts.table)
    assert state is not None
    if opts.feed is not None and opts.feed != (state.feed_id is not None):
        switch_feed(conn, opts.table, state.node, on=opts.feed)
        state = read_state(conn, opts.table)
        assert state is not None
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    conn.execute("COMMIT")
    return state


def _upgrade_from(conn: sqlite3.Connection, user_version: int) -> None:
    """Version 2 or 3 -> 4, inside the caller's transaction: version 3's meta column (from 2),
    every table's rows normalised to BLOBs and its triggers laid again (the feed, its id and its
    floor untouched)."""
    if user_version == 2:
        conn.execute(TableSQL.add_replaced_version)
    for table, node, feed_id in conn.execute(f"SELECT table_name, node_id, feed_id FROM {META_TABLE}").fetchall():
        sql = TableSQL(table, int(node))
        for stmt in sql.drop_triggers + sql.normalise + sql.create_triggers(feed=feed_id is not None):
            conn.execute(stmt)


def _user_version(conn: sqlite3.Connection, opts: Options, where: str) -> int:
    user_version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if user_version > SCHEMA_VERSION:
        raise UsageError(
            f"{where}: {opts.path} has schema version {user_version}, newer than this kvctl's "
            f"{SCHEMA_VERSION}", hint="upgrade kvctl",
        )
    return user_version


def read_state(conn: sqlite3.Connection, table: str) -> TableState | None:
    """The table's ``kvctl_meta`` row, or None when the file has none for it (a version 1 file)."""
    if not _has_table(conn, META_TABLE):
        return None
    row = conn.execute(f"SELECT node_id, feed_id FROM {META_TABLE} WHERE table_name = ?", (table,)).fetchone()
    return None if row is None else TableState(node=int(row[0]), feed_id=row[1], tombs=True)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, bool]]:
    """(name, NOT NULL) of each column of ``table``."""
    return [(row[1], bool(row[3])) for row in conn.execute(f'PRAGMA table_info("{table}")')]


def _check_table(conn: sqlite3.Connection, table: str, where: str) -> bool:
    cols = tuple(name for name, _ in _columns(conn, table))
    if not cols:
        return False
    if cols != COLUMNS:
        raise ForeignStoreError(
            f"{where}: table {table} is not a kvctl table (columns {', '.join(cols)}); nothing was changed",
            hint="to read its rows add key=COLUMNS; table=* lists every table with its URL",
        )
    return True


def _user_tables(conn: sqlite3.Connection) -> list[str]:
    """Every table of the file but SQLite's own, in the order they were created."""
    return [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite^_%' ESCAPE '^' "
        "ORDER BY rowid")]


def _foreign_tables(conn: sqlite3.Connection) -> list[str]:
    """The file's tables when it holds tables and none of kvctl's (no ``kvctl_meta``, no table shaped
    like a store table): a database another program made, which kvctl must not change."""
    names = _user_tables(conn)
    if META_TABLE in names or _kvctl_tables(conn):
        return []
    return names


def _kvctl_tables(conn: sqlite3.Connection) -> list[str]:
    """Every table of the file shaped like a kvctl store table (the ones a version 1 file holds)."""
    names = _user_tables(conn)
    return [name for name in names
            if name != META_TABLE and not name.endswith(RESERVED_SUFFIXES)
            and tuple(col for col, _ in _columns(conn, name)) == COLUMNS]


def _create(conn: sqlite3.Connection, table: str, *, feed: bool) -> None:
    sql = TableSQL(table)
    conn.execute(sql.create_table())
    for stmt in sql.create_indexes:
        conn.execute(stmt)
    _add_side_objects(conn, table, feed=feed)


def _adopt(conn: sqlite3.Connection, table: str, *, feed: bool) -> None:
    """Make an existing kvctl table (version 1, or made by hand) a current one."""
    if dict(_columns(conn, table)).get("version"):
        _rebuild(conn, table)
    for stmt in TableSQL(table).normalise:  # before any trigger of ours is on the table
        conn.execute(stmt)
    for stmt in TableSQL(table).create_indexes:  # a hand-made table may lack them
        conn.execute(stmt)
    _add_side_objects(conn, table, feed=feed)


def _rebuild(conn: sqlite3.Connection, table: str) -> None:
    """Copy ``table`` into version 2's definition (``version`` nullable) and put it in its place,
    the documented way to change a column constraint SQLite's ALTER TABLE cannot (lang_altertable
    "other kinds of table schema changes"), inside the caller's transaction."""
    sql = TableSQL(table)
    ours = {f"{table}_expiry", f"{table}_version"}
    others = [stmt for name, stmt in conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL", (table,))
        if name not in ours and not name.startswith(f"{table}__kvctl_")]
    temp = table + "__kvctl_rebuild"
    conn.execute(sql.create_table(temp))
    conn.execute(f'INSERT INTO "{temp}"(id, key, value, expires_at, version) '
                 f'SELECT id, key, value, expires_at, version FROM "{table}"')
    conn.execute(f'DROP TABLE "{table}"')
    # legacy rename: leave the rest of the schema (a user's views naming the table) as it is
    conn.execute("PRAGMA legacy_alter_table=ON")
    try:
        conn.execute(f'ALTER TABLE "{temp}" RENAME TO "{table}"')
    finally:
        conn.execute("PRAGMA legacy_alter_table=OFF")
    for stmt in sql.create_indexes + others:
        conn.execute(stmt)


def _add_side_objects(conn: sqlite3.Connection, table: str, *, feed: bool) -> None:
    node = random_node()  # differs between stores: same-millisecond writes differ
    sql = TableSQL(table, node)
    for stmt in sql.create_tombs:  # a table of that name already there fails the open (rolled back)
        conn.execute(stmt)
    conn.execute(f"INSERT INTO {META_TABLE}(table_name, node_id) VALUES (?, ?)", (table, node))
    switch_feed(conn, table, node, on=feed, fresh=True)


def switch_feed(conn: sqlite3.Connection, table: str, node: int, *, on: bool, fresh: bool = False) -> None:
    """Turn the table's change feed on (a new, empty change table with a new id: every older
    cursor becomes a gap) or off (the change table dropped), and lay the matching triggers.
    ``fresh``: the table is new to kvctl_meta, so a change table of that name is not ours (the
    CREATE fails on it rather than dropping someone's table)."""
    sql = TableSQL(table, node)
    for stmt in sql.drop_triggers:
        conn.execute(stmt)
    if not fresh:
        conn.execute(f"DROP TABLE IF EXISTS {sql.changes}")
    if on:
        conn.execute(sql.create_changes)
    conn.execute(f"UPDATE {META_TABLE} SET feed_id = ?, feed_floor = 0 WHERE table_name = ?",
                 (secrets.token_hex(8) if on else None, table))
    for stmt in sql.create_triggers(feed=on):
        conn.execute(stmt)

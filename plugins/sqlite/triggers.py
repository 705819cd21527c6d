"""The SQL of the objects beside a store table: tombstones, the change feed, triggers.

Beside table ``t`` (one per ``?table=``)::

    t__tombs    key BLOB PRIMARY KEY, version INTEGER NOT NULL   (WITHOUT ROWID; index on version)
                the newest deletion of each deleted key, kept ?tombstone_retention=
    t__changes  seq INTEGER PRIMARY KEY, key, value, expires_at, version, deleted (0/1),
                changed_at (ms since the epoch; for ?feed_retention=<duration>)
                only while the feed is on
    kvctl_meta  one row per store table: its HLC node id, its feed id (NULL: feed off), the
                feed's floor (the highest purged seq: a cursor below it is a gap) and
                replaced_version (the newest version a REPLACE removed unseen, see below)

Everything that keeps them right is a trigger on ``t``, so writes made by other programs with
plain SQL (the ``sqlite3`` shell, Python's ``sqlite3``, an ORM) keep the same guarantees as
kvctl's own, and kvctl's writes stay single statements:

* A row written without a version (an ``INSERT`` leaving ``version`` NULL, an ``UPDATE`` that
  changes the value, expiry or key but leaves the version as it was) is stamped with one in
  kvctl.hlc's bit layout from SQLite's clock, ``(epoch ms << 21) | node``, raised above every
  version in the table and its tombstones (an HLC observing the newest version it can see, one
  index probe each), so the write wins everywhere it replicates to.
* A deleted row (``DELETE``, or an ``UPDATE`` moving it to another key) leaves a tombstone whose
  version is stamped the same way; a purge of an *expired* row keeps the row's own version, since
  an expiry is not a new write and must not beat a later write at another replica.  An insert
  removes its key's tombstone.
* With the feed on, every upsert of ``t`` and every new or newer tombstone is appended to
  ``t__changes`` (kvctl's own big batches into an unused key range log one bulk-load entry
  instead, see :mod:`.bulk`).  ``seq`` is taken inside the writing transaction and SQLite has one writer at a
  time, so ``seq`` order is commit order and a reader paging ``seq > cursor`` never skips a change.
  ``seq`` is a plain integer primary key (SQLite gives each new row the largest ``seq`` plus one)
  and the purge never removes the newest change, so ``seq`` only grows and is never reused: the
  guarantee AUTOINCREMENT gives, without its write of ``sqlite_sequence`` on every insert (up to
  about a fifth more CPU per write in bench/results/sync_sqlite_RESULTS.md).

``INSERT OR REPLACE`` by another program removes the row it replaces without firing delete
triggers (SQLite fires them for REPLACE only under ``recursive_triggers``).  A ``BEFORE INSERT``
trigger on rows written without a version therefore records the version of the row the insert
may replace in ``kvctl_meta.replaced_version``, and every stamp is raised above it: a REPLACE of a
key is a change of that key with a newer version, even within the millisecond of the write it
replaces (schema version 3; version 2 stamped from the clock alone and could tie).  Known limit:
replacing by ``id`` with another key removes the old key unseen (no tombstone).  Other programs
should upsert (``INSERT ... ON CONFLICT(key) DO UPDATE``), update or delete, as kvctl does.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvctl.hlc import COUNTER_BITS, NODE_BITS

from .options import META_TABLE

_LOW = NODE_BITS + COUNTER_BITS
# SQLite's clock in epoch milliseconds: julianday('now') is fixed for one statement and works in
# every SQLite version another program may bring (unixepoch('subsec') needs 3.42); round() undoes
# the float conversion's error, so the result is the exact millisecond.
NOW_MS = "CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER)"
TRIGGER_SUFFIXES = ("coerce", "replace", "insert", "stamp_insert", "update", "stamp_update", "delete",
                    "tomb_insert", "tomb_update")
# the triggers that fire on an INSERT into the table, in the order they are created
INSERT_TRIGGERS = TRIGGER_SUFFIXES[:4]


def bump(expr: str, node: int) -> str:
    """The first version of node ``node`` above ``expr``: the next tick of the HLC counter."""
    return f"((({expr}) | 255) + 1) | {node}"


def quote(name: str) -> str:
    return f'"{name}"'


@dataclass(frozen=True)
class TableSQL:
    """DDL and statements of one store table's side objects (``table`` unquoted)."""

    table: str
    node: int = 0

    @property
    def t(self) -> str:
        return quote(self.table)

    @property
    def tombs(self) -> str:
        return quote(self.table + "__tombs")

    @property
    def changes(self) -> str:
        return quote(self.table + "__changes")

    def trigger_name(self, suffix: str) -> str:
        return f"{self.table}__kvctl_{suffix}"

    def trigger(self, suffix: str) -> str:
        return quote(self.trigger_name(suffix))

    # -- the table itself ----------------------------------------------------------------------
    def create_table(self, name: str | None = None) -> str:
        """Version 2's table: as version 1's, but ``version`` may be written NULL (and is then
        stamped by a trigger) so other programs can insert rows without knowing about versions."""
        return (f"CREATE TABLE {quote(name or self.table)} (id INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, "
                "value BLOB NOT NULL, expires_at INTEGER, version INTEGER)")

    @property
    def create_indexes(self) -> list[str]:
        return [
            f"CREATE INDEX IF NOT EXISTS {quote(self.table + '_expiry')} ON {self.t}(expires_at) "
            "WHERE expires_at IS NOT NULL",
            f"CREATE INDEX IF NOT EXISTS {quote(self.table + '_version')} ON {self.t}(version)",
        ]

    # -- side tables ----------------------------------------------------------------------------
    create_meta = (f"CREATE TABLE IF NOT EXISTS {META_TABLE} (table_name TEXT PRIMARY KEY, "
                   "node_id INTEGER NOT NULL, feed_id TEXT, feed_floor INTEGER NOT NULL DEFAULT 0, "
                   "replaced_version INTEGER NOT NULL DEFAULT 0)")
    # schema version 2 -> 3: the column create_meta has since version 3
    add_replaced_version = f"ALTER TABLE {META_TABLE} ADD COLUMN replaced_version INTEGER NOT NULL DEFAULT 0"

    @property
    def create_tombs(self) -> list[str]:
        return [f"CREATE TABLE {self.tombs} (key BLOB PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID",
                f"CREATE INDEX {quote(self.table + '__tombs_version')} ON {self.tombs}(version)"]

    @property
    def create_changes(self) -> str:
        return (f"CREATE TABLE {self.changes} (seq INTEGER PRIMARY KEY, key BLOB NOT NULL, "
                "value BLOB, expires_at INTEGER, version INTEGER, deleted INTEGER NOT NULL DEFAULT 0, "
                f"changed_at INTEGER NOT NULL DEFAULT ({NOW_MS}))")

    # -- triggers -------------------------------------------------------------------------------
    def _stamp(self, *also: str) -> str:
        """SQL for a fresh version: SQLite's clock, raised above every version in the table and its
        tombstones, above the newest version a REPLACE removed and above ``also`` (an HLC that
        observed the newest version on record)."""
        newest = [f"coalesce((SELECT max(version) FROM {self.t}), 0)",
                  f"coalesce((SELECT max(version) FROM {self.tombs}), 0)",
                  f"coalesce((SELECT replaced_version FROM {META_TABLE} WHERE table_name = '{self.table}'), 0)",
                  *(f"coalesce({e}, 0)" for e in also)]
        return f"max(({NOW_MS} << {_LOW}) | {self.node}, {bump('max(' + ', '.join(newest) + ')', self.node)})"

    def create_triggers(self, *, feed: bool) -> list[str]:
        """Every trigger of the table, for a table with (``feed``) or without a change feed."""
        t, tombs, changes = self.t, self.tombs, self.changes
        log_new = (f"INSERT INTO {changes}(key, value, expires_at, version) "
                   "VALUES (NEW.key, NEW.value, NEW.expires_at, NEW.version);" if feed else "")
        # A write with a version of its own that changes only what a version covers: nothing to stamp.
        changed_content = "(NEW.value IS NOT OLD.value OR NEW.expires_at IS NOT OLD.expires_at)"
        needs_stamp = (f"NEW.key IS NOT OLD.key OR NEW.version IS NULL OR "
                       f"(NEW.version IS OLD.version AND {changed_content})")
        bury_old_key = (f"INSERT INTO {tombs}(key, version) SELECT OLD.key, {self._stamp('OLD.version')} "
                        "WHERE NEW.key IS NOT OLD.key ON CONFLICT(key) DO UPDATE SET version = excluded.version "
                        f"WHERE excluded.version > {tombs}.version;")
        # the nested UPDATE fires the plain "update" trigger (a different trigger, so whatever the
        # connection's recursive_triggers), which logs the stamped row
        stamp_row = (f"UPDATE {t} SET version = {self._stamp('OLD.version')} WHERE id = NEW.id "
                     "AND (NEW.version IS NULL OR NEW.version IS OLD.version);")
        log_moved = (f"INSERT INTO {changes}(key, value, expires_at, version) SELECT NEW.key, NEW.value, "
                     "NEW.expires_at, NEW.version WHERE NEW.version IS NOT NULL AND NEW.version IS NOT OLD.version;"
                     if feed else "")
        # An expired row's deletion keeps the row's version (see the module docstring).  A newer
        # tombstone already there was written by apply_many just before deleting the row: kept.
        expired = f"OLD.expires_at <= {NOW_MS} AND OLD.version IS NOT NULL"
        bury = (f"INSERT INTO {tombs}(key, version) VALUES (OLD.key, CASE WHEN {expired} THEN OLD.version "
                f"ELSE {self._stamp('OLD.version')} END) ON CONFLICT(key) DO UPDATE SET version = excluded.version "
                f"WHERE {tombs}.version <= coalesce(OLD.version, 0);")
        # the row an unversioned insert may REPLACE goes without a delete trigger: keep its version
        current = f"(SELECT version FROM {t} WHERE key = NEW.key)"
        triggers = [
            # Another program's TEXT (or number) key or value is stored as its bytes: the row is
            # upserted again as BLOBs and the original insert dropped.  SQLite compares TEXT 'a' and
            # BLOB x'61' as different, so without this a TEXT key would be a second row beside
            # kvctl's, out of kvctl's byte-ordered key range.
            f"CREATE TRIGGER {self.trigger('coerce')} BEFORE INSERT ON {t} WHEN typeof(NEW.key) <> 'blob' "
            f"OR typeof(NEW.value) <> 'blob' BEGIN INSERT INTO {t}(key, value, expires_at, version) "
            "VALUES (CAST(NEW.key AS BLOB), CAST(NEW.value AS BLOB), NEW.expires_at, NEW.version) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, "
            "version = excluded.version; SELECT RAISE(IGNORE); END",
            f"CREATE TRIGGER {self.trigger('replace')} BEFORE INSERT ON {t} WHEN NEW.version IS NULL BEGIN "
            f"UPDATE {META_TABLE} SET replaced_version = {current} WHERE table_name = '{self.table}' "
            f"AND {current} > replaced_version; END",
            f"CREATE TRIGGER {self.trigger('insert')} AFTER INSERT ON {t} WHEN NEW.version IS NOT NULL BEGIN "
            f"DELETE FROM {tombs} WHERE key = NEW.key; {log_new} END",
            f"CREATE TRIGGER {self.trigger('stamp_insert')} AFTER INSERT ON {t} WHEN NEW.version IS NULL BEGIN "
            f"UPDATE {t} SET version = {self._stamp()} WHERE id = NEW.id; "
            f"DELETE FROM {tombs} WHERE key = NEW.key; END",
            f"CREATE TRIGGER {self.trigger('stamp_update')} AFTER UPDATE ON {t} WHEN {needs_stamp} BEGIN "
            f"{bury_old_key} {stamp_row} {log_moved} DELETE FROM {tombs} WHERE key = NEW.key; END",
            f"CREATE TRIGGER {self.trigger('delete')} AFTER DELETE ON {t} BEGIN {bury} END",
        ]
        if feed:
            triggers += [
                # kvctl's own updates land here: same key, a new version
                f"CREATE TRIGGER {self.trigger('update')} AFTER UPDATE ON {t} WHEN NEW.key IS OLD.key "
                f"AND NEW.version IS NOT NULL AND NEW.version IS NOT OLD.version BEGIN {log_new} END",
                f"CREATE TRIGGER {self.trigger('tomb_insert')} AFTER INSERT ON {tombs} BEGIN "
                f"INSERT INTO {changes}(key, version, deleted) VALUES (NEW.key, NEW.version, 1); END",
                f"CREATE TRIGGER {self.trigger('tomb_update')} AFTER UPDATE ON {tombs} "
                f"WHEN NEW.version IS NOT OLD.version BEGIN "
                f"INSERT INTO {changes}(key, version, deleted) VALUES (NEW.key, NEW.version, 1); END",
            ]
        return triggers

    @property
    def drop_triggers(self) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {self.trigger(s)}" for s in TRIGGER_SUFFIXES]

    @property
    def normalise(self) -> list[str]:
        """Rows other programs wrote with a TEXT (or number) key or value, rewritten as their bytes
        (run with the triggers dropped: a change of type is no new write).  A key present in both
        forms keeps the newer row."""
        t = self.t
        foreign = f"{t}.key < X''"  # every non-BLOB key sorts before every BLOB: one index range
        twin = f"(SELECT b.id FROM {t} AS b WHERE b.key = CAST({t}.key AS BLOB))"
        return [
            f"DELETE FROM {t} WHERE id IN (SELECT b.id FROM {t} AS f JOIN {t} AS b ON b.key = CAST(f.key AS BLOB) "
            "WHERE f.key < X'' AND coalesce(f.version, 0) > coalesce(b.version, 0))",
            f"DELETE FROM {t} WHERE {foreign} AND {twin} IS NOT NULL",
            f"UPDATE OR REPLACE {t} SET key = CAST(key AS BLOB) WHERE {foreign}",
            f"UPDATE {t} SET value = CAST(value AS BLOB) WHERE typeof(value) <> 'blob'",
        ]

    # -- kvctl's writes -------------------------------------------------------------------------
    @property
    def put_given(self) -> str:
        """Upsert with the caller's version, kept exactly (set_many with versions, apply_many)."""
        return (f"INSERT INTO {self.t}(key, value, expires_at, version) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                "expires_at = excluded.expires_at, version = excluded.version")

    def put_new(self, tombs: bool) -> str:
        """Upsert with a version from kvctl's clock, raised above the key's current version and
        its tombstone when another writer's clock got there first (another process, a replica
        whose clock runs ahead): a key's versions only grow, so a write never loses, at a replica,
        to what it replaced.  ``tombs``: the tombstone table exists (not in a read-only v1 file)."""
        t, node = self.t, self.node
        value = "?4"
        if tombs:
            value = f"max(?4, coalesce((SELECT {bump('version', node)} FROM {self.tombs} WHERE key = ?1), 0))"
        return (f"INSERT INTO {t}(key, value, expires_at, version) VALUES (?1, ?2, ?3, {value}) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, "
                f"version = CASE WHEN excluded.version > {t}.version THEN excluded.version "
                f"ELSE {bump(t + '.version', node)} END")

"""The SQL of schema version 2's extra objects: tombstones, the change table and its triggers.

The change feed is a table, ``<table>__changes``::

    seq bigint identity (sequence <table>__changes_seq), changed_at timestamptz DEFAULT now(),
    key bytea, value bytea, expires_at bigint, version bigint, deleted boolean
    PRIMARY KEY (seq)

kvctl's own writes insert their changes in the same statement (see :mod:`.sql`).  Writes by
other programs -- plain ``INSERT``/``UPDATE``/``DELETE``/``TRUNCATE`` from psql, an ORM, an older
kvctl -- are recorded by triggers on the table:

* ``BEFORE INSERT`` / ``BEFORE UPDATE`` (per row) give a version to a row written without one
  (an ``INSERT`` leaving ``version`` NULL, an ``UPDATE`` leaving it unchanged), in kvctl.hlc's
  bit layout from the server's clock: ``(epoch ms << 21) | node``, raised above the row's previous
  version or the key's tombstone, so the new write wins everywhere it replicates to.
* ``AFTER INSERT/UPDATE/DELETE`` (per statement, reading the statement's transition tables) and
  ``BEFORE TRUNCATE`` record the changes and the tombstones; an ``UPDATE`` that changes a key
  (rare) records the old key's deletion from a per-row trigger that fires only then.
  Statement-level capture measured faster than per-row triggers for multi-row statements
  (bench/results/sync_postgres_RESULTS.md).

The triggers skip kvctl's own sessions: a kvctl connection sets the custom setting
``kvctl.session`` to the feed's id, and every trigger has ``WHEN (current_setting('kvctl.session',
true) IS DISTINCT FROM '<feed id>')``.  A session of another feed (after the feed was turned off
and on again) or of a client that has the feed off is captured like any other program, so the
feed never misses a write: at worst a change is listed twice, which last-writer-wins makes a no-op.
Other programs' roles need INSERT on the change and tombstone tables and USAGE on the sequence
(the triggers run as the writer).

**Commit order.**  ``seq`` is taken when a row is inserted, before its transaction commits, so
concurrent transactions can commit out of ``seq`` order: a reader that saw seq 11 committed and
moved on would never see seq 10, committed later.  So every transaction that writes to the change
table first registers itself, once (a ``BEFORE INSERT ... FOR EACH STATEMENT`` trigger on the
change table, remembered in a transaction-local setting): it reads the sequence's last value L
and takes a shared, transaction-scoped advisory lock whose key holds L -- "my changes are all
above L".  The lock is visible in ``pg_locks`` at once and goes away when the transaction ends.
A reader reads the sequence's last value S, *then* the registrations, *then* (in a new snapshot)
serves only changes up to ``min(S, every registered L)``: every change up to there belongs to a
transaction that has ended, so nothing can appear below a served position later.  Only writers
of this table hold the feed back, and only while they are open; nothing is serialized.  (The
simpler bound, ``pg_snapshot_xmin``, was measured holding every feed back behind any long write
transaction in the whole cluster.)  Between concurrent transactions the order is their change
rows' ``seq`` order; replication applies by version (last writer wins), for which the order of
changes to different keys does not matter and a key's changes keep their version order.
The feed is read from the primary: a hot standby sees neither the primary's open writers in
``pg_locks`` nor an exact sequence value, so there it is refused as a feed gap (the sync engine
then compares the stores, and says so).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .sql import bump

SESSION_SETTING = "kvctl.session"
META_COLUMNS = {  # schema version 2's columns of kvctl_meta, beyond version 1's
    "node_id": "smallint",
    "feed": "boolean",
    "feed_id": "text",
    "feed_floor_seq": "bigint",  # the last change purged: a cursor before it is a gap
}
STAMP_FN_SUFFIX = "__kv_stamp"
CAPTURE_FN_SUFFIX = "__kv_capture"
RENAME_FN_SUFFIX = "__kv_rename"
REGISTER_FN_SUFFIX = "__kv_register"
SEQUENCE_SUFFIX = "__changes_seq"
TRIGGERS = ("kvctl_stamp_insert", "kvctl_stamp_update", "kvctl_capture_insert", "kvctl_capture_update",
            "kvctl_capture_rename", "kvctl_capture_delete", "kvctl_capture_truncate")
_2_32 = 1 << 32
# The server's clock as an HLC version of node {node}: epoch milliseconds << 21.
_SERVER_CLOCK = "((floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint << 21) | {node})"


def new_feed_id() -> str:
    return secrets.token_hex(8)


def lock_class(feed_id: str) -> int:
    """The first advisory-lock key of a feed's writer registrations, as a signed int4."""
    value = int(feed_id[:8], 16)
    return value - _2_32 if value >= 1 << 31 else value


def horizon(last_value: int, registered: list[int]) -> int:
    """The last seq every writer has finished with: the sequence's last value ``last_value``
    (read first), bounded by each open writer's registration (its L modulo 2**32, read after).

    A registration holds only L's low 32 bits; L is taken as the value with those bits nearest
    ``last_value`` (open writers are never 2**31 changes apart).  A writer that registered after
    ``last_value`` was read has L at or above it and bounds nothing.
    """
    bound = last_value
    for low in registered:
        ahead = (low - last_value) % _2_32
        if ahead >= 1 << 31:  # below last_value
            bound = min(bound, last_value + ahead - _2_32)
    return bound


def _dollar_quote(body: str) -> str:
    """``body`` in dollar quotes whose tag does not occur in it (table names are arbitrary text)."""
    tag = "$kvctl$"
    while tag in body:
        tag = f"$kvctl{secrets.token_hex(4)}$"
    return f"{tag}{body}{tag}"


@dataclass(frozen=True)
class FeedStatements:
    """DDL and queries of one table's tombstones and change feed (all names quoted)."""

    t: str  # the table
    meta: str  # kvctl_meta
    tombs: str
    changes: str
    stamp_fn: str
    capture_fn: str
    rename_fn: str
    register_fn: str
    sequence: str

    # -- kvctl_meta ----------------------------------------------------------------------------
    @property
    def create_meta(self) -> str:
        cols = "".join(f", {name} {kind}" for name, kind in META_COLUMNS.items())
        return (f"CREATE TABLE IF NOT EXISTS {self.meta} (table_name text PRIMARY KEY, "
                f"schema_version integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now(){cols})")

    def add_meta_column(self, name: str) -> str:
        return f"ALTER TABLE {self.meta} ADD COLUMN IF NOT EXISTS {name} {META_COLUMNS[name]}"

    @property
    def read_meta(self) -> str:
        return f"SELECT schema_version, node_id, feed, feed_id FROM {self.meta} WHERE table_name = $1"

    @property
    def write_meta(self) -> str:
        """$1 table, $2 schema version, $3 node id, $4 feed on, $5 feed id.  A new feed id starts
        the feed's floor at its beginning."""
        return (f"INSERT INTO {self.meta} AS m (table_name, schema_version, node_id, feed, feed_id, "
                "feed_floor_seq) VALUES ($1, $2, $3, $4, $5, 0) "
                "ON CONFLICT (table_name) DO UPDATE SET schema_version = EXCLUDED.schema_version, "
                "node_id = EXCLUDED.node_id, feed = EXCLUDED.feed, feed_id = EXCLUDED.feed_id, "
                "feed_floor_seq = CASE WHEN m.feed_id IS NOT DISTINCT FROM EXCLUDED.feed_id "
                "THEN m.feed_floor_seq ELSE EXCLUDED.feed_floor_seq END")

    # -- tombstones (every version 2 table) ----------------------------------------------------
    @property
    def create_tombs(self) -> list[str]:
        return [f"CREATE TABLE {self.tombs} (key bytea PRIMARY KEY, version bigint NOT NULL)",
                f"CREATE INDEX ON {self.tombs} (version)"]

    # -- the change feed ------------------------------------------------------------------------
    def create_feed(self, feed_id: str, node: int) -> list[str]:
        """The change table, the trigger functions and the triggers, for feed ``feed_id``."""
        clock = _SERVER_CLOCK.format(node=node)
        foreign = f"current_setting('{SESSION_SETTING}', true) IS DISTINCT FROM '{feed_id}'"
        stamp = f"""
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.version IS NULL THEN
      NEW.version := GREATEST({clock}, (SELECT {bump('tb.version', node)} FROM {self.tombs} tb WHERE tb.key = NEW.key));
    END IF;
  ELSE
    NEW.version := GREATEST({clock}, {bump('OLD.version', node)});
  END IF;
  RETURN NEW;
END"""
        bury = (f"INSERT INTO {self.tombs} AS tb (key, version) SELECT key, version FROM dead "
                "ON CONFLICT (key) DO UPDATE SET version = GREATEST(tb.version, EXCLUDED.version)")
        record_dead = f"INSERT INTO {self.changes} (key, version, deleted) SELECT key, version, true FROM dead"
        record_new = (f"INSERT INTO {self.changes} (key, value, expires_at, version) "
                      "SELECT key, value, expires_at, version FROM new_rows")

        def deaths(rows: str) -> str:
            # Tombstones and feed rows for the deletions ``rows`` (a query of key, version).
            return f"WITH dead AS ({rows}), tomb AS ({bury}) {record_dead}"

        dead_version = f"GREATEST({clock}, {bump('o.version', node)})"
        capture = f"""
BEGIN
  IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE' THEN
    {record_new};
  ELSIF TG_OP = 'DELETE' THEN
    {deaths(f"SELECT o.key, {dead_version} AS version FROM old_rows o")};
  ELSE  -- TRUNCATE, before it happens: every row is deleted
    {deaths(f"SELECT o.key, {dead_version} AS version FROM {self.t} o")};
  END IF;
  RETURN NULL;
END"""
        rename = f"""
BEGIN
  {deaths(f"SELECT o.key, {dead_version} AS version FROM (SELECT OLD.key, OLD.version) o")};
  RETURN NULL;
END"""
        reg_setting = f"kvctl.reg_{feed_id}"
        register = f"""
DECLARE low bigint;
BEGIN
  IF coalesce(current_setting('{reg_setting}', true), '') = '' THEN
    low := coalesce(pg_sequence_last_value('{self.sequence.replace("'", "''")}'::regclass), 0) % {_2_32};
    PERFORM pg_advisory_xact_lock_shared({lock_class(feed_id)},
      (CASE WHEN low >= {1 << 31} THEN low - {_2_32} ELSE low END)::int4);
    PERFORM set_config('{reg_setting}', 'on', true);
  END IF;
  RETURN NULL;
END"""
        when = f"WHEN ({foreign})"

        def function(name: str, body: str) -> str:
            return f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS {_dollar_quote(body)}"

        return [
            f"CREATE TABLE {self.changes} (seq bigint GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME {self.sequence}) "
            "PRIMARY KEY, changed_at timestamptz NOT NULL DEFAULT now(), key bytea NOT NULL, value bytea, "
            "expires_at bigint, version bigint NOT NULL, deleted boolean NOT NULL DEFAULT false)",
            function(self.register_fn, register),
            f"CREATE TRIGGER kvctl_register BEFORE INSERT ON {self.changes} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION {self.register_fn}()",
            function(self.stamp_fn, stamp),
            function(self.capture_fn, capture),
            function(self.rename_fn, rename),
            f"CREATE TRIGGER kvctl_stamp_insert BEFORE INSERT ON {self.t} FOR EACH ROW {when} "
            f"EXECUTE FUNCTION {self.stamp_fn}()",
            f"CREATE TRIGGER kvctl_stamp_update BEFORE UPDATE ON {self.t} FOR EACH ROW "
            f"WHEN ({foreign} AND (NEW.version IS NULL OR NEW.version = OLD.version)) "
            f"EXECUTE FUNCTION {self.stamp_fn}()",
            f"CREATE TRIGGER kvctl_capture_insert AFTER INSERT ON {self.t} REFERENCING NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT {when} EXECUTE FUNCTION {self.capture_fn}()",
            f"CREATE TRIGGER kvctl_capture_update AFTER UPDATE ON {self.t} REFERENCING NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT {when} EXECUTE FUNCTION {self.capture_fn}()",
            f"CREATE TRIGGER kvctl_capture_rename AFTER UPDATE OF key ON {self.t} FOR EACH ROW "
            f"WHEN ({foreign} AND OLD.key IS DISTINCT FROM NEW.key) EXECUTE FUNCTION {self.rename_fn}()",
            f"CREATE TRIGGER kvctl_capture_delete AFTER DELETE ON {self.t} REFERENCING OLD TABLE AS old_rows "
            f"FOR EACH STATEMENT {when} EXECUTE FUNCTION {self.capture_fn}()",
            f"CREATE TRIGGER kvctl_capture_truncate BEFORE TRUNCATE ON {self.t} FOR EACH STATEMENT {when} "
            f"EXECUTE FUNCTION {self.capture_fn}()",
        ]

    @property
    def drop_feed(self) -> list[str]:
        functions = (self.stamp_fn, self.capture_fn, self.rename_fn, self.register_fn)
        return ([f"DROP TRIGGER IF EXISTS {name} ON {self.t}" for name in TRIGGERS]
                + [f"DROP TABLE IF EXISTS {self.changes}"]
                + [f"DROP FUNCTION IF EXISTS {fn}()" for fn in functions])

    # -- reading the feed -----------------------------------------------------------------------
    def state(self, *, sequence_readable: bool = True) -> str:
        """The feed's state ($1 table) and, read first, the last seq taken.

        ``sequence_readable`` False (a role with SELECT on the tables only, which may not read
        the sequence): the largest seq in the change table instead.  That bound serves no less
        safely: a transaction still open with a seq below it registered before taking that seq,
        so the registrations read next hold the horizon below it.
        """
        if sequence_readable:
            last = f"coalesce(pg_sequence_last_value(to_regclass('{self.literal_sequence}')), 0)"
        else:
            last = f"(SELECT coalesce(max(c.seq), m.feed_floor_seq, 0) FROM {self.changes} c)"
        return (f"SELECT feed, feed_id, feed_floor_seq, CASE WHEN feed THEN {last} END, "
                f"pg_is_in_recovery() FROM {self.meta} m WHERE table_name = $1")

    @property
    def literal_sequence(self) -> str:
        return self.sequence.replace("'", "''")

    registrations = ("SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 "
                     "AND classid = $1::oid AND database = (SELECT oid FROM pg_database "
                     "WHERE datname = current_database())")

    @property
    def page(self) -> str:
        """$1 table, $2 the cursor's seq, $3 the horizon (the last seq to serve), $4 the page size.

        One snapshot for the rows and the feed's floor: a purge that removed rows after the cursor
        committed before the snapshot, so its floor is seen too (and the gap reported).
        """
        return ("SELECT f.feed, f.feed_id, f.feed_floor_seq, c.seq, c.key, c.value, c.expires_at, c.version, "
                "c.deleted FROM (SELECT feed, feed_id, feed_floor_seq FROM "
                f"{self.meta} WHERE table_name = $1) f LEFT JOIN LATERAL (SELECT * FROM {self.changes} c "
                "WHERE c.seq > $2::bigint AND c.seq <= $3::bigint ORDER BY c.seq LIMIT $4) c ON f.feed")

    def purge(self, *, by_age: bool) -> str:
        """Delete up to $2 expired changes from the head of the feed and raise the feed's floor to
        the last one deleted.  $1 table; $3 what to keep: milliseconds (by_age) or a number of
        changes (counted by ``seq``, so approximately: rolled-back transactions leave holes).

        Bounded work whatever the table's size: one index range scan of at most $2 entries, then
        deletes by row address.  A change still uncommitted below a deleted one is left; it is
        below the floor, so a cursor before it is reported as a gap, never silently passed.
        """
        if by_age:
            expired = "changed_at < now() - make_interval(secs => $3::bigint / 1000.0)"
        else:
            expired = (f"seq <= (SELECT coalesce(pg_sequence_last_value('{self.literal_sequence}'::regclass), 0) "
                       "- $3::bigint)")
        return (f"WITH doomed AS (DELETE FROM {self.changes} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {self.changes} WHERE {expired} ORDER BY seq LIMIT $2)) RETURNING seq), "
                f"floor AS (UPDATE {self.meta} m SET feed_floor_seq = (SELECT max(seq) FROM doomed) "
                "WHERE m.table_name = $1 AND EXISTS (SELECT 1 FROM doomed) "
                "AND m.feed_floor_seq < (SELECT max(seq) FROM doomed)) "
                "SELECT count(*) FROM doomed")

    @property
    def feed_stats(self) -> str:
        return f"SELECT count(*) FROM {self.changes}"

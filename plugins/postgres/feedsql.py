"""The SQL of schema version 2's extra objects: tombstones, the change table and its triggers.

The change feed is a table, ``<table>__changes``::

    seq bigint identity, txid xid8 DEFAULT pg_current_xact_id(), changed_at timestamptz DEFAULT now(),
    key bytea, value bytea, expires_at bigint, version bigint, deleted boolean
    PRIMARY KEY (txid, seq)

kvctl's own writes insert their changes in the same statement (see :mod:`.sql`).  Writes by
other programs -- plain ``INSERT``/``UPDATE``/``DELETE``/``TRUNCATE`` from psql, an ORM, an older
kvctl -- are recorded by triggers:

* ``BEFORE INSERT`` / ``BEFORE UPDATE`` (per row) give a version to a row written without one
  (an ``INSERT`` leaving ``version`` NULL, an ``UPDATE`` leaving it unchanged), in kvctl.hlc's
  bit layout from the server's clock: ``(epoch ms << 21) | node``, raised above the row's previous
  version or the key's tombstone, so the new write wins everywhere it replicates to.
* ``AFTER INSERT/UPDATE/DELETE`` (per statement, reading the statement's transition tables) and
  ``BEFORE TRUNCATE`` record the changes and the tombstones.  Statement-level capture measured
  faster than a per-row trigger for multi-row statements and the same for single rows
  (bench/sync_postgres_RESULTS.md).

The triggers skip kvctl's own sessions: a kvctl connection sets the custom setting
``kvctl.session`` to the feed's id, and every trigger has ``WHEN (current_setting('kvctl.session',
true) IS DISTINCT FROM '<feed id>')``.  A session of another feed (after the feed was turned off
and on again) or of a client that has the feed off is captured like any other program, so the
feed never misses a write: at worst a change is listed twice, which last-writer-wins makes a no-op.

**Commit order.**  ``seq`` is taken when a row is inserted, before its transaction commits, so
concurrent transactions can commit out of ``seq`` order: a reader that saw seq 11 committed and
moved on would never see seq 10 committed later.  The feed is therefore ordered by ``(txid, seq)``
and serves only rows of transactions below ``pg_snapshot_xmin(pg_current_snapshot())``, the
oldest transaction still running: every transaction below it has finished, so nothing can appear
later below a served position.  A cursor is the last ``(txid, seq)`` served.  The cost is lag,
never loss: a change is served once every transaction that began writing before it has ended,
so one long-running writing transaction anywhere in the cluster holds the feed back until it
ends.  The alternative, an advisory lock taken by every writer until commit, gives commit order
exactly but serializes all writers of the table through their commits.  Between concurrent
transactions the feed's order is their ``txid`` order, not necessarily their commit order;
replication applies by version (last writer wins), for which the order of changes to different
keys does not matter and a key's changes keep their version order.
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
    "feed_floor_txid": "xid8",
    "feed_floor_seq": "bigint",
}
STAMP_FN_SUFFIX = "__kv_stamp"
CAPTURE_FN_SUFFIX = "__kv_capture"
TRIGGERS = ("kvctl_stamp_insert", "kvctl_stamp_update", "kvctl_capture_insert", "kvctl_capture_update",
            "kvctl_capture_delete", "kvctl_capture_truncate")
# The server's clock as an HLC version of node {node}: epoch milliseconds << 21.
_SERVER_CLOCK = "((floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint << 21) | {node})"


def new_feed_id() -> str:
    return secrets.token_hex(8)


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
                "feed_floor_txid, feed_floor_seq) VALUES ($1, $2, $3, $4, $5, '0'::xid8, 0) "
                "ON CONFLICT (table_name) DO UPDATE SET schema_version = EXCLUDED.schema_version, "
                "node_id = EXCLUDED.node_id, feed = EXCLUDED.feed, feed_id = EXCLUDED.feed_id, "
                "feed_floor_txid = CASE WHEN m.feed_id IS NOT DISTINCT FROM EXCLUDED.feed_id "
                "THEN m.feed_floor_txid ELSE EXCLUDED.feed_floor_txid END, "
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
            # The deletions of ``rows`` (a query of key, version) as temporary CTE ``dead``, then
            # tombstones and feed rows for them.
            return (f"    WITH dead AS ({rows}), tomb AS ({bury}) {record_dead};\n")

        dead_version = f"GREATEST(now_version, {bump('o.version', node)})"
        capture = f"""
DECLARE now_version bigint := {clock};
BEGIN
  IF TG_OP = 'INSERT' THEN
    {record_new};
  ELSIF TG_OP = 'UPDATE' THEN
    {record_new};
    -- an UPDATE that changes a key deletes the old one
{deaths(f"SELECT o.key, {dead_version} AS version FROM old_rows o WHERE NOT EXISTS "
        "(SELECT 1 FROM new_rows n WHERE n.key = o.key)")}
  ELSIF TG_OP = 'DELETE' THEN
{deaths(f"SELECT o.key, {dead_version} AS version FROM old_rows o")}
  ELSE  -- TRUNCATE, before it happens: every row is deleted
{deaths(f"SELECT o.key, {dead_version} AS version FROM {self.t} o")}
  END IF;
  RETURN NULL;
END"""
        when = f"WHEN ({foreign})"
        return [
            f"CREATE TABLE {self.changes} (seq bigint GENERATED ALWAYS AS IDENTITY, "
            "txid xid8 NOT NULL DEFAULT pg_current_xact_id(), changed_at timestamptz NOT NULL DEFAULT now(), "
            "key bytea NOT NULL, value bytea, expires_at bigint, version bigint NOT NULL, "
            "deleted boolean NOT NULL DEFAULT false, PRIMARY KEY (txid, seq))",
            f"CREATE OR REPLACE FUNCTION {self.stamp_fn}() RETURNS trigger LANGUAGE plpgsql AS "
            + _dollar_quote(stamp),
            f"CREATE OR REPLACE FUNCTION {self.capture_fn}() RETURNS trigger LANGUAGE plpgsql AS "
            + _dollar_quote(capture),
            f"CREATE TRIGGER kvctl_stamp_insert BEFORE INSERT ON {self.t} FOR EACH ROW {when} "
            f"EXECUTE FUNCTION {self.stamp_fn}()",
            f"CREATE TRIGGER kvctl_stamp_update BEFORE UPDATE ON {self.t} FOR EACH ROW "
            f"WHEN ({foreign} AND (NEW.version IS NULL OR NEW.version = OLD.version)) "
            f"EXECUTE FUNCTION {self.stamp_fn}()",
            f"CREATE TRIGGER kvctl_capture_insert AFTER INSERT ON {self.t} REFERENCING NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT {when} EXECUTE FUNCTION {self.capture_fn}()",
            f"CREATE TRIGGER kvctl_capture_update AFTER UPDATE ON {self.t} "
            f"REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT {when} "
            f"EXECUTE FUNCTION {self.capture_fn}()",
            f"CREATE TRIGGER kvctl_capture_delete AFTER DELETE ON {self.t} REFERENCING OLD TABLE AS old_rows "
            f"FOR EACH STATEMENT {when} EXECUTE FUNCTION {self.capture_fn}()",
            f"CREATE TRIGGER kvctl_capture_truncate BEFORE TRUNCATE ON {self.t} FOR EACH STATEMENT {when} "
            f"EXECUTE FUNCTION {self.capture_fn}()",
        ]

    @property
    def drop_feed(self) -> list[str]:
        return ([f"DROP TRIGGER IF EXISTS {name} ON {self.t}" for name in TRIGGERS]
                + [f"DROP FUNCTION IF EXISTS {self.stamp_fn}()", f"DROP FUNCTION IF EXISTS {self.capture_fn}()",
                   f"DROP TABLE IF EXISTS {self.changes}"])

    # -- reading the feed -----------------------------------------------------------------------
    @property
    def horizon(self) -> str:
        """The feed's state and the current position: $1 table."""
        return (f"SELECT feed, feed_id, feed_floor_txid, feed_floor_seq, "
                f"pg_snapshot_xmin(pg_current_snapshot()) FROM {self.meta} WHERE table_name = $1")

    @property
    def page(self) -> str:
        """$1 table, $2/$3 the cursor (txid, seq), $4 the page size.

        One snapshot for the rows and the feed's floor: a purge that removed rows after the cursor
        committed before the snapshot, so its floor is seen too (and the gap reported).
        """
        return ("SELECT f.feed, f.feed_id, f.feed_floor_txid, f.feed_floor_seq, "
                "c.txid, c.seq, c.key, c.value, c.expires_at, c.version, c.deleted "
                f"FROM (SELECT feed, feed_id, feed_floor_txid, feed_floor_seq, "
                f"pg_snapshot_xmin(pg_current_snapshot()) AS xmin FROM {self.meta} WHERE table_name = $1) f "
                f"LEFT JOIN LATERAL (SELECT * FROM {self.changes} c WHERE (c.txid, c.seq) > ($2::xid8, $3::bigint) "
                "AND c.txid < f.xmin ORDER BY c.txid, c.seq LIMIT $4) c ON f.feed")

    def purge(self, *, by_age: bool) -> str:
        """Delete up to $2 expired changes from the head of the feed, among finished transactions
        only, and raise the feed's floor to the last one deleted.  $1 table; $3 what to keep:
        milliseconds (by_age) or a number of changes (counted by ``seq``, so approximately: rolled
        back transactions leave holes in it)."""
        if by_age:
            expired = "c.changed_at < now() - make_interval(secs => $3::bigint / 1000.0)"
        else:
            seq = f"pg_get_serial_sequence('{self.changes.replace(chr(39), chr(39) * 2)}', 'seq')"
            expired = f"c.seq <= coalesce(pg_sequence_last_value({seq}::regclass), 0) - $3::bigint"
        return (f"WITH head AS (SELECT txid, seq FROM {self.changes} "
                "WHERE txid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY txid, seq LIMIT $2), "
                f"doomed AS (DELETE FROM {self.changes} c USING head h WHERE c.txid = h.txid AND c.seq = h.seq "
                f"AND {expired} RETURNING c.txid, c.seq), "
                "last AS (SELECT txid, seq FROM doomed ORDER BY txid DESC, seq DESC LIMIT 1), "
                f"floor AS (UPDATE {self.meta} m SET feed_floor_txid = last.txid, feed_floor_seq = last.seq "
                "FROM last WHERE m.table_name = $1 AND (m.feed_floor_txid, m.feed_floor_seq) < (last.txid, last.seq)) "
                "SELECT count(*) FROM doomed")

    @property
    def feed_stats(self) -> str:
        return f"SELECT count(*) FROM {self.changes}"

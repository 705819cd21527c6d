"""The SQL text of the postgres backend's own reads and writes, for one (already quoted) table.

Layout, schema version 2 (recorded in ``kvctl_meta`` beside the table; version 1 tables are
upgraded in place on open, see :mod:`.schema`)::

    <table>           key bytea PRIMARY KEY, value bytea NOT NULL, expires_at bigint NULL (ms
                      since the epoch), version bigint NOT NULL (an HLC, see kvctl.hlc)
                      index on version; partial index on expires_at WHERE expires_at IS NOT NULL
    <table>__tombs    key bytea PRIMARY KEY, version bigint NOT NULL; index on version
                      the newest deletion of each deleted key, kept ?tombstone_retention=
    <table>__changes  the change feed (only while the feed is on; see :mod:`.feedsql`)

Every read filters ``expires_at IS NULL OR expires_at > $now`` so an expired row is never
returned, whether or not it has been purged yet.  Prefix scans are ranges on the bytea key
(``key >= prefix AND key < prefix_end(prefix)``): bytea compares bytewise like Python bytes, and a
range never over-matches the way LIKE does on ``%`` and ``_``.

kvctl's writes record their own changes and tombstones in the same statement (data-modifying
CTEs), so each write stays one statement and one round trip.  They also keep versions per key
monotonic: a version kvctl assigns (as opposed to one a caller gives) is raised above the key's
current version and its tombstone (``bump``), so a write never loses, at a replica, to what it
replaced, even when the previous writer's clock ran ahead of this one.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 2
# One advisory lock serializes kvctl's table creation and upgrades across processes (CREATE TABLE
# IF NOT EXISTS alone can still fail when two sessions race on the same name).
SETUP_LOCK_ID = 0x6B76_6374_6C01  # "kvctl\x01"

_LIVE = "({row}expires_at IS NULL OR {row}expires_at > {now})"
REQUIRED_COLUMNS = {"key": "bytea", "value": "bytea", "expires_at": "bigint", "version": "bigint"}
STAGE_TABLE = "kvctl_stage"
APPLY_STAGE_TABLE = "kvctl_apply_stage"
# Keys sent as one array per statement by get_many and delete_many (kvctl's tables and mapped
# ones alike); longer lists go in chunks of this size.
ARRAY_CHUNK = 10_000
TOMBS_SUFFIX = "__tombs"
CHANGES_SUFFIX = "__changes"

# The arrays a batch reads, with each row's place in the call ``n`` (the feed lists a batch's
# changes in call order, while rows are sent and written in key order, so concurrent batches
# lock rows in one order and cannot deadlock).
_UNNEST = ("unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::bigint[], $5::bigint[]) "
           "AS i(key, value, expires_at, version, n)")
_UNNEST_APPLY = ("unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::bigint[], $5::boolean[], $6::boolean[], "
                 "$7::bigint[]) AS i(key, value, expires_at, version, dead, versionless, n)")


def live(now_param: str, row: str = "") -> str:
    """The row (``row``: its alias in a join) has not expired by ``now_param``."""
    return _LIVE.format(now=now_param, row=f"{row}." if row else "")


def bump(expr: str, node: int) -> str:
    """SQL for the first version of node ``node`` above ``expr``: the next tick of the HLC counter."""
    return f"((({expr}) | 255) + 1) | {node}"


@dataclass(frozen=True)
class Statements:
    """Every statement of table ``t`` (quoted, maybe schema-qualified), its tombstones and feed.

    ``feed``: the table has a change feed, so writes also insert into ``changes``.  ``node``: the
    table's HLC node id (versions assigned here carry it); None before the table is opened, when
    only reads can be built: a write built then would lack the feed and the node id.
    """

    t: str
    meta: str
    tombs: str
    changes: str
    node_id: int | None = None
    feed: bool = False
    tombstones: bool = True  # False: a version-1 table opened for reading (never upgraded by a read)

    @property
    def node(self) -> int:
        self._check_opened()
        assert self.node_id is not None
        return self.node_id

    def _check_opened(self) -> None:
        if self.node_id is None:
            raise AssertionError("a write statement built before the table was opened")

    # -- opening -----------------------------------------------------------------------------
    @property
    def probe(self) -> str:
        """One round trip on open: what kvctl_meta records, the newest versions and the server's
        clock; it also marks this session as the feed's own writer (see feedsql.SESSION_SETTING),
        so the triggers leave kvctl's writes to the statements below."""
        return (f"SELECT m.schema_version, m.node_id, m.feed, m.feed_id, "
                f"set_config('kvctl.session', coalesce(CASE WHEN m.feed THEN m.feed_id END, ''), false), "
                f"(SELECT max(version) FROM {self.t}), (SELECT max(version) FROM {self.tombs}), "
                "(extract(epoch FROM clock_timestamp()) * 1000)::bigint "
                f"FROM (SELECT 1) AS one LEFT JOIN {self.meta} m ON m.table_name = $1")

    columns = ("SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
               "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped")

    # -- reads -------------------------------------------------------------------------------
    @property
    def get_one(self) -> str:
        return f"SELECT value, expires_at, version FROM {self.t} WHERE key = $1 AND {live('$2')}"

    @property
    def get_many(self) -> str:
        # One row per requested key, in request order (NULLs for a missing or expired key): no
        # dict is needed to line results up with keys, which measured ~15% faster per key than
        # "key = ANY($1)" plus a lookup table.
        return (f"SELECT t.key, t.value, t.expires_at, t.version "
                f"FROM unnest($1::bytea[]) WITH ORDINALITY AS wanted(key, n) "
                f"LEFT JOIN {self.t} t ON t.key = wanted.key AND {live('$2')} ORDER BY wanted.n")

    def scan(self, *, keys_only: bool, exclusive: bool, bounded: bool) -> str:
        """$1 now, $2 the lower key, $3 the limit, $4 the upper key (exclusive) when bounded."""
        cols = "key, expires_at, version" if keys_only else "key, value, expires_at, version"
        lower = "key > $2" if exclusive else "key >= $2"
        upper = " AND key < $4" if bounded else ""
        return (f"SELECT {cols} FROM {self.t} WHERE {lower}{upper} AND {live('$1')} "
                "ORDER BY key LIMIT $3")

    def count(self, *, bounded: bool) -> str:
        """$1 now, $2 the prefix, $3 its end when bounded."""
        upper = " AND key < $3" if bounded else ""
        return f"SELECT count(*) FROM {self.t} WHERE key >= $2{upper} AND {live('$1')}"

    @property
    def stats(self) -> str:
        return (f"SELECT count(*) FILTER (WHERE {live('$1')}), count(*) FILTER (WHERE NOT {live('$1')}), "
                f"pg_total_relation_size('{self.literal(self.t)}'::regclass), "
                + (f"(SELECT count(*) FROM {self.tombs}), " if self.tombstones else "0, ") +
                "current_setting('server_version') FROM " + self.t)

    @staticmethod
    def literal(name: str) -> str:
        """A quoted name as an SQL string literal (for ::regclass)."""
        return name.replace("'", "''")

    # -- writes ------------------------------------------------------------------------------
    def _record(self, rows: str, order: str = "") -> str:
        """The CTE that lists upserted ``rows`` in the feed (nothing without a feed)."""
        self._check_opened()
        if not self.feed:
            return ""
        return (f", ch AS (INSERT INTO {self.changes} (key, value, expires_at, version) "
                f"SELECT up.key, up.value, up.expires_at, up.version FROM {rows}{order})")

    def _upsert_tail(self, assigned: bool, only_if: str = "") -> str:
        version = f"GREATEST(EXCLUDED.version, {bump('cur.version', self.node)})" if assigned else "EXCLUDED.version"
        return (" ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, "
                f"version = {version}{only_if} RETURNING key, value, expires_at, version")

    def upsert_one(self, *, assigned: bool) -> str:
        """$1 key, $2 value, $3 expiry, $4 version; returns the version written.

        ``assigned``: $4 came from this store's clock, and is raised above the key's current
        version and tombstone; otherwise it is the caller's and is kept exactly.
        """
        version = (f"GREATEST($4::bigint, (SELECT {bump('tb.version', self.node)} FROM {self.tombs} tb "
                   "WHERE tb.key = $1))") if assigned else "$4"
        insert = (f"INSERT INTO {self.t} AS cur (key, value, expires_at, version) VALUES ($1, $2, $3, {version})"
                  + self._upsert_tail(assigned))
        return f"WITH up AS ({insert}){self._record('up')} SELECT version FROM up"

    def set_if(self, *, exists: bool | None, keep_ttl: bool) -> str:
        """$1 key, $2 value, $3 expiry, $4 version from this store's clock, $5 now: the write of
        ``set --nx`` (``exists`` False), ``--xx`` (True) or a plain set (None) in one statement;
        ``keep_ttl`` keeps a live row's expiry.  Returns the version written, or no row when the
        condition failed."""
        now = "$5::bigint"
        if exists:  # the row is locked by the UPDATE, so the condition holds for the write
            expiry = "coalesce($3::bigint, cur.expires_at)" if keep_ttl else "$3"
            write = (f"UPDATE {self.t} AS cur SET value = $2, expires_at = {expiry}, "
                     f"version = GREATEST($4::bigint, {bump('cur.version', self.node)}) "
                     f"WHERE cur.key = $1 AND {live(now, 'cur')} RETURNING key, value, expires_at, version")
        else:  # inserts, or updates the row under its lock (--nx: only a row that has expired)
            version = (f"GREATEST($4::bigint, (SELECT {bump('tb.version', self.node)} FROM {self.tombs} tb "
                       "WHERE tb.key = $1))")
            expiry = f"CASE WHEN {live(now, 'cur')} THEN cur.expires_at ELSE EXCLUDED.expires_at END" \
                if keep_ttl else "EXCLUDED.expires_at"
            only_if = f" WHERE NOT {live(now, 'cur')}" if exists is False else f" WHERE {now} IS NOT NULL"
            write = (f"INSERT INTO {self.t} AS cur (key, value, expires_at, version) VALUES ($1, $2, $3, {version}) "
                     f"ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = {expiry}, "
                     f"version = GREATEST(EXCLUDED.version, {bump('cur.version', self.node)}){only_if} "
                     "RETURNING key, value, expires_at, version")
        return f"WITH up AS ({write}){self._record('up')} SELECT version FROM up"

    @property
    def expire(self) -> str:
        """$1 key, $2 the new expiry (NULL: none, never in the past), $3 version from this
        store's clock, $4 now: a live row's expiry changed in one statement, value untouched.
        Returns the version written, or no row when the key is missing or expired."""
        write = (f"UPDATE {self.t} AS cur SET expires_at = $2::bigint, "
                 f"version = GREATEST($3::bigint, {bump('cur.version', self.node)}) "
                 f"WHERE cur.key = $1 AND {live('$4::bigint', 'cur')} RETURNING key, value, expires_at, version")
        return f"WITH up AS ({write}){self._record('up')} SELECT version FROM up"

    def upsert_batch(self, *, assigned: bool, staged: bool, newer: bool = False) -> str:
        """A whole batch in one statement, from arrays ($1..$5) or the staged temporary table.

        ``newer`` (given versions only): a key whose live row holds an equal or higher version
        is left alone -- ``--on-conflict newer`` decided on the server, where each key is one
        index probe instead of a round trip of its row; $6 (staged: $1) is now.  Returns how many
        rows were written, their key and value bytes, and the largest version written (the
        caller's clock observes it).
        """
        source = f"pg_temp.{STAGE_TABLE} AS i" if staged else _UNNEST
        only_if = ""
        # The key's tombstone and row are looked up by scalar subqueries, one index probe per
        # staged row: a join let the planner hash the whole table for every batch (a staged
        # table has no statistics), which made a batch cost as much as the table's size.
        if assigned:
            assert not newer, "a version this store assigns is newer than any it holds"
            src = (f"SELECT i.key, i.value, i.expires_at, GREATEST(i.version, (SELECT {bump('tb.version', self.node)} "
                   f"FROM {self.tombs} tb WHERE tb.key = i.key)) AS version, i.n FROM {source}")
        elif newer:
            now = "$1" if staged else "$6"
            # Skips the keys the table already holds at this version (the usual case on a re-run)
            # without writing anything; the condition on the update re-checks the row it locks,
            # should another writer have changed it in between.
            held = f"(SELECT c.version FROM {self.t} c WHERE c.key = i.key AND {live(now, 'c')})"
            src = (f"SELECT i.key, i.value, i.expires_at, i.version, i.n FROM {source} "
                   f"WHERE i.version > coalesce({held}, -1)")
            only_if = f" WHERE EXCLUDED.version > cur.version OR NOT {live(now, 'cur')}"
        else:
            src = f"SELECT i.key, i.value, i.expires_at, i.version, i.n FROM {source}"
        insert = (f"INSERT INTO {self.t} AS cur (key, value, expires_at, version) "
                  "SELECT key, value, expires_at, version FROM src ORDER BY key" + self._upsert_tail(assigned, only_if))
        record = self._record("up JOIN src ON src.key = up.key", " ORDER BY src.n")
        return (f"WITH src AS ({src}), up AS ({insert}){record} SELECT count(*), "
                "coalesce(sum(octet_length(key) + octet_length(value)), 0), max(version) FROM up")

    create_stage = (f"CREATE TEMP TABLE {STAGE_TABLE} (key bytea, value bytea, expires_at bigint, "
                    "version bigint, n bigint) ON COMMIT DROP")
    create_apply_stage = (f"CREATE TEMP TABLE {APPLY_STAGE_TABLE} (key bytea, value bytea, expires_at bigint, "
                          "version bigint, dead boolean, versionless boolean, n bigint) ON COMMIT DROP")

    # -- bulk loads into unused key ranges (see store.PostgresStore._load_directly) ----------------
    @property
    def range_taken(self) -> str:
        """Whether any row lies in the key range $1..$2 (inclusive), whether any of the keys $3 (a
        few of a batch's) has a row, and whether any tombstone lies in the range: index probes."""
        return (f"SELECT EXISTS (SELECT 1 FROM {self.t} WHERE key >= $1 AND key <= $2), "
                f"EXISTS (SELECT 1 FROM {self.t} WHERE key = ANY($3::bytea[])), "
                f"EXISTS (SELECT 1 FROM {self.tombs} WHERE key >= $1 AND key <= $2)")

    @property
    def keys_taken(self) -> str:
        """Whether any of the keys $1 has a row: one index probe per key."""
        return f"SELECT EXISTS (SELECT 1 FROM {self.t} WHERE key = ANY($1::bytea[]))"

    @property
    def holds_anything(self) -> str:
        """Whether the table holds any row or tombstone at all."""
        return f"SELECT EXISTS (SELECT 1 FROM {self.t}) OR EXISTS (SELECT 1 FROM {self.tombs})"

    @property
    def tombs_in_range(self) -> str:
        return f"SELECT EXISTS (SELECT 1 FROM {self.tombs} WHERE key >= $1 AND key <= $2)"

    @property
    def record_bulk(self) -> str:
        """One feed row standing for a whole bulk load ($1 key, $2 value: see kvctl.plugin_kit.bulkfeed).

        A deletion with a value, which no other change has; at version 0, so a reader that does
        not know the form applies it as a tombstone that loses to every write."""
        self._check_opened()
        return f"INSERT INTO {self.changes} (key, value, version, deleted) VALUES ($1, $2, 0, true)"

    def bulk_rows(self, *, first: bool) -> str:
        """A page of the rows a bulk load wrote that nothing has replaced since: $1 the lower key
        (inclusive on the first page, then the last key served), $2 the highest key, $3..$4 the
        load's versions, $5 the page size."""
        lower = "key >= $1" if first else "key > $1"
        return (f"SELECT key, value, expires_at, version FROM {self.t} WHERE {lower} AND key <= $2 "
                "AND version >= $3 AND version <= $4 ORDER BY key LIMIT $5")


    def _bury(self, dead: str, order: str = "") -> str:
        """CTEs that keep a tombstone for each deleted (key, version) of CTE ``dead``, and list
        the deletion in the feed."""
        self._check_opened()
        tomb = (f", tomb AS (INSERT INTO {self.tombs} AS tb (key, version) SELECT key, version FROM {dead} "
                "ON CONFLICT (key) DO UPDATE SET version = GREATEST(tb.version, EXCLUDED.version))")
        if self.feed:
            tomb += (f", ch AS (INSERT INTO {self.changes} (key, version, deleted) "
                     f"SELECT key, version, true FROM {dead}{order})")
        return tomb

    def delete(self, *, one: bool) -> str:
        """$1 the key (one) or the distinct keys in call order, $2 the tombstone version from this
        store's clock, $3 now.

        Returns how many live keys were removed and the largest tombstone version.  A tombstone's
        version is raised above the deleted row's version, like an assigned write's.  The feed
        lists a batch's deletions in call order.
        """
        if one:
            gone = f"DELETE FROM {self.t} WHERE key = $1 RETURNING key, expires_at, version"
            dead = f"SELECT key, expires_at, GREATEST($2::bigint, {bump('version', self.node)}) AS version FROM gone"
            order = ""
        else:
            gone = f"DELETE FROM {self.t} WHERE key = ANY($1::bytea[]) RETURNING key, expires_at, version"
            dead = (f"SELECT g.key, g.expires_at, GREATEST($2::bigint, {bump('g.version', self.node)}) AS version, "
                    "w.n FROM gone g JOIN unnest($1::bytea[]) WITH ORDINALITY AS w(key, n) ON w.key = g.key")
            order = " ORDER BY n"
        return (f"WITH gone AS ({gone}), dead AS ({dead}){self._bury('dead', order)} "
                f"SELECT count(*) FILTER (WHERE {live('$3')}), max(version) FROM dead")

    def apply(self, *, staged: bool) -> str:
        """Last-writer-wins apply of a batch (distinct keys), upserts and tombstones together.

        Arrays $1 keys, $2 values, $3 expiries, $4 versions, $5 dead (a tombstone), $6
        versionless (the record had no version: it only fills a key with no row and no
        tombstone; $4 then holds one from this store's clock), $7 the place in the call, or the
        staged temporary table.
        Each change is compared, like kvctl.store.newer, with the key's row, or its tombstone when
        there is no row; the upsert re-checks against the row it locks, the delete against the
        row it deletes, so a concurrent write in between is still compared.  Returns how many
        changes took effect.
        """
        source = f"pg_temp.{APPLY_STAGE_TABLE} AS i" if staged else _UNNEST_APPLY
        newer_than_row = ("(i.version > c.version OR (i.version = c.version AND NOT i.dead AND "
                          "(i.value > c.value OR (i.value = c.value AND "
                          "coalesce(i.expires_at, 0) > coalesce(c.expires_at, 0)))))")
        wins = (f"CASE WHEN i.versionless THEN c.key IS NULL AND tb.key IS NULL "
                f"WHEN c.key IS NOT NULL THEN {newer_than_row} "
                "WHEN tb.key IS NOT NULL THEN i.version > tb.version OR (i.version = tb.version AND NOT i.dead) "
                "ELSE true END")
        win = (f"SELECT i.key, i.value, i.expires_at, i.version, i.dead, i.n, c.key IS NOT NULL AS had_row "
               f"FROM {source} LEFT JOIN {self.t} c ON c.key = i.key "
               f"LEFT JOIN {self.tombs} tb ON tb.key = i.key WHERE {wins}")
        recheck = ("EXCLUDED.version > cur.version OR (EXCLUDED.version = cur.version AND "
                   "(EXCLUDED.value > cur.value OR (EXCLUDED.value = cur.value AND "
                   "coalesce(EXCLUDED.expires_at, 0) > coalesce(cur.expires_at, 0))))")
        up = (f"INSERT INTO {self.t} AS cur (key, value, expires_at, version) "
              "SELECT key, value, expires_at, version FROM win WHERE NOT dead ORDER BY key "
              "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, "
              f"version = EXCLUDED.version WHERE {recheck} RETURNING key")
        gone = (f"DELETE FROM {self.t} AS d USING win WHERE win.dead AND win.had_row AND d.key = win.key "
                "AND win.version > d.version RETURNING d.key")
        dead = ("SELECT key, version FROM win WHERE dead AND "
                "(NOT had_row OR key IN (SELECT key FROM gone))")
        sql = (f"WITH win AS ({win}), up AS ({up}), gone AS ({gone}), dead AS ({dead}), "
               "done AS (SELECT key FROM up UNION ALL SELECT key FROM dead)")
        sql += (f", tomb AS (INSERT INTO {self.tombs} AS tb (key, version) SELECT key, version FROM dead "
                "ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version WHERE EXCLUDED.version > tb.version)")
        if self.feed:
            sql += (f", ch AS (INSERT INTO {self.changes} (key, value, expires_at, version, deleted) "
                    "SELECT w.key, CASE WHEN w.dead THEN NULL ELSE w.value END, "
                    "CASE WHEN w.dead THEN NULL ELSE w.expires_at END, w.version, w.dead "
                    "FROM win w JOIN done ON done.key = w.key ORDER BY w.n)")
        return sql + " SELECT count(*) FROM done"

    @property
    def purge_expired(self) -> str:
        """Remove up to $2 rows expired by $1 (bounded so one purge never stalls a write for long).

        Each leaves a tombstone with its version: a stale copy of the key arriving later by
        replication must not bring it back.  Not a change of the feed: every replica hides the
        row at the same expiry.
        """
        return (f"WITH gone AS (DELETE FROM {self.t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {self.t} "
                "WHERE expires_at <= $1 LIMIT $2)) RETURNING key, version), "
                f"tomb AS (INSERT INTO {self.tombs} AS tb (key, version) SELECT key, version FROM gone "
                "ON CONFLICT (key) DO UPDATE SET version = GREATEST(tb.version, EXCLUDED.version)) "
                "SELECT count(*) FROM gone")

    @property
    def purge_tombstones(self) -> str:
        """Remove up to $2 tombstones whose version was taken before $1 (a version)."""
        return (f"WITH gone AS (DELETE FROM {self.tombs} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {self.tombs} "
                "WHERE version < $1 LIMIT $2)) RETURNING 1) SELECT count(*) FROM gone")

    @property
    def clear(self) -> list[str]:
        """Count the live rows, bury every row ($2: the tombstone version), then truncate, under a
        lock so nothing slips in between."""
        bury = (f"WITH dead AS (SELECT key, GREATEST($1::bigint, {bump('version', self.node)}) AS version "
                f"FROM {self.t}){self._bury('dead')} SELECT max(version) FROM dead")
        return [f"LOCK TABLE {self.t} IN ACCESS EXCLUSIVE MODE",
                f"SELECT count(*) FROM {self.t} WHERE {live('$1')}",
                bury,
                f"TRUNCATE {self.t}"]

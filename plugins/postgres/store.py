"""``postgres://`` / ``postgresql://``: one table of a PostgreSQL database, through asyncpg.

One connection per store, opened on first use and guarded by an asyncio lock.  Measured on
loopback, a pool's acquire/release (and its reset query on release) cost more than the query
itself; one connection also keeps the prepared statements of the hot paths alive.  A connection
that breaks is dropped and the next call reconnects; the failed call raises, never retries a write.

Replication (issue 8): the table keeps tombstones of deleted keys and, unless ``?feed=false``, a
change feed that also records writes made by other programs (see :mod:`.feedsql`);
``apply_many`` is last-writer-wins in one statement per batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from itertools import count
from operator import attrgetter, itemgetter
from typing import Any, Self

import asyncpg

from kvctl.errors import BadURLError, FeedGapError, KvctlError, UnsupportedError, UsageError
from kvctl.hlc import HLC, NODE_BITS, make_version
from kvctl.plugin_kit import AsyncStoreBase, ScanRange, deadline_ms, page_size, prefix_end, record_of
from kvctl.store import MAX_VERSION, TOMBSTONE, Capabilities, Page, Record, StoreURL, newer, now_ms

from .catalog import refuse_foreign, refuse_missing, survey
from .errors import CONNECTION_LOST, DRIVER_ERRORS, translate, translated
from .feed import bulk_marker, make_cursor, parse_bulk_marker, parse_cursor
from .feedsql import horizon, lock_class
from .schema import Layout, check_columns, needs_setup, refuse_newer, set_up
from .settings import Settings, parse_settings, table_identity
from .sql import APPLY_STAGE_TABLE, SCHEMA_VERSION, STAGE_TABLE

# Batches of this many records or more go through COPY into a temporary table and one merge;
# smaller ones through a single unnest() statement.  Measured on loopback with 100-byte values
# (bench/postgres_RESULTS.md): the two are within ~10% of each other from 2,000 to 5,000 rows,
# the order varying with machine load, and COPY wins clearly from 10,000 rows.
COPY_MIN_ROWS = 5000
# ... and so does any batch this big, which keeps a single Bind message far from the server's
# 1 GiB message limit.
COPY_MIN_BYTES = 16 * 1024 * 1024
# get_many/delete_many send keys as one array; very long lists go in chunks of this size.
ARRAY_CHUNK = 50_000
# Housekeeping (expired rows, old tombstones, the feed beyond its retention) runs on a write at
# most once a minute, or sooner when this store has written enough changes since the last run
# that the feed would otherwise outgrow its retention; each statement removes a bounded number
# of rows, enough to keep pace with this store's own writes.
PURGE_EVERY_S = 60.0
PURGE_ROWS = 10_000
PURGE_MAX_ROWS = 100_000  # per statement: a purge runs inside a write call and must stay short

# The largest key the primary-key btree takes whatever its bytes: 2,704-byte index rows on 8 KiB
# pages (1/3 of a page) minus the 8-byte tuple header and 4-byte bytea header.  Longer keys are
# refused before anything is sent (a compressible longer key would fit, a random one would not).
MAX_KEY = 2692
# bytea holds up to 1 GiB; keep room for the key and the protocol message around the value.
MAX_VALUE = (1 << 30) - 64 * 1024
VERSION_STEP = 1 << NODE_BITS  # one tick of the HLC counter
_key, _value, _expiry, _version = (attrgetter(f) for f in ("key", "value", "expires_at_ms", "version"))
_columns = itemgetter(0, 1, 2, 3)  # a batch row's table columns (without its place in the call)


class _Hot:
    """The open connection and the prepared statements of the single-key paths (the writes are
    None on a store opened to read)."""

    __slots__ = ("con", "delete_one", "get_one", "upsert_one")

    def __init__(self, con: asyncpg.Connection, get_one: Any, upsert_one: Any = None, delete_one: Any = None) -> None:
        self.con = con
        self.get_one = get_one
        self.upsert_one = upsert_one
        self.delete_one = delete_one


class PostgresStore(AsyncStoreBase):
    name = "postgres"
    description = ("A table in PostgreSQL (asyncpg): bytea keys in order, TTLs, versions, atomic batches, "
                   "a change feed that also records other programs' writes.")
    capabilities = Capabilities(
        persistent=True,
        ttl=True,
        ordered_scan=True,
        versions=True,
        atomic_batch=True,
        change_feed=True,
        max_key_size=MAX_KEY,
        max_value_size=MAX_VALUE,
        durability="the server's commit (WAL flushed per commit unless synchronous_commit/fsync are off)",
        blocking_io=False,
    )

    url: StoreURL  # always set: the store is made from its URL

    def __init__(self, url: StoreURL, settings: Settings) -> None:
        self.url = url
        self._settings = settings
        if settings.feed is False:
            # Known before connecting (engines read capabilities first); a table whose feed was
            # turned off by another client is found out on open, and its cursors are gaps.
            self.capabilities = dataclasses.replace(type(self).capabilities, change_feed=False)  # type: ignore[misc]
        self._layout = Layout.of(settings)
        self._sql = self._layout.statements()
        self._feed_sql = self._layout.feed_statements()
        self._where = url.redacted()
        self._con: asyncpg.Connection | None = None
        self._hot: _Hot | None = None
        self._lock = asyncio.Lock()
        self._clock: HLC | None = None  # made on open, with the table's node id
        self._schema_version = SCHEMA_VERSION  # what kvctl_meta records, read on open
        self._sequence_readable = True  # see FeedStatements.state
        self._prepared: dict[str, Any] = {}
        self._next_purge = 0.0  # monotonic time; the first write of a process purges
        self._written = 0  # changes written since the last purge
        self._closed = False

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        return cls(url, parse_settings(url))

    @classmethod
    def identity(cls, url: StoreURL) -> str:
        """The table a URL names (server, database, schema, table), whatever its other options:
        what tells two URLs of one table apart from two tables (see kvctl.registry.store_identity)."""
        return table_identity(url, parse_settings(url))

    @property
    def feed_on(self) -> bool:
        """Whether the table had a change feed when this store last opened it."""
        return self._sql.feed

    @property
    def node_id(self) -> int | None:
        return None if self._clock is None else self._clock.node

    # -- connection ------------------------------------------------------------------------
    async def _connection(self) -> asyncpg.Connection:
        """The open connection (call with the lock held); connects and sets up on first use."""
        con = self._con
        if con is not None and not con.is_closed():
            return con
        if self._closed:
            raise UsageError(f"{self._where}: the store was closed")
        self._con = self._hot = None
        self._prepared.clear()
        s = self._settings
        with translated(self._where, "connect"):
            try:
                con = await asyncpg.connect(
                    s.dsn, timeout=s.connect_timeout_s, command_timeout=s.command_timeout_s
                )
            except (ValueError, TypeError) as exc:  # asyncpg's verdict on a DSN option
                raise BadURLError(f"{self._where}: {exc}") from exc
        try:
            with translated(self._where, "open the table"):
                sql = await self._open_table(con)
                if self.url.reads_only:
                    hot = _Hot(con, await con.prepare(sql.get_one))
                else:
                    hot = _Hot(con, await con.prepare(sql.get_one), await con.prepare(sql.upsert_one(assigned=True)),
                               await con.prepare(sql.delete(one=True)))
        except BaseException:
            con.terminate()
            raise
        self._con, self._hot = con, hot
        return con

    async def _hot_path(self) -> _Hot:
        """The single-key statements (call with the lock held), connecting first if needed."""
        hot = self._hot
        if hot is None or hot.con.is_closed():
            await self._connection()
            hot = self._hot
            assert hot is not None
        return hot

    def _failed(self, exc: BaseException, action: str, writing: bool) -> BaseException:
        """What to raise for ``exc`` raised by the driver mid-call (the lock still held)."""
        if isinstance(exc, KvctlError):
            return exc
        if not isinstance(exc, Exception) or isinstance(exc, CONNECTION_LOST):
            # Cancelled or cut off mid-command: the connection's state is unknown.
            self._drop_connection()
        if isinstance(exc, DRIVER_ERRORS):
            return translate(exc, self._where, action, writing=writing)
        return exc

    async def _open_table(self, con: asyncpg.Connection) -> Any:
        """Probe the table in one round trip; create, upgrade or switch its feed when needed.

        The probe also marks the session as the feed's own writer, so the triggers skip it.
        A store opened to read goes to :meth:`_open_to_read` instead, which changes nothing.
        Returns the table's statements.
        """
        if self.url.reads_only:
            return await self._open_to_read(con)
        layout, wanted = self._layout, self._settings.feed
        probe = layout.statements().probe
        try:
            row = await con.fetchrow(probe, layout.display_name)
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
            row = None
        if needs_setup(row, wanted):
            if row is None and not self._settings.create:  # the table or kvctl's metadata is missing
                refuse_foreign(await survey(con, layout, self._settings.schema), self.url, self._where)
            await set_up(con, layout, wanted, self._where)
            row = await con.fetchrow(probe, layout.display_name)
        assert row is not None
        refuse_newer(row["schema_version"], self._where, layout.display_name)
        self._schema_version = int(row["schema_version"])
        node, feed = int(row["node_id"]), bool(row["feed"])
        if self._clock is None:
            self._clock = HLC(node)
        # Seed the clock from the table (versions keep growing across restarts), and from the
        # server's clock, which stamps other programs' writes: kvctl's next versions start above.
        for seen in (row[5], row[6], make_version(int(row[7]))):
            self._clock.observe(seen)
        self._sql = layout.statements(node, feed)
        return self._sql

    async def _open_to_read(self, con: asyncpg.Connection) -> Any:
        """Open the table for a command that only reads: nothing is created, altered or upgraded
        (see :mod:`.catalog`), and nothing is read beyond the table and kvctl_meta, so a role
        with SELECT on kvctl's tables can read.  A version-1 table is read as it is."""
        layout = self._layout
        found = await survey(con, layout, self._settings.schema)
        refuse_foreign(found, self.url, self._where)
        refuse_missing(found, layout.display_name, self._where)
        meta: dict[str, Any] = {}
        if found.meta_readable:
            text = await con.fetchval(f"SELECT to_jsonb(m)::text FROM {layout.meta} m WHERE m.table_name = $1",
                                      layout.display_name)
            meta = json.loads(text) if text else {}
        if not meta:  # a table kvctl_meta does not list (or this role cannot see it): its columns decide
            await check_columns(con, layout.t, self._where, layout.display_name)
        recorded = meta.get("schema_version")
        refuse_newer(recorded, self._where, layout.display_name)
        self._schema_version = int(recorded or 0) or SCHEMA_VERSION
        self._sequence_readable = found.sequence_readable
        self._sql = layout.statements(None, bool(meta.get("feed")), tombstones=found.has_tombs)
        return self._sql

    async def _stmt(self, con: asyncpg.Connection, text: str) -> Any:
        """A prepared statement of the hot paths, kept for the connection's life."""
        ps = self._prepared.get(text)
        if ps is None:
            ps = self._prepared[text] = await con.prepare(text)
        return ps

    def _drop_connection(self) -> None:
        """Forget a connection in an unknown state; the next call reconnects."""
        con, self._con, self._hot = self._con, None, None
        if con is not None:
            con.terminate()

    async def close(self) -> None:
        self._closed = True
        con, self._con, self._hot = self._con, None, None
        if con is not None and not con.is_closed():
            try:
                await con.close(timeout=5)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                con.terminate()

    @property
    def _hlc(self) -> HLC:
        clock = self._clock
        assert clock is not None, "the clock is made when the table is opened"
        return clock

    # -- reads -----------------------------------------------------------------------------
    async def get(self, key: bytes) -> Record | None:
        # The single-key paths are written out rather than going through _Use: one round trip
        # is ~30 µs here, and every avoided coroutine counts against that.
        async with self._lock:
            hot = await self._hot_path()
            try:
                row = await hot.get_one.fetchrow(key, now_ms())
            except BaseException as exc:
                failure = self._failed(exc, "get", False)
                if failure is exc:
                    raise
                raise failure from exc
        return None if row is None else record_of(key, row[0], row[1], row[2])

    async def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        if not keys:
            return []
        make = record_of
        out: list[Record | None] = []
        for start in range(0, len(keys), ARRAY_CHUNK):
            chunk = keys[start:start + ARRAY_CHUNK]
            rows = await self._fetch(self._sql.get_many, "get_many", chunk, now_ms(), prepared=True)
            # Rows come back in request order; value is NOT NULL, so None marks a missing key.
            out += [None if v is None else make(k, v, e, ver) for k, v, e, ver in rows]
        return out

    def scan_range(self, span: ScanRange, keys_only: bool) -> AsyncIterator[Page]:
        end, batch_size = span.end, span.page

        async def fetch(lower: bytes, inclusive: bool) -> list[Record]:
            text = self._sql.scan(keys_only=keys_only, exclusive=not inclusive, bounded=end is not None)
            args: list[Any] = [now_ms(), lower, batch_size] + ([end] if end is not None else [])
            # The lock is taken per page, not across the yield: the caller may write in between.
            rows = await self._fetch(text, "scan", *args)
            make = record_of
            if keys_only:
                return [make(k, b"", e, ver) for k, e, ver in rows]
            return [make(k, v, e, ver) for k, v, e, ver in rows]

        return span.apages(fetch)

    async def count(self, prefix: bytes = b"") -> int:
        end = prefix_end(prefix) if prefix else None
        args: list[Any] = [now_ms(), prefix] + ([end] if end is not None else [])
        rows = await self._fetch(self._sql.count(bounded=end is not None), "count", *args)
        return int(rows[0][0])

    async def stats(self) -> dict[str, Any]:
        async with _Use(self, "stats") as con:  # built once open: a version-1 table read as it is has no tombstones
            rows = await con.fetch(self._sql.stats, now_ms())
        live, expired, size, tombstones, server = rows[0]
        out = {
            "keys": int(live),
            "expired_not_purged": int(expired),
            "tombstones": int(tombstones),
            "table": self._settings.display_name,
            "table_bytes": int(size),
            "server_version": server,
            "schema_version": self._schema_version,
            "node_id": self.node_id,
            "feed": self._sql.feed,
        }
        if self._sql.feed:
            out["feed_changes"] = int((await self._fetch(self._feed_sql.feed_stats, "stats"))[0][0])
        return out

    async def _fetch(self, text: str, action: str, *args: Any, prepared: bool = False) -> list[Any]:
        async with _Use(self, action) as con:
            if prepared:
                return list(await (await self._stmt(con, text)).fetch(*args))
            return list(await con.fetch(text, *args))

    # -- writes ----------------------------------------------------------------------------
    async def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        self._check(key, value)
        await self._write_one(key, value, deadline_ms(ttl_ms), None)

    def _check_writable(self) -> None:
        """A store opened to read has no write statements: say so rather than fail inside."""
        if self.url.reads_only:
            raise UsageError(f"{self._where}: opened to read only; a write needs the store opened for writing")

    async def _write_one(self, key: bytes, value: bytes, expires: int | None, version: int | None) -> None:
        self._check_writable()
        async with self._lock:  # written out like get(), for the same reason
            hot = await self._hot_path()
            try:
                await self._purge(hot.con)
                if version is None:  # taken after connecting: opening seeds the clock from the table
                    written = await hot.upsert_one.fetchval(key, value, expires, self._hlc.now())
                else:
                    stmt = await self._stmt(hot.con, self._sql.upsert_one(assigned=False))
                    written = await stmt.fetchval(key, value, expires, version)
                self._hlc.observe(written)  # may have been raised above the key's previous version
                self._written += 1
            except BaseException as exc:
                failure = self._failed(exc, "set", True)
                if failure is exc:
                    raise
                raise failure from exc

    async def set_many(self, records: Iterable[Record]) -> None:
        batch = records if isinstance(records, list) else list(records)
        if not batch:
            return
        self._check_batch(batch)  # every check before anything is sent: all or nothing
        latest = dict(zip(map(_key, batch), batch, strict=True))  # the last write of a key in a batch wins
        if len(latest) == 1:
            (rec,) = latest.values()
            await self._write_one(rec.key, rec.value, rec.expires_at_ms, rec.version)
            return
        await self._write_batch(list(latest.values()), newer=False)

    async def set_newer_many(self, records: Iterable[Record]) -> tuple[int, int]:
        """``set_many`` of the records whose key this table does not hold live at an equal or
        higher version (a record without a version is always written); the comparison is made
        on the server, in the same statement as the write.  Returns how many records were
        written and their key and value bytes.  The last record of a key in the batch stands
        for the key."""
        batch = records if isinstance(records, list) else list(records)
        if not batch:
            return 0, 0
        self._check_batch(batch)
        return await self._write_batch(list(dict(zip(map(_key, batch), batch, strict=True)).values()), newer=True)

    async def _write_batch(self, calls: list[Record], *, newer: bool) -> tuple[int, int]:
        """Write distinct keys; how many were written and their bytes (see set_newer_many)."""
        # Versions in call order (the feed lists the batch in that order), rows in key order:
        # concurrent batches then lock rows in one order and cannot deadlock.  Rows are built
        # and sorted by C-level passes (zip/map/sort): a bulk load spends most of its client
        # time here otherwise.
        async with _Use(self, "set_many", writing=True) as con:
            given = list(map(_version, calls))
            versions = self._assign_versions(given)  # after connecting: opening seeds the clock
            rows = sorted(zip(map(_key, calls), map(_value, calls), map(_expiry, calls), versions, count(1)))
            await self._purge(con)
            unversioned = given.count(None)
            if unversioned in (0, len(given)):  # the usual case: all given, or all assigned here
                parts = [(unversioned > 0, rows)]
            else:
                keep = {r.key for r in calls if r.version is not None}
                parts = [(False, [row for row in rows if row[0] in keep]),
                         (True, [row for row in rows if row[0] not in keep])]
            if len(parts) == 1:  # the usual case: one statement
                written, size = await self._upsert_rows(con, *parts[0], newer=newer)
            else:  # given and assigned versions mixed: two statements, one transaction
                written = size = 0
                async with con.transaction():
                    for assigned, part in parts:
                        n, b = await self._upsert_rows(con, assigned, part, newer=newer)
                        written, size = written + n, size + b
            self._written += written
            return written, size

    async def _upsert_rows(self, con: asyncpg.Connection, assigned: bool,
                           rows: list[tuple[bytes, bytes, int | None, int, int]], *,
                           newer: bool) -> tuple[int, int]:
        """One statement (big batches: COPY and one statement) for rows all with given or all
        with assigned versions; how many were written and their bytes."""
        big = len(rows) >= COPY_MIN_ROWS or sum(len(r[1]) for r in rows) >= COPY_MIN_BYTES
        if big and await self._load_directly(con, assigned, rows):
            return len(rows), sum(len(r[0]) + len(r[1]) for r in rows)
        newer = newer and not assigned  # a version assigned here is above every one the table holds
        text = self._sql.upsert_batch(assigned=assigned, staged=big, newer=newer)
        now = [now_ms()] if newer else []
        if big:
            # COPY (binary) into a temporary table, then one merging statement, in one transaction.
            async with con.transaction():
                await con.execute(self._sql.create_stage)
                await con.copy_records_to_table(STAGE_TABLE, records=rows, schema_name="pg_temp")
                written, size, top = await con.fetchrow(text, *now)
        else:
            stmt = await self._stmt(con, text)
            written, size, top = await stmt.fetchrow(*zip(*rows, strict=True), *now)
        self._hlc.observe(top)
        return int(written), int(size)

    async def _load_directly(self, con: asyncpg.Connection, assigned: bool,
                             rows: list[tuple[bytes, bytes, int | None, int, int]]) -> bool:
        """COPY a batch (distinct keys, in key order) straight into the table when its key range
        holds no row yet -- a new or emptied table, the next range of a migrate -- with one feed
        row for the whole batch (see feed.bulk_marker).  False, having written nothing, when the
        range is in use: the caller then merges through the staging table.

        Straight rows are exactly what the merge would write: no key had a row to update, and a
        version this store assigns needs raising only above a tombstone, which the range must not
        hold either.  A key another session writes meanwhile makes the COPY fail on the primary
        key, or its tombstone shows in the check after it; the batch then goes the merge's way.
        """
        sql, first, last = self._sql, rows[0][0], rows[-1][0]
        row_there, tomb_there = await con.fetchrow(sql.range_taken, first, last)
        if row_there or (assigned and tomb_there):
            return False
        versions = [r[3] for r in rows]
        try:
            async with con.transaction():
                await con.copy_records_to_table(
                    self._settings.table, schema_name=self._settings.schema,
                    columns=["key", "value", "expires_at", "version"], records=map(_columns, rows))
                if assigned and await con.fetchval(sql.tombs_in_range, first, last):
                    raise _RangeTaken
                if sql.feed:
                    await con.execute(sql.record_bulk, *bulk_marker(first, last, min(versions), max(versions)))
        except (_RangeTaken, asyncpg.UniqueViolationError):
            return False
        self._hlc.observe(max(versions))
        return True

    def _check_batch(self, batch: list[Record]) -> None:
        """Limits and version ranges of a whole batch, at C speed unless something is wrong."""
        if max(map(len, (r.key for r in batch))) > MAX_KEY or max(map(len, (r.value for r in batch))) > MAX_VALUE:
            for rec in batch:
                self._check(rec.key, rec.value)  # raises LimitError naming the first culprit
        given = [r.version for r in batch if r.version is not None]
        if given and (min(given) < 0 or max(given) > MAX_VERSION):
            bad = next(r for r in batch if r.version is not None and not 0 <= r.version <= MAX_VERSION)
            raise UsageError(f"{self._where}: version {bad.version} of key {bad.key[:40]!r} is "
                             "outside 0..2**63-1 (a bigint column)")

    def _assign_versions(self, given: list[int | None]) -> list[int]:
        """Keep given versions (observed into the clock); give the others consecutive HLC ticks."""
        clock = self._hlc
        known = [v for v in given if v is not None]
        if known:
            clock.observe(max(known))
        missing = len(given) - len(known)
        if not missing:
            return known
        first = clock.now()
        clock.observe(first + (missing - 1) * VERSION_STEP)  # the range is taken: later now() is above it
        fresh = range(first, first + missing * VERSION_STEP, VERSION_STEP)
        if not known:
            return list(fresh)
        ticks = iter(fresh)
        return [next(ticks) if v is None else v for v in given]

    async def _purge(self, con: asyncpg.Connection) -> None:
        """Housekeeping when due (see PURGE_EVERY_S): expired rows, old tombstones, the feed."""
        clock = time.monotonic()
        if clock < self._next_purge and self._written < PURGE_ROWS // 2:
            return
        self._next_purge = clock + PURGE_EVERY_S
        limit = min(PURGE_MAX_ROWS, max(PURGE_ROWS, 2 * self._written))
        self._written = 0
        await self._purge_now(con, limit)

    async def _purge_now(self, con: asyncpg.Connection, limit: int) -> dict[str, int]:
        s, sql = self._settings, self._sql
        removed = {"expired": 0, "tombstones": 0, "changes": 0}
        removed["expired"] = int(await (await self._stmt(con, sql.purge_expired)).fetchval(now_ms(), limit))
        horizon = make_version(max(0, now_ms() - s.tombstone_retention_ms))
        removed["tombstones"] = int(await (await self._stmt(con, sql.purge_tombstones)).fetchval(horizon, limit))
        if sql.feed:
            by_age = s.feed_retention_ms is not None
            keep = s.feed_retention_ms if by_age else s.feed_retention_changes
            stmt = await self._stmt(con, self._feed_sql.purge(by_age=by_age))
            removed["changes"] = int(await stmt.fetchval(self._layout.display_name, limit, keep))
        return removed

    async def purge(self, limit: int = PURGE_ROWS) -> dict[str, int]:
        """Run the housekeeping now (it otherwise runs on writes): how many expired rows, old
        tombstones and changes beyond the feed's retention were removed."""
        async with _Use(self, "purge", writing=True) as con:
            return await self._purge_now(con, limit)

    async def delete(self, key: bytes) -> bool:
        async with _Use(self, "delete", writing=True) as con:
            hot = await self._hot_path()
            await self._purge(con)
            live, version = await hot.delete_one.fetchrow(key, self._hlc.now(), now_ms())
            self._hlc.observe(version)
            self._written += 1
        return bool(live)

    async def delete_many(self, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0
        keys = list(dict.fromkeys(keys))  # distinct, in call order (the feed's order)
        async with _Use(self, "delete_many", writing=True) as con:
            await self._purge(con)
            # built once connected: opening the table sets the feed flag and node id it depends on
            stmt = await self._stmt(con, self._sql.delete(one=False))
            version = self._hlc.now()  # one tombstone version per call, raised per key above its row
            if len(keys) <= ARRAY_CHUNK:
                live, newest = await stmt.fetchrow(keys, version, now_ms())
            else:  # long lists: one transaction, so the deletion stays all-or-nothing
                live, newest = 0, None
                async with con.transaction():
                    for start in range(0, len(keys), ARRAY_CHUNK):
                        n, top = await stmt.fetchrow(keys[start:start + ARRAY_CHUNK], version, now_ms())
                        live, newest = live + n, max(newest or 0, top or 0)
            self._hlc.observe(newest)
            self._written += len(keys)
            return int(live)

    async def clear(self) -> int:
        async with _Use(self, "clear", writing=True) as con:
            lock, count, bury, truncate = self._sql.clear  # after opening, like delete_many
            async with con.transaction():
                await con.execute(lock)
                removed = int(await con.fetchval(count, now_ms()))
                self._hlc.observe(await con.fetchval(bury, self._hlc.now()))
                await con.execute(truncate)
            return removed

    # -- replication -----------------------------------------------------------------------
    async def apply_many(self, records: Iterable[Record]) -> int:
        """Last-writer-wins apply (see kvctl.store): the replication write path.

        One statement (or COPY plus one statement, in one transaction) per call: every change is
        compared with the key's row or tombstone on the server and the winners written, with
        their tombstones and feed entries.  Returns how many changes took effect.
        """
        latest: dict[bytes, Record] = {}
        for rec in records:
            if rec.kind == TOMBSTONE:
                if rec.value or rec.expires_at_ms is not None:
                    rec = Record(rec.key, b"", None, rec.version, TOMBSTONE)
            elif rec.kind is not None:
                raise UnsupportedError(f"the {self.name} backend holds bytes values only, not a {rec.kind} "
                                       f"({rec.key[:40]!r})")
            if newer(rec, latest.get(rec.key)):  # several changes of a key: only the newest can win
                latest[rec.key] = rec
        if not latest:
            return 0
        batch = list(latest.values())
        self._check_batch(batch)  # every check before anything is sent: all or nothing
        async with _Use(self, "apply_many", writing=True) as con:
            versions = self._assign_versions([r.version for r in batch])
            rows = [(r.key, b"" if r.kind == TOMBSTONE else r.value,
                     None if r.kind == TOMBSTONE else r.expires_at_ms, v, r.kind == TOMBSTONE, r.version is None, n)
                    for n, (r, v) in enumerate(zip(batch, versions, strict=True), 1)]
            await self._purge(con)
            big = len(rows) >= COPY_MIN_ROWS or sum(len(r[1]) for r in rows) >= COPY_MIN_BYTES
            if big:
                async with con.transaction():
                    await con.execute(self._sql.create_apply_stage)
                    await con.copy_records_to_table(APPLY_STAGE_TABLE, records=rows, schema_name="pg_temp")
                    applied = await con.fetchval(self._sql.apply(staged=True))
            else:
                stmt = await self._stmt(con, self._sql.apply(staged=False))
                applied = await stmt.fetchval(*zip(*rows, strict=True))
            self._written += int(applied)
            return int(applied)

    def _check_feed(self, head: Any, cursor: str | None, feed_id: str | None, seq: int) -> str:
        """The feed id, after checking that the feed still covers position ``seq``."""
        name = self._layout.display_name
        if head is None:
            raise FeedGapError(f"{self._where}: table {name} has no kvctl metadata (dropped?)")
        if not head["feed"]:
            raise FeedGapError(f"{self._where}: table {name} has no change feed",
                               hint="open it once with ?feed=true to turn the feed on")
        if feed_id is not None and feed_id != head["feed_id"]:
            raise FeedGapError(f"{self._where}: cursor {cursor} is not of this table's change feed "
                               "(another table's, or from before the feed was turned off and on)")
        if seq < int(head["feed_floor_seq"]):
            raise FeedGapError(f"{self._where}: the change feed of {name} was purged past cursor {cursor} "
                               "(see ?feed_retention=)")
        return str(head["feed_id"])

    async def _horizon(self) -> tuple[Any, int | None]:
        """The feed's state and the last seq every writer has finished with (see :mod:`.feedsql`):
        three statements, in this order, the rows then being read in a fourth."""
        fs = self._feed_sql
        async with _Use(self, "read the change feed") as con:  # opened first: it tells which query reads the feed
            rows = await con.fetch(fs.state(sequence_readable=self._sequence_readable), self._layout.display_name)
        head = rows[0] if rows else None
        if head is None or not head["feed"] or head[4]:  # no feed, or a standby (see .feedsql)
            return head, None
        open_writers = await self._fetch(fs.registrations, "read the change feed",
                                         lock_class(head["feed_id"]) % (1 << 32))
        return head, horizon(int(head[3]), [int(r[0]) for r in open_writers])

    async def feed_cursor(self) -> str:
        """The position after every change of every transaction that has ended.

        Without a feed to read (none, or a standby), a cursor that ``changes()`` reports as a gap.
        """
        head, last = await self._horizon()
        if head is None or last is None:
            return make_cursor(None, 0)
        return make_cursor(head["feed_id"], last)

    async def changes(self, cursor: str | None, *, batch_size: int = 1000) -> AsyncIterator[Page]:
        """Every change after ``cursor``, a page per query (see :mod:`.feedsql` for the order)."""
        feed_id: str | None = None
        seq = 0
        if cursor is not None:
            feed_id, seq = parse_cursor(cursor, self._where)
        batch_size = page_size(batch_size)
        name = self._layout.display_name
        head, last = await self._horizon()
        feed_id = self._check_feed(head, cursor, feed_id, seq)
        if last is None:  # a feed, but on a standby
            raise FeedGapError(f"{self._where}: this server is a standby; the change feed of {name} "
                               "can only be read from the primary", hint="point the sync source at the primary")
        if seq > int(head[3]):  # the sequence went back: its table was emptied with RESTART IDENTITY
            raise FeedGapError(f"{self._where}: cursor {cursor} is past the end of the change feed of {name}")
        while seq < last:
            rows = await self._fetch(self._feed_sql.page, "read the change feed", name, seq, last, batch_size)
            feed_id = self._check_feed(rows[0] if rows else None, cursor, feed_id, seq)
            records: list[Record] = []
            bulk = None
            for row in rows:
                if row["seq"] is None:
                    break
                if row["deleted"]:
                    if row["value"] is not None:  # a bulk load: served on a page of its own
                        bulk = row
                        break
                    records.append(Record(row["key"], b"", None, row["version"], TOMBSTONE))
                else:
                    records.append(record_of(row["key"], row["value"], row["expires_at"], row["version"]))
            if records:
                seq = int(rows[len(records) - 1]["seq"])
                yield Page(records, make_cursor(feed_id, seq))
                if bulk is None and len(records) < batch_size:
                    return
                continue
            if bulk is None:
                return
            async for loaded, done in self._bulk_load(bulk["key"], bulk["value"], batch_size):
                # Pages before a load's last resume at the load's start: served again, they change
                # nothing (last writer wins), and the pages stay bounded whatever the load's size.
                yield Page(loaded, make_cursor(feed_id, int(bulk["seq"]) if done else seq))
            seq = int(bulk["seq"])

    async def _bulk_load(self, key: bytes, marker: bytes, batch_size: int) -> AsyncIterator[tuple[list[Record], bool]]:
        """The rows of a bulk load's feed row (see feed.bulk_marker), a page at a time, each with
        whether it is the last; a load whose rows were all replaced since gives nothing."""
        lower, upper, low, high = parse_bulk_marker(key, marker)
        first = True
        while True:
            rows = await self._fetch(self._sql.bulk_rows(first=first), "read the change feed",
                                     lower, upper, low, high, batch_size + 1)
            more = len(rows) > batch_size
            records = [record_of(k, v, e, ver) for k, v, e, ver in rows[:batch_size]]
            if records:
                yield records, not more
            if not more:
                return
            lower, first = records[-1].key, False


class _RangeTaken(Exception):
    """A direct load found its key range in use after all: roll it back and merge instead."""


class _Use:
    """``async with _Use(store, action) as con``: the lock, the connection, translated errors.

    A class rather than @asynccontextmanager: this wraps every call, and the hot paths are one
    loopback round trip (~30 µs), so its own cost matters.
    """

    __slots__ = ("action", "store", "writing")

    def __init__(self, store: PostgresStore, action: str, *, writing: bool = False) -> None:
        self.store = store
        self.action = action
        self.writing = writing

    async def __aenter__(self) -> asyncpg.Connection:
        store = self.store
        if self.writing:
            store._check_writable()
        await store._lock.acquire()
        try:
            return await store._connection()
        except BaseException:
            store._lock.release()
            raise

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        store = self.store
        try:
            if exc is not None:
                failure = store._failed(exc, self.action, self.writing)
                if failure is not exc:
                    raise failure from exc
        finally:
            store._lock.release()

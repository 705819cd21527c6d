"""The connection, table opening, statements and housekeeping every PostgreSQL store call shares.

:class:`PostgresCore` holds the one connection (opened on first use, guarded by an asyncio lock),
opens or sets up the table, keeps the prepared statements and the HLC, and runs the purge; the
reads, the bulk writes (:mod:`.bulk`) and the change feed (:mod:`.feedread`) build on it, and
:class:`Use` wraps every call in the lock, the connection and translated errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any, Self

import asyncpg

from kvctl.errors import KvctlError, UnavailableError, UsageError
from kvctl.hlc import HLC, make_version
from kvctl.plugin_kit import AsyncStoreBase, bulk_marker
from kvctl.store import StoreURL, now_ms

from .catalog import refuse_foreign, refuse_missing, survey
from .connect import connect
from .errors import CONNECTION_LOST, DRIVER_ERRORS, translate, translated
from .schema import Layout, check_columns, needs_setup, refuse_newer, set_up
from .settings import Settings, parse_settings, table_identity
from .sql import SCHEMA_VERSION
from .stream import CopyStream
from .use import Hot, Use

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


class PostgresCore(AsyncStoreBase):
    """What every call of a PostgreSQL store goes through (see the module docstring)."""

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
        self._hot: Hot | None = None
        self._lock = asyncio.Lock()
        self._clock: HLC | None = None  # made on open, with the table's node id
        self._schema_version = SCHEMA_VERSION  # what kvctl_meta records, read on open
        self._sequence_readable = True  # see FeedStatements.state
        self._prepared: dict[str, Any] = {}
        # An atomic load (see .atomic): asked for, and its transaction once begun.
        self._atomic_wanted = False
        self._atomic_tx: Any = None
        self._indexes_later: list[str] = []  # of a table created inside it, built at its end
        # The COPY a load into a table it created streams its batches down (see .stream), and
        # the span of keys and versions it has carried (first, last, lowest, highest): its feed
        # row, written when it ends.  _streamable: such a load, no other write made into it yet.
        self._stream: CopyStream | None = None
        self._stream_span: tuple[bytes, bytes, int, int] | None = None
        self._streamable = False
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
        if self._atomic_tx is not None:
            # its transaction ended with its connection: a new one would write outside it
            raise UnavailableError(f"{self._where}: the connection was lost during a load; the server rolled "
                                   "the load back, so none of it was written")
        if self._closed:
            raise UsageError(f"{self._where}: the store was closed")
        self._con = self._hot = None
        self._prepared.clear()
        con = await connect(self._settings, self._where)
        try:
            with translated(self._where, "open the table"):
                sql = await self._open_table(con)
                if self.url.reads_only:
                    hot = Hot(con, await con.prepare(sql.get_one))
                else:
                    hot = Hot(con, await con.prepare(sql.get_one), await con.prepare(sql.upsert_one(assigned=True)),
                               await con.prepare(sql.delete(one=True)))
        except BaseException:
            con.terminate()
            raise
        self._con, self._hot = con, hot
        return con

    async def _hot_path(self) -> Hot:
        """The single-key statements (call with the lock held), connecting first if needed."""
        hot = self._hot
        if hot is None or hot.con.is_closed():
            await self._connection()
            hot = self._hot
            assert hot is not None
        if self._stream is not None:
            with translated(self._where, "finish the load's COPY", writing=True):
                await self._end_stream(hot.con)
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
        await self._begin_atomic(con)  # after the probe, whose error would abort it; before the set-up
        if needs_setup(row, wanted):
            if row is None and not self._settings.create:  # the table or kvctl's metadata is missing
                refuse_foreign(await survey(con, layout, self._settings.schema), self.url, self._where)
            # a table created inside an atomic load is seen by no one else until it ends
            self._indexes_later = await set_up(con, layout, wanted, self._where,
                                               indexes_later=self._atomic_tx is not None)
            self._streamable = bool(self._indexes_later)  # returned only for a table created here
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

    async def _begin_atomic(self, con: asyncpg.Connection) -> None:
        """Begin the transaction of an atomic load asked for and not begun yet."""
        if self._atomic_wanted and self._atomic_tx is None:
            tx = con.transaction()
            await tx.start()
            self._atomic_tx = tx

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

    async def _end_stream(self, con: asyncpg.Connection) -> None:
        """Finish the streamed COPY, if one is open, and write its feed row: the connection is
        wanted for something else.  No batch streams after that (the table is no longer known
        to hold only keys below the next batch's)."""
        self._streamable = False
        stream, span = self._stream, self._stream_span
        if stream is None:
            return
        self._stream = self._stream_span = None
        await stream.finish()
        if self._sql.feed and span is not None:
            await con.execute(self._sql.record_bulk, *bulk_marker(*span))

    def _cancel_stream(self) -> None:
        stream, self._stream, self._stream_span, self._streamable = self._stream, None, None, False
        if stream is not None:
            stream.cancel()

    async def _stmt(self, con: asyncpg.Connection, text: str) -> Any:
        """A prepared statement of the hot paths, kept for the connection's life."""
        ps = self._prepared.get(text)
        if ps is None:
            ps = self._prepared[text] = await con.prepare(text)
        return ps

    def _drop_connection(self) -> None:
        """Forget a connection in an unknown state; the next call reconnects."""
        self._cancel_stream()
        con, self._con, self._hot = self._con, None, None
        if con is not None:
            con.terminate()

    async def close(self) -> None:
        self._closed = True
        self._cancel_stream()
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

    async def _fetch(self, text: str, action: str, *args: Any, prepared: bool = False) -> list[Any]:
        async with Use(self, action) as con:
            if prepared:
                return list(await (await self._stmt(con, text)).fetch(*args))
            return list(await con.fetch(text, *args))


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

    async def _purge(self, con: asyncpg.Connection) -> None:
        """Housekeeping when due (see PURGE_EVERY_S): expired rows, old tombstones, the feed."""
        if self._stream is not None:  # the connection is busy with the COPY; the table is new anyway
            return
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
        async with Use(self, "purge", writing=True) as con:
            return await self._purge_now(con, limit)

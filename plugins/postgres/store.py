"""``postgres://`` / ``postgresql://``: one table of a PostgreSQL database, through asyncpg.

One connection per store, opened on first use and guarded by an asyncio lock.  Measured on
loopback, a pool's acquire/release (and its reset query on release) cost more than the query
itself; one connection also keeps the prepared statements of the hot paths alive.  A connection
that breaks is dropped and the next call reconnects; the failed call raises, never retries a write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Self

import asyncpg

from kvctl.errors import BadURLError, KvctlError, UsageError
from kvctl.hlc import HLC, NODE_BITS
from kvctl.store import (
    AsyncStoreBase,
    Capabilities,
    Page,
    Record,
    StoreURL,
    deadline_ms,
    key_cursor,
    now_ms,
    prefix_end,
)

from .errors import CONNECTION_LOST, DRIVER_ERRORS, translate, translated
from .records import make_record
from .settings import Settings, parse_settings
from .sql import REQUIRED_COLUMNS, SCHEMA_VERSION, SETUP_LOCK_ID, STAGE_TABLE, Statements

# Batches of this many records or more go through COPY into a temporary table and one merge;
# smaller ones through a single unnest() upsert.  Measured on loopback with 100-byte values
# (bench/postgres_RESULTS.md): the two are within ~10% of each other from 2,000 to 5,000 rows,
# the order varying with machine load, and COPY wins clearly from 10,000 rows.
COPY_MIN_ROWS = 5000
# ... and so does any batch this big, which keeps a single Bind message far from the server's
# 1 GiB message limit.
COPY_MIN_BYTES = 16 * 1024 * 1024
# get_many/delete_many send keys as one array; very long lists go in chunks of this size.
ARRAY_CHUNK = 50_000
PURGE_EVERY_S = 60.0
PURGE_ROWS = 10_000

# The largest key the primary-key btree takes whatever its bytes: 2,704-byte index rows on 8 KiB
# pages (1/3 of a page) minus the 8-byte tuple header and 4-byte bytea header.  Longer keys are
# refused before anything is sent (a compressible longer key would fit, a random one would not).
MAX_KEY = 2692
# bytea holds up to 1 GiB; keep room for the key and the protocol message around the value.
MAX_VALUE = (1 << 30) - 64 * 1024
MAX_VERSION = (1 << 63) - 1
VERSION_STEP = 1 << NODE_BITS  # one tick of the HLC counter


class _Hot:
    """The open connection and the prepared statements of the single-key paths."""

    __slots__ = ("con", "delete_one", "get_one", "upsert_one")

    def __init__(self, con: asyncpg.Connection, get_one: Any, upsert_one: Any, delete_one: Any) -> None:
        self.con = con
        self.get_one = get_one
        self.upsert_one = upsert_one
        self.delete_one = delete_one


class PostgresStore(AsyncStoreBase):
    name = "postgres"
    description = "A table in PostgreSQL (asyncpg): bytea keys in order, TTLs, versions, atomic batches."
    capabilities = Capabilities(
        persistent=True,
        ttl=True,
        ordered_scan=True,
        versions=True,
        atomic_batch=True,
        max_key_size=MAX_KEY,
        max_value_size=MAX_VALUE,
        durability="the server's commit (WAL flushed per commit unless synchronous_commit/fsync are off)",
        blocking_io=False,
    )

    def __init__(self, url: StoreURL, settings: Settings) -> None:
        self.url = url
        self._settings = settings
        self._sql = Statements(settings.qualified_table, settings.qualified_meta)
        self._where = url.redacted()
        self._con: asyncpg.Connection | None = None
        self._hot: _Hot | None = None
        self._lock = asyncio.Lock()
        self._clock = HLC()
        self._prepared: dict[str, Any] = {}
        self._next_purge = 0.0  # monotonic time; the first write of a process purges
        self._closed = False

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        return cls(url, parse_settings(url))

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
                await self._open_table(con)
                sql = self._sql
                hot = _Hot(con, await con.prepare(sql.get_one), await con.prepare(sql.upsert_one),
                           await con.prepare(sql.delete_one))
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

    async def _open_table(self, con: asyncpg.Connection) -> None:
        sql, name = self._sql, self._settings.display_name
        try:
            recorded, newest = await con.fetchrow(sql.probe, name)
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
            recorded = None
        if recorded is None:  # first use of this table (or of kvctl in this schema)
            recorded = await self._create(con)
            newest = await con.fetchval(f"SELECT max(version) FROM {sql.t}")
        if recorded != SCHEMA_VERSION:
            raise UsageError(
                f"{self._where}: table {name} has kvctl schema version {recorded}; this kvctl knows "
                f"version {SCHEMA_VERSION}", hint="upgrade kvctl",
            )
        self._clock.observe(newest)

    async def _create(self, con: asyncpg.Connection) -> int:
        sql, name = self._sql, self._settings.display_name
        async with con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock($1)", SETUP_LOCK_ID)
            await con.execute(sql.create_meta)
            exists = await con.fetchval("SELECT to_regclass($1) IS NOT NULL", sql.t)
            if not exists:
                for stmt in sql.create_table:
                    await con.execute(stmt)
            else:
                columns = dict(await con.fetch(sql.columns, sql.t))
                wrong = {c: t for c, t in REQUIRED_COLUMNS.items() if columns.get(c) != t}
                if wrong:
                    have = ", ".join(f"{c} {t}" for c, t in columns.items())
                    raise UsageError(
                        f"{self._where}: table {name} is not a kvctl table (has {have}; needs key bytea, "
                        "value bytea, expires_at bigint, version bigint)", hint="pick another table with ?table=NAME",
                    )
            await con.execute(sql.record_schema, name, SCHEMA_VERSION)
            version: int = await con.fetchval(sql.schema_version, name)
        return version

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
        return None if row is None else make_record(key, row[0], row[1], row[2])

    async def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        if not keys:
            return []
        make = make_record
        out: list[Record | None] = []
        for start in range(0, len(keys), ARRAY_CHUNK):
            chunk = keys[start:start + ARRAY_CHUNK]
            rows = await self._fetch(self._sql.get_many, "get_many", chunk, now_ms(), prepared=True)
            # Rows come back in request order; value is NOT NULL, so None marks a missing key.
            out += [None if v is None else make(k, v, e, ver) for k, v, e, ver in rows]
        return out

    async def scan(
        self,
        prefix: bytes = b"",
        *,
        start_after: bytes | None = None,
        cursor: str | None = None,
        batch_size: int = 1000,
        keys_only: bool = False,
    ) -> AsyncIterator[Page]:
        after = self._start_key(prefix, start_after, cursor)
        end = prefix_end(prefix)
        lower, exclusive = (prefix, False) if after is None else (after, True)
        batch_size = max(1, batch_size)
        while True:
            text = self._sql.scan(keys_only=keys_only, exclusive=exclusive, bounded=end is not None)
            args: list[Any] = [now_ms(), lower, batch_size] + ([end] if end is not None else [])
            # The lock is taken per page, not across the yield: the caller may write in between.
            rows = await self._fetch(text, "scan", *args)
            if not rows:
                return
            make = make_record
            if keys_only:
                records = [make(k, b"", e, ver) for k, e, ver in rows]
            else:
                records = [make(k, v, e, ver) for k, v, e, ver in rows]
            lower, exclusive = records[-1].key, True
            yield Page(records, key_cursor(lower))
            if len(records) < batch_size:
                return

    async def count(self, prefix: bytes = b"") -> int:
        end = prefix_end(prefix) if prefix else None
        args: list[Any] = [now_ms(), prefix] + ([end] if end is not None else [])
        rows = await self._fetch(self._sql.count(bounded=end is not None), "count", *args)
        return int(rows[0][0])

    async def stats(self) -> dict[str, Any]:
        rows = await self._fetch(self._sql.stats, "stats", now_ms())
        live, expired, size, server = rows[0]
        return {
            "keys": int(live),
            "expired_not_purged": int(expired),
            "table": self._settings.display_name,
            "table_bytes": int(size),
            "server_version": server,
            "schema_version": SCHEMA_VERSION,
        }

    async def _fetch(self, text: str, action: str, *args: Any, prepared: bool = False) -> list[Any]:
        async with _Use(self, action) as con:
            if prepared:
                return list(await (await self._stmt(con, text)).fetch(*args))
            return list(await con.fetch(text, *args))

    # -- writes ----------------------------------------------------------------------------
    async def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        self._check(key, value)
        await self._write_one(key, value, deadline_ms(ttl_ms), None)

    async def _write_one(self, key: bytes, value: bytes, expires: int | None, version: int | None) -> None:
        async with self._lock:  # written out like get(), for the same reason
            hot = await self._hot_path()
            if version is None:  # taken after connecting: opening seeds the clock from the table
                version = self._clock.now()
            try:
                if time.monotonic() >= self._next_purge:
                    await self._maybe_purge(hot.con)
                await hot.upsert_one.fetchval(key, value, expires, version)
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
        latest = {rec.key: rec for rec in batch}  # the last write of a key in a batch wins
        if len(latest) == 1:
            (rec,) = latest.values()
            if rec.version is not None:
                self._clock.observe(rec.version)
            await self._write_one(rec.key, rec.value, rec.expires_at_ms, rec.version)
            return
        # Key order: concurrent batches then lock rows in one order and cannot deadlock.
        keys = sorted(latest)
        ordered = [latest[k] for k in keys]
        values = [r.value for r in ordered]
        expires = [r.expires_at_ms for r in ordered]
        given = [r.version for r in ordered]
        big = len(keys) >= COPY_MIN_ROWS or sum(map(len, values)) >= COPY_MIN_BYTES
        async with _Use(self, "set_many", writing=True) as con:
            versions = self._assign_versions(given)  # after connecting: opening seeds the clock
            await self._maybe_purge(con)
            if big:
                await self._copy_merge(con, list(zip(keys, values, expires, versions, strict=True)))
            else:
                await (await self._stmt(con, self._sql.upsert_arrays)).fetch(keys, values, expires, versions)

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
        clock = self._clock
        known = [v for v in given if v is not None]
        if known:
            clock.observe(max(known))
        missing = len(given) - len(known)
        if not missing:
            return known
        first = clock.now()
        clock.observe(first + (missing - 1) * VERSION_STEP)  # the range is taken: later now() is above it
        fresh = iter(range(first, first + missing * VERSION_STEP, VERSION_STEP))
        return [next(fresh) if v is None else v for v in given]

    async def _copy_merge(self, con: asyncpg.Connection, rows: list[tuple[bytes, bytes, int | None, int]]) -> None:
        """COPY (binary) into a temporary table, then one INSERT ... ON CONFLICT, in one transaction."""
        async with con.transaction():
            await con.execute(self._sql.create_stage)
            await con.copy_records_to_table(STAGE_TABLE, records=rows, schema_name="pg_temp")
            await con.execute(self._sql.merge_stage)

    async def _maybe_purge(self, con: asyncpg.Connection) -> None:
        """Delete a bounded number of expired rows, at most once a minute (reads filter them anyway)."""
        clock = time.monotonic()
        if clock < self._next_purge:
            return
        self._next_purge = clock + PURGE_EVERY_S
        await (await self._stmt(con, self._sql.purge)).fetch(now_ms(), PURGE_ROWS)

    async def delete(self, key: bytes) -> bool:
        async with _Use(self, "delete", writing=True):
            hot = await self._hot_path()
            rows = await hot.delete_one.fetch(key)
        return bool(rows) and (rows[0][0] is None or rows[0][0] > now_ms())

    async def delete_many(self, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0
        if len(keys) <= ARRAY_CHUNK:
            rows = await self._write_fetch(self._sql.delete_many, "delete_many", list(keys), now_ms())
            return int(rows[0][0])
        # Long lists: one transaction, so the deletion stays all-or-nothing.
        async with _Use(self, "delete_many", writing=True) as con:
            removed = 0
            async with con.transaction():
                for start in range(0, len(keys), ARRAY_CHUNK):
                    chunk = list(keys[start:start + ARRAY_CHUNK])
                    removed += await con.fetchval(self._sql.delete_many, chunk, now_ms())
            return removed

    async def _write_fetch(self, text: str, action: str, *args: Any) -> list[Any]:
        async with _Use(self, action, writing=True) as con:
            return list(await (await self._stmt(con, text)).fetch(*args))

    async def clear(self) -> int:
        lock, count, truncate = self._sql.clear
        async with _Use(self, "clear", writing=True) as con:
            async with con.transaction():
                await con.execute(lock)
                removed = int(await con.fetchval(count, now_ms()))
                await con.execute(truncate)
            return removed


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

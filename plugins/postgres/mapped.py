"""A PostgreSQL table of another program read (and, with ``write=true``, written) as a store.

``key=`` on a ``postgresql://`` URL switches to this mode (see :mod:`kvctl.plugin_kit.mapped`
for the options, the key and value forms and the refusals).  kvctl creates, alters and installs
nothing here: no kvctl table, no trigger, no function; a store that may not write runs its
session read-only (``default_transaction_read_only``), so even a bug could not change a row.
There is no change feed: ``sync`` compares.

The table is described once, when the store is made, because the engines read a store's
capabilities (ordered scans, JSON values, TTLs) before its first call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Self

import asyncpg
import asyncpg.exceptions as pgerr

from kvctl.errors import BadURLError, ConflictError, LimitError, UsageError
from kvctl.plugin_kit import AsyncStoreBase, deadline_ms
from kvctl.plugin_kit.mapped import (
    DISCOVERY,
    MAPPED_OPTIONS,
    Kind,
    ListingStore,
    Mapping,
    MappingSpec,
    PrefixPlan,
    TableInfo,
    mapped_capabilities,
    resolve,
    table_listing,
)
from kvctl.plugin_kit.mapped.rows import MappedRows, MappedScan
from kvctl.store import Capabilities, Page, Record, StoreURL, now_ms

from .connect import connect
from .core import MAX_KEY, MAX_VALUE
from .errors import CONNECTION_LOST, DRIVER_ERRORS, translate, translated
from .mapped_catalog import describe, list_tables
from .mapped_sql import MappedStatements, key_arg
from .settings import DRIVER_OPTIONS, Settings, parse_settings, table_identity
from .sql import ARRAY_CHUNK

# The options a mapped URL takes besides the driver's; the change feed's and create= make no
# sense on a table kvctl never alters.
OWN_OPTIONS = {"table", "schema", "connect_timeout", "command_timeout"}
# The collation of each named column of a table ($1 its quoted name, $2 the column names).
_COLLATIONS = """
SELECT a.attname::text, CASE WHEN co.collname = 'default'
    THEN (SELECT datcollate::text FROM pg_database WHERE datname = current_database()) ELSE co.collname::text END
FROM pg_attribute a
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attrelid = to_regclass($1) AND a.attname = ANY($2::text[]) ORDER BY a.attnum
"""


def open_mapped(url: StoreURL) -> MappedPostgresStore | ListingStore:
    """The store of a URL with ``key=`` (a mapped table) or ``table=*`` (the listing of tables)."""
    url.check_options(DRIVER_OPTIONS | OWN_OPTIONS | MAPPED_OPTIONS)
    settings = parse_settings(StoreURL.parse(url.without_options(*MAPPED_OPTIONS)).for_access(url.access))
    if url.option("table") == DISCOVERY:
        extra = sorted(set(url.options) & (MAPPED_OPTIONS - {"table"}))
        if extra:
            raise BadURLError(f"{url.redacted()}: table=* lists the tables; {', '.join(extra)}= needs one table")
        tables = _describe_now(settings, url.redacted(), None)
        return ListingStore(url, table_listing(tables, url), "postgres")
    spec = MappingSpec.from_url(url)
    found = _describe_now(settings, url.redacted(), settings.qualified_table)
    mapping = resolve(spec, found[0] if found else None, url.redacted(), writes=not url.reads_only)
    return MappedPostgresStore(url, settings, mapping)


def mapped_identity(url: StoreURL) -> str:
    """The table a mapped URL names (server, database, schema, table), as for kvctl's tables."""
    return table_identity(url, parse_settings(StoreURL.parse(url.without_options(*MAPPED_OPTIONS))))


def _describe_now(settings: Settings, where: str, qualified: str | None) -> list[TableInfo]:
    """The catalog, read before the store exists (on a thread of its own: the caller may be
    inside an event loop).  ``qualified`` None: every table of the schema."""

    async def read() -> list[TableInfo]:
        con = await connect(settings, where, read_only=True)  # it only reads the catalog
        try:
            with translated(where, "read the catalog"):
                if qualified is None:
                    return await list_tables(con, settings.schema)
                info = await describe(con, qualified)
                return [] if info is None else [info]
        finally:
            await con.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


class MappedPostgresStore(AsyncStoreBase):
    name = "postgres"
    description = "A table of another program in PostgreSQL, mapped by key=/value= columns (no feed)."
    capabilities = Capabilities(
        persistent=True,
        atomic_batch=True,
        max_key_size=MAX_KEY,  # a btree index row, as for kvctl's own tables
        max_value_size=MAX_VALUE,
        durability="the server's commit (WAL flushed per commit unless synchronous_commit/fsync are off)",
        blocking_io=False,
    )

    url: StoreURL

    def __init__(self, url: StoreURL, settings: Settings, mapping: Mapping) -> None:
        self.url = url
        self._settings = settings
        self._mapping = mapping
        self._where = url.redacted()
        self.capabilities = mapped_capabilities(type(self).capabilities, mapping)  # type: ignore[misc]
        self._rows = MappedRows(mapping)
        self._sql = MappedStatements(settings.qualified_table, mapping.key, mapping.value,
                                     mapping.expires, mapping.version)
        self._writes = mapping.spec.write and not url.reads_only
        self._con: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        store = open_mapped(url)
        if not isinstance(store, cls):
            raise UsageError(f"{url.redacted()}: table=* is a listing, not a table")
        return store

    # -- connection ------------------------------------------------------------------------
    async def _connection(self) -> asyncpg.Connection:
        if self._con is None or self._con.is_closed():
            if self._closed:
                raise UsageError(f"{self._where}: the store was closed")
            # read-only unless this store may write: the server itself refuses any change
            self._con = await connect(self._settings, self._where, read_only=not self._writes)
        return self._con

    async def _run(self, action: str, method: str, text: str, *args: Any, writing: bool = False) -> Any:
        """``con.<method>(text, *args)`` under the lock, with the driver's errors translated."""
        async with self._lock:
            con = await self._connection()
            try:
                return await getattr(con, method)(text, *args)
            except BaseException as exc:
                raise self._failed(exc, action, writing) from exc

    def _failed(self, exc: BaseException, action: str, writing: bool) -> BaseException:
        if not isinstance(exc, Exception) or isinstance(exc, CONNECTION_LOST):
            con, self._con = self._con, None
            if con is not None:
                con.terminate()
        if isinstance(exc, pgerr.IntegrityConstraintViolationError):
            name = getattr(exc, "constraint_name", None) or getattr(exc, "sqlstate", "?")
            return ConflictError(f"{self._where}: {action} refused by constraint {name}: "
                                 f"{str(exc).splitlines()[0]}; nothing was written")
        if isinstance(exc, pgerr.DataError):
            return LimitError(f"{self._where}: a value does not fit its column during {action}: "
                              f"{str(exc).splitlines()[0]}; nothing was written")
        if isinstance(exc, DRIVER_ERRORS):
            return translate(exc, self._where, action, writing=writing)
        return exc

    async def close(self) -> None:
        self._closed = True
        con, self._con = self._con, None
        if con is not None and not con.is_closed():
            try:
                await con.close(timeout=5)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                con.terminate()

    # -- reads -----------------------------------------------------------------------------
    def _arrays(self, keys: Sequence[bytes]) -> list[list[object]]:
        """One parameter array per key column, for the keys that name a row."""
        arrays: list[list[object]] = [[] for _ in self._mapping.key]
        for key in keys:
            parts = self._rows.key_values(key)
            if parts is not None and not _has_nul(parts):
                for array, part in zip(arrays, parts, strict=True):
                    array.append(key_arg(part))
        return arrays

    async def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        found: dict[bytes, Record] = {}
        for start in range(0, len(keys), ARRAY_CHUNK):
            arrays = self._arrays(keys[start:start + ARRAY_CHUNK])
            if arrays[0]:
                now = now_ms()
                for row in await self._run("get_many", "fetch", self._sql.get_many(), now, *arrays):
                    rec = self._rows.record(row, now)
                    if rec is not None:
                        found[rec.key] = rec
        return [found.get(k) for k in keys]

    async def scan(self, prefix: bytes = b"", *, start_after: bytes | None = None, cursor: str | None = None,
                   batch_size: int = 1000, keys_only: bool = False) -> AsyncIterator[Page]:
        if self._no_row_has(self._rows.keys.plan(prefix)):
            return
        scan = MappedScan.start(self._rows, self._sql, prefix, start_after=start_after, cursor=cursor,
                                batch_size=batch_size, keys_only=keys_only)
        async for page in scan.apages(lambda query: self._run("scan", "fetch", query[0], now_ms(), *query[1])):
            yield page

    async def count(self, prefix: bytes = b"") -> int:
        plan = self._rows.keys.plan(prefix)
        if plan.empty or self._no_row_has(plan):
            return 0
        if not plan.exact:  # the conditions select more than the prefix: counted key by key
            return await super().count(prefix)
        text, params = self._sql.count(plan)
        return int(await self._run("count", "fetchval", text, now_ms(), *params))

    @staticmethod
    def _no_row_has(plan: PrefixPlan) -> bool:
        """A prefix whose text holds NUL: PostgreSQL text cannot, so no key starts with it."""
        return _has_nul([*plan.equal, plan.lower])

    async def stats(self) -> dict[str, Any]:
        live, expired, nulls, size = await self._run("stats", "fetchrow", self._sql.stats(), now_ms(),
                                                     self._settings.qualified_table)
        server = await self._run("stats", "fetchval", "SHOW server_version")
        out: dict[str, Any] = {"keys": int(live), "expired": int(expired), "null_values": int(nulls),
                               "table_bytes": int(size), "server_version": server}
        out.update(self._mapping.describe())
        out["scan_order"] = ("byte order of the key" if self.capabilities.ordered_scan
                             else "column order of the key columns (not byte order)")
        text_keys = [c.name for c in self._mapping.key if c.kind is Kind.TEXT]
        if text_keys:
            collations = await self._run("stats", "fetch", _COLLATIONS, self._settings.qualified_table, text_keys)
            other = sorted({c for _, c in collations if c not in ("C", "POSIX")})
            out["key_collation"] = (", ".join(f"{n} {c}" for n, c in collations) +
                                    ("" if not other else '; ranges and order use COLLATE "C", which an index '
                                     "in this collation does not serve (prefix scans read the table)"))
        out["writable_session"] = self._writes
        return out

    # -- writes ----------------------------------------------------------------------------
    def _require(self, delete: bool = False) -> None:
        if delete:
            self._mapping.require_delete()
        else:
            self._mapping.require_write()
        if self.url.reads_only:
            raise UsageError(f"{self._where}: opened to read only; a write needs the store opened for writing")

    async def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        await self.set_many([Record(key, value, deadline_ms(ttl_ms))])

    async def set_many(self, records: Iterable[Record]) -> None:
        self._require()
        n = len(self._mapping.key)
        rows = []
        for rec in {r.key: r for r in records}.values():  # every check before anything is written
            self._check(rec.key, rec.value)
            row = self._rows.write_row(rec)
            rows.append([key_arg(v) for v in row[:n]] + row[n:])
        if not rows:
            return
        text = self._sql.upsert()
        async with self._lock:
            con = await self._connection()
            try:
                async with con.transaction():
                    await con.executemany(text, rows)
            except BaseException as exc:
                raise self._failed(exc, "set", True) from exc

    async def delete_many(self, keys: Sequence[bytes]) -> int:
        self._require(delete=True)
        arrays = self._arrays(list(dict.fromkeys(keys)))
        if not arrays[0]:
            return 0
        return int(await self._run("delete", "fetchval", self._sql.delete_many(), now_ms(), *arrays, writing=True))

    async def clear(self) -> int:
        self._require(delete=True)
        return int(await self._run("clear", "fetchval", self._sql.clear(), now_ms(), writing=True))


def _has_nul(values: Iterable[object]) -> bool:
    """Does a key value hold NUL, which PostgreSQL text cannot (so no row has it)?"""
    return any(isinstance(v, str) and "\x00" in v for v in values)

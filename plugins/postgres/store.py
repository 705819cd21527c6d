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

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Self

from kvctl.plugin_kit import ScanRange, check_conditional, deadline_ms, prefix_end, record_of
from kvctl.plugin_kit.mapped import is_mapped
from kvctl.store import Capabilities, Page, Record, StoreURL, now_ms

from .atomic import AtomicLoads
from .bulk import COPY_MIN_BYTES, COPY_MIN_ROWS, BulkWrites
from .core import MAX_KEY, MAX_VALUE, PURGE_EVERY_S, PURGE_MAX_ROWS, PURGE_ROWS
from .feedread import FeedReads
from .mapped import mapped_identity, open_mapped
from .sql import ARRAY_CHUNK
from .use import Use

__all__ = ["COPY_MIN_BYTES", "COPY_MIN_ROWS", "MAX_KEY", "MAX_VALUE", "PURGE_EVERY_S", "PURGE_MAX_ROWS",
           "PURGE_ROWS", "PostgresStore"]



class PostgresStore(AtomicLoads, BulkWrites, FeedReads):
    name = "postgres"
    description = ("A table in PostgreSQL (asyncpg): bytea keys in order, TTLs, versions, atomic batches, "
                   "a change feed that also records other programs' writes."
                   " Mapped mode: ?table=T&key=COLS reads an application's own table (write=true to edit; "
                   "table=* lists the tables).")
    capabilities = Capabilities(
        persistent=True,
        ttl=True,
        ordered_scan=True,
        versions=True,
        atomic_batch=True,
        conditional_writes=True,
        change_feed=True,
        max_key_size=MAX_KEY,
        max_value_size=MAX_VALUE,
        durability="the server's commit (WAL flushed per commit unless synchronous_commit/fsync are off)",
        blocking_io=False,
    )

    url: StoreURL  # always set: the store is made from its URL

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        if is_mapped(url):  # key= or table=*: another program's table, never altered
            return open_mapped(url)  # type: ignore[return-value]
        return super().from_url(url)

    @classmethod
    def identity(cls, url: StoreURL) -> str:
        return mapped_identity(url) if is_mapped(url) else super().identity(url)

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
        async with Use(self, "stats") as con:  # built once open: a version-1 table read as it is has no tombstones
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

    # -- writes ----------------------------------------------------------------------------
    async def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        self._check(key, value)
        await self._write_one(key, value, deadline_ms(ttl_ms), None)


    async def delete(self, key: bytes) -> bool:
        async with Use(self, "delete", writing=True) as con:
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
        async with Use(self, "delete_many", writing=True) as con:
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

    # -- expire and set_if: one statement each ----------------------------------------------
    async def expire(self, key: bytes, expires_at_ms: int | None) -> bool:
        if expires_at_ms is not None and expires_at_ms <= now_ms():
            return await self.delete(key)  # as Redis does: an expiry in the past deletes the key
        return await self._write_if("expire", lambda: self._sql.expire, key, expires_at_ms)

    async def set_if(self, record: Record, *, exists: bool | None = None, keep_ttl: bool = False) -> bool:
        check_conditional(record, keep_ttl)
        self._check(record.key, record.value)
        return await self._write_if("set", lambda: self._sql.set_if(exists=exists, keep_ttl=keep_ttl),
                                    record.key, record.value, record.expires_at_ms)

    async def _write_if(self, action: str, sql: Callable[[], str], *args: Any) -> bool:
        """Run the statement ``sql()`` (built once connected: it depends on the opened table)
        with ``args``, a version from this store's clock and now; True when it wrote a row."""
        self._check_writable()
        async with Use(self, action, writing=True) as con:
            await self._purge(con)
            version = await con.fetchval(sql(), *args, self._hlc.now(), now_ms())
            if version is None:
                return False
            self._hlc.observe(version)
            self._written += 1
            return True

    async def clear(self) -> int:
        async with Use(self, "clear", writing=True) as con:
            lock, count, bury, truncate = self._sql.clear  # after opening, like delete_many
            async with con.transaction():
                await con.execute(lock)
                removed = int(await con.fetchval(count, now_ms()))
                self._hlc.observe(await con.fetchval(bury, self._hlc.now()))
                await con.execute(truncate)
            return removed

    # -- replication -----------------------------------------------------------------------

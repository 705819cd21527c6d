"""Mapped mode (``key=``) and the table listing (``table=*``) on libSQL, local or remote: the
kit's SQLite dialect (:mod:`kvctl.plugin_kit.mapped.sqlite_dialect`) run through libsql-client.

Nothing is created or altered: a missing local file is ``NoSuchStoreError`` (the client would
create it), and only the mapped rows are ever written (``write=true``; one ``batch()``, a
transaction).  The catalog is read when the store is opened, with libsql-client's sync client,
so the store's capabilities (byte-ordered keys, TTL, versions, JSON values) are known before the
first call.  libsql-client cannot turn ``PRAGMA foreign_keys`` on for its statements (a local
client opens a connection per call; a pragma is a no-op inside a batch's transaction), so writes
that foreign keys would check or cascade are refused (writes to a table that has foreign keys,
deletes from a table others reference, even with ``write=cascade``): use ``sqlite://`` for them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Self

import libsql_client
from libsql_client import Statement

from kvctl.errors import NoSuchStoreError, UnsupportedError
from kvctl.plugin_kit import AsyncStoreBase
from kvctl.plugin_kit.mapped import (
    ListingStore,
    MappingSpec,
    TableInfo,
    mapped_capabilities,
    resolve,
    table_listing,
)
from kvctl.plugin_kit.mapped.rows import MappedRows, MappedScan
from kvctl.plugin_kit.mapped.sqlite_dialect import CATALOG, TABLES, SQLiteMappedSQL, table_info
from kvctl.store import Capabilities, Page, Record, StoreURL, now_ms

from .errors import translated
from .localread import holds_pending_work, read_only_connection
from .store import KEYS_PER_SELECT, MAX_KEY, MAX_VALUE, call_with_retries, create_client
from .target import Target

__all__ = ["MappedLibSQLStore", "open_listing"]


def _rows(rs: Any) -> list[tuple[object, ...]]:
    return [tuple(row) for row in rs.rows]


def _check_file(target: Target, where: str) -> None:
    path = target.local_path
    if path is not None and (os.path.isdir(path) or not os.path.exists(path)):
        raise NoSuchStoreError(f"no such store: {where} ({path} is not a database file; mapped mode never "
                               "creates one)")


def _catalog(target: Target, where: str, names: list[str] | None, *, reads_only: bool) -> list[TableInfo | None]:
    """The tables ``names`` (None: every table of the database), read with a short-lived sync
    client; for a read of a local file with another writer's pending work, over a read-only
    connection (see :mod:`.localread`: a read-write one would apply that work on closing)."""
    _check_file(target, where)
    path = target.local_path
    if path is not None and reads_only and holds_pending_work(path):
        with translated(where, "open", path=path):
            conn = read_only_connection(path)
            try:
                if names is None:
                    names = [str(r[0]) for r in conn.execute(TABLES).fetchall()]
                return [table_info(name, [conn.execute(sql, [name]).fetchall() for sql in CATALOG])
                        for name in names]
            finally:
                conn.close()
    with translated(where, "open", path=path):
        client = libsql_client.create_client_sync(target.client_url, auth_token=target.auth_token)
        try:
            if names is None:
                names = [str(r[0]) for r in client.execute(TABLES).rows]
            out = []
            for name in names:
                results = client.batch([Statement(sql, [name]) for sql in CATALOG])
                out.append(table_info(name, [_rows(rs) for rs in results]))
            return out
        finally:
            client.close()


def open_listing(url: StoreURL, target: Target) -> ListingStore:
    """``table=*``: the database's tables, each with its mapping URL."""
    infos = [info for info in _catalog(target, url.redacted(), None, reads_only=True) if info is not None]
    return ListingStore(url, table_listing(infos, url), "libsql")


class MappedLibSQLStore(AsyncStoreBase):
    """A mapped table of a libSQL database (see the module docstring)."""

    name = "libsql"
    description = "a table of a libSQL database mapped by key= (read-only unless write=true)"
    capabilities = Capabilities(persistent=True, atomic_batch=True, max_key_size=MAX_KEY,
                                max_value_size=MAX_VALUE, blocking_io=False,
                                durability="the database's own settings (kvctl changes no pragma)")

    def __init__(self, url: StoreURL, target: Target, spec: MappingSpec, info: TableInfo | None) -> None:
        self.url = url
        self._target = target
        self._where = url.redacted()
        self._mapping = resolve(spec, info, self._where, writes=not url.reads_only)
        self.capabilities = mapped_capabilities(type(self).capabilities, self._mapping)  # type: ignore[misc]
        self._rows = MappedRows(self._mapping)
        self._sql = SQLiteMappedSQL(self._mapping)
        self._chunk = max(1, KEYS_PER_SELECT // len(self._mapping.key))
        self._client: libsql_client.Client | None = None
        self._reads_only = url.reads_only

    @classmethod
    def open(cls, url: StoreURL, target: Target) -> Self:
        spec = MappingSpec.from_url(url)
        return cls(url, target, spec, _catalog(target, url.redacted(), [spec.table], reads_only=url.reads_only)[0])

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        raise UnsupportedError("opened by LibSQLStore.from_url")

    async def _run(self, action: str, stmts: list[Statement], *, writing: bool = False) -> list[Any]:
        if self._client is None:
            _check_file(self._target, self._where)
            with translated(self._where, "connect"):
                self._client = await call_with_retries(
                    self._target, lambda: create_client(self._target, self._reads_only))
        client = self._client
        with translated(self._where, action, writing=writing):
            if len(stmts) == 1 and not writing:
                return [await call_with_retries(self._target, lambda: client.execute(stmts[0]))]
            results: list[Any] = await call_with_retries(self._target, lambda: client.batch(stmts))
            return results

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with translated(self._where, "close"):
                await client.close()

    # -- reads -------------------------------------------------------------------------------
    async def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        rows = self._rows
        wanted = [v for k in keys if (v := rows.key_values(k)) is not None]
        stmts = [Statement(self._sql.select_keys(len(chunk)), [p for values in chunk for p in values])
                 for chunk in (wanted[i:i + self._chunk] for i in range(0, len(wanted), self._chunk))]
        found: dict[bytes, Record] = {}
        now = now_ms()
        for rs in (await self._run("get", stmts) if stmts else []):
            for row in _rows(rs):
                rec = rows.record(row, now)
                if rec is not None:
                    found[rec.key] = rec
        return [found.get(k) for k in keys]

    async def scan(self, prefix: bytes = b"", *, start_after: bytes | None = None, cursor: str | None = None,
                   batch_size: int = 1000, keys_only: bool = False) -> AsyncIterator[Page]:
        scan = MappedScan.start(self._rows, self._sql, prefix, start_after=start_after, cursor=cursor,
                                batch_size=batch_size, keys_only=keys_only)
        while (query := scan.query()) is not None:
            rs = (await self._run("scan", [Statement(*query)]))[0]
            records = scan.take(_rows(rs))
            if records:
                yield scan.page(records)

    async def count(self, prefix: bytes = b"") -> int:
        plan = self._rows.keys.plan(prefix)
        if plan.empty:
            return 0
        if not plan.exact or self._mapping.expires is not None:
            return await super().count(prefix)
        rs = (await self._run("count", [Statement(*self._sql.count(plan))]))[0]
        return int(rs.rows[0][0])

    async def stats(self) -> dict[str, Any]:
        t = self._sql.table
        nulls = " OR ".join(f'"{c.name}" IS NULL' for c in self._mapping.key)
        total, keyless, version = await self._run("stats", [
            Statement(f"SELECT count(*) FROM {t}"), Statement(f"SELECT count(*) FROM {t} WHERE {nulls}"),
            Statement("SELECT sqlite_version()")])
        facts: dict[str, Any] = {"keys": await self.count(), "rows": int(total.rows[0][0]),
                                 **self._mapping.describe()}
        if int(keyless.rows[0][0]):
            facts["rows_without_key"] = int(keyless.rows[0][0])
        facts["location"] = "remote" if self._target.remote else "local file"
        facts["sqlite_version"] = version.rows[0][0]
        return facts

    # -- writes ------------------------------------------------------------------------------
    async def set_many(self, records: Iterable[Record]) -> None:
        self._mapping.require_write()
        self._no_foreign_keys("writing to", [r.table for r in self._mapping.table.references])
        rows = [self._checked(rec) for rec in records]  # every check before anything is sent
        if rows:
            upsert = self._sql.upsert()
            await self._run("set", [Statement(upsert, row) for row in rows], writing=True)

    def _checked(self, rec: Record) -> list[object]:
        self._check(rec.key, rec.value)
        return self._rows.write_row(rec)

    def _require_delete(self) -> None:
        self._mapping.require_delete()
        self._no_foreign_keys("deleting rows of", [r.table for r in self._mapping.table.referenced_by])

    def _no_foreign_keys(self, what: str, tables: list[str]) -> None:
        if tables:
            raise UnsupportedError(f"{self._where}: {what} {self._mapping.table.name} involves foreign keys "
                                   f"({', '.join(sorted(set(tables)))}) that libsql-client cannot enforce "
                                   "(no PRAGMA foreign_keys for its statements)",
                                   hint="use a sqlite:// URL for this file")

    async def delete_many(self, keys: Sequence[bytes]) -> int:
        self._require_delete()
        live = {k for k, rec in zip(keys, await self.get_many(keys), strict=True) if rec is not None}
        targets = [list(v) for k in keys if (v := self._rows.key_values(k)) is not None]
        if targets:
            delete = self._sql.delete()
            await self._run("delete", [Statement(delete, t) for t in targets], writing=True)
        return len(live)

    async def clear(self) -> int:
        self._require_delete()
        removed = await self.count()
        await self._run("clear", [Statement(self._sql.clear())], writing=True)
        return removed

"""Mapped mode (``key=`` in the URL): an application's own table read, and with ``write=true``
written, as a store; ``table=*`` lists the tables instead (see :mod:`kvctl.plugin_kit.mapped`).

Nothing is ever created or altered: the file is opened ``mode=ro`` (or ``rw`` kept from writing
by ``query_only``, see :func:`.schema._open_mode`) unless the mapping is writable and the command
writes; no table, trigger, pragma or journal mode of the file changes.  Writes run in
``BEGIN IMMEDIATE`` transactions with ``PRAGMA foreign_keys=ON`` for the connection (as Gorkflow
and ruv-swarm set it), each batch all or nothing.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Self

from kvctl.errors import ConflictError, NoSuchStoreError
from kvctl.plugin_kit import StoreBase
from kvctl.plugin_kit.mapped import (
    ListingStore,
    MappingSpec,
    mapped_capabilities,
    resolve,
    table_listing,
)
from kvctl.plugin_kit.mapped.rows import MappedRows, MappedScan
from kvctl.plugin_kit.mapped.sqlite_dialect import SQLiteMappedSQL
from kvctl.store import Capabilities, Page, Record, StoreURL, now_ms

from .catalog import describe, table_names
from .errors import translate
from .options import Options, parse_options
from .schema import _open_mode, file_size
from .transaction import immediate

__all__ = ["MappedSQLiteStore", "open_listing"]

MAX_LENGTH = 1_000_000_000


def _connect(opts: Options, url: StoreURL, writes: bool) -> sqlite3.Connection:
    """The application's file, opened to read (or to write rows when ``writes``); never created."""
    where = url.redacted()
    if os.path.isdir(opts.path) or not os.path.exists(opts.path):
        raise NoSuchStoreError(f"no such store: {where} ({opts.path} is not a database file; "
                               "mapped mode never creates one)")
    mode = "mode=rw" if writes else _open_mode(opts, True)
    try:
        conn = sqlite3.connect(f"file:{opts.path}?{mode}", uri=True, timeout=opts.timeout_ms / 1000,
                               isolation_level=None, check_same_thread=False)
        conn.text_factory = bytes  # text exactly as stored, even when it is not UTF-8
        conn.execute("PRAGMA foreign_keys = ON" if writes else "PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise translate(exc, where, opts.path) from None
    return conn


def open_listing(opts: Options, url: StoreURL) -> ListingStore:
    """``table=*``: the file's tables, each with its mapping URL."""
    conn = _connect(opts, url, writes=False)
    try:
        infos = [info for name in table_names(conn) if (info := describe(conn, name)) is not None]
    except sqlite3.Error as exc:
        raise translate(exc, url.redacted(), opts.path) from None
    finally:
        conn.close()
    return ListingStore(url, table_listing(infos, url), "sqlite")


class MappedSQLiteStore(StoreBase):
    """A mapped table of a SQLite file (see the module docstring)."""

    name = "sqlite"
    description = "a table of a SQLite file mapped by key= (read-only unless write=true)"
    capabilities = Capabilities(persistent=True, atomic_batch=True, host_local=True, max_value_size=MAX_LENGTH,
                                durability="the application's own settings (kvctl changes no pragma)")

    def __init__(self, conn: sqlite3.Connection, opts: Options, url: StoreURL, spec: MappingSpec) -> None:
        self._conn = conn
        self._opts = opts
        self.url = url
        self._where = url.redacted()
        try:
            info = describe(conn, spec.table)
        except sqlite3.Error as exc:
            conn.close()
            raise translate(exc, self._where, opts.path) from None
        try:
            self._mapping = resolve(spec, info, self._where, writes=not url.reads_only)
        except BaseException:
            conn.close()
            raise
        self.capabilities = mapped_capabilities(type(self).capabilities, self._mapping)  # type: ignore[misc]
        self._rows = MappedRows(self._mapping)
        self._sql = SQLiteMappedSQL(self._mapping)
        self._chunk = max(1, 900 // len(self._mapping.key))

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        return cls.open(parse_options(url), url)

    @classmethod
    def open(cls, opts: Options, url: StoreURL) -> Self:
        spec = MappingSpec.from_url(url)
        return cls(_connect(opts, url, writes=spec.write and not url.reads_only), opts, url, spec)

    def _fail(self, exc: sqlite3.Error) -> Exception:
        with contextlib.suppress(sqlite3.Error):
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.IntegrityError):
            detail = " ".join(str(exc).split())
            return ConflictError(f"{self._where}: {self._mapping.table.name}: {detail}; nothing was written")
        return translate(exc, self._where, self._opts.path)

    # -- reads -------------------------------------------------------------------------------
    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        rows = self._rows
        wanted = [(k, v) for k in keys if (v := rows.key_values(k)) is not None]
        found: dict[bytes, Record] = {}
        now = now_ms()
        try:
            for i in range(0, len(wanted), self._chunk):
                chunk = wanted[i:i + self._chunk]
                params = [p for _, values in chunk for p in values]
                for row in self._conn.execute(self._sql.select_keys(len(chunk)), params):
                    rec = rows.record(row, now)
                    if rec is not None:
                        found[rec.key] = rec
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        return [found.get(k) for k in keys]

    def scan(self, prefix: bytes = b"", *, start_after: bytes | None = None, cursor: str | None = None,
             batch_size: int = 1000, keys_only: bool = False) -> Iterator[Page]:
        scan = MappedScan.start(self._rows, self._sql, prefix, start_after=start_after, cursor=cursor,
                                batch_size=batch_size, keys_only=keys_only)
        while (query := scan.query()) is not None:
            try:
                fetched = self._conn.execute(*query).fetchall()
            except sqlite3.Error as exc:
                raise self._fail(exc) from None
            records = scan.take(fetched)
            if records:
                yield scan.page(records)

    def count(self, prefix: bytes = b"") -> int:
        plan = self._rows.keys.plan(prefix)
        if plan.empty:
            return 0
        if not plan.exact or self._mapping.expires is not None:
            return super().count(prefix)
        try:
            return int(self._conn.execute(*self._sql.count(plan)).fetchone()[0])
        except sqlite3.Error as exc:
            raise self._fail(exc) from None

    def stats(self) -> dict[str, Any]:
        conn, t = self._conn, self._sql.table
        nulls = " OR ".join(f'"{c.name}" IS NULL' for c in self._mapping.key)
        try:
            rows_total = int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
            keyless = int(conn.execute(f"SELECT count(*) FROM {t} WHERE {nulls}").fetchone()[0])
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        except sqlite3.Error as exc:
            raise self._fail(exc) from None
        facts: dict[str, Any] = {"keys": self.count(), "rows": rows_total, **self._mapping.describe()}
        if keyless:
            facts["rows_without_key"] = keyless  # a NULL key column (allowed in a rowid table's key)
        return {**facts, "path": os.path.abspath(self._opts.path), "file_bytes": file_size(self._opts.path),
                "journal_mode": journal.decode() if isinstance(journal, bytes) else journal,
                "sqlite_version": sqlite3.sqlite_version}

    # -- writes ------------------------------------------------------------------------------
    def _transaction(self, work: Iterable[tuple[str, list[list[object]]]]) -> None:
        with immediate(self._conn, self._fail):
            for sql, rows in work:
                self._conn.executemany(sql, rows)

    def set_many(self, records: Iterable[Record]) -> None:
        self._mapping.require_write()
        rows = [self._checked(rec) for rec in records]  # every check before anything is written
        if rows:
            self._transaction([(self._sql.upsert(), rows)])

    def _checked(self, rec: Record) -> list[object]:
        self._check(rec.key, rec.value)
        return self._rows.write_row(rec)

    def delete_many(self, keys: Sequence[bytes]) -> int:
        self._mapping.require_delete()
        if not keys:
            return 0
        live = [k for k, rec in zip(keys, self.get_many(keys), strict=True) if rec is not None]
        targets = [list(v) for k in keys if (v := self._rows.key_values(k)) is not None]
        self._transaction([(self._sql.delete(), targets)])
        return len(set(live))

    def clear(self) -> int:
        self._mapping.require_delete()
        removed = self.count()
        self._transaction([(self._sql.clear(), [[]])])
        return removed

    def close(self) -> None:
        try:
            self._conn.close()
        except sqlite3.Error as exc:
            raise translate(exc, self._where, self._opts.path) from None

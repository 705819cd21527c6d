"""Rows of a mapped table <-> records, and a scan as a series of keyset-paged queries.

Driver-neutral: a dialect supplies a :class:`MappedSQL` (statements and their parameters); the
plugin runs them with its driver, sync or async, and hands the rows back::

    scan = MappedScan(rows, sql, prefix, after, batch_size, keys_only)
    while (query := scan.query()) is not None:
        records = scan.take(execute(*query))
        if records:
            yield scan.page(records)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from kvctl.errors import LimitError, UnsupportedError, UsageError
from kvctl.hlc import make_version, physical_ms
from kvctl.plugin_kit.display import show_key
from kvctl.store import Page, Record, now_ms

from ..scan import key_cursor, page_size, parse_key_cursor
from .columns import Mapping
from .keys import KeyCodec, PrefixPlan
from .values import ValueCodec, read_time_ms, time_param

__all__ = ["MappedRows", "MappedSQL", "MappedScan", "ScanSQL"]

Query = tuple[str, list[object]]


class ScanSQL(Protocol):
    """What :class:`MappedScan` needs of a dialect: the keyset-paged query."""

    def scan(self, plan: PrefixPlan, after: Sequence[object] | None, limit: int, keys_only: bool) -> Query:
        """Up to ``limit`` rows matching ``plan`` after the key values ``after``, in key order."""


class MappedSQL(ScanSQL, Protocol):
    """The statements of a mapping in one SQL dialect.  Selected columns are always the key
    columns, then the value columns (left out for ``keys_only``), then expires, then version."""

    def select_keys(self, count: int, keys_only: bool = False) -> str:
        """The rows of ``count`` keys (parameters: each key's column values, key after key)."""

    def count(self, plan: PrefixPlan) -> Query:
        """How many rows match ``plan`` (rows with a NULL key column never count)."""

    def upsert(self) -> str:
        """Insert or update one row (parameters: :meth:`MappedRows.write_row`)."""

    def delete(self) -> str:
        """Delete one row (parameters: its key values)."""

    def clear(self) -> str:
        """Delete every row."""


class MappedRows:
    """Turns a mapping's rows into records and records into row parameters."""

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self.keys = KeyCodec(mapping.key, mapping.spec.sep)
        self.values = ValueCodec(mapping)
        self._nkey = len(mapping.key)
        self._nvalue = len(mapping.value)

    def record(self, row: Sequence[object], now: int, keys_only: bool = False) -> Record | None:
        """The live record of a selected row; None when its key has a NULL or it has expired."""
        m = self.mapping
        n = self._nkey
        key = self.keys.encode(row[:n])
        if key is None:
            return None
        at = n if keys_only else n + self._nvalue
        expires = None
        if m.expires is not None:
            expires = read_time_ms(m.expires, row[at])
            at += 1
            if expires is not None and expires <= now:
                return None
        version = None
        if m.version is not None:
            ms = read_time_ms(m.version, row[at])
            version = make_version(ms) if ms is not None and ms >= 0 else None
        value = b"" if keys_only else self.values.read(row[n:n + self._nvalue])
        return Record(key, value, expires, version)

    def key_values(self, key: bytes) -> tuple[object, ...] | None:
        """The key columns' values for ``key``; None when no row can have it."""
        return self.keys.decode(key)

    def write_row(self, rec: Record) -> list[object]:
        """The parameters of :meth:`MappedSQL.upsert` for ``rec``: key values, value columns,
        the expiry (when mapped) and the version time (its record's, else now, when mapped).
        Raises :class:`~kvctl.errors.LimitError` for a key or value that does not fit, and
        :class:`~kvctl.errors.UnsupportedError` for an expiry without ``expires=``."""
        m = self.mapping
        key = self.keys.decode(rec.key)
        if key is None:
            cols = ", ".join(c.name for c in m.key)
            raise LimitError(f"{m.where}: key {show_key(rec.key)} does not name a row of {m.table.name} "
                             f"(key columns {cols}, joined by {m.spec.sep.decode(errors='replace')!r})")
        params = [*key, *self.values.write(rec.key, rec.value)]
        if m.expires is not None:
            params.append(time_param(m.expires, rec.expires_at_ms))
        elif rec.expires_at_ms is not None:
            raise UnsupportedError(f"{m.where}: table {m.table.name} has no expiry column mapped",
                                   hint="map one with expires=COLUMN, or copy with --drop-ttl")
        if m.version is not None:
            params.append(time_param(m.version, physical_ms(rec.version) if rec.version is not None else now_ms()))
        return params


class MappedScan:
    """One ``scan`` call: keyset pages over the key columns, filtered to live rows whose key
    starts with the prefix (a prefix plan may select more, see :class:`PrefixPlan`)."""

    def __init__(self, rows: MappedRows, sql: ScanSQL, prefix: bytes, after: bytes | None,
                 batch_size: int, keys_only: bool) -> None:
        self._rows = rows
        self._sql = sql
        self._prefix = prefix
        self._plan = rows.keys.plan(prefix)
        self._limit = page_size(batch_size)
        self._keys_only = keys_only
        self._after: Sequence[object] | None = None
        self._done = self._plan.empty
        if after is not None:
            values = rows.key_values(after)
            if values is None:
                raise UsageError(f"not a cursor of this table: {after[:80]!r}")
            self._after = values

    def query(self) -> Query | None:
        """The next statement to run, or None when the scan is over."""
        if self._done:
            return None
        return self._sql.scan(self._plan, self._after, self._limit, self._keys_only)

    def take(self, fetched: Sequence[Sequence[object]]) -> list[Record]:
        """The records of the rows the last query returned (possibly none while more follow)."""
        if len(fetched) < self._limit:
            self._done = True
        if fetched:
            self._after = self._rows.keys.bindable(fetched[-1][:len(self._rows.mapping.key)])
        now = now_ms()
        prefix, exact = self._prefix, self._plan.exact
        out = []
        for row in fetched:
            rec = self._rows.record(row, now, self._keys_only)
            if rec is not None and (exact or rec.key.startswith(prefix)):
                out.append(rec)
        return out

    @classmethod
    def start(cls, rows: MappedRows, sql: ScanSQL, prefix: bytes, *, start_after: bytes | None,
              cursor: str | None, batch_size: int, keys_only: bool) -> MappedScan:
        """The scan of ``Store.scan``'s arguments: a key cursor resumes after its key; ``start_after``
        needs byte-ordered keys (:class:`~kvctl.errors.UnsupportedError` otherwise)."""
        if start_after is not None and not rows.mapping.ordered:
            raise UnsupportedError(f"{rows.mapping.where}: keys of this mapping do not come in byte order "
                                   "(start_after needs one text or blob key column)")
        after = parse_key_cursor(cursor) if cursor is not None else start_after
        if after is not None and after < prefix:
            after = None
        return cls(rows, sql, prefix, after, batch_size, keys_only)

    @staticmethod
    def page(records: list[Record]) -> Page:
        return Page(records, key_cursor(records[-1].key))

    async def apages(self, fetch: Callable[[Query], Awaitable[Sequence[Sequence[object]]]]) -> AsyncIterator[Page]:
        """The scan's pages for an async driver: ``fetch`` runs one query and returns its rows."""
        while (query := self.query()) is not None:
            records = self.take(await fetch(query))
            if records:
                yield self.page(records)

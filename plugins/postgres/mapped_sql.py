"""The statements of a mapped table: point reads, key-range scans, count, upserts of the mapped
columns only, deletes.

Every key component travels as text (``bytea`` columns as bytes) and is cast by the server to the
column's type, so a uuid or integer key needs no client-side type; text keys compare under
``COLLATE "C"`` (byte order of UTF-8), so ranges and order are those of the key's bytes whatever
the column's collation. Prefix scans are ranges, never LIKE.

Expiry and version columns are converted to milliseconds since the epoch in SQL; the live-row
filter compares the column itself with "now" expressed in the column's type and unit, so an index
on it can be used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kvctl.plugin_kit.mapped.columns import Column, Kind, TimeMapping

from .settings import quote_ident


def to_ms(timed: TimeMapping) -> str:
    """SQL turning the expiry/version column into integer milliseconds since the epoch."""
    expr = quote_ident(timed.column.name)
    if timed.column.kind is Kind.TIMESTAMP:
        return f"floor(extract(epoch FROM {expr}) * 1000)::bigint"
    return {"s": f"floor({expr} * 1000)::bigint", "ms": f"floor({expr})::bigint",
            "us": f"floor({expr} / 1000)::bigint", "ns": f"floor({expr} / 1000000)::bigint"}[timed.unit or "ms"]


def from_ms(timed: TimeMapping, param: str) -> str:
    """SQL turning milliseconds ``param`` (a bigint parameter) into the column's type and unit."""
    col = timed.column
    if col.kind is Kind.TIMESTAMP:
        if "without time zone" in col.declared:  # a zoneless timestamp is taken as UTC
            return f"(to_timestamp({param}::bigint / 1000.0) AT TIME ZONE 'UTC')"
        return f"to_timestamp({param}::bigint / 1000.0)"
    scaled = {"s": f"div({param}::bigint, 1000)", "ms": f"{param}::bigint",
              "us": f"({param}::bigint * 1000)", "ns": f"({param}::bigint * 1000000)"}[timed.unit or "ms"]
    return f"({scaled})::{col.declared}"


def key_param(col: Column, param: str) -> str:
    """A key component parameter (text, or bytea for a bytea column) cast to the column's type."""
    if col.kind is Kind.BLOB:
        return f"{param}::bytea"
    if col.kind is Kind.TEXT:
        return f"{param}::text"
    return f"{param}::text::{col.declared}"


def key_select(col: Column) -> str:
    """The column as a key component: bytea and text as they are, uuid and integers as their text."""
    q = quote_ident(col.name)
    return q if col.kind in (Kind.BLOB, Kind.TEXT) else f"{q}::text"


def key_order(col: Column) -> str:
    """The column in the order scans follow: byte order for text, the type's own otherwise."""
    q = quote_ident(col.name)
    return f'{q} COLLATE "C"' if col.kind is Kind.TEXT else q


def value_select(col: Column) -> str:
    """A value column as read: JSON types as their text, everything else as the driver decodes it."""
    q = quote_ident(col.name)
    return f"{q}::text" if col.kind is Kind.JSON else q


def value_param(col: Column, param: str) -> str:
    """A value parameter as :class:`~kvctl.plugin_kit.mapped.ValueCodec` gives it, cast to the
    column's type: the driver encodes the types it knows; the others travel as their text."""
    if col.kind is Kind.OTHER:
        return f"{param}::text::{col.declared}"
    if col.kind is Kind.JSON and "json" not in col.declared:  # a text column named by json=
        return f"{param}::text"
    return f"{param}::{col.declared}"


@dataclass(frozen=True)
class Condition:
    """One predicate of a key plan on key column ``index``: ``op`` is "=", ">=", "<" or ">"."""

    index: int
    op: str
    value: object  # a key column value as KeyCodec gives it (str, bytes or int)


@dataclass(frozen=True)
class MappedStatements:
    """The statements of one mapping of table ``t`` (quoted, maybe schema-qualified)."""

    t: str
    keys: tuple[Column, ...]
    values: tuple[Column, ...]
    expires: TimeMapping | None = None
    version: TimeMapping | None = None

    # -- pieces ------------------------------------------------------------------------
    @property
    def _selected(self) -> str:
        parts = [key_select(c) for c in self.keys] + [value_select(c) for c in self.values]
        parts.append(to_ms(self.expires) if self.expires else "NULL::bigint")
        parts.append(to_ms(self.version) if self.version else "NULL::bigint")
        return ", ".join(parts)

    @property
    def _keys_selected(self) -> str:
        parts = [key_select(c) for c in self.keys]
        parts.append(to_ms(self.expires) if self.expires else "NULL::bigint")
        parts.append(to_ms(self.version) if self.version else "NULL::bigint")
        return ", ".join(parts)

    def live(self, param: str) -> str:
        """The predicate "not expired at ``param`` (ms)"; TRUE without an expiry column."""
        if self.expires is None:
            return f"({param}::bigint IS NOT NULL)"  # names the parameter: the server needs its type
        q = quote_ident(self.expires.column.name)
        return f"({q} IS NULL OR {q} > {from_ms(self.expires, param)})"

    @property
    def order(self) -> str:
        return ", ".join(key_order(c) for c in self.keys)

    def _key_equals(self, first: int) -> str:
        """``k1 = $first AND k2 = $first+1 ...``."""
        return " AND ".join(f"{quote_ident(c.name)} = {key_param(c, f'${first + i}')}"
                            for i, c in enumerate(self.keys))

    # -- reads -------------------------------------------------------------------------
    def get(self) -> str:
        """$1 now (ms), $2.. the key components."""
        return f"SELECT {self._selected} FROM {self.t} WHERE {self._key_equals(2)} AND {self.live('$1')}"

    def get_many(self) -> str:
        """$1 now, $2.. one array per key column (text[] or bytea[])."""
        keys, match = self._unnest()
        return f"SELECT {self._selected} FROM {self.t} JOIN {keys} ON {match} WHERE {self.live('$1')}"

    def _unnest(self) -> tuple[str, str]:
        """The keys given as one array per key column from $2 (a row source ``u``), and the
        predicate matching a row to them."""
        arrays = ", ".join(f"${i + 2}::{'bytea' if c.kind is Kind.BLOB else 'text'}[]" for i, c in enumerate(self.keys))
        names = ", ".join(f"u{i}" for i in range(len(self.keys)))
        match = " AND ".join(f"{quote_ident(c.name)} = {key_param(c, f'u.u{i}')}" for i, c in enumerate(self.keys))
        return f"unnest({arrays}) AS u({names})", match

    def scan(self, conditions: Sequence[Condition], after: bool, limit: bool, keys_only: bool) -> str:
        """Rows matching ``conditions`` (params $2..), after the row-value cursor (one param per key
        column) when ``after``, in key order, at most $LAST rows when ``limit``; $1 is now."""
        where, n = self._where(conditions, 2)
        if after:
            cols = ", ".join(key_order(c) for c in self.keys)
            params = ", ".join(key_param(c, f"${n + i}") for i, c in enumerate(self.keys))
            where.append(f"ROW({cols}) > ROW({params})" if len(self.keys) > 1 else f"{cols} > {params}")
            n += len(self.keys)
        where.append(self.live("$1"))
        text = (f"SELECT {self._keys_selected if keys_only else self._selected} FROM {self.t} "
                f"WHERE {' AND '.join(where)} ORDER BY {self.order}")
        return text + (f" LIMIT ${n}" if limit else "")

    def count(self, conditions: Sequence[Condition]) -> str:
        where, _ = self._where(conditions, 2)
        where.append(self.live("$1"))
        return f"SELECT count(*) FROM {self.t} WHERE {' AND '.join(where)}"

    def _where(self, conditions: Sequence[Condition], first: int) -> tuple[list[str], int]:
        out = []
        n = first
        for cond in conditions:
            col = self.keys[cond.index]
            lhs = key_order(col) if cond.op != "=" else quote_ident(col.name)
            out.append(f"{lhs} {cond.op} {key_param(col, f'${n}')}")
            n += 1
        return out or ["TRUE"], n

    def stats(self) -> str:
        """$1 now, $2 the table's name: live rows, expired rows, rows whose mapped value is NULL,
        the table's size."""
        live = self.live("$1")
        null_value = " AND ".join(f"{quote_ident(c.name)} IS NULL" for c in self.values) or "FALSE"
        return (f"SELECT count(*) FILTER (WHERE {live}), count(*) FILTER (WHERE NOT {live}), "
                f"count(*) FILTER (WHERE {null_value}), pg_total_relation_size(to_regclass($2::text)) FROM {self.t}")

    # -- writes ------------------------------------------------------------------------
    def upsert(self) -> str:
        """$1.. key components, then value columns, then expiry ms, then version ms (when mapped).

        ``INSERT … ON CONFLICT (key) DO UPDATE`` of the mapped columns only: columns kvctl does
        not map keep their values on update and take their defaults on insert."""
        cols: list[str] = []
        params: list[str] = []
        n = 1
        for c in self.keys:
            cols.append(quote_ident(c.name))
            params.append(key_param(c, f"${n}"))
            n += 1
        for c in self.values:
            cols.append(quote_ident(c.name))
            params.append(value_param(c, f"${n}"))
            n += 1
        for timed in (self.expires, self.version):
            if timed is not None:
                cols.append(quote_ident(timed.column.name))
                params.append(f"(CASE WHEN ${n}::bigint IS NULL THEN NULL ELSE {from_ms(timed, f'${n}')} END)")
                n += 1
        updated = cols[len(self.keys):]
        conflict = ", ".join(quote_ident(c.name) for c in self.keys)
        action = ("DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in updated)) if updated else "DO NOTHING"
        return (f"INSERT INTO {self.t} ({', '.join(cols)}) VALUES ({', '.join(params)}) "
                f"ON CONFLICT ({conflict}) {action}")

    def delete_many(self) -> str:
        """$1 now, $2.. one array per key column: how many live rows were deleted."""
        keys, match = self._unnest()
        return self._deleting(f"DELETE FROM {self.t} USING {keys} WHERE {match}")

    def clear(self) -> str:
        """$1 now: delete every row; how many were live."""
        return self._deleting(f"DELETE FROM {self.t}")

    def _deleting(self, delete: str) -> str:
        return f"WITH d AS ({delete} RETURNING {self.live('$1')} AS live) SELECT count(*) FILTER (WHERE live) FROM d"

"""The statements of a mapped table: point reads, key-range scans, count, upserts of the mapped
columns only, deletes.

Every key component travels as text (``bytea`` columns as bytes) and is cast by the server to the
column's type, so a uuid or integer key needs no client-side type; text keys compare under
``COLLATE "C"`` (byte order of UTF-8), so ranges and order are those of the key's bytes whatever
the column's collation. Prefix scans are ranges, never LIKE.

Expiry and version columns are read and written as their driver values (converted by the kit);
the live-row filter compares the column itself with "now" expressed in the column's type and
unit, so an index on it can be used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kvctl.plugin_kit.mapped import Column, Kind, PrefixPlan, TimeMapping

from .settings import quote_ident


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


def key_arg(value: object) -> object:
    """A key column value (as :class:`~kvctl.plugin_kit.mapped.KeyCodec` gives it) as its
    parameter: bytes and text as they are, integers as their text (cast by :func:`key_param`)."""
    return value if isinstance(value, bytes | str) else str(value)


def time_select(timed: TimeMapping) -> str:
    return quote_ident(timed.column.name)


def time_param(timed: TimeMapping, param: str) -> str:
    """An expires/version parameter as :func:`kvctl.plugin_kit.mapped.time_param` gives it (an
    aware datetime for timestamps, an integer in the column's unit) cast to the column."""
    if timed.column.kind is Kind.TIMESTAMP and "without time zone" in timed.column.declared:
        return f"({param}::timestamptz AT TIME ZONE 'UTC')"
    return f"{param}::{timed.column.declared}"


@dataclass(frozen=True)
class MappedStatements:
    """The statements of one mapping of table ``t`` (quoted, maybe schema-qualified), in the
    shape of :class:`kvctl.plugin_kit.mapped.rows.MappedSQL`: selected columns are the key
    columns, the value columns (not for keys only), then expires and version when mapped.
    Every statement that reads takes "now" (ms) as ``$1``: expired rows are left out."""

    t: str
    keys: tuple[Column, ...]
    values: tuple[Column, ...]
    expires: TimeMapping | None = None
    version: TimeMapping | None = None

    # -- pieces ------------------------------------------------------------------------
    def _select(self, keys_only: bool) -> str:
        parts = [key_select(c) for c in self.keys]
        if not keys_only:
            parts += [value_select(c) for c in self.values]
        parts += [time_select(t) for t in (self.expires, self.version) if t is not None]
        return f"SELECT {', '.join(parts)} FROM {self.t}"

    def live(self, param: str) -> str:
        """The predicate "not expired at ``param`` (ms)"."""
        if self.expires is None:
            return f"({param}::bigint IS NOT NULL)"  # names the parameter: the server needs its type
        q = quote_ident(self.expires.column.name)
        return f"({q} IS NULL OR {q} > {from_ms(self.expires, param)})"

    @property
    def order(self) -> str:
        return ", ".join(key_order(c) for c in self.keys)

    def _unnest(self) -> tuple[str, str]:
        """The keys given as one array per key column from $2 (a row source ``u``), and the
        predicate matching a row to them."""
        arrays = ", ".join(f"${i + 2}::{'bytea' if c.kind is Kind.BLOB else 'text'}[]" for i, c in enumerate(self.keys))
        names = ", ".join(f"u{i}" for i in range(len(self.keys)))
        match = " AND ".join(f"{quote_ident(c.name)} = {key_param(c, f'u.u{i}')}" for i, c in enumerate(self.keys))
        return f"unnest({arrays}) AS u({names})", match

    def _where(self, plan: PrefixPlan) -> tuple[list[str], list[object]]:
        """The conditions of a prefix plan (from ``$2``) and their parameters."""
        conds: list[str] = []
        params: list[object] = []
        for i, value in enumerate(plan.equal):
            params.append(key_arg(value))
            conds.append(f"{quote_ident(self.keys[i].name)} = {key_param(self.keys[i], f'${len(params) + 1}')}")
        at = len(plan.equal)
        for op, bound in ((">=", plan.lower), ("<", plan.upper)):
            if bound is not None:
                params.append(key_arg(bound))
                conds.append(f"{key_order(self.keys[at])} {op} {key_param(self.keys[at], f'${len(params) + 1}')}")
        return [*conds, self.live("$1")], params

    # -- reads -------------------------------------------------------------------------
    def get_many(self) -> str:
        """$1 now, $2.. one array per key column (text[] or bytea[])."""
        keys, match = self._unnest()
        return f"{self._select(False)} JOIN {keys} ON {match} WHERE {self.live('$1')}"

    def scan(self, plan: PrefixPlan, after: Sequence[object] | None, limit: int,
             keys_only: bool) -> tuple[str, list[object]]:
        """Up to ``limit`` rows of ``plan`` after the key values ``after``, in key order (its
        parameters lack the leading "now")."""
        conds, params = self._where(plan)
        if after is not None:
            first = len(params) + 2
            cols = ", ".join(key_order(c) for c in self.keys)
            marks = ", ".join(key_param(c, f"${first + i}") for i, c in enumerate(self.keys))
            conds.append(f"ROW({cols}) > ROW({marks})" if len(self.keys) > 1 else f"{cols} > {marks}")
            params += [key_arg(v) for v in after]
        params.append(limit)
        return (f"{self._select(keys_only)} WHERE {' AND '.join(conds)} ORDER BY {self.order} "
                f"LIMIT ${len(params) + 1}", params)

    def count(self, plan: PrefixPlan) -> tuple[str, list[object]]:
        conds, params = self._where(plan)
        return f"SELECT count(*) FROM {self.t} WHERE {' AND '.join(conds)}", params

    def stats(self) -> str:
        """$1 now, $2 the table's name: live rows, expired rows, rows whose mapped value is NULL,
        the table's size."""
        live = self.live("$1")
        null_value = " AND ".join(f"{quote_ident(c.name)} IS NULL" for c in self.values) or "FALSE"
        return (f"SELECT count(*) FILTER (WHERE {live}), count(*) FILTER (WHERE NOT {live}), "
                f"count(*) FILTER (WHERE {null_value}), pg_total_relation_size(to_regclass($2::text)) FROM {self.t}")

    # -- writes ------------------------------------------------------------------------
    def upsert(self) -> str:
        """Parameters as :meth:`kvctl.plugin_kit.mapped.rows.MappedRows.write_row` gives them
        (key values through :func:`key_arg`).

        ``INSERT … ON CONFLICT (key) DO UPDATE`` of the mapped columns only: columns kvctl does
        not map keep their values on update and take their defaults on insert."""
        cols = [quote_ident(c.name) for c in self.keys]
        marks = [key_param(c, f"${i + 1}") for i, c in enumerate(self.keys)]
        for c in self.values:
            cols.append(quote_ident(c.name))
            marks.append(value_param(c, f"${len(marks) + 1}"))
        for timed in (self.expires, self.version):
            if timed is not None:
                cols.append(quote_ident(timed.column.name))
                marks.append(time_param(timed, f"${len(marks) + 1}"))
        updated = cols[len(self.keys):]
        conflict = ", ".join(quote_ident(c.name) for c in self.keys)
        action = ("DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in updated)) if updated else "DO NOTHING"
        return (f"INSERT INTO {self.t} ({', '.join(cols)}) VALUES ({', '.join(marks)}) "
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

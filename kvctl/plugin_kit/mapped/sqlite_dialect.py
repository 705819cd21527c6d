"""The SQLite dialect of mapped tables, shared by the sqlite and libsql plugins (their drivers
run the statements): the catalog queries, their rows as a :class:`TableInfo`, and the
statements of a mapping (:class:`SQLiteMappedSQL`).  Needs SQLite 3.16 (table-valued pragmas);
composite keys use row values (3.15); upserts ``ON CONFLICT … DO UPDATE`` (3.24)."""

from __future__ import annotations

from collections.abc import Sequence

from .columns import Column, ForeignRef, Kind, Mapping, TableInfo
from .keys import PrefixPlan

__all__ = ["CATALOG", "TABLES", "SQLiteMappedSQL", "quote_name", "sqlite_kind", "table_info"]

TABLES = ("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
          "AND name NOT LIKE 'sqlite^_%' ESCAPE '^' ORDER BY rowid")
# Each with the table name as its one parameter; their rows go to table_info, in this order.
CATALOG = (
    "SELECT type FROM sqlite_master WHERE name = ? AND type IN ('table', 'view')",
    "SELECT name, type, \"notnull\", dflt_value, pk, hidden FROM pragma_table_xinfo(?) ORDER BY cid",
    "SELECT il.name, il.\"unique\", il.origin, il.partial, ii.name, ii.coll "
    "FROM pragma_index_list(?1) AS il, pragma_index_xinfo(il.name) AS ii WHERE ii.key ORDER BY il.name, ii.seqno",
    "SELECT m.name, f.id, f.\"from\", f.on_delete FROM sqlite_master AS m, pragma_foreign_key_list(m.name) AS f "
    "WHERE m.type = 'table' AND f.\"table\" = ?1 COLLATE NOCASE ORDER BY m.name, f.id, f.seq",
    "SELECT \"table\", id, \"from\", on_delete FROM pragma_foreign_key_list(?) ORDER BY id, seq",
)


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sqlite_kind(declared: str) -> Kind:
    """A declared column type as a :class:`Kind`, by SQLite's affinity rules (section 3.1 of its
    datatype page), with JSON and DATE/TIME types told apart."""
    t = declared.upper()
    if "INT" in t:
        return Kind.INTEGER
    if "JSON" in t:
        return Kind.JSON
    if any(s in t for s in ("CHAR", "CLOB", "TEXT")):
        return Kind.TEXT
    if "BLOB" in t or not t:
        return Kind.BLOB
    if any(s in t for s in ("REAL", "FLOA", "DOUB")):
        return Kind.REAL
    if "DATE" in t or "TIME" in t:
        return Kind.TIME_TEXT
    return Kind.OTHER


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def table_info(name: str, results: Sequence[Sequence[Sequence[object]]]) -> TableInfo | None:
    """The table described by the rows of the :data:`CATALOG` statements; None when missing."""
    master, columns, indexes, refs, own = results
    if not master:
        return None
    pk_binary: dict[str, bool] = {}
    unique: dict[str, list[str]] = {}
    for iname, is_unique, origin, partial, col, coll in indexes:
        if col is None:
            continue  # an expression index
        if _text(origin) == "pk":
            pk_binary[_text(col)] = _text(coll).upper() == "BINARY"
        if int(is_unique) and not int(partial):  # type: ignore[call-overload]
            unique.setdefault(_text(iname), []).append(_text(col))
    cols = []
    pk: list[tuple[int, str]] = []
    for cname, ctype, notnull, default, pk_pos, hidden in columns:
        n, t = _text(cname), _text(ctype or "")
        if int(hidden) == 1:  # type: ignore[call-overload]
            continue  # a virtual table's hidden column
        if int(pk_pos):  # type: ignore[call-overload]
            pk.append((int(pk_pos), n))  # type: ignore[call-overload]
        # an INTEGER PRIMARY KEY is the rowid: NOT NULL and compared as integers
        rowid = int(pk_pos) and t.upper() == "INTEGER" and not pk_binary  # type: ignore[call-overload]
        cols.append(Column(n, sqlite_kind(t), t, bool(int(notnull)) or bool(rowid),  # type: ignore[call-overload]
                           default is not None or bool(rowid), int(hidden) in (2, 3),  # type: ignore[call-overload]
                           pk_binary.get(n, True)))
    return TableInfo(
        name=name, columns=tuple(cols), primary_key=tuple(c for _, c in sorted(pk)),
        unique=tuple(tuple(v) for v in unique.values()),
        referenced_by=_foreign_keys(refs), references=_foreign_keys(own),
        is_view=_text(master[0][0]) == "view",
    )


def _foreign_keys(rows: Sequence[Sequence[object]]) -> tuple[ForeignRef, ...]:
    """Foreign keys from (table, id, column, on_delete) rows, one per id."""
    grouped: dict[tuple[str, int], tuple[list[str], str]] = {}
    for table, fk_id, col, on_delete in rows:
        entry = grouped.setdefault((_text(table), int(fk_id)), ([], _text(on_delete)))  # type: ignore[call-overload]
        entry[0].append(_text(col))
    return tuple(ForeignRef(t, tuple(c), d) for (t, _), (c, d) in grouped.items())


class SQLiteMappedSQL:
    """The statements of a mapping in SQLite (``?`` parameters)."""

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        q = quote_name
        self.table = q(mapping.table.name)
        self._key = [q(c.name) for c in mapping.key]
        self._value = [q(c.name) for c in mapping.value]
        self._times = [q(t.column.name) for t in (mapping.expires, mapping.version) if t is not None]
        self._order = ", ".join(self._key)
        self._not_null = " AND ".join(f"{k} IS NOT NULL" for k in self._key)
        self._row = f"({self._order})" if len(self._key) > 1 else self._key[0]

    def _select(self, keys_only: bool) -> str:
        cols = [*self._key, *([] if keys_only else self._value), *self._times]
        return f"SELECT {', '.join(cols)} FROM {self.table}"

    def select_keys(self, count: int, keys_only: bool = False) -> str:
        n = len(self._key)
        marks = ",".join(["(" + ",".join("?" * n) + ")"] * count) if n > 1 else ",".join("?" * count)
        listed = f"(VALUES {marks})" if n > 1 else f"({marks})"
        return f"{self._select(keys_only)} WHERE {self._row} IN {listed}"

    def _where(self, plan: PrefixPlan) -> tuple[list[str], list[object]]:
        conds, params = [self._not_null], []
        for col, value in zip(self._key, plan.equal, strict=False):
            conds.append(f"{col} = ?")
            params.append(value)
        if plan.lower is not None:
            col = self._key[len(plan.equal)]
            conds.append(f"{col} >= ?")
            params.append(plan.lower)
            if plan.upper is not None:
                conds.append(f"{col} < ?")
                params.append(plan.upper)
        return conds, params

    def scan(self, plan: PrefixPlan, after: Sequence[object] | None, limit: int,
             keys_only: bool) -> tuple[str, list[object]]:
        conds, params = self._where(plan)
        if after is not None:
            marks = f"({', '.join('?' * len(after))})" if len(after) > 1 else "?"
            conds.append(f"{self._row} > {marks}")
            params += after
        params.append(limit)
        return (f"{self._select(keys_only)} WHERE {' AND '.join(conds)} ORDER BY {self._order} LIMIT ?",
                params)

    def count(self, plan: PrefixPlan) -> tuple[str, list[object]]:
        conds, params = self._where(plan)
        return f"SELECT count(*) FROM {self.table} WHERE {' AND '.join(conds)}", params

    def upsert(self) -> str:
        cols = [*self._key, *self._value, *self._times]
        sets = ", ".join(f"{c} = excluded.{c}" for c in [*self._value, *self._times])
        return (f"INSERT INTO {self.table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                f"ON CONFLICT ({self._order}) DO UPDATE SET {sets}")

    def delete(self) -> str:
        return f"DELETE FROM {self.table} WHERE " + " AND ".join(f"{k} = ?" for k in self._key)

    def clear(self) -> str:
        return f"DELETE FROM {self.table}"

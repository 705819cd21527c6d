"""A table as its dialect describes it, and the checked mapping of a :class:`.spec.MappingSpec`
onto it (:func:`resolve`).  Every refusal is one line naming the table and columns: exit 2 for a
mapping that cannot work, exit 4 for a write the mapping does not allow."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from kvctl.errors import UnsupportedError, UsageError

from .spec import ALL_COLUMNS, MappingSpec, TimeColumn

__all__ = ["KEY_KINDS", "Column", "ForeignRef", "Kind", "Mapping", "TableInfo", "TimeMapping", "resolve"]


class Kind(enum.Enum):
    """What a column holds, as far as kvctl's conversions care (the dialect decides it)."""

    TEXT = "text"
    BLOB = "blob"
    INTEGER = "integer"
    REAL = "real"
    BOOL = "bool"
    JSON = "json"  # a json/jsonb type, or a text column named by json=
    UUID = "uuid"
    TIME_TEXT = "time-text"  # text holding times (SQLite columns declared DATE/TIME/DATETIME)
    TIMESTAMP = "timestamp"  # a native timestamp type (taken as UTC when it has no zone)
    OTHER = "other"  # anything else: read and written as its text form


KEY_KINDS = (Kind.TEXT, Kind.BLOB, Kind.UUID, Kind.INTEGER)
_TIME_KINDS = (Kind.TEXT, Kind.TIME_TEXT, Kind.TIMESTAMP, Kind.INTEGER, Kind.REAL)
_CASCADING = ("CASCADE", "SET NULL", "SET DEFAULT")


@dataclass(frozen=True)
class Column:
    """One column.  ``binary_equality``: its collation compares bytes (SQLite BINARY, PostgreSQL
    deterministic), so a key lookup finds exactly one spelling."""

    name: str
    kind: Kind
    declared: str = ""
    not_null: bool = False
    has_default: bool = False
    generated: bool = False
    binary_equality: bool = True


@dataclass(frozen=True)
class ForeignRef:
    """A foreign key of another table that points at this one."""

    table: str
    columns: tuple[str, ...]
    on_delete: str  # "NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT"


@dataclass(frozen=True)
class TableInfo:
    """What the dialect's catalog says about a table."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()  # unique indexes / constraints (not partial)
    referenced_by: tuple[ForeignRef, ...] = ()
    is_view: bool = False
    rows: int | None = None  # an estimate, for listings
    # this table's own foreign keys (ForeignRef.table is the table they point at)
    references: tuple[ForeignRef, ...] = ()

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def key_candidates(self) -> tuple[str, ...] | None:
        """The columns a mapping would use as its key: the primary key, else the first unique
        index of NOT NULL columns; None when there is neither."""
        if self.primary_key:
            return self.primary_key
        for cols in self.unique:
            if all(getattr(self.column(c), "not_null", False) for c in cols):
                return cols
        return None


@dataclass(frozen=True)
class TimeMapping:
    """A resolved ``expires=``/``version=`` column."""

    column: Column
    unit: str | None  # s/ms/us/ns for numbers; sql/rfc3339 (or None) for text; None for native types


@dataclass(frozen=True)
class Mapping:
    """A mapping checked against its table: what the dialect builds its SQL from."""

    spec: MappingSpec
    table: TableInfo
    key: tuple[Column, ...]
    value: tuple[Column, ...]
    single: bool  # one value column: the value is its bytes; else a JSON object
    expires: TimeMapping | None = None
    version: TimeMapping | None = None
    json: frozenset[str] = field(default_factory=frozenset)
    where: str = ""

    @property
    def ordered(self) -> bool:
        """Keys come in byte order from ``ORDER BY`` the key: one text or blob key column."""
        return len(self.key) == 1 and self.key[0].kind in (Kind.TEXT, Kind.BLOB)

    @property
    def json_values(self) -> bool:
        """Values are JSON documents: several columns, or one JSON column."""
        return not self.single or self.value[0].kind is Kind.JSON or self.value[0].name in self.json

    @property
    def written_columns(self) -> tuple[Column, ...]:
        """Every column a write sets, key first, in the order of the write's parameters."""
        times = tuple(t.column for t in (self.expires, self.version) if t is not None)
        return self.key + self.value + times

    def require_write(self) -> None:
        """Refuse a write (exit 4) unless the mapping allows writes."""
        if not self.spec.write:
            raise UnsupportedError(f"{self.where}: table {self.table.name} is mapped read-only",
                                   hint="add write=true to the URL to change the application's rows")

    def require_delete(self) -> None:
        """Refuse a delete (exit 4) that would cascade to other tables, unless write=cascade."""
        self.require_write()
        refs = [r for r in self.table.referenced_by if r.on_delete.upper() in _CASCADING]
        if refs and not self.spec.cascade:
            listed = ", ".join(f"{r.table}({', '.join(r.columns)}) ON DELETE {r.on_delete.upper()}" for r in refs)
            raise UnsupportedError(f"{self.where}: deleting rows of {self.table.name} would change other tables: "
                                   f"{listed}", hint="use write=cascade to allow it")

    def describe(self) -> dict[str, object]:
        """The mapping for ``stats``."""
        facts: dict[str, object] = {
            "mapped_table": self.table.name,
            "key_columns": [c.name for c in self.key],
            "value_columns": [c.name for c in self.value],
            "value_form": "bytes of one column" if self.single else "JSON object of the columns",
            "writable": "cascade" if self.spec.cascade else self.spec.write,
        }
        if len(self.key) > 1:
            sep = self.spec.sep.decode(errors="replace")
            facts["key_form"] = (f"components joined by {sep!r}; in every component but the last, "
                                 f"'%' and the bytes of {sep!r} are written %XX (hex)")
        for name, tm in (("expires", self.expires), ("version", self.version)):
            if tm is not None:
                facts[f"{name}_column"] = tm.column.name + (f":{tm.unit}" if tm.unit else "")
        if self.table.referenced_by:
            facts["referenced_by"] = [f"{r.table}({', '.join(r.columns)}) ON DELETE {r.on_delete.upper()}"
                                      for r in self.table.referenced_by]
        return facts


def resolve(spec: MappingSpec, table: TableInfo | None, where: str, *, writes: bool) -> Mapping:
    """Check ``spec`` against ``table`` (None: no such table) and resolve its columns.

    ``writes``: the command may write (not a read-only command), so the checks a write needs
    run now, before anything is written."""
    if table is None:
        raise UsageError(f"{where}: no table {spec.table} (mapped mode never creates tables)")
    names = ", ".join(c.name for c in table.columns)

    def column(name: str, option: str) -> Column:
        col = table.column(name)
        if col is None:
            raise UsageError(f"{where}: {option}={name}: table {table.name} has no such column (columns: {names})")
        return col

    key = tuple(column(name, "key") for name in spec.key)
    _check_key(table, key, where)
    expires = _time(spec.expires, "expires", column, where)
    version = _time(spec.version, "version", column, where)
    used = {*spec.key, *(t.column.name for t in (expires, version) if t is not None)}
    left: tuple[Column, ...] = tuple(c for c in table.columns if c.name not in used)
    value: tuple[Column, ...]
    if spec.value is None:
        if len(left) != 1:
            raise UsageError(f"{where}: say which column(s) of {table.name} hold the value: value=C, value=C1,C2 or "
                             f"value=* (candidates: {', '.join(c.name for c in left) or 'none'})")
        value = left
    elif spec.value == ALL_COLUMNS:
        if not left:
            raise UsageError(f"{where}: value=*: table {table.name} has no column beside the key and times")
        value = left
    else:
        value = tuple(column(name, "value") for name in spec.value)
    json_cols = frozenset(spec.json)
    for name in spec.json:
        col = column(name, "json")
        if col not in value:
            raise UsageError(f"{where}: json={name}: not a value column of this mapping")
        if col.kind not in (Kind.TEXT, Kind.JSON, Kind.BLOB):
            raise UsageError(f"{where}: json={name}: column is {col.declared or col.kind.value}, not text")
    value = tuple(Column(c.name, Kind.JSON, c.declared, c.not_null, c.has_default, c.generated)
                  if c.name in json_cols else c for c in value)
    mapping = Mapping(spec, table, key, value, single=len(value) == 1 and spec.value != ALL_COLUMNS,
                      expires=expires, version=version, json=json_cols, where=where)
    if spec.write and writes:
        _check_writable(mapping, where)
    return mapping


def _check_key(table: TableInfo, key: tuple[Column, ...], where: str) -> None:
    names = tuple(c.name for c in key)
    unique_ok = any(set(u) == set(names) and all(c.not_null for c in key) for u in table.unique)
    if table.is_view or not (set(table.primary_key) == set(names) or unique_ok):
        found = [f"primary key ({', '.join(table.primary_key)})"] if table.primary_key else []
        found += [f"unique ({', '.join(u)})" for u in table.unique]
        raise UsageError(f"{where}: key columns ({', '.join(names)}) of {table.name} are not its primary key or a "
                         f"NOT NULL unique index, so a key could match several rows "
                         f"(found: {'; '.join(found) or 'none'})")
    for col in key:
        if col.kind not in KEY_KINDS:
            raise UsageError(f"{where}: key column {col.name} is {col.declared or col.kind.value}: kvctl keys are "
                             "bytes; map a text, blob, uuid or integer column")
        if not col.binary_equality:
            raise UsageError(f"{where}: key column {col.name} has a collation that does not compare bytes "
                             "(two spellings would be one key)")


def _time(spec: TimeColumn | None, option: str, column: Callable[[str, str], Column],
          where: str) -> TimeMapping | None:
    if spec is None:
        return None
    col: Column = column(spec.column, option)
    if col.kind not in _TIME_KINDS:
        raise UsageError(f"{where}: {option}={col.name}: a {col.declared or col.kind.value} column cannot hold a time")
    numeric = col.kind in (Kind.INTEGER, Kind.REAL)
    if numeric and spec.unit not in ("s", "ms", "us", "ns"):
        raise UsageError(f"{where}: {option}={col.name} holds numbers: say their unit, e.g. {option}={col.name}:s "
                         "(s, ms, us or ns)")
    if col.kind is Kind.TIMESTAMP and spec.unit is not None:
        raise UsageError(f"{where}: {option}={col.name} is a {col.declared or 'timestamp'} column: it takes no unit")
    if not numeric and spec.unit in ("s", "ms", "us", "ns") and col.kind is not Kind.TEXT:
        raise UsageError(f"{where}: {option}={col.name}:{spec.unit}: the column holds text times, not numbers")
    return TimeMapping(col, spec.unit)


def _check_writable(mapping: Mapping, where: str) -> None:
    table = mapping.table
    written = {c.name for c in mapping.written_columns}
    generated = [c.name for c in mapping.written_columns if c.generated]
    if generated:
        raise UnsupportedError(f"{where}: cannot write generated column(s) {', '.join(generated)} of {table.name}")
    missing = [c.name for c in table.columns
               if c.name not in written and c.not_null and not c.has_default and not c.generated]
    if missing:
        raise UnsupportedError(
            f"{where}: write=true on {table.name} leaves NOT NULL column(s) without a default unmapped: "
            f"{', '.join(missing)}; a new row could not be inserted",
            hint="map them too, e.g. value=* (a JSON object of every column)")

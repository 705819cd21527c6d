"""What a mapped table looks like, read from pg_catalog: its columns, unique keys and the
foreign keys that point at it (as :class:`kvctl.plugin_kit.mapped.TableInfo`), and the tables of a
schema for ``table=*``.

Only the system catalogs are read, so describing a table needs no privilege on it, and nothing
is created: a mapped database is another program's.
"""

from __future__ import annotations

import asyncpg

from kvctl.plugin_kit.mapped.columns import Column, ForeignRef, Kind, TableInfo

# Relations a user would call tables; only 'r' and 'p' can have the primary key a mapping needs.
_TABLE_KINDS = "('r', 'p', 'f', 'v', 'm')"
_VIEW_KINDS = ("v", "m", "f")

# $1 the relation's oid.
_COLUMNS = """
SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typname::text,
       a.attnotnull, a.atthasdef, a.attgenerated <> '' OR a.attidentity = 'a',
       coalesce(co.collisdeterministic, true)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# Unique indexes usable as a key: no predicate, no expression; primary key first.
_UNIQUE = """
SELECT i.indisprimary,
       ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY AS k(num, pos)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num ORDER BY k.pos)
FROM pg_index i
WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
ORDER BY NOT i.indisprimary, i.indexrelid
"""

# Foreign keys (of other tables or this one) that point at the relation, and what a delete does.
_REFERENCING = """
SELECT c.conrelid::regclass::text,
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(num, pos)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num ORDER BY k.pos),
       c.confdeltype::text
FROM pg_constraint c WHERE c.contype = 'f' AND c.confrelid = $1
ORDER BY 1, c.conname
"""

_RELATION = """
SELECT c.oid, c.relkind::text, c.relname::text, CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END
FROM pg_class c WHERE c.oid = to_regclass($1)
"""

# $1 the schema (NULL: the connection's current schema).
_LIST = f"""
SELECT c.oid, c.relkind::text, c.relname::text, CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = coalesce($1::text, current_schema()) AND c.relkind IN {_TABLE_KINDS}
ORDER BY c.relname
"""

# What ON DELETE does, by pg_constraint.confdeltype.
DELETE_ACTIONS = {"c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT", "a": "NO ACTION", "r": "RESTRICT"}

# pg_type.typname -> what kvctl's conversions make of it; anything else is read as its text.
KINDS = {
    "text": Kind.TEXT, "varchar": Kind.TEXT, "bytea": Kind.BLOB, "uuid": Kind.UUID,
    "int2": Kind.INTEGER, "int4": Kind.INTEGER, "int8": Kind.INTEGER, "float4": Kind.REAL, "float8": Kind.REAL,
    "bool": Kind.BOOL, "json": Kind.JSON, "jsonb": Kind.JSON, "timestamptz": Kind.TIMESTAMP,
    "timestamp": Kind.TIMESTAMP,
}


def _column(row: asyncpg.Record) -> Column:
    name, declared, typname, not_null, has_default, generated, deterministic = row
    return Column(name, KINDS.get(typname, Kind.OTHER), declared, bool(not_null), bool(has_default),
                  bool(generated), bool(deterministic))


async def describe(con: asyncpg.Connection, qualified: str) -> TableInfo | None:
    """The table named by the quoted (maybe schema-qualified) name ``qualified``; None if missing."""
    rel = await con.fetchrow(_RELATION, qualified)
    return None if rel is None else await _describe(con, *rel)


async def _describe(con: asyncpg.Connection, oid: int, kind: str, name: str, rows: int | None) -> TableInfo:
    columns = tuple(_column(r) for r in await con.fetch(_COLUMNS, oid))
    keys = [(bool(p), tuple(cols)) for p, cols in await con.fetch(_UNIQUE, oid)]
    refs = tuple(ForeignRef(t, tuple(cols), DELETE_ACTIONS.get(action, "NO ACTION"))
                 for t, cols, action in await con.fetch(_REFERENCING, oid))
    primary = next((cols for p, cols in keys if p), ())
    return TableInfo(name, columns, primary, tuple(cols for p, cols in keys if not p), refs,
                     is_view=kind in _VIEW_KINDS, rows=None if rows is None else int(rows))


async def list_tables(con: asyncpg.Connection, schema: str | None) -> list[TableInfo]:
    """Every table-like relation of ``schema`` (None: the current schema), described, by name."""
    return [await _describe(con, *r) for r in await con.fetch(_LIST, schema)]

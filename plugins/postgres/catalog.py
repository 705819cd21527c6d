"""What the database holds before kvctl touches it, and the refusals that protect it.

Two rules (the store contract, :attr:`kvctl.url.StoreURL.access`):

* a command that only reads creates, alters and upgrades nothing: a missing kvctl table is
  :class:`~kvctl.errors.NoSuchStoreError`;
* a schema that holds tables but none of kvctl's (no ``kvctl_meta``) belongs to another program:
  :class:`~kvctl.errors.ForeignStoreError`, for a read, and for a write unless ``?create=true``;
  so does an empty schema of a database whose other schemas hold tables and none of them a
  ``kvctl_meta`` (an application that keeps its tables out of ``public``).

Everything here reads the system catalogs and ``to_regclass``, which need no privilege on the
tables themselves, so the verdict is the same for a read-only role.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

import asyncpg

from kvctl.errors import ForeignStoreError, NoSuchStoreError
from kvctl.plugin_kit.mapped import suggested_options
from kvctl.url import StoreURL

from .mapped_catalog import list_tables
from .schema import Layout

# Relations a user would call tables (ordinary, partitioned, foreign, views, materialized views).
_TABLE_KINDS = "('r', 'p', 'f', 'v', 'm')"
# A refusal names this many tables, then says how many more there are.
LISTED_TABLES = 12

# $1 the table, $2 kvctl_meta, $3 the tombstone table, $4 the sequence (all quoted, maybe
# schema-qualified), $5 the schema named by ?schema= (NULL: the connection's current schema).
_SURVEY = f"""
SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL, to_regclass($3) IS NOT NULL,
       coalesce(has_table_privilege(to_regclass($2), 'SELECT'), false),
       coalesce(has_sequence_privilege(to_regclass($4), 'SELECT, USAGE'), false),
       current_database(), s.name,
       ARRAY(SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = s.name AND c.relkind IN {_TABLE_KINDS} ORDER BY c.relname),
       EXISTS (SELECT 1 FROM pg_class c WHERE c.relname = 'kvctl_meta' AND c.relkind = 'r'),
       ARRAY(SELECT ARRAY[n.nspname::text, c.relname::text] FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname <> s.name AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_%' AND c.relkind IN {_TABLE_KINDS}
             ORDER BY n.nspname, c.relname)
FROM (SELECT coalesce($5::text, current_schema())::text AS name) AS s
"""


@dataclass(frozen=True)
class Survey:
    """What one catalog query found about the table and the schema it lives in."""

    has_table: bool
    has_meta: bool
    has_tombs: bool
    meta_readable: bool  # this role may SELECT kvctl_meta
    sequence_readable: bool  # this role may read the change feed's sequence
    database: str
    schema: str | None
    tables: list[str]  # every table-like relation of the schema, sorted
    # when the schema holds only other programs' tables: each one's read-only mapping options
    # (table=…&key=…&value=…), None for a table without a key to map it by
    mappings: dict[str, str | None] = field(default_factory=dict)
    meta_elsewhere: bool = False  # a kvctl_meta in some schema of the database
    elsewhere: tuple[tuple[str, str], ...] = ()  # (schema, table) of the database's other schemas

    @property
    def where(self) -> str:
        return f"database {self.database}" + (f", schema {self.schema}" if self.schema else "")


async def survey(con: asyncpg.Connection, layout: Layout, schema: str | None) -> Survey:
    row = await con.fetchrow(_SURVEY, layout.t, layout.meta, layout.tombs, layout.sequence, schema)
    tables = list(row[7])
    mappings = {}
    if tables and not row[1]:  # about to be refused: say how to read each table
        mappings = {t.name: suggested_options(t) for t in await list_tables(con, schema)}
    return Survey(bool(row[0]), bool(row[1]), bool(row[2]), bool(row[3]), bool(row[4]),
                  str(row[5]), row[6], tables, mappings, bool(row[8]), tuple((str(a), str(b)) for a, b in row[9]))


def refuse_foreign(found: Survey, url: StoreURL, where: str) -> None:
    """ForeignStoreError when the schema holds tables and none of them is kvctl's, or holds none
    while the database's other schemas do and none of them holds kvctl's."""
    if found.has_meta:
        return
    if found.tables:
        holder = found.where
        named = [(name, _mapping_url(url, found.mappings.get(name))) for name in found.tables]
    elif found.elsewhere and not found.meta_elsewhere:
        holder = f"database {found.database}"
        named = [(f"{schema}.{name}", _table_url(url, name, schema)) for schema, name in found.elsewhere]
    else:
        return
    listed = ", ".join(f"{name} ({table_url})" for name, table_url in named[:LISTED_TABLES])
    more = len(named) - LISTED_TABLES
    if more > 0:
        listed += f" and {more} more"
    count = len(named)
    raise ForeignStoreError(
        f"{where}: {holder} holds {count} table{'s' if count != 1 else ''}, none of kvctl's: {listed}; "
        "nothing was changed",
        hint=f"each URL reads that table's rows (add write=true to change them; {_table_url(url, '*')} "
             "describes every table); to add kvctl's own table beside them, write with ?create=true",
    )


def refuse_missing(found: Survey, name: str, where: str) -> None:
    """NoSuchStoreError for a read of a table that does not exist (nothing is created)."""
    if not found.has_table:
        raise NoSuchStoreError(f"{where}: no table {name} in {found.where}; nothing was created",
                               hint="a write command creates it")


def _mapping_url(url: StoreURL, options: str | None) -> str:
    """``url`` with a mapping's options instead of its own, redacted."""
    if options is None:
        return "no key to map it by"
    base = StoreURL.parse(url.without_options("table", "create"))
    return StoreURL.parse(f"{base.raw}{'&' if '?' in base.raw else '?'}{options}").redacted()


def _table_url(url: StoreURL, name: str, schema: str | None = None) -> str:
    """``url`` naming table ``name`` (of ``schema``) instead, redacted."""
    base = StoreURL.parse(url.without_options("table", "create", *(("schema",) if schema else ())))
    query = "&" if "?" in base.raw else "?"
    where = f"schema={quote(schema, safe='')}&" if schema else ""
    return StoreURL.parse(f"{base.raw}{query}{where}table={quote(name, safe='*')}").redacted()

"""SQL on the test server as another program runs it: a connection of its own, never kvctl's."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

#: A statement, or a statement and its ``$1``… arguments.
Statement = str | tuple[str, tuple[Any, ...]]


async def asql(url: str, *statements: Statement) -> list[Any]:
    """Run ``statements`` in order on a fresh connection; the rows of the last one.  A statement
    without arguments that holds a ``;`` is a script, run as one (it returns no rows)."""
    con = await asyncpg.connect(url)
    try:
        rows: list[Any] = []
        for stmt in statements:
            text, args = (stmt, ()) if isinstance(stmt, str) else stmt
            if ";" in text and not args:
                await con.execute(text)
                rows = []
            else:
                rows = list(await con.fetch(text, *args))
        return rows
    finally:
        await con.close()


def sql(url: str, *statements: Statement) -> list[Any]:
    """:func:`asql` from synchronous code."""
    return asyncio.run(asql(url, *statements))


def catalog(url: str) -> list[tuple[Any, ...]]:
    """Every user-visible object of the database, its settings, kvctl_meta's rows and a digest of
    every user table's rows, in a fixed order."""
    return asyncio.run(_catalog(url))


async def _catalog(url: str) -> list[tuple[Any, ...]]:
    # one connection for every query: a read command is checked against the catalog before
    # and after it, and a connection per table made that check cost more than the command
    con = await asyncpg.connect(url)
    try:
        rows = await con.fetch("""
            SELECT 'rel', n.nspname, c.relname, c.relkind::text || ' ' || coalesce(c.relacl::text, '')
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
                AND n.nspname NOT LIKE 'pg_temp%'
            UNION ALL SELECT 'column', a.attrelid::regclass::text, a.attname, format_type(a.atttypid, a.atttypmod)
                             || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
              FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE a.attnum > 0 AND NOT a.attisdropped
                AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
            UNION ALL SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid)
              FROM pg_constraint
              WHERE connamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
            UNION ALL SELECT 'index', i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), '' FROM pg_index i
              JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
            UNION ALL SELECT 'trigger', t.tgrelid::regclass::text, t.tgname, t.tgenabled::text FROM pg_trigger t
              WHERE NOT t.tgisinternal
            UNION ALL SELECT 'event trigger', evtname, evtevent, '' FROM pg_event_trigger
            UNION ALL SELECT 'rule', ev_class::regclass::text, rulename, '' FROM pg_rewrite
              WHERE ev_class NOT IN (SELECT oid FROM pg_class WHERE relnamespace IN
                                     ('pg_catalog'::regnamespace, 'information_schema'::regnamespace))
            UNION ALL SELECT 'policy', polrelid::regclass::text, polname, '' FROM pg_policy
            UNION ALL SELECT 'proc', n.nspname, p.proname, md5(p.prosrc) FROM pg_proc p
              JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
            UNION ALL SELECT 'type', n.nspname, t.typname, t.typtype::text FROM pg_type t
              JOIN pg_namespace n ON n.oid = t.typnamespace
              WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
            UNION ALL SELECT 'schema', nspname, coalesce(nspacl::text, ''), '' FROM pg_namespace
            UNION ALL SELECT 'extension', extname, extversion, '' FROM pg_extension
            UNION ALL SELECT 'publication', pubname, '', '' FROM pg_publication
            UNION ALL SELECT 'setting', coalesce(setrole::regrole::text, ''), array_to_string(setconfig, ','), ''
              FROM pg_db_role_setting
              WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
            ORDER BY 1, 2, 3, 4""")
        meta = (await con.fetch("SELECT to_regclass('kvctl_meta') IS NOT NULL"))[0][0]
        if meta:
            rows += await con.fetch("SELECT to_jsonb(m)::text FROM kvctl_meta m ORDER BY table_name")
        for schema, table in await con.fetch("""SELECT table_schema, table_name FROM information_schema.tables
                                          WHERE table_type = 'BASE TABLE'
                                            AND table_schema NOT IN ('pg_catalog', 'information_schema')
                                          ORDER BY 1, 2"""):
            rows += await con.fetch(f'SELECT \'rows\', \'{schema}.{table}\', count(*), md5(string_agg(t::text, \'|\' '
                             f'ORDER BY t::text)) FROM "{schema}"."{table}" t')
        return [tuple(r) for r in rows]
    finally:
        await con.close()

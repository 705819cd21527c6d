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
    """Every user-visible object of the database (relations and indexes, triggers, functions,
    schemas, constraints) and kvctl_meta's rows, in a fixed order."""
    rows = sql(url, """
        SELECT 'rel', n.nspname, c.relname, c.relkind::text FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
            AND n.nspname NOT LIKE 'pg_temp%'
        UNION ALL SELECT 'trigger', t.tgrelid::regclass::text, t.tgname, '' FROM pg_trigger t
          WHERE NOT t.tgisinternal
        UNION ALL SELECT 'proc', n.nspname, p.proname, '' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
        UNION ALL SELECT 'schema', nspname, '', '' FROM pg_namespace
        UNION ALL SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
          WHERE connamespace NOT IN (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema'))
        UNION ALL SELECT 'column', attrelid::regclass::text, attname, format_type(atttypid, atttypmod)
          FROM pg_attribute WHERE attnum > 0 AND NOT attisdropped AND attrelid IN (SELECT c.oid FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg_toast%' AND c.relkind IN ('r', 'p'))
        ORDER BY 1, 2, 3, 4""")
    meta = sql(url, "SELECT to_regclass('kvctl_meta') IS NOT NULL")[0][0]
    if meta:
        rows += sql(url, "SELECT to_jsonb(m)::text FROM kvctl_meta m ORDER BY table_name")
    return [tuple(r) for r in rows]

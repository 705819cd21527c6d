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

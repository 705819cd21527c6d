"""What a SQLite file's catalog says about its tables, for mapped tables and listings (the
statements and their reading are the kit's SQLite dialect, shared with the libsql plugin)."""

from __future__ import annotations

import sqlite3

from kvctl.plugin_kit.mapped import TableInfo, suggested_options
from kvctl.plugin_kit.mapped.sqlite_dialect import CATALOG, TABLES, table_info

__all__ = ["describe", "table_names"]


def table_names(conn: sqlite3.Connection) -> list[str]:
    """Every table and view of the file but SQLite's own, in the order they were created."""
    return [r[0].decode() if isinstance(r[0], bytes) else r[0] for r in conn.execute(TABLES)]


def describe(conn: sqlite3.Connection, name: str) -> TableInfo | None:
    """The table ``name`` (None: no such table or view)."""
    return table_info(name, [conn.execute(sql, (name,)).fetchall() for sql in CATALOG])


def mapping_suggestions(conn: sqlite3.Connection, names: list[str]) -> dict[str, str | None]:
    """The read-only mapping options of each table (None: it has no key to map it by)."""
    out: dict[str, str | None] = {}
    for name in names:
        info = describe(conn, name)
        out[name] = None if info is None else suggested_options(info)
    return out

"""Creating a table, upgrading a version-1 table to version 2, and turning the feed on or off.

All of it runs in one transaction under an advisory lock (:data:`.sql.SETUP_LOCK_ID`), so
processes opening the same new table at once, or upgrading it, do it once and never half-way.

Version 1 -> 2, in place: kvctl_meta gains the columns of :data:`.feedsql.META_COLUMNS`; the
table gets its tombstone table, a random HLC node id (0..255) recorded in kvctl_meta and, unless
``?feed=false``, its change feed.  The rows themselves are not touched.  An older kvctl refuses a
version-2 table (it would write without tombstones); until it is upgraded, its writes to a table
it had already opened are recorded by the triggers, like any other program's.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from kvctl.errors import ForeignStoreError, UsageError
from kvctl.plugin_kit import random_node

from .feedsql import (
    CAPTURE_FN_SUFFIX,
    META_COLUMNS,
    REGISTER_FN_SUFFIX,
    RENAME_FN_SUFFIX,
    SEQUENCE_SUFFIX,
    STAMP_FN_SUFFIX,
    FeedStatements,
    new_feed_id,
)
from .settings import Settings
from .sql import CHANGES_SUFFIX, REQUIRED_COLUMNS, SCHEMA_VERSION, SETUP_LOCK_ID, TOMBS_SUFFIX, Statements


@dataclass(frozen=True)
class Layout:
    """The quoted names of a table and the objects kept beside it."""

    t: str
    meta: str
    tombs: str
    changes: str
    stamp_fn: str
    capture_fn: str
    rename_fn: str
    register_fn: str
    sequence: str
    display_name: str  # the unquoted (schema.)table, as recorded in kvctl_meta

    @classmethod
    def of(cls, settings: Settings) -> Layout:
        return cls(
            t=settings.qualified_table,
            meta=settings.qualified_meta,
            tombs=settings.qualified(TOMBS_SUFFIX),
            changes=settings.qualified(CHANGES_SUFFIX),
            stamp_fn=settings.qualified(STAMP_FN_SUFFIX),
            capture_fn=settings.qualified(CAPTURE_FN_SUFFIX),
            rename_fn=settings.qualified(RENAME_FN_SUFFIX),
            register_fn=settings.qualified(REGISTER_FN_SUFFIX),
            sequence=settings.qualified(SEQUENCE_SUFFIX),
            display_name=settings.display_name,
        )

    def statements(self, node: int | None = None, feed: bool = False, tombstones: bool = True) -> Statements:
        """The table's statements; ``node`` None (not opened yet, or opened to read): reads only."""
        return Statements(self.t, self.meta, self.tombs, self.changes, node, feed, tombstones)

    def feed_statements(self) -> FeedStatements:
        return FeedStatements(self.t, self.meta, self.tombs, self.changes, self.stamp_fn, self.capture_fn,
                              self.rename_fn, self.register_fn, self.sequence)


def create_table(t: str) -> list[str]:
    # Index names are left to the server: derived names could pass the 63-byte limit.
    return [
        f"CREATE TABLE {t} (key bytea PRIMARY KEY, value bytea NOT NULL, expires_at bigint, version bigint NOT NULL)",
        f"CREATE INDEX ON {t} (version)",
        f"CREATE INDEX ON {t} (expires_at) WHERE expires_at IS NOT NULL",
    ]


def needs_setup(row: asyncpg.Record | None, wanted_feed: bool | None) -> bool:
    """Does the probe's answer call for :func:`set_up` (create, upgrade, switch the feed)?"""
    if row is None or row["schema_version"] is None:
        return True
    recorded = row["schema_version"]
    if recorded > SCHEMA_VERSION:
        return False  # refused by the caller, without touching anything
    return (recorded < SCHEMA_VERSION or row["node_id"] is None
            or (wanted_feed is not None and wanted_feed != bool(row["feed"])))


def refuse_newer(recorded: int | None, where: str, name: str) -> None:
    if recorded is not None and recorded > SCHEMA_VERSION:
        raise UsageError(
            f"{where}: table {name} has kvctl schema version {recorded}; this kvctl knows "
            f"version {SCHEMA_VERSION}", hint="upgrade kvctl",
        )


async def set_up(con: asyncpg.Connection, layout: Layout, wanted_feed: bool | None, where: str, *,
                 indexes_later: bool = False) -> list[str]:
    """Create the table or upgrade it to version 2, and put its feed in the wanted mode.

    ``wanted_feed`` None keeps a version-2 table's mode; a new or upgraded table gets a feed.
    ``indexes_later``: a table created here gets its primary key only, and the statements that
    create its other indexes are returned, for the caller to run in the same transaction after
    loading it (as pg_restore does: one sorted build each instead of an insertion per row).
    """
    later: list[str] = []
    fs = layout.feed_statements()
    name = layout.display_name
    async with con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock($1)", SETUP_LOCK_ID)
        await con.execute(fs.create_meta)
        have = {r[0] for r in await con.fetch(Statements.columns, layout.meta)}
        for column in META_COLUMNS:
            if column not in have:  # ALTER takes an exclusive lock: only when really needed
                await con.execute(fs.add_meta_column(column))
        meta = await con.fetchrow(fs.read_meta, name)
        recorded = meta["schema_version"] if meta is not None else None
        refuse_newer(recorded, where, name)
        if not await _exists(con, layout.t):
            table, *indexes = create_table(layout.t)
            await con.execute(table)
            if indexes_later:
                later = indexes
            else:
                for stmt in indexes:
                    await con.execute(stmt)
        else:
            await check_columns(con, layout.t, where, name)
        if not await _exists(con, layout.tombs):
            for stmt in fs.create_tombs:
                await con.execute(stmt)
        node = meta["node_id"] if meta is not None and meta["node_id"] is not None else random_node()
        upgraded = recorded == SCHEMA_VERSION
        had_feed = bool(upgraded and meta is not None and meta["feed"]) and await _exists(con, layout.changes)
        feed_id = meta["feed_id"] if had_feed and meta is not None else None
        want = wanted_feed if wanted_feed is not None else (had_feed if upgraded else True)
        if want and not had_feed:
            feed_id = new_feed_id()
            for stmt in fs.drop_feed + fs.create_feed(feed_id, node):  # drop: leftovers of a broken feed
                await con.execute(stmt)
        elif not want and (had_feed or await _exists(con, layout.changes)):
            for stmt in fs.drop_feed:
                await con.execute(stmt)
            feed_id = None
        await con.execute(fs.write_meta, name, SCHEMA_VERSION, node, want, feed_id)
    return later


async def _exists(con: asyncpg.Connection, qualified: str) -> bool:
    return bool(await con.fetchval("SELECT to_regclass($1) IS NOT NULL", qualified))


async def check_columns(con: asyncpg.Connection, t: str, where: str, name: str) -> None:
    """ForeignStoreError unless table ``t`` has kvctl's columns (reads pg_attribute only)."""
    columns = dict(await con.fetch(Statements.columns, t))
    wrong = {c: kind for c, kind in REQUIRED_COLUMNS.items() if columns.get(c) != kind}
    if wrong:
        have = ", ".join(f"{c} {kind}" for c, kind in columns.items())
        raise ForeignStoreError(
            f"{where}: table {name} is not a kvctl table (has {have}; needs key bytea, "
            "value bytea, expires_at bigint, version bigint)",
            hint="map it with key=COLUMNS (and value=, write=), or pick a kvctl table with ?table=NAME",
        )

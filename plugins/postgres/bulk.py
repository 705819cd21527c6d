"""The batch write paths of a PostgreSQL store: ``set_many``, ``set_newer_many`` and
``apply_many``.

A batch goes as one unnest() statement, or, when big, as COPY into a temporary table and one
merging statement; a batch whose key range holds no row yet (a new or emptied table, the next
range of a migrate) is copied straight into the table with one feed row for the whole batch
(see :mod:`.feed`).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import count
from operator import attrgetter, itemgetter

import asyncpg

from kvctl.errors import UnsupportedError, UsageError
from kvctl.hlc import NODE_BITS
from kvctl.store import (
    MAX_VERSION,
    TOMBSTONE,
    Record,
    newer,
    now_ms,
)

from .core import MAX_KEY, MAX_VALUE, PostgresCore
from .feed import bulk_marker
from .sql import APPLY_STAGE_TABLE, STAGE_TABLE
from .use import Use

# Batches of this many records or more go through COPY into a temporary table and one merge;
# smaller ones through a single unnest() statement.  Measured on loopback with 100-byte values
# (bench/results/postgres_RESULTS.md): the two are within ~10% of each other from 2,000 to 5,000 rows,
# the order varying with machine load, and COPY wins clearly from 10,000 rows.
COPY_MIN_ROWS = 5000
# ... and so does any batch this big, which keeps a single Bind message far from the server's
# 1 GiB message limit.
COPY_MIN_BYTES = 16 * 1024 * 1024
VERSION_STEP = 1 << NODE_BITS  # one tick of the HLC counter
_key, _value, _expiry, _version = (attrgetter(f) for f in ("key", "value", "expires_at_ms", "version"))
_columns = itemgetter(0, 1, 2, 3)  # a batch row's table columns (without its place in the call)


class BulkWrites(PostgresCore):
    """The batch writes (see the module docstring)."""

    async def set_many(self, records: Iterable[Record]) -> None:
        batch = records if isinstance(records, list) else list(records)
        if not batch:
            return
        self._check_batch(batch)  # every check before anything is sent: all or nothing
        latest = dict(zip(map(_key, batch), batch, strict=True))  # the last write of a key in a batch wins
        if len(latest) == 1:
            (rec,) = latest.values()
            await self._write_one(rec.key, rec.value, rec.expires_at_ms, rec.version)
            return
        await self._write_batch(list(latest.values()), newer=False)

    async def set_newer_many(self, records: Iterable[Record]) -> tuple[int, int]:
        """``set_many`` of the records whose key this table does not hold live at an equal or
        higher version (a record without a version is always written); the comparison is made
        on the server, in the same statement as the write.  Returns how many records were
        written and their key and value bytes.  The last record of a key in the batch stands
        for the key."""
        batch = records if isinstance(records, list) else list(records)
        if not batch:
            return 0, 0
        self._check_batch(batch)
        return await self._write_batch(list(dict(zip(map(_key, batch), batch, strict=True)).values()), newer=True)

    async def _write_batch(self, calls: list[Record], *, newer: bool) -> tuple[int, int]:
        """Write distinct keys; how many were written and their bytes (see set_newer_many)."""
        # Versions in call order (the feed lists the batch in that order), rows in key order:
        # concurrent batches then lock rows in one order and cannot deadlock.  Rows are built
        # and sorted by C-level passes (zip/map/sort): a bulk load spends most of its client
        # time here otherwise.
        async with Use(self, "set_many", writing=True) as con:
            given = list(map(_version, calls))
            versions = self._assign_versions(given)  # after connecting: opening seeds the clock
            rows = sorted(zip(map(_key, calls), map(_value, calls), map(_expiry, calls), versions, count(1)))
            await self._purge(con)
            unversioned = given.count(None)
            if unversioned in (0, len(given)):  # the usual case: all given, or all assigned here
                parts = [(unversioned > 0, rows)]
            else:
                keep = {r.key for r in calls if r.version is not None}
                parts = [(False, [row for row in rows if row[0] in keep]),
                         (True, [row for row in rows if row[0] not in keep])]
            if len(parts) == 1:  # the usual case: one statement
                written, size = await self._upsert_rows(con, *parts[0], newer=newer)
            else:  # given and assigned versions mixed: two statements, one transaction
                written = size = 0
                async with con.transaction():
                    for assigned, part in parts:
                        n, b = await self._upsert_rows(con, assigned, part, newer=newer)
                        written, size = written + n, size + b
            self._written += written
            return written, size

    async def _upsert_rows(self, con: asyncpg.Connection, assigned: bool,
                           rows: list[tuple[bytes, bytes, int | None, int, int]], *,
                           newer: bool) -> tuple[int, int]:
        """One statement (big batches: COPY and one statement) for rows all with given or all
        with assigned versions; how many were written and their bytes."""
        big = len(rows) >= COPY_MIN_ROWS or sum(len(r[1]) for r in rows) >= COPY_MIN_BYTES
        if big and await self._load_directly(con, assigned, rows):
            return len(rows), sum(len(r[0]) + len(r[1]) for r in rows)
        newer = newer and not assigned  # a version assigned here is above every one the table holds
        text = self._sql.upsert_batch(assigned=assigned, staged=big, newer=newer)
        now = [now_ms()] if newer else []
        if big:
            # COPY (binary) into a temporary table, then one merging statement, in one transaction.
            async with con.transaction():
                await con.execute(self._sql.create_stage)
                await con.copy_records_to_table(STAGE_TABLE, records=rows, schema_name="pg_temp")
                written, size, top = await con.fetchrow(text, *now)
        else:
            stmt = await self._stmt(con, text)
            written, size, top = await stmt.fetchrow(*zip(*rows, strict=True), *now)
        self._hlc.observe(top)
        return int(written), int(size)

    async def _load_directly(self, con: asyncpg.Connection, assigned: bool,
                             rows: list[tuple[bytes, bytes, int | None, int, int]]) -> bool:
        """COPY a batch (distinct keys, in key order) straight into the table when its key range
        holds no row yet -- a new or emptied table, the next range of a migrate -- with one feed
        row for the whole batch (see feed.bulk_marker).  False, having written nothing, when the
        range is in use: the caller then merges through the staging table.

        Straight rows are exactly what the merge would write: no key had a row to update, and a
        version this store assigns needs raising only above a tombstone, which the range must not
        hold either.  A key another session writes meanwhile makes the COPY fail on the primary
        key, or its tombstone shows in the check after it; the batch then goes the merge's way.
        """
        sql, first, last = self._sql, rows[0][0], rows[-1][0]
        row_there, tomb_there = await con.fetchrow(sql.range_taken, first, last)
        if row_there or (assigned and tomb_there):
            return False
        versions = [r[3] for r in rows]
        try:
            async with con.transaction():
                await con.copy_records_to_table(
                    self._settings.table, schema_name=self._settings.schema,
                    columns=["key", "value", "expires_at", "version"], records=map(_columns, rows))
                if assigned and await con.fetchval(sql.tombs_in_range, first, last):
                    raise _RangeTaken
                if sql.feed:
                    await con.execute(sql.record_bulk, *bulk_marker(first, last, min(versions), max(versions)))
        except (_RangeTaken, asyncpg.UniqueViolationError):
            return False
        self._hlc.observe(max(versions))
        return True

    def _check_batch(self, batch: list[Record]) -> None:
        """Limits and version ranges of a whole batch, at C speed unless something is wrong."""
        if max(map(len, (r.key for r in batch))) > MAX_KEY or max(map(len, (r.value for r in batch))) > MAX_VALUE:
            for rec in batch:
                self._check(rec.key, rec.value)  # raises LimitError naming the first culprit
        given = [r.version for r in batch if r.version is not None]
        if given and (min(given) < 0 or max(given) > MAX_VERSION):
            bad = next(r for r in batch if r.version is not None and not 0 <= r.version <= MAX_VERSION)
            raise UsageError(f"{self._where}: version {bad.version} of key {bad.key[:40]!r} is "
                             "outside 0..2**63-1 (a bigint column)")

    def _assign_versions(self, given: list[int | None]) -> list[int]:
        """Keep given versions (observed into the clock); give the others consecutive HLC ticks."""
        clock = self._hlc
        known = [v for v in given if v is not None]
        if known:
            clock.observe(max(known))
        missing = len(given) - len(known)
        if not missing:
            return known
        first = clock.now()
        clock.observe(first + (missing - 1) * VERSION_STEP)  # the range is taken: later now() is above it
        fresh = range(first, first + missing * VERSION_STEP, VERSION_STEP)
        if not known:
            return list(fresh)
        ticks = iter(fresh)
        return [next(ticks) if v is None else v for v in given]

    async def apply_many(self, records: Iterable[Record]) -> int:
        """Last-writer-wins apply (see kvctl.store): the replication write path.

        One statement (or COPY plus one statement, in one transaction) per call: every change is
        compared with the key's row or tombstone on the server and the winners written, with
        their tombstones and feed entries.  Returns how many changes took effect.
        """
        latest: dict[bytes, Record] = {}
        for rec in records:
            if rec.kind == TOMBSTONE:
                if rec.value or rec.expires_at_ms is not None:
                    rec = Record(rec.key, b"", None, rec.version, TOMBSTONE)
            elif rec.kind is not None:
                raise UnsupportedError(f"the {self.name} backend holds bytes values only, not a {rec.kind} "
                                       f"({rec.key[:40]!r})")
            if newer(rec, latest.get(rec.key)):  # several changes of a key: only the newest can win
                latest[rec.key] = rec
        if not latest:
            return 0
        batch = list(latest.values())
        self._check_batch(batch)  # every check before anything is sent: all or nothing
        async with Use(self, "apply_many", writing=True) as con:
            versions = self._assign_versions([r.version for r in batch])
            rows = [(r.key, b"" if r.kind == TOMBSTONE else r.value,
                     None if r.kind == TOMBSTONE else r.expires_at_ms, v, r.kind == TOMBSTONE, r.version is None, n)
                    for n, (r, v) in enumerate(zip(batch, versions, strict=True), 1)]
            await self._purge(con)
            big = len(rows) >= COPY_MIN_ROWS or sum(len(r[1]) for r in rows) >= COPY_MIN_BYTES
            if big:
                async with con.transaction():
                    await con.execute(self._sql.create_apply_stage)
                    await con.copy_records_to_table(APPLY_STAGE_TABLE, records=rows, schema_name="pg_temp")
                    applied = await con.fetchval(self._sql.apply(staged=True))
            else:
                stmt = await self._stmt(con, self._sql.apply(staged=False))
                applied = await stmt.fetchval(*zip(*rows, strict=True))
            self._written += int(applied)
            return int(applied)


class _RangeTaken(Exception):
    """A direct load found its key range in use after all: roll it back and merge instead."""


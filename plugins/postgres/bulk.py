"""The batch write paths of a PostgreSQL store: ``set_many``, ``set_newer_many`` and
``apply_many``.

A batch goes as one unnest() statement, or, when big, as COPY into a temporary table and one
merging statement; a batch of a thousand keys or more none of which has a row yet (a new or
emptied table, the rest of a migrate in whatever order the source reads) is copied straight into
the table with one feed row for the whole batch (see :mod:`.feed`).  Inside an atomic load into
a table the load created, batches of rising keys go down one COPY left open across them, with one
feed row for the whole load (see :mod:`.stream`).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from itertools import compress, count, islice
from operator import attrgetter, lt
from typing import Any, cast

import asyncpg

from kvctl.errors import UnsupportedError, UsageError
from kvctl.hlc import NODE_BITS
from kvctl.plugin_kit import bulk_marker, show_key
from kvctl.store import (
    MAX_VERSION,
    TOMBSTONE,
    Record,
    StoreURL,
    newer,
    now_ms,
)

from .core import MAX_KEY, MAX_VALUE, PostgresCore
from .settings import Settings
from .sql import APPLY_STAGE_TABLE, STAGE_TABLE, Statements
from .stream import CopyStream, copy_rows
from .use import Use

# Batches of this many records or more go through COPY into a temporary table and one merge;
# smaller ones through a single unnest() statement.  Measured on loopback with 100-byte values
# (bench/results/postgres_RESULTS.md): the two are within ~10% of each other from 2,000 to 5,000 rows,
# the order varying with machine load, and COPY wins clearly from 10,000 rows.
COPY_MIN_ROWS = 5000
# ... and so does any batch this big, which keeps a single Bind message far from the server's
# 1 GiB message limit.
COPY_MIN_BYTES = 16 * 1024 * 1024
# Batches of this many records or more are first tried straight into the table (_load_directly),
# whatever the merge they would take otherwise: a direct COPY writes one feed row for the batch
# instead of one per record.  Well under the usual batch size, so a source whose pages come a
# little short of it (a cluster read slot by slot: pages of whole slots) is not cut off from it.
DIRECT_MIN_ROWS = 1000
PROBE_SAMPLE = 16  # keys of a batch probed with its range, before all of them (see _load_directly)
VERSION_STEP = 1 << NODE_BITS  # one tick of the HLC counter
_key, _value, _expiry, _version = (attrgetter(f) for f in ("key", "value", "expires_at_ms", "version"))


class BulkWrites(PostgresCore):
    """The batch writes (see the module docstring)."""

    # Whether the last big batch went straight into the table: the next one then skips the probe
    # of its key range (one round trip) and relies on the checks inside its transaction -- the
    # primary key and, for assigned versions, the tombstones -- until one finds the range in use.
    _direct_streak = False
    _staged: dict[str, asyncpg.Connection]  # staging DDL -> the connection it was run on (see _stage)

    def __init__(self, url: StoreURL, settings: Settings) -> None:
        super().__init__(url, settings)
        self._staged = {}

    async def set_many(self, records: Iterable[Record]) -> None:
        batch = records if isinstance(records, list) else list(records)
        if not batch:
            return
        cols = _Columns.of(batch)
        self._check_batch(batch, cols)  # every check before anything is sent: all or nothing
        cols = cols.distinct(batch)
        if len(cols.keys) == 1:
            rec = batch[-1]
            await self._write_one(rec.key, rec.value, rec.expires_at_ms, rec.version)
            return
        await self._write_batch(cols, newer=False)

    async def set_newer_many(self, records: Iterable[Record]) -> tuple[int, int]:
        """``set_many`` of the records whose key this table does not hold live at an equal or
        higher version (a record without a version is always written); the comparison is made
        on the server, in the same statement as the write.  Returns how many records were
        written and their key and value bytes.  The last record of a key in the batch stands
        for the key."""
        batch = records if isinstance(records, list) else list(records)
        if not batch:
            return 0, 0
        cols = _Columns.of(batch)
        self._check_batch(batch, cols)
        return await self._write_batch(cols.distinct(batch), newer=True)

    async def _write_batch(self, cols: _Columns, *, newer: bool) -> tuple[int, int]:
        """Write distinct keys; how many were written and their bytes (see set_newer_many)."""
        async with Use(self, "set_many", writing=True, streaming=True) as con:
            given = cols.versions
            unversioned = given.count(None)
            versions = self._assign_versions(given)  # after connecting: opening seeds the clock
            await self._purge(con)
            if unversioned in (0, len(given)):  # the usual case: all given, or all assigned here
                return await self._upsert_rows(con, unversioned > 0, cols.with_versions(versions), newer=newer)
            # given and assigned versions mixed: two statements, one transaction
            keep = [v is not None for v in given]
            parts = [(assigned, cols.with_versions(versions).only(keep, not assigned)) for assigned in (False, True)]
            written = size = 0
            await self._end_stream(con)
            async with con.transaction():
                for assigned, part in parts:
                    n, b = await self._upsert_rows(con, assigned, part, newer=newer)
                    written, size = written + n, size + b
            return written, size

    async def _upsert_rows(self, con: asyncpg.Connection, assigned: bool, cols: _Columns, *,
                           newer: bool) -> tuple[int, int]:
        """One statement (big batches: COPY and one statement) for rows all with given or all
        with assigned versions; how many were written and their bytes."""
        value_bytes = sum(map(len, cols.values))
        if self._streamable and await self._stream_batch(con, cols):
            return len(cols.keys), sum(map(len, cols.keys)) + value_bytes
        await self._end_stream(con)  # any other write ends it
        big = len(cols.keys) >= COPY_MIN_ROWS or value_bytes >= COPY_MIN_BYTES
        if (big or len(cols.keys) >= DIRECT_MIN_ROWS) and await self._load_directly(con, assigned, cols):
            # The purge keeps pace with what a write leaves it: one feed row for the whole load,
            # and the rows that will expire.
            self._written += 1 + len(cols.expiries) - cols.expiries.count(None)
            return len(cols.keys), sum(map(len, cols.keys)) + value_bytes
        newer = newer and not assigned  # a version assigned here is above every one the table holds
        text = self._sql.upsert_batch(assigned=assigned, staged=big, newer=newer)
        now = [now_ms()] if newer else []
        # Rows in key order (concurrent batches then lock rows in one order and cannot
        # deadlock), each with its place in the call (the feed lists the batch in that order).
        rows = sorted(zip(cols.keys, cols.values, cols.expiries, cols.versions, count(1)))
        if big:
            # COPY (binary) into a temporary table, then one merging statement, in one transaction.
            await self._stage(con, self._sql.create_stage, STAGE_TABLE)
            async with con.transaction():
                await con.copy_records_to_table(STAGE_TABLE, records=rows, schema_name="pg_temp")
                written, size, top = await con.fetchrow(text, *now)
        else:
            stmt = await self._stmt(con, text)
            written, size, top = await stmt.fetchrow(*zip(*rows, strict=True), *now)
        self._hlc.observe(top)
        self._written += int(written)
        return int(written), int(size)

    async def _stream_batch(self, con: asyncpg.Connection, cols: _Columns) -> bool:
        """Send a batch (distinct keys) down the load's open COPY (see .stream), opening it on the
        first batch; False, having sent nothing, when its keys do not all lie above every key
        sent before, or the table turns out to hold something: the caller ends the stream and
        writes the batch its usual way.

        Nothing can collide: no other session sees a table made inside this load's transaction,
        every other use of the connection ends the stream for good, and the table (and its
        tombstones, which may be older than it) held nothing when the stream began -- so a
        version assigned here has nothing to be raised above either.
        """
        rows = (cols.keys, cols.values, cols.expiries, cols.versions)
        if not cols.ascending():  # key order: the primary key's B-tree is filled from left to right
            rows = tuple(map(list, zip(*sorted(zip(*rows, strict=True)), strict=True)))  # type: ignore[assignment]
        span = self._stream_span
        if span is not None and rows[0][0] <= span[1]:
            return False
        try:
            chunk = copy_rows(*rows)
        except struct.error:  # a number beyond bigint: the usual way reports it
            return False
        if self._stream is None:
            if await con.fetchval(self._sql.holds_anything):
                self._streamable = False
                return False
            self._stream = CopyStream(con, self._settings.table, self._settings.schema)
        await self._stream.send(chunk)
        low, high = min(cols.versions), max(cols.versions)
        self._stream_span = (rows[0][0], rows[0][-1], low, high) if span is None else (
            span[0], rows[0][-1], min(span[2], low), max(span[3], high))
        self._hlc.observe(high)
        return True

    async def _load_directly(self, con: asyncpg.Connection, assigned: bool, cols: _Columns) -> bool:
        """COPY a batch (distinct keys) straight into the table when none of its keys has a row
        yet -- a new or emptied table, the rest of a migrate -- with one feed row for the whole
        batch (see kvctl.plugin_kit.bulkfeed).  False, having written nothing, when one has (or,
        for versions assigned here, when a tombstone lies in the batch's key range): the caller
        then merges.

        Straight rows are exactly what the merge would write: no key had a row to update, and a
        version this store assigns needs raising only above a tombstone, which the range must not
        hold either.  A key another session writes meanwhile makes the COPY fail on the primary
        key, or its tombstone shows in the check after it; the batch then goes the merge's way.
        The batch's keys (and, for assigned versions, its range's tombstones) are probed before
        the COPY only while loads have not been going straight in (see _direct_streak): the
        probe spares a COPY bound to fail, the checks inside the transaction decide.
        """
        sql = self._sql
        keys = cols.keys
        first, last = min(keys), max(keys)
        if not self._direct_streak:
            # A range holding rows is the rule for a source read in no key order (SCAN, a
            # cluster's slots), so it decides nothing alone: a few of the batch's keys tell a
            # table that holds them (an upsert) at once, and only then are all of them asked.
            sample = keys[:: max(1, len(keys) // PROBE_SAMPLE)][:PROBE_SAMPLE]
            in_range, row_there, tomb_there = await con.fetchrow(sql.range_taken, first, last, sample)
            if row_there or (assigned and tomb_there):
                return False
            if in_range and await con.fetchval(sql.keys_taken, keys):
                return False
        versions = cols.versions
        low, high = min(versions), max(versions)
        rows = zip(keys, cols.values, cols.expiries, versions, strict=True)
        # key order: the primary key's B-tree is filled from left to right
        copy = partial(con.copy_records_to_table, self._settings.table, schema_name=self._settings.schema,
                       columns=["key", "value", "expires_at", "version"],
                       records=rows if cols.ascending() else sorted(rows))
        try:
            if not assigned and not con.is_in_transaction():
                await self._copy_given(con, copy, bulk_marker(first, last, low, high))
            else:
                async with con.transaction():
                    await copy()
                    if sql.feed:
                        args = bulk_marker(first, last, low, high) + ((first, last) if assigned else ())
                        if await con.fetchval(_record_bulk(sql, assigned), *args) is None:
                            raise _RangeTaken
                    elif assigned and await con.fetchval(sql.tombs_in_range, first, last):
                        raise _RangeTaken
        except (_RangeTaken, asyncpg.UniqueViolationError):
            self._direct_streak = False
            return False
        self._direct_streak = True
        self._hlc.observe(high)
        return True

    async def _copy_given(self, con: asyncpg.Connection, copy: Callable[[], Awaitable[object]],
                          marker: tuple[bytes, bytes]) -> None:
        """A direct load of given versions, no transaction open: with a feed, its row is sent with
        BEGIN and the COPY is followed by COMMIT (three round trips where a transaction block
        and a statement for the feed row take four); without one, the COPY is the transaction."""
        if not self._sql.feed:
            await copy()
            return
        key, value = marker
        try:
            # literals (hex digits only), so that the row rides with BEGIN in one simple query
            await con.execute(f"BEGIN; INSERT INTO {self._sql.changes} (key, value, version, deleted) "
                              f"VALUES (decode('{key.hex()}', 'hex'), decode('{value.hex()}', 'hex'), 0, true)")
            await copy()
        except Exception:
            if not con.is_closed():
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await con.execute("ROLLBACK")
            raise
        await con.execute("COMMIT")

    async def _stage(self, con: asyncpg.Connection, create: str, table: str) -> None:
        """Make the staging table ``create`` makes, once per connection, emptied at every commit:
        made anew in every transaction (ON COMMIT DROP), it cost a round trip per batch, and one
        more for asyncpg to describe it again before each COPY.  Inside a transaction that is
        still open (an atomic load, the first part of a mixed batch) it holds the rows of the
        batches staged before: emptied here, or the merge would apply them again."""
        made = self._staged.get(create) is con
        if not made:
            lasting = (create.replace("CREATE TEMP TABLE", "CREATE TEMP TABLE IF NOT EXISTS", 1)
                       .replace("ON COMMIT DROP", "ON COMMIT DELETE ROWS"))
            assert "IF NOT EXISTS" in lasting and "DELETE ROWS" in lasting, create  # a table kept across commits
            await con.execute(lasting)
            self._staged[create] = con
        elif con.is_in_transaction():
            await con.execute(f"TRUNCATE pg_temp.{table}")

    def _check_batch(self, batch: list[Record], cols: _Columns | None = None) -> None:
        """Limits and version ranges of a whole batch, at C speed unless something is wrong."""
        cols = cols or _Columns.of(batch)
        if max(map(len, cols.keys)) > MAX_KEY or max(map(len, cols.values)) > MAX_VALUE:
            for rec in batch:
                self._check(rec.key, rec.value)  # raises LimitError naming the first culprit
        unversioned = cols.versions.count(None)
        if unversioned == len(batch):
            return
        given = [v for v in cols.versions if v is not None] if unversioned else cols.versions
        if min(given) < 0 or max(given) > MAX_VERSION:
            bad = next(r for r in batch if r.version is not None and not 0 <= r.version <= MAX_VERSION)
            raise UsageError(f"{self._where}: version {bad.version} of key {show_key(bad.key)} is "
                             "outside 0..2**63-1 (a bigint column)")

    def _assign_versions(self, given: list[int | None]) -> list[int]:
        """Keep given versions (observed into the clock); give the others consecutive HLC ticks."""
        clock = self._hlc
        missing = given.count(None)
        if not missing:  # the usual case of given versions: no pass in Python
            every = cast(list[int], given)
            clock.observe(max(every))
            return every
        known = [v for v in given if v is not None]
        if known:
            clock.observe(max(known))
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
                                       f"({show_key(rec.key)})")
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
                await self._stage(con, self._sql.create_apply_stage, APPLY_STAGE_TABLE)
                async with con.transaction():
                    await con.copy_records_to_table(APPLY_STAGE_TABLE, records=rows, schema_name="pg_temp")
                    applied = await con.fetchval(self._sql.apply(staged=True))
            else:
                stmt = await self._stmt(con, self._sql.apply(staged=False))
                applied = await stmt.fetchval(*zip(*rows, strict=True))
            self._written += int(applied)
            return int(applied)


class _Columns:
    """A batch as columns, in call order: built by C-level passes (map, set, compress), which a
    bulk load spends most of its client time on otherwise."""

    __slots__ = ("expiries", "keys", "values", "versions")

    def __init__(self, keys: list[bytes], values: list[bytes], expiries: list[int | None],
                 versions: list[Any]) -> None:
        self.keys, self.values, self.expiries, self.versions = keys, values, expiries, versions

    @classmethod
    def of(cls, batch: list[Record]) -> _Columns:
        return cls(list(map(_key, batch)), list(map(_value, batch)), list(map(_expiry, batch)),
                   list(map(_version, batch)))

    def distinct(self, batch: list[Record]) -> _Columns:
        """One entry per key: the last record of a key written twice in the batch stands for it."""
        if len(set(self.keys)) == len(self.keys):
            return self
        return _Columns.of(list(dict(zip(self.keys, batch, strict=True)).values()))

    def with_versions(self, versions: list[int]) -> _Columns:
        return _Columns(self.keys, self.values, self.expiries, versions)

    def only(self, mask: list[bool], want: bool) -> _Columns:
        """The entries whose ``mask`` is ``want``."""
        pick = mask if want else [not m for m in mask]
        return _Columns(*(list(compress(col, pick)) for col in (self.keys, self.values, self.expiries,
                                                                   self.versions)))

    def ascending(self) -> bool:
        keys = self.keys
        return all(map(lt, keys, islice(keys, 1, None)))


def _record_bulk(sql: Statements, assigned: bool) -> str:
    """The feed row of a bulk load ($1, $2: see kvctl.plugin_kit.bulkfeed), returning 1; for versions
    assigned here only while the load's key range $3..$4 holds no tombstone (none returned
    otherwise: the load must merge instead).  One round trip for the check and the row."""
    if not assigned:
        return sql.record_bulk + " RETURNING 1"
    return (f"INSERT INTO {sql.changes} (key, value, version, deleted) SELECT $1, $2, 0, true "
            f"WHERE NOT EXISTS (SELECT 1 FROM {sql.tombs} WHERE key >= $3 AND key <= $4) RETURNING 1")


class _RangeTaken(Exception):
    """A direct load found its key range in use after all: roll it back and merge instead."""


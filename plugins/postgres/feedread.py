"""Reading a PostgreSQL table's change feed: the cursor, the pages of changes, and the rows of
a bulk load recorded as one feed row (see :mod:`.feed`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from kvctl.errors import FeedGapError
from kvctl.plugin_kit import BulkRows, page_size, record_of
from kvctl.store import TOMBSTONE, Page, Record

from .core import PostgresCore
from .feed import make_cursor, parse_cursor
from .feedsql import horizon, lock_class
from .use import Use


class FeedReads(PostgresCore):
    """The change-feed reads (see the module docstring)."""

    def _check_feed(self, head: Any, cursor: str | None, feed_id: str | None, seq: int) -> str:
        """The feed id, after checking that the feed still covers position ``seq``."""
        name = self._layout.display_name
        if head is None:
            raise FeedGapError(f"{self._where}: table {name} has no kvctl metadata (dropped?)")
        if not head["feed"]:
            raise FeedGapError(f"{self._where}: table {name} has no change feed",
                               hint="open it once with ?feed=true to turn the feed on")
        if feed_id is not None and feed_id != head["feed_id"]:
            raise FeedGapError(f"{self._where}: cursor {cursor} is not of this table's change feed "
                               "(another table's, or from before the feed was turned off and on)")
        if seq < int(head["feed_floor_seq"]):
            raise FeedGapError(f"{self._where}: the change feed of {name} was purged past cursor {cursor} "
                               "(see ?feed_retention=)")
        return str(head["feed_id"])

    async def _horizon(self) -> tuple[Any, int | None]:
        """The feed's state and the last seq every writer has finished with (see :mod:`.feedsql`):
        three statements, in this order, the rows then being read in a fourth."""
        fs = self._feed_sql
        async with Use(self, "read the change feed") as con:  # opened first: it tells which query reads the feed
            rows = await con.fetch(fs.state(sequence_readable=self._sequence_readable), self._layout.display_name)
        head = rows[0] if rows else None
        if head is None or not head["feed"] or head[4]:  # no feed, or a standby (see .feedsql)
            return head, None
        open_writers = await self._fetch(fs.registrations, "read the change feed",
                                         lock_class(head["feed_id"]) % (1 << 32))
        return head, horizon(int(head[3]), [int(r[0]) for r in open_writers])

    async def feed_cursor(self) -> str:
        """The position after every change of every transaction that has ended.

        Without a feed to read (none, or a standby), a cursor that ``changes()`` reports as a gap.
        """
        head, last = await self._horizon()
        if head is None or last is None:
            return make_cursor(None, 0)
        return make_cursor(head["feed_id"], last)

    async def changes(self, cursor: str | None, *, batch_size: int = 1000) -> AsyncIterator[Page]:
        """Every change after ``cursor``, a page per query (see :mod:`.feedsql` for the order)."""
        feed_id: str | None = None
        seq = 0
        if cursor is not None:
            feed_id, seq = parse_cursor(cursor, self._where)
        batch_size = page_size(batch_size)
        name = self._layout.display_name
        head, last = await self._horizon()
        feed_id = self._check_feed(head, cursor, feed_id, seq)
        if last is None:  # a feed, but on a standby
            raise FeedGapError(f"{self._where}: this server is a standby; the change feed of {name} "
                               "can only be read from the primary", hint="point the sync source at the primary")
        if seq > int(head[3]):  # the sequence went back: its table was emptied with RESTART IDENTITY
            raise FeedGapError(f"{self._where}: cursor {cursor} is past the end of the change feed of {name}")
        while seq < last:
            rows = await self._fetch(self._feed_sql.page, "read the change feed", name, seq, last, batch_size)
            feed_id = self._check_feed(rows[0] if rows else None, cursor, feed_id, seq)
            records: list[Record] = []
            bulk = None
            for row in rows:
                if row["seq"] is None:
                    break
                if row["deleted"]:
                    # only a bulk load's row carries a value (served on a page of its own); one that is
                    # not a marker this kvctl reads is refused there, never applied as a tombstone
                    if row["value"] is not None:
                        bulk = row
                        break
                    records.append(Record(row["key"], b"", None, row["version"], TOMBSTONE))
                else:
                    records.append(record_of(row["key"], row["value"], row["expires_at"], row["version"]))
            if records:
                seq = int(rows[len(records) - 1]["seq"])
                yield Page(records, make_cursor(feed_id, seq))
                if bulk is None and len(records) < batch_size:
                    return
                continue
            if bulk is None:
                return
            async for loaded, done in self._bulk_load(bulk["key"], bulk["value"], batch_size):
                # Pages before a load's last resume at the load's start: served again, they change
                # nothing (last writer wins), and the pages stay bounded whatever the load's size.
                yield Page(loaded, make_cursor(feed_id, int(bulk["seq"]) if done else seq))
            seq = int(bulk["seq"])

    async def _bulk_load(self, key: bytes, marker: bytes, batch_size: int) -> AsyncIterator[tuple[list[Record], bool]]:
        """The rows of a bulk load's feed row (see :class:`kvctl.plugin_kit.BulkRows`), a page at a
        time, each with whether it is the last."""
        walk = BulkRows(key, marker, batch_size)
        while not walk.done:
            rows = await self._fetch(self._sql.bulk_rows(first=walk.first), "read the change feed", *walk.params)
            records, last = walk.page(rows)
            if records:
                yield records, last

"""The postgres backend's schema version 2: change feed, tombstones, apply_many, upgrade from v1.

On the real server started by tests/services.sh.  Each test uses its own tables (names with the
pid and a random suffix, dropped at the end).  Writes "by other programs" are plain SQL through a
separate asyncpg connection (and once through the psql binary), never through kvctl.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from kvctl_plugins.postgres.feedsql import horizon
from kvctl_plugins.postgres.settings import derived_name, quote_ident

from kvctl.errors import FeedGapError, LimitError, UsageError
from kvctl.hlc import make_version, physical_ms
from kvctl.store import TOMBSTONE, Record, Store, now_ms
from kvctl.testing import StoreConformance, open_sync
from tests.backends.postgres.support import sql

pytestmark = pytest.mark.server

PREFIX = f"kvctl_f{os.getpid()}_{uuid.uuid4().hex[:6]}"
HOUR_MS = 3_600_000


def _run(coro):
    return asyncio.run(coro)


def new_table() -> str:
    return f"{PREFIX}_{uuid.uuid4().hex[:8]}"


def table_url(base: str, table: str, **options: str) -> str:
    extra = "".join(f"&{k}={v}" for k, v in options.items())
    return f"{base}?table={table}{extra}"


@pytest.fixture
def table() -> str:
    return new_table()


@pytest.fixture
def store(pg_url: str, table: str) -> Iterator[Store]:
    s = open_sync(table_url(pg_url, table))
    s.clear()
    yield s
    s.close()


def feed(store: Store, cursor: str | None, batch_size: int = 1000) -> list[Record]:
    return [r for p in store.changes(cursor, batch_size=batch_size) for r in p.records]  # type: ignore[attr-defined]


def summary(changes: list[Record]) -> list[tuple[bytes, str | None, bytes]]:
    return [(r.key, r.kind, r.value) for r in changes]


def versions(changes: list[Record]) -> list[int]:
    out = [r.version for r in changes]
    assert all(v is not None for v in out)
    return out  # type: ignore[return-value]


def node_of(store: Store) -> int:
    return store.inner.node_id  # type: ignore[attr-defined]


def purge(store: Store) -> dict[str, int]:
    return store._run(store.inner.purge())  # type: ignore[attr-defined]


class TestPostgresWithoutFeedConformance(StoreConformance):
    """?feed=false: no change feed (its tests skip), apply_many and tombstones still work."""

    @pytest.fixture
    def store_url(self, pg_url: str) -> str:
        return table_url(pg_url, f"{PREFIX}_nofeed", feed="false")


# == other programs' writes ===================================================================
def test_plain_sql_writes_are_in_the_feed_with_versions(store: Store, pg_url: str, table: str) -> None:
    t = quote_ident(table)
    store.set(b"kept", b"by kvctl")
    start = store.feed_cursor()  # type: ignore[attr-defined]
    before = now_ms()
    sql(pg_url,
        f"INSERT INTO {t} (key, value) VALUES ('\\x01', 'one'), ('\\x02', 'two')",  # no version
        f"UPDATE {t} SET value = 'ONE' WHERE key = '\\x01'",  # version left as it was
        (f"INSERT INTO {t} (key, value, version) VALUES ('\\x03', 'given', $1)", (12345,)),
        f"INSERT INTO {t} (key, value) VALUES ('\\x02', 'upsert') "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        f"DELETE FROM {t} WHERE key = '\\x03'",
        f"UPDATE {t} SET key = '\\x04' WHERE key = '\\x02'")  # a renamed key: delete + insert
    changes = feed(store, start)
    assert summary(changes) == [
        (b"\x01", None, b"one"), (b"\x02", None, b"two"),
        (b"\x01", None, b"ONE"),
        (b"\x03", None, b"given"),
        (b"\x02", None, b"upsert"),
        (b"\x03", TOMBSTONE, b""),
        (b"\x02", TOMBSTONE, b""), (b"\x04", None, b"upsert"),
    ]
    by_change = versions(changes)
    assert by_change[3] == 12345  # a version given by the writer is kept
    node = node_of(store)
    for version in by_change[:3] + by_change[4:]:
        assert version & 0xFF == node  # kvctl.hlc's layout, this table's node
        assert before - 1000 <= physical_ms(version) <= now_ms() + 1000  # the server's clock, in ms
    assert by_change[2] > by_change[0]  # an update without a version gets a newer one
    assert by_change[4] > by_change[1]
    assert by_change[5] > 12345  # a tombstone is newer than what it deleted
    # The table agrees with the feed, and kvctl reads the rows written by SQL.
    got = store.get_many([b"\x01", b"\x02", b"\x03", b"\x04"])
    assert [g and (g.value, g.version) for g in got] == [(b"ONE", by_change[2]), None, None, (b"upsert", by_change[7])]
    assert store.get(b"kept").value == b"by kvctl"  # type: ignore[union-attr]


def test_truncate_by_another_program_lists_every_key_deleted(store: Store, pg_url: str, table: str) -> None:
    store.set_many([Record(b"a", b"1"), Record(b"b", b"2")])
    start = store.feed_cursor()  # type: ignore[attr-defined]
    sql(pg_url, f"TRUNCATE {quote_ident(table)}")
    assert sorted(summary(feed(store, start))) == [(b"a", TOMBSTONE, b""), (b"b", TOMBSTONE, b"")]
    # ... and keeps tombstones: a stale copy arriving by replication does not come back.
    old = store.get_many([b"a"])  # gone
    assert old == [None]
    assert store.apply_many([Record(b"a", b"stale", None, 1)]) == 0  # type: ignore[attr-defined]


def test_psql_writes_are_in_the_feed(store: Store, pg_url: str, table: str) -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql is not installed (tests/services.sh installs the PostgreSQL client)")
    start = store.feed_cursor()  # type: ignore[attr-defined]
    t = quote_ident(table)
    script = (f"INSERT INTO {t} (key, value) VALUES (convert_to('from-psql', 'UTF8'), 'v1');\n"
              f"UPDATE {t} SET value = 'v2' WHERE key = convert_to('from-psql', 'UTF8');\n"
              f"DELETE FROM {t} WHERE key = convert_to('from-psql', 'UTF8');\n")
    out = subprocess.run([psql, pg_url, "-v", "ON_ERROR_STOP=1", "-q"], input=script, text=True,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    changes = feed(store, start)
    assert summary(changes) == [(b"from-psql", None, b"v1"), (b"from-psql", None, b"v2"),
                                (b"from-psql", TOMBSTONE, b"")]
    got = versions(changes)
    assert got == sorted(got) and len(set(got)) == 3


def test_kvctl_writes_are_listed_once(store: Store, pg_url: str, table: str) -> None:
    start = store.feed_cursor()  # type: ignore[attr-defined]
    store.set(b"k", b"v")
    store.set_many([Record(b"k", b"w"), Record(b"j", b"x")])
    store.delete_many([b"k", b"j", b"never-there"])
    assert summary(feed(store, start)) == [(b"k", None, b"v"), (b"k", None, b"w"), (b"j", None, b"x"),
                                           (b"k", TOMBSTONE, b""), (b"j", TOMBSTONE, b"")]
    rows = sql(pg_url, f"SELECT count(*) FROM {quote_ident(derived_name(table, '__changes'))}")
    assert rows[0][0] == 5


def test_a_write_after_a_future_version_still_wins(store: Store, pg_url: str, table: str) -> None:
    # Another writer whose clock runs an hour ahead: kvctl's next write of that key (and of a key
    # that writer deleted) must carry a newer version, or replicas would keep the older write.
    future = (now_ms() + HOUR_MS) << 21
    t = quote_ident(table)
    sql(pg_url, (f"INSERT INTO {t} (key, value, version) VALUES ('\\x61', 'ahead', $1), ('\\x62', 'ahead', $1)",
                 (future,)),
        f"DELETE FROM {t} WHERE key = '\\x62'")
    store.set(b"a", b"later")
    store.set_many([Record(b"b", b"later"), Record(b"c", b"new")])
    assert store.get(b"a").version > future  # type: ignore[union-attr,operator]
    assert store.get(b"b").version > future  # type: ignore[union-attr,operator]
    # The store's clock moved on with them: even a fresh key is now above.
    assert store.get(b"c").version > future  # type: ignore[union-attr,operator]


def test_reinsert_by_sql_right_after_a_delete_is_newer_than_the_tombstone(store: Store, pg_url: str,
                                                                          table: str) -> None:
    t = quote_ident(table)
    start = store.feed_cursor()  # type: ignore[attr-defined]
    for _ in range(5):  # within a millisecond or two: versions must still grow
        sql(pg_url, f"INSERT INTO {t} (key, value) VALUES ('\\x6b', 'x')",
            f"DELETE FROM {t} WHERE key = '\\x6b'",
            f"INSERT INTO {t} (key, value) VALUES ('\\x6b', 'y')",
            f"DELETE FROM {t} WHERE key = '\\x6b'")
    got = versions(feed(store, start))
    assert len(got) == 20 and got == sorted(got) and len(set(got)) == 20


# == commit order: the feed never skips a change ==============================================
def test_a_transaction_committing_late_is_not_skipped(store: Store, pg_url: str, table: str) -> None:
    t = quote_ident(table)

    async def scenario() -> tuple[list[bytes], list[bytes], list[bytes]]:
        early = await asyncpg.connect(pg_url)
        late = await asyncpg.connect(pg_url)
        try:
            start = await store.inner.feed_cursor()  # type: ignore[attr-defined]
            tx = early.transaction()
            await tx.start()
            await early.execute(f"INSERT INTO {t} (key, value) VALUES ('\\x01', 'early')")  # the lower seq
            await late.execute(f"INSERT INTO {t} (key, value) VALUES ('\\x02', 'late')")  # commits first
            seen = [r.key async for p in store.inner.changes(start) for r in p.records]  # type: ignore[attr-defined]
            cursor = await store.inner.feed_cursor()  # type: ignore[attr-defined]
            await tx.commit()
            after = [r.key async for p in store.inner.changes(start) for r in p.records]  # type: ignore[attr-defined]
            resumed = [r.key async for p in store.inner.changes(cursor) for r in p.records]  # type: ignore[attr-defined]
            return seen, after, resumed
        finally:
            await early.close()
            await late.close()

    seen, after, resumed = store._run(scenario())  # type: ignore[attr-defined]
    assert seen == []  # the committed change waits for the older transaction still running
    assert after == [b"\x01", b"\x02"]
    assert resumed == [b"\x01", b"\x02"]  # a cursor taken meanwhile is before both


def test_concurrent_writers_and_a_reader_lose_nothing(pg_url: str, table: str) -> None:
    """Writers in overlapping transactions (some rolled back, some through kvctl) while a reader
    follows the feed page by page: every committed change is delivered exactly once."""
    url = table_url(pg_url, table)
    owner = open_sync(url)
    owner.clear()  # creates the table
    t = quote_ident(table)
    rng = random.Random(7)

    async def writer(wid: int, committed: list[tuple[bytes, bytes]]) -> None:
        con = await asyncpg.connect(pg_url)
        try:
            for i in range(25):
                tx = con.transaction()
                await tx.start()
                rows = [(b"w%d-%d-%d" % (wid, i, j), b"v") for j in range(rng.randint(1, 3))]
                for key, value in rows:
                    await con.execute(f"INSERT INTO {t} (key, value) VALUES ($1, $2)", key, value)
                    await asyncio.sleep(rng.random() * 0.004)
                if rng.random() < 0.15:
                    await tx.rollback()
                else:
                    await tx.commit()
                    committed.extend(rows)
        finally:
            await con.close()

    async def kvctl_writer(committed: list[tuple[bytes, bytes]]) -> None:
        from kvctl.registry import open_url

        store = open_url(url)
        try:
            for i in range(25):
                rows = [(b"kv-%d-%d" % (i, j), b"x") for j in range(rng.randint(1, 4))]
                await store.set_many([Record(k, v) for k, v in rows])
                committed.extend(rows)
                await asyncio.sleep(rng.random() * 0.003)
        finally:
            await store.close()

    async def scenario() -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        from kvctl.registry import open_url

        reader = open_url(url)
        committed: list[tuple[bytes, bytes]] = []
        delivered: list[bytes] = []
        try:
            cursor = await reader.feed_cursor()
            tasks = [asyncio.create_task(writer(w, committed)) for w in range(4)]
            tasks.append(asyncio.create_task(kvctl_writer(committed)))
            while True:
                done = all(task.done() for task in tasks)
                async for page in reader.changes(cursor, batch_size=3):
                    delivered += [r.key for r in page.records]
                    cursor = page.cursor
                if done:
                    break
                await asyncio.sleep(0.002)
            for task in tasks:
                task.result()
            async for page in reader.changes(cursor):
                delivered += [r.key for r in page.records]
            return committed, delivered
        finally:
            await reader.close()

    try:
        committed, delivered = asyncio.run(scenario())
        assert len(delivered) == len(set(delivered))  # nothing twice
        assert sorted(delivered) == sorted(k for k, _ in committed)  # nothing skipped, nothing rolled back
    finally:
        owner.close()


def test_horizon_from_32_bit_registrations() -> None:
    two32 = 1 << 32
    assert horizon(100, []) == 100
    assert horizon(100, [40, 90]) == 40
    assert horizon(100, [100, 130]) == 100  # registered after the last value was read: no bound
    big = 5 * two32 + 7  # registrations keep the low 32 bits of L
    assert horizon(big, [(big - 3) % two32]) == big - 3
    assert horizon(big, [(big + 2) % two32]) == big
    assert horizon(two32 + 1, [two32 - 5]) == two32 - 5  # across a wrap of the low bits


def test_a_transaction_rolled_back_to_a_savepoint_still_holds_later_changes(store: Store, pg_url: str,
                                                                             table: str) -> None:
    # Rolling back to a savepoint drops the writer's registration with the rows; its next write
    # registers again, and the feed waits for it as before.
    t = quote_ident(table)

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        slow = await asyncpg.connect(pg_url)
        try:
            start = await store.inner.feed_cursor()  # type: ignore[attr-defined]
            async with slow.transaction():
                try:
                    async with slow.transaction():  # a savepoint
                        await slow.execute(f"INSERT INTO {t} (key, value) VALUES ('\\x01', 'undone')")
                        raise RuntimeError("roll back to the savepoint")
                except RuntimeError:
                    pass
                await slow.execute(f"INSERT INTO {t} (key, value) VALUES ('\\x02', 'slow')")
                await store.inner.set(b"\x03", b"fast")  # type: ignore[attr-defined]
                during = [r.key async for p in store.inner.changes(start) for r in p.records]  # type: ignore[attr-defined]
            after = [r.key async for p in store.inner.changes(start) for r in p.records]  # type: ignore[attr-defined]
            return during, after
        finally:
            await slow.close()

    during, after = store._run(scenario())  # type: ignore[attr-defined]
    assert during == []
    assert after == [b"\x02", b"\x03"]


def test_an_open_transaction_elsewhere_does_not_hold_the_feed_back(store: Store, pg_url: str) -> None:
    # Only writers of this table's feed are waited for: a long transaction on another table
    # (which also holds back pg_snapshot_xmin, the simpler bound not used) changes nothing.
    other = new_table()
    sql(pg_url, f"CREATE TABLE {quote_ident(other)} (x int)")
    start = store.feed_cursor()  # type: ignore[attr-defined]

    async def meanwhile() -> list[Record]:
        con = await asyncpg.connect(pg_url)
        try:
            async with con.transaction():
                await con.execute(f"INSERT INTO {quote_ident(other)} VALUES (1)")
                await store.inner.set(b"k", b"v")  # type: ignore[attr-defined]
                return [r async for p in store.inner.changes(start) for r in p.records]  # type: ignore[attr-defined]
        finally:
            await con.close()

    assert [r.key for r in store._run(meanwhile())] == [b"k"]  # type: ignore[attr-defined]


# == pages, cursors and gaps ==================================================================
def test_pages_split_inside_one_transaction(store: Store) -> None:
    start = store.feed_cursor()  # type: ignore[attr-defined]
    order = [b"k%02d" % i for i in random.Random(3).sample(range(40), 40)]
    store.set_many([Record(k, b"v") for k in order])  # one transaction, call order kept
    pages = list(store.changes(start, batch_size=7))  # type: ignore[attr-defined]
    assert [r.key for p in pages for r in p.records] == order
    assert len(pages) == 6
    # every page cursor resumes exactly after its page
    for i, page in enumerate(pages[:-1]):
        assert [r.key for r in feed(store, page.cursor)] == order[(i + 1) * 7:]


def test_cursors_of_other_feeds_are_gaps_and_junk_is_refused(store: Store, pg_url: str) -> None:
    with open_sync(table_url(pg_url, new_table())) as other:
        other.set(b"x", b"y")
        foreign = other.feed_cursor()  # type: ignore[attr-defined]
    with pytest.raises(FeedGapError, match="not of this table"):
        feed(store, foreign)
    for junk in ("pg:abc", "pg:abc:x", "m:5", "pg::1", "pg:abc:1:2", "pg:abc:-1", "f:1:2:3:4:5"):
        with pytest.raises(UsageError):
            feed(store, junk)


def test_a_cursor_past_the_end_of_a_reset_feed_is_a_gap(store: Store, pg_url: str, table: str) -> None:
    store.set_many([Record(b"a", b"1"), Record(b"b", b"2")])
    cursor = store.feed_cursor()  # type: ignore[attr-defined]
    sql(pg_url, f"TRUNCATE {quote_ident(derived_name(table, '__changes'))} RESTART IDENTITY")  # by hand
    with pytest.raises(FeedGapError, match="past the end"):
        feed(store, cursor)


def test_feed_retention_by_count_purges_and_old_cursors_are_gaps(pg_url: str, table: str) -> None:
    with open_sync(table_url(pg_url, table, feed_retention="10")) as s:
        start = s.feed_cursor()  # type: ignore[attr-defined]
        for i in range(30):
            s.set(b"k%d" % i, b"v")
        recent = s.feed_cursor()  # type: ignore[attr-defined]
        s.set(b"last", b"v")
        removed = purge(s)
        assert 15 <= removed["changes"] <= 21  # keeps about 10 (counted by sequence numbers)
        with pytest.raises(FeedGapError, match="purged past"):
            feed(s, start)
        assert [r.key for r in feed(s, recent)] == [b"last"]
        assert purge(s)["changes"] == 0  # nothing more to do


def test_feed_retention_by_age(pg_url: str, table: str) -> None:
    with open_sync(table_url(pg_url, table, feed_retention="200ms")) as s:
        start = s.feed_cursor()  # type: ignore[attr-defined]
        s.set_many([Record(b"old%d" % i, b"v") for i in range(5)])
        assert purge(s)["changes"] == 0  # not old enough yet
        time.sleep(0.3)
        s.set(b"new", b"v")
        assert purge(s)["changes"] == 5
        with pytest.raises(FeedGapError):
            feed(s, start)


def test_writers_purge_the_feed_on_their_own(pg_url: str, table: str) -> None:
    with open_sync(table_url(pg_url, table, feed_retention="100")) as s:
        start = s.feed_cursor()  # type: ignore[attr-defined]
        for _ in range(3):  # each batch is enough writing to call for a purge on the next write
            s.set_many([Record(b"k%05d" % i, b"v") for i in range(6000)])
        with pytest.raises(FeedGapError):
            feed(s, start)
        assert s.stats()["feed_changes"] <= 6100


# == tombstones and apply_many ================================================================
def test_tombstones_are_kept_for_their_retention_then_purged(pg_url: str, table: str) -> None:
    with open_sync(table_url(pg_url, table, tombstone_retention="300ms")) as s:
        s.set(b"k", b"v")
        version = s.get(b"k").version  # type: ignore[union-attr]
        s.delete(b"k")
        assert s.stats()["tombstones"] == 1
        assert s.apply_many([Record(b"k", b"stale", None, version)]) == 0  # type: ignore[attr-defined]
        assert purge(s)["tombstones"] == 0
        time.sleep(0.4)
        assert purge(s)["tombstones"] == 1
        # Past the retention the delete is forgotten: the documented price of bounded tombstones.
        assert s.apply_many([Record(b"k", b"stale", None, version)]) == 1  # type: ignore[attr-defined]


def test_purged_expired_rows_leave_tombstones(store: Store) -> None:
    version = make_version(now_ms())  # a tombstone's age is its version's (kvctl.hlc.physical_ms)
    store.set_many([Record(b"gone", b"v", now_ms() - 1000, version)])
    assert purge(store)["expired"] == 1
    assert store.apply_many([Record(b"gone", b"older", None, version - 1)]) == 0  # type: ignore[attr-defined]
    assert store.apply_many([Record(b"gone", b"newer", None, version + 1)]) == 1  # type: ignore[attr-defined]
    assert store.get(b"gone").value == b"newer"  # type: ignore[union-attr]


def test_apply_many_mixed_batch_in_the_feed_and_counted(store: Store) -> None:
    base = 7_000_000_000_000_000_000
    store.apply_many([Record(b"a", b"1", None, base), Record(b"b", b"1", None, base)])  # type: ignore[attr-defined]
    start = store.feed_cursor()  # type: ignore[attr-defined]
    batch = [
        Record(b"a", b"", None, base + 5, TOMBSTONE),  # wins: deletes
        Record(b"b", b"", None, base - 5, TOMBSTONE),  # stale
        Record(b"c", b"new", None, base + 1),  # new key
        Record(b"c", b"newest", None, base + 2),  # same key, newer: only this one counts
        Record(b"d", b"", None, base + 1, TOMBSTONE),  # delete of an unknown key: kept as a tombstone
        Record(b"e", b"no version"),  # versionless: fills an empty key
        Record(b"b", b"no version"),  # ... but never replaces a versioned one
        Record(b"f", b"junk", 123, base, TOMBSTONE),  # a tombstone's value and expiry mean nothing
    ]
    assert store.apply_many(batch) == 5  # type: ignore[attr-defined]
    assert summary(feed(store, start)) == [(b"a", TOMBSTONE, b""), (b"c", None, b"newest"),
                                           (b"d", TOMBSTONE, b""), (b"e", None, b"no version"),
                                           (b"f", TOMBSTONE, b"")]
    assert store.apply_many([Record(b"d", b"late", None, base)]) == 0  # type: ignore[attr-defined]
    assert [g and g.value for g in store.get_many([b"a", b"b", b"c", b"d", b"e"])] == [
        None, b"1", b"newest", None, b"no version"]
    assert store.apply_many(batch) == 0  # type: ignore[attr-defined]  # twice: no-op


def test_apply_many_large_batch_through_copy_and_limits_first(store: Store) -> None:
    base = 6_000_000_000_000_000_000
    records = [Record(b"k%05d" % i, b"v%d" % i, None, base + i) for i in range(6000)]
    records += [Record(b"k%05d" % i, b"", None, base + 10_000, TOMBSTONE) for i in range(0, 6000, 2)]
    assert store.apply_many(records) == 6000  # type: ignore[attr-defined]
    assert store.count() == 3000
    with pytest.raises(LimitError):
        store.apply_many([Record(b"fine", b"v", None, base + 20_000), Record(os.urandom(3000), b"v", None, 1)])  # type: ignore[attr-defined]
    assert store.get(b"fine") is None
    with pytest.raises(Exception, match="bytes values only"):
        store.apply_many([Record(b"h", b"", None, 1, "hash")])  # type: ignore[attr-defined]


def test_set_many_keeps_given_versions_and_raises_assigned_ones(store: Store) -> None:
    store.set_many([Record(b"a", b"old", None, 1_000)])
    store.delete(b"a")
    store.set_many([Record(b"a", b"given", None, 500), Record(b"b", b"assigned")])  # mixed
    got = store.get_many([b"a", b"b"])
    assert got[0].version == 500  # type: ignore[union-attr]  # kept exactly, even below the tombstone
    assert (got[1].version or 0) & 0xFF == node_of(store)  # type: ignore[union-attr]


def test_clear_lists_every_key_as_deleted(store: Store) -> None:
    store.set_many([Record(b"x%d" % i, b"v") for i in range(5)])
    start = store.feed_cursor()  # type: ignore[attr-defined]
    assert store.clear() == 5
    assert sorted(summary(feed(store, start))) == [(b"x%d" % i, TOMBSTONE, b"") for i in range(5)]
    assert store.apply_many([Record(b"x1", b"stale", None, 1)]) == 0  # type: ignore[attr-defined]


# == the table: node id, feed on and off, upgrade from version 1 ==============================
def test_node_id_is_random_per_table_and_kept(pg_url: str) -> None:
    nodes = []
    for _ in range(6):
        name = new_table()
        with open_sync(table_url(pg_url, name)) as s:
            s.set(b"k", b"v")
            nodes.append(node_of(s))
            assert s.get(b"k").version & 0xFF == nodes[-1]  # type: ignore[union-attr,operator]
            assert sql(pg_url, ("SELECT node_id FROM kvctl_meta WHERE table_name = $1", (name,)))[0][0] == nodes[-1]
        with open_sync(table_url(pg_url, name)) as again:
            again.set(b"j", b"v")
            assert node_of(again) == nodes[-1]
    assert len(set(nodes)) > 1  # 6 draws from 256: equal only with probability ~1e-12


def test_feed_off_and_on_again(pg_url: str, table: str) -> None:
    t = quote_ident(table)
    s = open_sync(table_url(pg_url, table))
    s.set(b"a", b"1")
    before = s.feed_cursor()  # type: ignore[attr-defined]
    s.close()

    with open_sync(table_url(pg_url, table, feed="false")) as off:
        assert not off.capabilities.change_feed
        off.set(b"b", b"2")
        sql(pg_url, f"INSERT INTO {t} (key, value, version) VALUES ('\\x63', '3', 1)")  # no triggers now
        assert sql(pg_url, ("SELECT to_regclass($1)", (derived_name(table, "__changes"),)))[0][0] is None
        assert off.stats()["feed"] is False
        assert off.feed_cursor().startswith("pg:none:")  # type: ignore[attr-defined]
        with pytest.raises(FeedGapError, match="no change feed"):
            feed(off, before)
        off.delete(b"a")  # tombstones are kept without a feed too
        assert off.apply_many([Record(b"a", b"stale", None, 1)]) == 0  # type: ignore[attr-defined]

    plain = open_sync(table_url(pg_url, table))  # no option: the table keeps its mode
    try:
        assert plain.capabilities.change_feed  # unknown before connecting; the feed says so
        with pytest.raises(FeedGapError, match="no change feed"):
            feed(plain, plain.feed_cursor())  # type: ignore[attr-defined]
    finally:
        plain.close()

    with open_sync(table_url(pg_url, table, feed="true")) as on:
        with pytest.raises(FeedGapError, match="not of this table"):
            feed(on, before)  # the old feed's cursor
        start = on.feed_cursor()  # type: ignore[attr-defined]
        on.set(b"d", b"4")
        sql(pg_url, f"INSERT INTO {t} (key, value) VALUES ('\\x65', '5')")
        assert summary(feed(on, start)) == [(b"d", None, b"4"), (b"e", None, b"5")]
        assert sorted(r.key for p in on.scan() for r in p.records) == [b"b", b"c", b"d", b"e"]


V1_META = ("CREATE TABLE IF NOT EXISTS kvctl_meta (table_name text PRIMARY KEY, "
           "schema_version integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")


def test_upgrade_from_version_1_in_place(pg_url: str) -> None:
    """A table written by the version-1 layout (as the previous kvctl created it) is upgraded on
    open: rows kept, node id and feed recorded, tombstones and feed working; another version-1
    table beside it stays version 1 until it is opened."""
    name, bystander = new_table(), new_table()
    t = quote_ident(name)
    v1_table = [f"CREATE TABLE {t} (key bytea PRIMARY KEY, value bytea NOT NULL, expires_at bigint, "
                "version bigint NOT NULL)", f"CREATE INDEX ON {t} (version)",
                f"CREATE INDEX ON {t} (expires_at) WHERE expires_at IS NOT NULL"]
    sql(pg_url, V1_META, *v1_table,
        (f"INSERT INTO {t} SELECT ('k' || i)::bytea, 'v'::bytea, NULL, $1 + i FROM generate_series(1, 100) i",
         (5_000_000,)),
        ("INSERT INTO kvctl_meta (table_name, schema_version) VALUES ($1, 1), ($2, 1) "
         "ON CONFLICT (table_name) DO UPDATE SET schema_version = 1", (name, bystander)))
    with open_sync(table_url(pg_url, name)) as s:
        assert s.count() == 100
        assert s.get(b"k7").version == 5_000_007  # type: ignore[union-attr]
        meta = sql(pg_url, ("SELECT schema_version, node_id, feed, feed_id FROM kvctl_meta WHERE table_name = $1",
                            (name,)))[0]
        assert meta[0] == 2 and 0 <= meta[1] <= 255 and meta[2] is True and meta[3]
        assert node_of(s) == meta[1]
        start = s.feed_cursor()  # type: ignore[attr-defined]
        s.delete(b"k1")
        sql(pg_url, f"UPDATE {t} SET value = 'by sql' WHERE key = 'k2'::bytea")
        assert summary(feed(s, start)) == [(b"k1", TOMBSTONE, b""), (b"k2", None, b"by sql")]
        assert s.apply_many([Record(b"k1", b"stale", None, 5_000_001)]) == 0  # type: ignore[attr-defined]
        assert s.stats()["schema_version"] == 2
    assert sql(pg_url, ("SELECT schema_version, node_id FROM kvctl_meta WHERE table_name = $1",
                        (bystander,)))[0] == (1, None)


def test_a_version_1_client_writing_to_an_upgraded_table_is_captured(store: Store, pg_url: str,
                                                                      table: str) -> None:
    # What the previous kvctl sends (it has no session mark): its given versions are kept.
    t = quote_ident(table)
    start = store.feed_cursor()  # type: ignore[attr-defined]
    sql(pg_url, (f"INSERT INTO {t} (key, value, expires_at, version) "
                 "SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::bigint[]) "
                 "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, "
                 "version = EXCLUDED.version", ([b"p", b"q"], [b"1", b"2"], [None, None], [111, 222])))
    assert [(r.key, r.version) for r in feed(store, start)] == [(b"p", 111), (b"q", 222)]


def test_newer_schema_version_is_refused(store: Store, pg_url: str, table: str) -> None:
    store.set(b"k", b"v")
    sql(pg_url, ("UPDATE kvctl_meta SET schema_version = 3 WHERE table_name = $1", (table,)))
    with open_sync(table_url(pg_url, table)) as later, pytest.raises(UsageError, match="schema version 3"):
        later.get(b"k")


def test_long_table_name_gets_distinct_derived_names(pg_url: str) -> None:
    stem = PREFIX + "_" + "x" * (63 - len(PREFIX) - 3)
    names = [stem + "_a", stem + "_b"]  # 63 bytes each, sharing 61
    for name in names:
        with open_sync(table_url(pg_url, name)) as s:
            start = s.feed_cursor()  # type: ignore[attr-defined]
            s.set(b"k", name.encode())
            s.delete(b"k")
            assert summary(feed(s, start)) == [(b"k", None, name.encode()), (b"k", TOMBSTONE, b"")]
    assert len({derived_name(n, "__changes") for n in names}) == 2


# -- the first write of a process ----------------------------------------------------------------
@pytest.mark.parametrize("first", ["delete_many", "clear"])
def test_a_deletion_as_a_fresh_stores_first_call_is_in_the_feed(pg_url: str, first: str) -> None:
    """The write statements depend on the feed flag and node id found when the table is opened: a
    delete_many or clear that was a process's first call used to be built before that, and left
    the feed without its tombstones (sync then missed the deletes and said it had converged)."""
    url = f"{pg_url}?table={new_table()}"
    with open_sync(url) as store:
        store.set_many([Record(b"k%d" % i, b"v") for i in range(4)])
        cursor = store.feed_cursor()  # type: ignore[attr-defined]
        node = store.stats()["node_id"]
    fresh = open_sync(url)  # a new store, as a new `kvctl del` process opens one
    try:
        if first == "delete_many":
            assert fresh.delete_many([b"k1", b"k2"]) == 2
            deleted = [b"k1", b"k2"]
        else:
            assert fresh.clear() == 4
            deleted = [b"k0", b"k1", b"k2", b"k3"]
        got = [r for p in fresh.changes(cursor) for r in p.records]  # type: ignore[attr-defined]
        assert sorted(r.key for r in got) == deleted and {r.kind for r in got} == {TOMBSTONE}
        assert all(r.version is not None and r.version & 0xFF == node for r in got)  # the table's node id
    finally:
        fresh.close()


def test_a_deletion_row_with_a_value_that_is_no_bulk_marker_is_refused(store: Store, pg_url: str,
                                                                       table: str) -> None:
    """Only a bulk load's feed row carries a value: one this kvctl cannot read (damaged, or a later
    marker form) must stop the reader, not be applied as a tombstone that silently drops the load."""
    from kvctl.errors import CorruptError

    start = store.feed_cursor()  # type: ignore[attr-defined]
    store.set(b"before", b"v")
    sql(pg_url, f"INSERT INTO {quote_ident(derived_name(table, '__changes'))} (key, value, version, deleted) "
                "VALUES ('\\x6b'::bytea, '\\x6b76637466'::bytea, 1, true)")
    with pytest.raises(CorruptError, match="neither a change nor a bulk load"):
        feed(store, start)

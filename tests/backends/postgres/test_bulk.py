"""The postgres backend's bulk paths, on the real server started by tests/services.sh.

A big batch into a key range the table does not use yet is COPied straight into the table, with
one feed row for the whole batch; ``--on-conflict newer`` is decided on the server.  Checked
here: the rows are exact (bytes, expiries, versions), the change feed still serves every key
(also to a reader whose cursor predates the load, and after later writes), a range in use or a
key written meanwhile by another session goes the merging way, assigned versions stay above
tombstones, a sync from a bulk-loaded table converges, a killed migrate resumes to an equal
copy, and newer skips and writes exactly what the get_many comparison would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from kvctl_plugins.postgres.settings import quote_ident
from kvctl_plugins.postgres.store import COPY_MIN_ROWS

from kvctl.hlc import make_version
from kvctl.store import TOMBSTONE, Record, Store, now_ms
from kvctl.testing import open_sync
from kvctl.testing.cli import clean_env, run_kvctl, start_kvctl
from kvctl.testing.replication import sync_json
from tests.backends.postgres.support import sql
from tests.engines.migrate.test_resume import _wait_for_new_checkpoint

pytestmark = pytest.mark.server

PREFIX = f"kvctl_b{os.getpid()}_{uuid.uuid4().hex[:6]}"
N = COPY_MIN_ROWS + 1000  # one batch big enough for the COPY paths
HOUR_MS = 3_600_000


def new_table(base: str) -> tuple[str, str]:
    name = f"{PREFIX}_{uuid.uuid4().hex[:8]}"
    return f"{base}?table={name}", name


def feed_rows(url: str, table: str) -> int:
    return int(sql(url, f"SELECT count(*) FROM {quote_ident(table + '__changes')}")[0][0])


def dataset(n: int = N, versions: bool = True, start: int = 0) -> list[Record]:
    """Keys in an order other than the key order, binary values, expiries on some, versions."""
    later = now_ms() + HOUR_MS
    base = make_version(now_ms() - 60_000)
    return [Record(b"key:%08d" % i, bytes([i % 256]) * 3 + b"\x00\xff" + os.urandom(40),
                   later + i if i % 3 == 0 else None, base + (i << 8) if versions else None)
            for i in reversed(range(start, start + n))]


def contents(store: Store) -> dict[bytes, tuple[bytes, int | None, int | None]]:
    return {r.key: (r.value, r.expires_at_ms, r.version) for p in store.scan() for r in p.records}


def served(store: Store, cursor: str | None, batch_size: int = 1000) -> list[Any]:
    return list(store.changes(cursor, batch_size=batch_size))  # type: ignore[attr-defined]


def test_a_big_batch_into_a_new_table_is_one_feed_row_and_the_feed_serves_every_key(pg_url: str) -> None:
    url, table = new_table(pg_url)
    records = dataset()
    with open_sync(url) as store:
        before = store.feed_cursor()  # type: ignore[attr-defined]
        store.set_many(records)
        assert contents(store) == {r.key: (r.value, r.expires_at_ms, r.version) for r in records}
        assert feed_rows(pg_url, table) == 1  # not one change row per key
        pages = served(store, before, batch_size=1000)
        assert all(len(p.records) <= 1000 for p in pages)
        got = [r for p in pages for r in p.records]
        assert sorted(got) == sorted(records)  # every key once, exact bytes, expiry and version
        assert pages[-1].cursor == store.feed_cursor()  # type: ignore[attr-defined]
        # a page's cursor resumes the feed: inside the load it serves the load again (a no-op
        # under last-writer-wins), so nothing after it is ever skipped
        again = [r for p in served(store, pages[2].cursor) for r in p.records]
        assert {r.key for r in again} == {r.key for r in records}
        assert served(store, pages[-1].cursor) == []


def test_writes_after_a_load_follow_it_in_the_feed(pg_url: str) -> None:
    url, table = new_table(pg_url)
    records = dataset(versions=False)
    with open_sync(url) as store:
        before = store.feed_cursor()  # type: ignore[attr-defined]
        store.set_many(records)
        store.set(b"key:00000010", b"changed")
        store.delete(b"key:00000020")
        sql(pg_url, (f"UPDATE {quote_ident(table)} SET value = 'by sql' WHERE key = $1", (b"key:00000030",)))
        got = [r for p in served(store, before) for r in p.records]
        final: dict[bytes, Record] = {}
        for rec in got:  # replayed in order, as a replica applies them
            final[rec.key] = rec
        assert final[b"key:00000020"].kind == TOMBSTONE
        del final[b"key:00000020"]
        assert {k: r.value for k, r in final.items()} == {k: v for k, (v, _, _) in contents(store).items()}
        assert final[b"key:00000010"].value == b"changed" and final[b"key:00000030"].value == b"by sql"
        # the rows replaced since the load are served once, as their later change
        assert sum(r.key == b"key:00000010" for r in got) == 1


def test_a_batch_into_a_range_in_use_is_merged_and_listed_key_by_key(pg_url: str) -> None:
    url, table = new_table(pg_url)
    with open_sync(url) as store:
        store.set(b"key:00000500", b"there before")
        store.set_many(dataset())
        assert feed_rows(pg_url, table) == 1 + N
        assert store.get(b"key:00000500") != b"there before"


def test_a_key_another_session_commits_during_the_copy_sends_the_batch_the_merging_way(pg_url: str) -> None:
    url, table = new_table(pg_url)
    records = dataset(versions=False)
    with open_sync(url) as store:
        store.count()  # creates the table

    async def race() -> None:
        other = await asyncpg.connect(pg_url)
        tx = other.transaction()
        await tx.start()
        await other.execute(f"INSERT INTO {quote_ident(table)} (key, value) VALUES ($1, 'theirs')", b"key:00000007")
        from kvctl.registry import open_url

        store = open_url(url)
        try:
            write = asyncio.ensure_future(store.set_many(records))
            await asyncio.sleep(1.0)  # the COPY now waits on the uncommitted key
            assert not write.done()
            await tx.commit()
            await write
        finally:
            await store.close()
            await other.close()

    asyncio.run(race())
    with open_sync(url) as store:
        held = contents(store)
        assert {k: (v, e) for k, (v, e, _) in held.items()} == {r.key: (r.value, r.expires_at_ms) for r in records}
        assert feed_rows(pg_url, table) == 1 + N  # the other session's insert, then the merge key by key


def test_assigned_versions_stay_above_tombstones_in_the_range(pg_url: str) -> None:
    url, table = new_table(pg_url)
    with open_sync(url) as store:
        store.set_many(dataset(versions=False))
        assert store.clear() == N
        store.set_many(dataset(versions=False))
        rows = sql(pg_url, f"SELECT count(*) FROM {quote_ident(table)} t JOIN {quote_ident(table + '__tombs')} tb "
                           "ON tb.key = t.key WHERE t.version <= tb.version")
        assert rows[0][0] == 0
        assert store.count() == N


def test_sync_from_a_bulk_loaded_table_converges_through_the_feed(pg_url: str, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    (a, _), (b, _) = new_table(pg_url), new_table(pg_url)
    with open_sync(a) as src:
        src.set_many(dataset())
    first = sync_json(env, a, b)
    assert (first["mode"], first["applied_to_dst"], first["converged"]) == ("diff", N, True)
    with open_sync(a) as src:
        src.set_many(dataset(start=N))  # a new key range: loaded directly
        src.set(b"key:00000001", b"changed")
    second = sync_json(env, a, b)
    assert (second["mode"], second["fallback"], second["applied_to_dst"]) == ("feed", None, N + 1)
    assert run_kvctl(env, "diff", a, b).returncode == 0


def test_import_then_newer_skips_what_the_table_holds_and_writes_what_is_newer(pg_url: str, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    url, _ = new_table(pg_url)
    records = dataset()
    with open_sync(url) as store:
        store.set_many(records)
        store.set(b"key:00000003", b"expired", ttl_ms=1)  # an expired row counts as absent
    dump = tmp_path / "in.jsonl"
    newer_keys = {b"key:00000002", b"key:00000004"}
    lines = []
    for r in records:
        assert r.version is not None
        version = r.version + (1 << 30) if r.key in newer_keys else r.version
        if r.key == b"key:00000005":
            version = r.version - 1
        elif r.key == b"key:00000003":
            version = 1
        lines.append(json.dumps({"key": r.key.decode(), "value_b64": base64.b64encode(r.value).decode(),
                                 "expires_at_ms": r.expires_at_ms, "version": version}))
    lines.append(json.dumps({"key": "brand-new", "value": "x"}))
    dump.write_text("\n".join(lines) + "\n")
    out = run_kvctl(env, "-u", url, "import", str(dump), "--on-conflict", "newer", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert (summary["copied"], summary["skipped"]) == (4, N - 3), summary
    with open_sync(url) as store:
        held = contents(store)
    assert held[b"key:00000002"][2] == records[-3].version + (1 << 30)  # type: ignore[operator]
    assert held[b"key:00000005"][2] == records[-6].version  # an older version left alone
    assert held[b"key:00000003"][0] == records[-4].value and held[b"brand-new"][0] == b"x"


def test_migrate_killed_mid_copy_then_resumed_ends_equal_and_verifies(pg_url: str, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    src = f"sqlite://{tmp_path}/src.db"
    with open_sync(src) as store:
        for start in range(0, 6 * N, N):
            store.set_many(dataset(start=start))
    dst, _ = new_table(pg_url)
    cp = tmp_path / "cp.json"
    cmd = ["migrate", src, dst, "--batch-size", str(N), "--checkpoint-every", "1",
           "--checkpoint", str(cp), "--resume", "--no-progress", "--json", "--verify"]
    proc = start_kvctl(env, *cmd)
    try:
        assert _wait_for_new_checkpoint(proc, cp, 0, limit=60), "the copy ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    done = run_kvctl(env, *cmd)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed"] and summary["copied"] == 6 * N, summary
    assert run_kvctl(env, "diff", src, dst).returncode == 0


def test_given_and_assigned_versions_in_one_batch_merge_only_the_part_naming_a_held_key(pg_url: str) -> None:
    url, table = new_table(pg_url)
    records = [r if i % 2 else r._replace(version=None) for i, r in enumerate(dataset())]
    with open_sync(url) as store:
        store.set(b"key:00000500", b"there before")
        before = store.get(b"key:00000500")
        assert before is not None and before.version is not None
        store.set_many(records)
        held = contents(store)
        assert {k: (v, e) for k, (v, e, _) in held.items()} == {r.key: (r.value, r.expires_at_ms) for r in records}
        assert all(held[r.key][2] == r.version for r in records if r.version is not None)
        assigned = [held[r.key][2] for r in records if r.version is None]
        assert min(assigned) > before.version  # type: ignore[type-var, operator]
        # the set; the given versions, which name no key the table holds, straight in; the
        # assigned ones, among them the key set before, merged key by key
        assert feed_rows(pg_url, table) == 1 + 1 + len(assigned)


def test_after_a_direct_load_a_batch_into_a_range_in_use_still_merges(pg_url: str) -> None:
    url, table = new_table(pg_url)
    with open_sync(url) as store:
        store.set_many(dataset(start=2 * N))  # straight in: the next batch skips the range probe
        store.set(b"key:00000500", b"there before")
        records = dataset()
        store.set_many(records)  # its COPY fails on the key above: merged instead
        held = contents(store)
        assert {k: v for k, (v, _, _) in held.items() if k < b"key:%08d" % N} == {r.key: r.value for r in records}
        assert feed_rows(pg_url, table) == 1 + 1 + N
        store.set_many(dataset(start=3 * N))  # a fresh range after a merge: probed, then straight in
        assert feed_rows(pg_url, table) == 1 + 1 + N + 1


def test_a_batch_a_little_short_of_the_copy_size_still_goes_straight_in(pg_url: str) -> None:
    """Pages of whole slots (a cluster) come a little under the batch size: such a batch is
    COPied straight in as well, one feed row for it, not merged key by key."""
    url, table = new_table(pg_url)
    records = dataset(n=COPY_MIN_ROWS - 60)
    with open_sync(url) as store:
        store.set_many(records)
        assert contents(store) == {r.key: (r.value, r.expires_at_ms, r.version) for r in records}
    assert feed_rows(pg_url, table) == 1


def test_a_batch_over_keys_in_use_but_naming_none_of_them_goes_straight_in(pg_url: str) -> None:
    """A source read in no key order (SCAN, a cluster's slots) spreads each batch over the range
    of the keys loaded before: the probe asks about the batch's keys, not its range."""
    url, table = new_table(pg_url)
    records = dataset()
    with open_sync(url) as store:
        store.set_many(records[:40])  # a small batch, merged key by key: no direct streak
        store.set(b"key:00000500+", b"between two of the batch's keys")
        store.set_many(records[40:])  # its range holds rows, none of its keys: straight in
        want = {r.key: (r.value, r.expires_at_ms, r.version) for r in records}
        held = contents(store)
        assert held.pop(b"key:00000500+")[0] == b"between two of the batch's keys"
        assert held == want
        assert feed_rows(pg_url, table) == 40 + 1 + 1
        with_key = dataset(n=COPY_MIN_ROWS, start=2 * N, versions=False)
        with_key[7] = Record(b"key:00000500+", b"rewritten")
        store.set_many(with_key)  # names a key it holds: merged (its COPY would fail)
        assert store.get(b"key:00000500+").value == b"rewritten"  # type: ignore[union-attr]
        assert feed_rows(pg_url, table) == 40 + 1 + 1 + COPY_MIN_ROWS


def test_after_a_direct_load_assigned_versions_still_stay_above_tombstones(pg_url: str) -> None:
    url, table = new_table(pg_url)
    with open_sync(url) as store:
        store.set(b"key:%08d" % (N + 10), b"soon gone")
        store.delete(b"key:%08d" % (N + 10))  # only a tombstone left in the second range
        store.set_many(dataset(versions=False))  # straight in
        store.set_many(dataset(versions=False, start=N))  # unprobed: the tombstone check sends it to the merge
        rows = sql(pg_url, f"SELECT count(*) FROM {quote_ident(table)} t JOIN {quote_ident(table + '__tombs')} tb "
                           "ON tb.key = t.key WHERE t.version <= tb.version")
        assert rows[0][0] == 0
        assert store.count() == 2 * N
        assert feed_rows(pg_url, table) == 2 + 1 + N  # set, delete, one load, the merge key by key


def test_a_feed_reader_concurrent_with_bulk_loads_misses_no_key(pg_url: str) -> None:
    url, _ = new_table(pg_url)
    batches = [dataset(start=start) for start in (0, 2 * N, N)]  # the last lands between the others
    with open_sync(url) as store:
        store.count()  # creates the table
        start = store.feed_cursor()  # type: ignore[attr-defined]

    async def race() -> dict[bytes, Record]:
        from kvctl.registry import open_url

        writer, reader = open_url(url), open_url(url)
        seen: dict[bytes, Record] = {}
        cursor = start
        try:
            async def write() -> None:
                for batch in batches:
                    await writer.set_many(batch)
                    await asyncio.sleep(0.05)

            async def read_once() -> None:
                nonlocal cursor
                async for page in reader.changes(cursor, batch_size=700):
                    for rec in page.records:
                        seen[rec.key] = rec
                    cursor = page.cursor

            loading = asyncio.ensure_future(write())
            while not loading.done():
                await read_once()
                await asyncio.sleep(0.01)
            await loading
            await read_once()  # after the last commit
        finally:
            await writer.close()
            await reader.close()
        return seen

    seen = asyncio.run(race())
    expected = {r.key: r for batch in batches for r in batch}
    assert {k: (r.value, r.expires_at_ms, r.version) for k, r in seen.items()} == {
        k: (r.value, r.expires_at_ms, r.version) for k, r in expected.items()}


def test_a_table_without_a_feed_loads_a_big_batch_straight_in_and_merges_a_range_in_use(pg_url: str) -> None:
    url, table = new_table(pg_url)
    url += "&feed=false"
    first, second = dataset(), dataset(start=N // 2)  # the second overlaps the first
    with open_sync(url) as store:
        store.set_many(first)
        store.set_many(second)
        expected = {r.key: (r.value, r.expires_at_ms, r.version) for r in first}
        expected.update({r.key: (r.value, r.expires_at_ms, r.version) for r in second})
        assert contents(store) == expected
    assert not sql(pg_url, f"SELECT to_regclass('{table}__changes')")[0][0]

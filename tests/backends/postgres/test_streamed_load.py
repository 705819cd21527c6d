"""Batches of an atomic load into a table the load created, streamed down one open COPY (see
kvctl_plugins.postgres.stream); on the real server started by tests/services.sh.

Checked here: the binary rows are exact (bytes, NULL and set expiries, given and assigned
versions, keys unsorted inside a batch); a batch whose keys fall below those already sent, a read
and a single write each end the stream and are written their usual way, with every key still
served by the change feed; a table that is not new never streams; a connection lost while the
COPY is open undoes the whole load, the table included; a number beyond bigint gets the usual
error and nothing is written; a table made without a feed streams too, and gets no feed row.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest
from kvctl_plugins.postgres.stream import copy_rows

from kvctl.abilities import AsyncAtomicLoad
from kvctl.errors import KvctlError, UnavailableError
from kvctl.hlc import make_version
from kvctl.registry import open_async
from kvctl.store import Record, now_ms
from kvctl.testing import open_sync
from tests.backends.postgres.support import asql, sql
from tests.backends.postgres.test_atomic_loads import catalog

pytestmark = pytest.mark.server

PREFIX = f"kvctl_st{os.getpid()}_{uuid.uuid4().hex[:6]}"


def new_table(base: str) -> tuple[str, str]:
    name = f"{PREFIX}_{uuid.uuid4().hex[:8]}"
    return f"{base}?table={name}", name


def batch(start: int, n: int, *, versions: bool = True) -> list[Record]:
    later = now_ms() + 3_600_000
    base = make_version(now_ms() - 60_000)
    return [Record(b"k:%06d" % i, os.urandom(i % 50) + b"\x00\xff", later + i if i % 3 == 0 else None,
                   base + (i << 8) if versions else None) for i in range(start, start + n)]


def rows(url: str) -> dict[bytes, tuple[bytes, int | None, int | None]]:
    with open_sync(url) as store:
        return {r.key: (r.value, r.expires_at_ms, r.version) for p in store.scan() for r in p.records}


def feed(url: str) -> dict[bytes, bytes]:
    with open_sync(url) as store:
        return {r.key: r.value for p in store.changes(None, batch_size=700) for r in p.records}  # type: ignore[attr-defined]


def streaming(store: Any) -> bool:
    return store._stream is not None


def test_copy_rows_is_postgres_binary_copy() -> None:
    def n(x: int) -> bytes:
        return (x).to_bytes(8, "big")

    got = copy_rows([b"ab"], [b""], [None], [7]) + copy_rows([b"c"], [b"xyz"], [5], [1 << 62])
    assert got == (b"\x00\x04" b"\x00\x00\x00\x02ab" b"\x00\x00\x00\x00" b"\xff\xff\xff\xff" b"\x00\x00\x00\x08" + n(7)
                   + b"\x00\x04" b"\x00\x00\x00\x01c" b"\x00\x00\x00\x03xyz" b"\x00\x00\x00\x08" + n(5)
                   + b"\x00\x00\x00\x08" + n(1 << 62))
    # rows of several shapes (packed in parts) are what each row alone (one shape) makes
    keys, values, versions = [b"a1", b"b", b"c33"], [b"xy", b"", b"uvw"], [4, 5, 6]
    for expiries in ([None] * 3, [1, 2, 3], [None, 2, None]):
        whole = copy_rows(keys, values, expiries, versions)
        alone = [copy_rows([k], [v], [e], [n]) for k, v, e, n in zip(keys, values, expiries, versions, strict=True)]
        assert whole == b"".join(alone)


def test_a_streamed_load_is_exact_and_every_way_out_of_it_keeps_every_key(pg_url: str) -> None:
    url, _ = new_table(pg_url)
    given = batch(0, 3000)
    unsorted = batch(3000, 2000)[::-1]
    below = batch(100, 10) + batch(90_000, 5)  # keys under the last one sent: ends the stream
    later = batch(100_000, 2000)  # rising again, but the stream has ended for this load
    assigned = batch(5000, 1500, versions=False)

    async def work() -> dict[bytes, int]:
        async with open_async(url) as store:
            assert isinstance(store, AsyncAtomicLoad)
            async with store.atomic_load():
                await store.set_many(given)
                assert streaming(store)
                await store.set_many(unsorted)
                await store.set_many(assigned)
                assert streaming(store)
                await store.set_many(below)
                assert not streaming(store)
                await store.set_many(later)
                assert not streaming(store)
            got = await store.get_many([r.key for r in assigned])
            return {r.key: r.version for r in got if r is not None and r.version is not None}

    versions = asyncio.run(work())
    want = {r.key: (r.value, r.expires_at_ms, r.version) for r in [*given, *unsorted, *below, *later]}
    want |= {r.key: (r.value, r.expires_at_ms, versions[r.key]) for r in assigned}
    assert rows(url) == want
    assert len(set(versions.values())) == len(assigned)  # each its own tick
    assert feed(url) == {k: v[0] for k, v in want.items()}


def test_a_read_or_a_single_write_ends_the_stream_and_sees_its_rows(pg_url: str) -> None:
    url, _ = new_table(pg_url)
    first, second = batch(0, 1000), batch(1000, 1000)

    async def work() -> None:
        async with open_async(url) as store, store.atomic_load():  # type: ignore[attr-defined]
            await store.set_many(first)
            assert streaming(store)
            assert (await store.get(first[10].key)).value == first[10].value  # type: ignore[union-attr]
            assert not streaming(store)
            await store.set_many(second)  # the usual way now
            await store.set(b"k:999999", b"one")

    asyncio.run(work())
    want = {r.key: r.value for r in [*first, *second]} | {b"k:999999": b"one"}
    assert {k: v[0] for k, v in rows(url).items()} == want
    assert feed(url) == want


def test_a_table_that_is_not_new_never_streams(pg_url: str) -> None:
    url, _ = new_table(pg_url)
    with open_sync(url) as store:
        store.set(b"k:000001", b"there")
        store.delete(b"k:000001")  # empty, but a tombstone is left

    async def work() -> None:
        async with open_async(url) as store, store.atomic_load():  # type: ignore[attr-defined]
            await store.set_many(batch(0, 500))
            assert not streaming(store)

    asyncio.run(work())
    assert len(rows(url)) == 500


def test_a_connection_lost_during_the_stream_undoes_the_load_and_its_table(pg_url: str) -> None:
    url, table = new_table(pg_url)
    before = catalog(pg_url, table)

    async def work() -> None:
        async with open_async(url) as store:
            with pytest.raises(UnavailableError):
                async with store.atomic_load():  # type: ignore[attr-defined]
                    await store.set_many(batch(0, 2000))
                    assert streaming(store)
                    pid = store._con.get_server_pid()  # type: ignore[attr-defined]
                    await asql(pg_url, ("SELECT pg_terminate_backend($1)", (pid,)))
                    for start in range(2000, 200_000, 2000):  # one of them meets the closed COPY
                        await store.set_many(batch(start, 2000))

    asyncio.run(work())
    assert catalog(pg_url, table) == before


def test_a_version_beyond_bigint_is_refused_and_writes_nothing(pg_url: str) -> None:
    url, table = new_table(pg_url)
    before = catalog(pg_url, table)
    bad = [Record(b"k:1", b"v", 1 << 63, 5)]

    async def work() -> None:
        async with open_async(url) as store:
            with pytest.raises(KvctlError):
                async with store.atomic_load():  # type: ignore[attr-defined]
                    await store.set_many(batch(10, 100))
                    await store.set_many(bad)

    asyncio.run(work())
    assert catalog(pg_url, table) == before


def test_a_table_made_without_a_feed_streams_and_writes_no_feed_row(pg_url: str) -> None:
    url, table = new_table(pg_url)
    url += "&feed=false"
    recs = batch(0, 3000)

    async def work() -> bool:
        async with open_async(url) as store, store.atomic_load():  # type: ignore[attr-defined]
            await store.set_many(recs)
            return streaming(store)

    assert asyncio.run(work())
    assert rows(url) == {r.key: (r.value, r.expires_at_ms, r.version) for r in recs}
    assert sql(pg_url, f"SELECT to_regclass('{table}__changes') IS NULL")[0][0] is True

"""A full snapshot restored, or a dump imported, into a PostgreSQL table that holds no key: one
load (``atomic_load``), the snapshot checked as it is read; on the real server started by
tests/services.sh.

Checked here: the rows are exact (bytes, expiries, versions), a new table gets all its indexes,
the change feed serves every key; a file damaged near its end leaves the destination exactly as
it was -- a new table is not created at all, an empty one keeps its rows, feed and metadata; a
table holding keys still gets the file checked before anything is written and the batches of a
merge; and the ability itself undoes a failed block, a table it created included, and refuses
to go on on a new connection after losing the one that carried it.  An import as one load keeps
the records before a malformed line (resumable with --from-line), and an interrupted one leaves
no table behind.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kvctl_plugins.postgres.settings import quote_ident
from kvctl_plugins.postgres.store import COPY_MIN_ROWS

from kvctl.abilities import AsyncAtomicLoad
from kvctl.engines import snapshot
from kvctl.errors import CorruptError, UnavailableError
from kvctl.hlc import make_version
from kvctl.registry import open_async, open_url
from kvctl.store import Record, now_ms
from kvctl.testing import open_sync
from kvctl.testing.cli import run_kvctl
from tests.backends.postgres.support import sql

pytestmark = pytest.mark.server

PREFIX = f"kvctl_ar{os.getpid()}_{uuid.uuid4().hex[:6]}"
N = 2 * COPY_MIN_ROWS + 700  # several batches, the first ones straight into the table


def new_table(base: str) -> tuple[str, str]:
    name = f"{PREFIX}_{uuid.uuid4().hex[:8]}"
    return f"{base}?table={name}", name


def records(n: int = N) -> list[Record]:
    later = now_ms() + 3_600_000
    base = make_version(now_ms() - 60_000)
    return [Record(b"key:%08d" % i, bytes([i % 256]) * 2 + b"\x00\xff" + os.urandom(30),
                   later + i if i % 4 == 0 else None, base + (i << 8)) for i in range(n)]


def snapshot_of(tmp: Path, recs: list[Record], name: str = "src") -> Path:
    src = f"memory://{PREFIX}-{name}"
    store = open_url(src)
    store.clear()
    store.set_many(recs)  # the memory store keeps the versions given
    path = tmp / f"{name}.kvs"
    snapshot.create(src, path, block_size=64 * 1024).check()
    return path


def damaged_near_end(good: Path) -> Path:
    data = bytearray(good.read_bytes())
    data[len(data) - 200] ^= 0x20  # in the last block: every batch before it is written first
    bad = good.with_name("bad-" + good.name)
    bad.write_bytes(bytes(data))
    return bad


def catalog(url: str, table: str) -> list[Any]:
    """What exists of the table: its objects, its kvctl_meta row, and digests of its rows and feed."""
    names = [table, table + "__tombs", table + "__changes"]
    out: list[Any] = [sql(url, f"SELECT to_regclass('{quote_ident(n)}') IS NOT NULL")[0][0] for n in names]
    out.append(sql(url, "SELECT to_regclass('kvctl_meta') IS NOT NULL AND EXISTS "
                        f"(SELECT 1 FROM kvctl_meta WHERE table_name = '{table}')")[0][0]
               if sql(url, "SELECT to_regclass('kvctl_meta') IS NOT NULL")[0][0] else False)
    for n, there in zip(names, out, strict=False):
        if there:
            out.append(sql(url, f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
                                f"FROM {quote_ident(n)} t")[0])
    return out


def contents(url: str) -> dict[bytes, tuple[bytes, int | None, int | None]]:
    with open_sync(url) as store:
        return {r.key: (r.value, r.expires_at_ms, r.version) for p in store.scan() for r in p.records}


def test_a_restore_into_a_new_table_is_exact_and_the_feed_serves_every_key(pg_url: str, tmp_path: Path) -> None:
    recs = records()
    path = snapshot_of(tmp_path, recs)
    url, table = new_table(pg_url)
    summary = snapshot.restore(path, url)
    assert summary.records == N and summary.blocks > 3 and summary.size == path.stat().st_size
    # the indexes a new table gets, built after the load
    indexes = sql(pg_url, f"SELECT indexdef FROM pg_indexes WHERE tablename = '{table}'")
    assert sorted(r[0].split(" USING ")[1] for r in indexes) == [
        "btree (expires_at) WHERE (expires_at IS NOT NULL)", "btree (key)", "btree (version)"]
    assert contents(url) == {r.key: (r.value, r.expires_at_ms, r.version) for r in recs}
    with open_sync(url) as store:
        served = [r for p in store.changes(None, batch_size=1000) for r in p.records]  # type: ignore[attr-defined]
    assert sorted(served) == sorted(recs)


def test_a_file_damaged_near_its_end_creates_no_table(pg_url: str, tmp_path: Path) -> None:
    bad = damaged_near_end(snapshot_of(tmp_path, records()))
    url, table = new_table(pg_url)
    before = catalog(pg_url, table)
    assert before[:3] == [False, False, False]
    out = run_kvctl(None, "snapshot", "restore", str(bad), url)
    assert out.returncode == 65, out.stderr
    assert "offset" in out.stderr and "written nothing" in out.stderr and "Traceback" not in out.stderr
    assert catalog(pg_url, table) == before


def test_a_file_damaged_near_its_end_leaves_an_empty_table_as_it_was(pg_url: str, tmp_path: Path) -> None:
    good = snapshot_of(tmp_path, records())
    url, table = new_table(pg_url)
    with open_sync(url) as store:  # a table with a history: a key written, then deleted
        store.set(b"gone", b"x")
        store.delete(b"gone")
    before = catalog(pg_url, table)
    with pytest.raises(CorruptError):
        snapshot.restore(damaged_near_end(good), url)
    assert catalog(pg_url, table) == before
    snapshot.restore(good, url)  # the same store works afterwards
    assert len(contents(url)) == N


def test_a_table_holding_keys_is_checked_first_and_merged_as_before(pg_url: str, tmp_path: Path) -> None:
    recs = records()
    good = snapshot_of(tmp_path, recs)
    url, table = new_table(pg_url)
    with open_sync(url) as store:
        store.set_many([Record(b"key:%08d" % 1, b"newer", None, make_version(now_ms() + 60_000)),
                        Record(b"other", b"kept")])
    before = catalog(pg_url, table)
    out = run_kvctl(None, "snapshot", "restore", str(damaged_near_end(good)), url)
    assert out.returncode == 65 and "stopped" not in out.stderr, out.stderr  # refused before any write
    assert catalog(pg_url, table) == before
    snapshot.restore(good, url)
    got = contents(url)
    assert got[b"key:%08d" % 1][0] == b"newer" and got[b"other"][0] == b"kept"  # a merge by version
    assert len(got) == N + 1


async def fail_inside_load(store: Any, expected: type[BaseException],
                           body: Callable[[Any], Awaitable[None]]) -> None:
    """Run ``body(store)`` inside an atomic load, which it makes fail with ``expected``."""
    assert isinstance(store, AsyncAtomicLoad)
    with pytest.raises(expected):
        async with store.atomic_load():
            await body(store)


def test_atomic_load_undoes_a_failed_block_and_the_table_it_created(pg_url: str) -> None:
    url, table = new_table(pg_url)
    before = catalog(pg_url, table)

    async def body(store: Any) -> None:
        await store.set_many(records(COPY_MIN_ROWS + 10))
        await store.set(b"one", b"1")
        assert await store.get(b"one") is not None  # reads see the block's writes
        raise RuntimeError("stop")

    async def work() -> None:
        async with open_async(url) as store:
            await fail_inside_load(store, RuntimeError, body)
            assert await asyncio.to_thread(catalog, pg_url, table) == before  # not even the table
            assert isinstance(store, AsyncAtomicLoad)
            async with store.atomic_load():  # the store goes on: a new block commits
                await store.set(b"one", b"1")
            assert (await store.get(b"one")).value == b"1"  # type: ignore[union-attr]

    asyncio.run(work())


def test_a_lost_connection_ends_the_load_and_is_not_replaced(pg_url: str) -> None:
    url, table = new_table(pg_url)
    with open_sync(url) as store:
        store.set(b"before", b"b")
    before = catalog(pg_url, table)

    async def body(store: Any) -> None:
        await store.set(b"a", b"1")
        await store._con.close()
        await store.set(b"b", b"2")  # would write outside the load on a new connection

    async def work() -> None:
        async with open_async(url) as store:
            await fail_inside_load(store, UnavailableError, body)
            assert await store.get(b"a") is None

    asyncio.run(work())
    assert catalog(pg_url, table) == before


def dump(path: Path, recs: list[Record], bad_at: int | None = None) -> list[Record]:
    """Write ``recs`` as a JSON-lines dump (line ``bad_at`` malformed); returns them."""
    with open(path, "w") as fh:
        for i, r in enumerate(recs, 1):
            obj = {"key": r.key.decode(), "value_b64": base64.b64encode(r.value).decode(),
                   "expires_at_ms": r.expires_at_ms, "version": r.version}
            fh.write("garbage\n" if i == bad_at else json.dumps(obj) + "\n")
    return recs


def test_an_import_into_a_new_table_is_one_load_with_every_index(pg_url: str, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    recs = dump(path, records())
    url, table = new_table(pg_url)
    out = run_kvctl(None, "-u", url, "import", str(path))
    assert out.returncode == 0, out.stderr
    assert contents(url) == {r.key: (r.value, r.expires_at_ms, r.version) for r in recs}
    assert len(sql(pg_url, f"SELECT 1 FROM pg_indexes WHERE tablename = '{table}'")) == 3
    with open_sync(url) as store:
        served = [r for p in store.changes(None, batch_size=1000) for r in p.records]  # type: ignore[attr-defined]
    assert sorted(served) == sorted(recs)


def test_keys_rewritten_in_later_batches_of_one_load_are_each_merged_once(pg_url: str, tmp_path: Path) -> None:
    """Batches that rewrite keys go through the staging table; inside one load nothing commits
    between them, so each must find it empty, not holding the batches staged before."""
    path = tmp_path / "in.jsonl"
    recs = [Record(r.key, r.value) for r in records(3 * COPY_MIN_ROWS)]  # versions assigned by the store
    recs[COPY_MIN_ROWS + 1] = Record(recs[1].key, b"second")          # batch 2 rewrites a batch-1 key
    recs[2 * COPY_MIN_ROWS + 1] = Record(recs[2].key, b"third")       # batch 3 rewrites another ...
    recs[2 * COPY_MIN_ROWS + 2] = Record(recs[1].key, b"third")       # ... and the key batch 2 staged
    dump(path, recs)
    url, _ = new_table(pg_url)
    out = run_kvctl(None, "-u", url, "import", str(path))
    assert out.returncode == 0, out.stderr
    got = contents(url)
    assert got[recs[1].key][0] == got[recs[2].key][0] == b"third"
    assert len(got) == len({r.key for r in recs})


def test_a_malformed_line_keeps_the_batches_before_it_and_the_import_resumes(pg_url: str, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    bad_at = N - 100  # after two batches of 5,000
    recs = dump(path, records(), bad_at=bad_at)
    url, _ = new_table(pg_url)
    out = run_kvctl(None, "-u", url, "import", str(path))
    assert out.returncode == 65 and f"line {bad_at}" in out.stderr, out.stderr
    m = re.search(r"resume with --from-line (\d+)", out.stderr)
    assert m is not None, out.stderr
    resume = int(m.group(1))
    assert len(contents(url)) == resume - 1 == 2 * COPY_MIN_ROWS  # what the message says is there
    dump(path, recs)  # the line fixed
    out = run_kvctl(None, "-u", url, "import", str(path), "--from-line", str(resume))
    assert out.returncode == 0, out.stderr
    got = contents(url)
    assert {k: v[0] for k, v in got.items()} == {r.key: r.value for r in recs}


def test_an_interrupted_import_into_a_new_table_leaves_no_table(pg_url: str, tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    dump(path, records(200_000))
    url, table = new_table(pg_url)
    before = catalog(pg_url, table)
    proc = subprocess.Popen([sys.executable, "-m", "kvctl", "-u", url, "import", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # rows of an open load are visible to no one: wait for its transaction to be writing the table
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not sql(
            pg_url, "SELECT 1 FROM pg_stat_activity WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() "
                    f"AND query LIKE '%{table}%' AND query LIKE 'COPY%'"):
        time.sleep(0.05)
    assert proc.poll() is None, "finished before the signal: make the input larger"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "having written nothing" in err and "--from-line" not in err, err
    assert catalog(pg_url, table) == before

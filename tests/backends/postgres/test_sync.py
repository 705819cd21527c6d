"""``kvctl sync`` from PostgreSQL's change feed, on the server started by tests/services.sh.

Random interleaved writes, overwrites, deletes and expiries, by kvctl and by other programs with
plain SQL, synced at random moments, converge: postgres to postgres, to SQLite and to memory,
one-way and two-way.  Also: a feed purged past the saved cursor falls back to a diff (announced)
and converges.  What every feed backend promises (the CLI's second run reads the feed, a stale
delete, SIGKILL then sync again) is kvctl.testing.replication, run in test_replication.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kvctl_plugins.postgres.settings import quote_ident

from kvctl.engines.replicate import SyncPlan, SyncResult, sync
from kvctl.store import Record, Store, now_ms
from kvctl.testing import open_sync
from tests.backends.postgres.support import asql

pytestmark = pytest.mark.server

PREFIX = f"kvctl_s{os.getpid()}_{uuid.uuid4().hex[:6]}"


def pg_table(base: str, **options: str) -> tuple[str, str]:
    """A new table's URL and name."""
    name = f"{PREFIX}_{uuid.uuid4().hex[:8]}"
    extra = "".join(f"&{k}={v}" for k, v in options.items())
    return f"{base}?table={name}{extra}", name


def run(plan: SyncPlan) -> SyncResult:
    return asyncio.run(sync(plan))


def contents(store: Store) -> dict[bytes, tuple[bytes, int | None, int | None]]:
    """Every live record with its expiry and version (versions too: the same writes arrived),
    leaving out what expires within a moment (the two sides are read one after the other)."""
    soon = now_ms() + 2000
    return {r.key: (r.value, r.expires_at_ms, r.version) for p in store.scan() for r in p.records
            if r.expires_at_ms is None or r.expires_at_ms > soon}


def scribble(store: Store, pg_url: str, table: str | None, rng: random.Random, n: int, keys: int = 60) -> None:
    """Random writes through kvctl, and (when ``table`` is given) plain SQL by another program."""
    sql: list[tuple[str, tuple[Any, ...]]] = []
    t = quote_ident(table) if table else ""
    for _ in range(n):
        key = b"k%03d" % rng.randrange(keys)
        roll = rng.random()
        if table and roll < 0.2:
            kind = rng.randrange(4)
            if kind == 0:
                sql.append((f"INSERT INTO {t} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE "
                            "SET value = EXCLUDED.value", (key, rng.randbytes(rng.randint(0, 30)))))
            elif kind == 1:
                sql.append((f"UPDATE {t} SET value = value || 'x'::bytea WHERE key = $1", (key,)))
            elif kind == 2:
                sql.append((f"DELETE FROM {t} WHERE key = $1", (key,)))
            else:
                sql.append((f"UPDATE {t} SET expires_at = $2 WHERE key = $1", (key, now_ms() + 60_000)))
            continue
        if sql:  # keep the order of kvctl's and the other program's writes
            asyncio.run(asql(pg_url, *sql))
            sql = []
        if roll < 0.55:
            store.set(key, rng.randbytes(rng.randint(0, 40)))
        elif roll < 0.65:
            store.set(key, b"short-lived", ttl_ms=rng.choice([1, 60_000]))
        elif roll < 0.85:
            store.delete(key)
        else:
            store.set_many([Record(key, b"batch"), Record(key + b"x", rng.randbytes(300))])
    if sql:
        asyncio.run(asql(pg_url, *sql))


def dst_url(kind: str, pg_url: str, tmp_path: Path) -> tuple[str, str | None]:
    if kind == "postgres":
        return pg_table(pg_url)
    if kind == "sqlite":
        return f"sqlite://{tmp_path}/dst.db", None
    return f"memory://{PREFIX}-{uuid.uuid4().hex[:8]}", None


@pytest.mark.parametrize("dst_kind", ["postgres", "sqlite", "memory"])
@pytest.mark.parametrize("seed", range(2))
def test_random_writes_converge_through_the_feed(pg_url: str, tmp_path: Path, dst_kind: str, seed: int) -> None:
    src_url, src_table = pg_table(pg_url)
    dst, _ = dst_url(dst_kind, pg_url, tmp_path)
    plan = SyncPlan(src_url, dst, tmp_path / "state")
    rng = random.Random(seed)
    src = open_sync(src_url)
    src.clear()
    keep_dst = open_sync(dst) if dst_kind == "memory" else None  # a named memory store lives while open
    modes = []
    try:
        for _ in range(6):
            scribble(src, pg_url, src_table, rng, rng.randint(0, 120))
            result = run(plan)
            modes.append(result.mode)
            assert result.converged and result.fallback is None
        final = run(plan)
        assert final.mode == "feed"
        assert modes[0] == "diff" and modes[1:] == ["feed"] * 5
        with open_sync(dst) as other:
            assert contents(src) == contents(other)
    finally:
        src.close()
        if keep_dst is not None:
            keep_dst.close()


def test_two_way_between_postgres_tables(pg_url: str, tmp_path: Path) -> None:
    (a, a_table), (b, b_table) = pg_table(pg_url), pg_table(pg_url)
    plan = SyncPlan(a, b, tmp_path / "state", two_way=True)
    left, right = open_sync(a), open_sync(b)
    try:
        left.set_many([Record(b"x", b"1"), Record(b"y", b"2")])
        run(plan)
        rng = random.Random(5)
        for _ in range(4):
            scribble(left, pg_url, a_table, rng, 40, keys=30)
            scribble(right, pg_url, b_table, rng, 40, keys=30)
            result = run(plan)
            assert result.mode == "feed" and result.converged
        left.set(b"shared", b"left")
        run(plan)
        left.delete(b"shared")
        time.sleep(0.005)
        right.set(b"shared", b"right, later")
        result = run(plan)
        assert {c.key: c.winner for c in result.conflicts}.get(b"shared") == "dst"
        assert contents(left) == contents(right)
        assert left.get(b"shared").value == b"right, later"  # type: ignore[union-attr]
        again = run(plan)
        assert (again.applied_to_dst, again.applied_to_src) == (0, 0)
    finally:
        left.close()
        right.close()


def test_feed_purged_past_the_cursor_falls_back_to_a_diff(pg_url: str, tmp_path: Path) -> None:
    src_url, _ = pg_table(pg_url, feed_retention="5")
    dst, _ = pg_table(pg_url)
    plan = SyncPlan(src_url, dst, tmp_path / "state")
    src = open_sync(src_url)
    try:
        src.set_many([Record(b"k%d" % i, b"v") for i in range(50)])
        run(plan)
        for i in range(20):
            src.set(b"k%d" % i, b"changed")
        src.delete(b"k30")
        src._run(src.inner.purge())  # type: ignore[attr-defined]  # what a later write would do
        result = run(plan)
        assert result.mode == "diff" and "purged past" in (result.fallback or "")
        with open_sync(dst) as other:
            assert contents(src) == contents(other)
        src.set(b"k40", b"again")
        assert run(plan).mode == "feed"
        with open_sync(dst) as other:
            assert other.get(b"k40").value == b"again"  # type: ignore[union-attr]
    finally:
        src.close()

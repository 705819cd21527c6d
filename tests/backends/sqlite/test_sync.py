"""`kvctl sync` from SQLite through its trigger-filled change feed: the engine in-process
(convergence with kvctl's and other programs' writes, chains, two-way, gaps) and the CLI in
separate processes (the second run reads the feed; SIGKILL mid-sync, then converge)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from tests.sync_support import cli_env, kvctl, sigkill_mid_sync, sync_json

from kvctl.engines.sync import SyncPlan, sync
from kvctl.registry import open_url
from kvctl.store import Record, now_ms


def run(plan: SyncPlan):  # type: ignore[no-untyped-def]
    return asyncio.run(sync(plan))


def contents(url: str) -> dict[bytes, tuple[bytes, int | None, int | None]]:
    """Every live record with its expiry and version (versions must match too: the same writes).
    Records expiring within the next second are left out: the two sides may be read either side
    of that moment."""
    soon = now_ms() + 1000
    with open_url(url) as store:
        return {r.key: (r.value, r.expires_at_ms, r.version) for p in store.scan() for r in p.records
                if r.expires_at_ms is None or r.expires_at_ms > soon}


def scribble(url: str, db: str, rng: random.Random, n: int, keys: int = 60) -> None:
    """``n`` random writes: kvctl's sets, TTLs, deletes and batches, and another program's SQL."""
    other = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        with open_url(url) as store:
            for _ in range(n):
                key = b"k%03d" % rng.randrange(keys)
                roll = rng.random()
                if roll < 0.35:
                    store.set(key, rng.randbytes(rng.randint(0, 40)))
                elif roll < 0.45:
                    store.set(key, b"short-lived", ttl_ms=rng.choice([1, 60_000]))
                elif roll < 0.65:
                    store.delete(key)
                elif roll < 0.75:
                    store.set_many([Record(key, b"batch"), Record(key + b"x", rng.randbytes(300))])
                elif roll < 0.88:  # another program: plain SQL, no version
                    other.execute("INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                                  "SET value = excluded.value", (key, rng.randbytes(8)))
                else:
                    other.execute("DELETE FROM kv WHERE key = ?", (key,))
    finally:
        other.close()


def sqlite_url(tmp_path: Path, name: str, **options: str) -> tuple[str, str]:
    """A new, empty store (created: a sync source is opened for reading, which creates nothing)."""
    db = str(tmp_path / f"{name}.db")
    query = "&".join(f"{k}={v}" for k, v in options.items())
    url = f"sqlite://{db}" + (f"?{query}" if query else "")
    open_url(url).close()
    return url, db


@pytest.mark.parametrize("seed", range(3))
def test_random_writes_converge_sqlite_to_sqlite_to_memory(tmp_path: Path, seed: int) -> None:
    a, a_db = sqlite_url(tmp_path, "a")
    b, _ = sqlite_url(tmp_path, "b")
    c = f"memory://c{uuid.uuid4().hex[:8]}"  # a named memory store lives on in this process
    ab, bc, ac = (SyncPlan(a, b, tmp_path / "state"), SyncPlan(b, c, tmp_path / "state"),
                  SyncPlan(a, f"memory://d{uuid.uuid4().hex[:8]}", tmp_path / "state"))
    rng = random.Random(seed)
    modes = []
    for _ in range(6):
        scribble(a, a_db, rng, rng.randint(0, 120))
        for plan in rng.sample([ab, bc, ac], rng.randint(1, 3)):  # sync at random moments
            result = run(plan)
            modes.append(result.mode)
            assert result.converged
    for plan in (ab, bc, ac):
        run(plan)
    assert modes.count("feed") >= len(modes) - 3  # only each pair's first run compares
    assert contents(a) == contents(b) == contents(c) == contents(ac.dst_url)


def test_a_stale_replayed_delete_does_not_remove_a_newer_value(tmp_path: Path) -> None:
    a, _a_db = sqlite_url(tmp_path, "a")
    b, b_db = sqlite_url(tmp_path, "b")
    plan = SyncPlan(a, b, tmp_path / "state")
    run(plan)
    with open_url(a) as src:
        src.set(b"k", b"v1")
        src.delete(b"k")
    time.sleep(0.005)
    with sqlite3.connect(b_db) as other:  # written later at the destination, by another program
        other.execute("INSERT INTO kv(key, value) VALUES (x'6b', x'6c61746572')")
    result = run(plan)
    assert result.mode == "feed" and result.stale_skipped >= 1
    with open_url(b) as dst:
        assert dst.get(b"k").value == b"later"  # type: ignore[union-attr]


def test_feed_gap_after_retention_falls_back_to_a_diff(tmp_path: Path) -> None:
    a, _ = sqlite_url(tmp_path, "a", feed_retention="50")
    b, _ = sqlite_url(tmp_path, "b")
    plan = SyncPlan(a, b, tmp_path / "state")
    with open_url(a) as src:
        src.set_many([Record(b"k%05d" % i, b"v") for i in range(100)])
    assert run(plan).mode == "diff"
    with open_url(a) as src:
        src.delete(b"k00001")
        src.set_many([Record(b"k%05d" % i, b"again") for i in range(12_000)])  # a purge passes the cursor
    result = run(plan)
    assert result.mode == "diff" and "gap" in (result.fallback or "")
    assert contents(a) == contents(b)
    with open_url(a) as src:
        src.set(b"k00003", b"then")
    assert run(plan).mode == "feed"
    assert contents(a) == contents(b)


def test_two_way_between_sqlite_stores(tmp_path: Path) -> None:
    a, a_db = sqlite_url(tmp_path, "a")
    b, _ = sqlite_url(tmp_path, "b")
    plan = SyncPlan(a, b, tmp_path / "state", two_way=True)
    with open_url(a) as left:
        left.set_many([Record(b"x", b"1"), Record(b"y", b"2")])
    run(plan)
    with sqlite3.connect(a_db) as other:
        other.execute("DELETE FROM kv WHERE key = x'78'")
        other.execute("INSERT INTO kv(key, value) VALUES (CAST('shared' AS BLOB), CAST('left' AS BLOB))")
    time.sleep(0.005)
    with open_url(b) as right:
        right.delete(b"y")
        right.set(b"shared", b"right, later")
    result = run(plan)
    winners = {c.key: c.winner for c in result.conflicts}
    assert result.mode == "feed" and winners.get(b"shared") == "dst"
    assert contents(a) == contents(b)
    assert {k: v[0] for k, v in contents(a).items()} == {b"shared": b"right, later"}
    again = run(plan)
    assert (again.applied_to_dst, again.applied_to_src, again.conflicts) == (0, 0, [])


# == the CLI in separate processes ===============================================================
def test_cli_second_sync_reads_the_feed(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    a, a_db = sqlite_url(tmp_path, "a")
    b, _ = sqlite_url(tmp_path, "b")
    with open_url(a) as src:
        src.set_many([Record(b"k%04d" % i, b"v%d" % i) for i in range(2000)])
    first = sync_json(env, a, b)
    assert (first["mode"], first["applied_to_dst"], first["converged"]) == ("diff", 2000, True)
    with open_url(a) as src:
        src.set(b"k0001", b"changed")
        src.delete_many([b"k0002", b"k0003"])
    with sqlite3.connect(a_db) as other:  # another program's write is synced too
        other.execute("UPDATE kv SET value = x'00' WHERE key = CAST('k0004' AS BLOB)")
    second = sync_json(env, a, b)
    assert (second["mode"], second["fallback"], second["applied_to_dst"], second["deleted"]) == ("feed", None, 2, 2)
    assert kvctl(env, "diff", a, b).returncode == 0
    third = sync_json(env, a, b)
    assert (third["mode"], third["applied_to_dst"]) == ("feed", 0)


def test_cli_sigkill_during_sync_then_sync_again_converges(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    a, a_db = sqlite_url(tmp_path, "a")
    b, _ = sqlite_url(tmp_path, "b")
    with open_url(a) as src:
        src.set_many([Record(b"k%05d" % i, b"base") for i in range(5000)])
    sync_json(env, a, b)
    rng = random.Random(3)
    with open_url(a) as src:  # 30,000 changes: many pages of 20
        for round_ in range(30):
            src.set_many([Record(b"k%05d" % rng.randrange(6000), b"r%d" % round_ * rng.randint(1, 9))
                          for _ in range(900)])
            src.delete_many([b"k%05d" % rng.randrange(6000) for _ in range(100)])
    with sqlite3.connect(a_db) as other:
        other.execute("UPDATE kv SET value = value || x'21' WHERE id % 7 = 0")  # another program, too
    sigkill_mid_sync(env, tmp_path, a, b)
    assert kvctl(env, "diff", a, b).returncode == 1  # killed half-way: not converged yet
    resumed = sync_json(env, a, b)
    assert resumed["mode"] == "feed" and resumed["converged"]
    diff = kvctl(env, "diff", a, b)
    assert diff.returncode == 0, diff.stdout
    assert contents(a) == contents(b)  # versions too: every change applied once, as written
    assert sync_json(env, a, b)["applied_to_dst"] == 0

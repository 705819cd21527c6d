"""`kvctl sync` from SQLite through its trigger-filled change feed, in process: convergence with
kvctl's and other programs' writes along a chain, and a feed gap.  What every feed backend
promises (CLI runs, stale deletes, two-way, SIGKILL) is kvctl.testing.replication, run in
test_replication.py."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import pytest

from kvctl.engines.replicate import SyncPlan, sync
from kvctl.registry import open_url
from kvctl.store import Record
from kvctl.testing.replication import contents, scribble
from tests.backends.sqlite.test_replication import plain_sql
from tests.backends.support import gap_falls_back_then_feed_resumes


def run(plan: SyncPlan):
    return asyncio.run(sync(plan))


def sqlite_url(tmp_path: Path, name: str, **options: str) -> tuple[str, str]:
    """A new, empty store (created: a sync source is opened for reading, which creates nothing)."""
    db = str(tmp_path / f"{name}.db")
    query = "&".join(f"{k}={v}" for k, v in options.items())
    url = f"sqlite://{db}" + (f"?{query}" if query else "")
    open_url(url).close()
    return url, db


@pytest.mark.parametrize("seed", range(3))
def test_random_writes_converge_sqlite_to_sqlite_to_memory(tmp_path: Path, seed: int) -> None:
    a, _ = sqlite_url(tmp_path, "a")
    b, _ = sqlite_url(tmp_path, "b")
    c = f"memory://c{uuid.uuid4().hex[:8]}"  # a named memory store lives on in this process
    ab, bc, ac = (SyncPlan(a, b, tmp_path / "state"), SyncPlan(b, c, tmp_path / "state"),
                  SyncPlan(a, f"memory://d{uuid.uuid4().hex[:8]}", tmp_path / "state"))
    rng = random.Random(seed)
    modes = []
    for _ in range(6):
        scribble(a, rng, rng.randint(0, 120), other=plain_sql)
        for plan in rng.sample([ab, bc, ac], rng.randint(1, 3)):  # sync at random moments
            result = run(plan)
            modes.append(result.mode)
            assert result.converged
    for plan in (ab, bc, ac):
        run(plan)
    assert modes.count("feed") >= len(modes) - 3  # only each pair's first run compares
    assert contents(a) == contents(b) == contents(c) == contents(ac.dst_url)


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
    gap_falls_back_then_feed_resumes(plan)

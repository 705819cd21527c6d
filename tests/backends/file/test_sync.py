"""`kvctl sync` between two file stores: convergence across compactions, a gap after compaction,
and the CLI's summaries.  What every feed backend promises (CLI runs, stale deletes, two-way,
SIGKILL) is kvctl.testing.replication, run in test_replication.py."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from kvctl.engines.replicate import SyncPlan, sync
from kvctl.registry import open_url
from kvctl.store import Record
from kvctl.testing.cli import clean_env, run_kvctl
from kvctl.testing.replication import contents, scribble, sync_json
from tests.backends.support import gap_falls_back_then_feed_resumes


def run(plan: SyncPlan):
    return asyncio.run(sync(plan))


@pytest.mark.parametrize("seed", range(3))
def test_random_writes_converge_through_the_feed(tmp_path: Path, seed: int) -> None:
    a = f"file://{tmp_path}/a?segment_size=4KiB&feed_retention=16KiB&compact_min=8KiB&compact_ratio=0.3"
    b = f"file://{tmp_path}/b"
    plan = SyncPlan(a, b, tmp_path / "state")
    rng = random.Random(seed)
    modes = []
    for _ in range(6):
        scribble(a, rng, rng.randint(0, 150), keys=80)
        result = run(plan)
        modes.append(result.mode)
        assert result.converged
    time.sleep(0.005)
    assert modes[0] == "diff" and modes[1:].count("feed") >= 3  # gaps only when compaction passed
    assert contents(a) == contents(b)


def test_feed_gap_after_compaction_falls_back_to_a_diff(tmp_path: Path) -> None:
    a, b = f"file://{tmp_path}/a", f"file://{tmp_path}/b"
    plan = SyncPlan(a, b, tmp_path / "state")
    with open_url(a) as src:
        src.set_many([Record(b"k%d" % i, b"v") for i in range(50)])
    run(plan)
    with open_url(a) as src:
        src.delete(b"k1")
        src.set(b"k2", b"changed")
        src.compact()  # passes the saved cursor
    gap_falls_back_then_feed_resumes(plan)


# == the CLI in separate processes ===============================================================
def test_cli_summaries_count_the_deletes_they_propagate(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    a, b = f"file://{tmp_path}/a", f"file://{tmp_path}/b"
    for key in ("k1", "k2"):
        assert run_kvctl(env, "-u", a, "set", key, "v").returncode == 0
    first = run_kvctl(env, "sync", a, b)
    assert first.stdout.startswith("diff sync: 2 applied to destination, 0 deleted,"), first.stdout
    assert run_kvctl(env, "-u", a, "del", "k1").returncode == 0
    second = run_kvctl(env, "sync", a, b)
    assert second.stdout.startswith("feed sync: 0 applied to destination, 1 deleted,"), second.stdout
    assert run_kvctl(env, "-u", b, "get", "k1").returncode == 1
    # both ways: a delete on either side is counted once, where it was applied
    assert run_kvctl(env, "sync", "--two-way", a, b).returncode == 0
    assert run_kvctl(env, "-u", b, "del", "k2").returncode == 0
    both = sync_json(env, a, b, "--two-way")
    assert (both["deleted"], both["applied_to_dst"], both["applied_to_src"]) == (1, 0, 0), both
    assert run_kvctl(env, "-u", a, "get", "k2").returncode == 1

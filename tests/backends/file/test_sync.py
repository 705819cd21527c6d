"""`kvctl sync` between two file stores: the engine in-process (convergence, gaps, two-way) and
the CLI in separate processes (the second run reads the feed; SIGKILL mid-sync, then converge)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from tests.sync_support import cli_env, kvctl, sigkill_mid_sync, sync_json

from kvctl.engines.sync import SyncPlan, sync
from kvctl.registry import open_url
from kvctl.store import Record


def run(plan: SyncPlan):  # type: ignore[no-untyped-def]
    return asyncio.run(sync(plan))


def contents(url: str) -> dict[bytes, tuple[bytes, int | None, int | None]]:
    """Every live record with its expiry and version (versions must match too: same writes)."""
    with open_url(url) as store:
        return {r.key: (r.value, r.expires_at_ms, r.version) for p in store.scan() for r in p.records}


def scribble(url: str, rng: random.Random, n: int, keys: int = 80) -> None:
    with open_url(url) as store:
        for _ in range(n):
            key = b"k%03d" % rng.randrange(keys)
            roll = rng.random()
            if roll < 0.45:
                store.set(key, rng.randbytes(rng.randint(0, 40)))
            elif roll < 0.55:
                store.set(key, b"short-lived", ttl_ms=rng.choice([1, 60_000]))
            elif roll < 0.8:
                store.delete(key)
            else:
                store.set_many([Record(key, b"batch"), Record(key + b"x", rng.randbytes(300))])


@pytest.mark.parametrize("seed", range(3))
def test_random_writes_converge_through_the_feed(tmp_path: Path, seed: int) -> None:
    a = f"file://{tmp_path}/a?segment_size=4KiB&feed_retention=16KiB&compact_min=8KiB&compact_ratio=0.3"
    b = f"file://{tmp_path}/b"
    plan = SyncPlan(a, b, tmp_path / "state")
    rng = random.Random(seed)
    modes = []
    for _ in range(6):
        scribble(a, rng, rng.randint(0, 150))
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
    result = run(plan)
    assert result.mode == "diff" and "gap" in (result.fallback or "")
    assert contents(a) == contents(b)
    with open_url(a) as src:
        src.set(b"k3", b"again")
    assert run(plan).mode == "feed"
    assert contents(a) == contents(b)


def test_two_way_between_file_stores(tmp_path: Path) -> None:
    a, b = f"file://{tmp_path}/a", f"file://{tmp_path}/b"
    plan = SyncPlan(a, b, tmp_path / "state", two_way=True)
    with open_url(a) as left:
        left.set_many([Record(b"x", b"1"), Record(b"y", b"2")])
    run(plan)
    with open_url(a) as left:
        left.delete(b"x")
        left.set(b"shared", b"left")
    time.sleep(0.005)
    with open_url(b) as right:
        right.delete(b"y")
        right.set(b"shared", b"right, later")
    result = run(plan)
    winners = {c.key: c.winner for c in result.conflicts}
    assert result.mode == "feed" and winners.pop(b"shared") == "dst"
    # The first run's diff pass took the destination's cursor before copying, so its own copy of
    # x comes back as a destination change and is listed against the source's newer delete.
    assert set(winners.values()) <= {"src"}
    assert contents(a) == contents(b)
    assert {k: v[0] for k, v in contents(a).items()} == {b"shared": b"right, later"}
    again = run(plan)
    assert (again.applied_to_dst, again.applied_to_src, again.conflicts) == (0, 0, [])


def test_a_stale_replayed_delete_does_not_remove_a_newer_value(tmp_path: Path) -> None:
    a, b = f"file://{tmp_path}/a", f"file://{tmp_path}/b"
    plan = SyncPlan(a, b, tmp_path / "state")
    with open_url(a):  # a one-way sync only reads its source, so the source must exist
        pass
    run(plan)
    with open_url(a) as src:
        src.set(b"k", b"v1")
        src.delete(b"k")
    time.sleep(0.005)
    with open_url(b) as dst:
        dst.set(b"k", b"written later at the destination")
    result = run(plan)
    assert result.stale_skipped >= 1
    with open_url(b) as dst:
        assert dst.get(b"k").value == b"written later at the destination"


# == the CLI in separate processes ===============================================================
def test_cli_second_sync_reads_the_feed(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    a, b = f"file://{tmp_path}/a", f"file://{tmp_path}/b"
    with open_url(a) as src:
        src.set_many([Record(b"k%04d" % i, b"v%d" % i) for i in range(2000)])
    first = sync_json(env, a, b)
    assert (first["mode"], first["applied_to_dst"], first["converged"]) == ("diff", 2000, True)
    with open_url(a) as src:
        src.set(b"k0001", b"changed")
        src.delete_many([b"k0002", b"k0003"])
    second = sync_json(env, a, b)
    assert (second["mode"], second["fallback"], second["applied_to_dst"], second["deleted"]) == ("feed", None, 1, 2)
    assert kvctl(env, "diff", a, b).returncode == 0
    third = sync_json(env, a, b)
    assert (third["mode"], third["applied_to_dst"]) == ("feed", 0)


def test_cli_sigkill_during_sync_then_sync_again_converges(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    a, b = f"file://{tmp_path}/a", f"file://{tmp_path}/b"
    with open_url(a) as src:
        src.set_many([Record(b"k%05d" % i, b"base") for i in range(5000)])
    sync_json(env, a, b)
    with open_url(a) as src:  # 30,000 changes: many pages of 20
        rng = random.Random(3)
        for round_ in range(30):
            src.set_many([Record(b"k%05d" % rng.randrange(6000), b"r%d" % round_ * rng.randint(1, 9))
                          for _ in range(900)])
            src.delete_many([b"k%05d" % rng.randrange(6000) for _ in range(100)])
    sigkill_mid_sync(env, tmp_path, a, b)
    assert kvctl(env, "diff", a, b).returncode == 1  # killed half-way: not converged yet
    resumed = sync_json(env, a, b)
    assert resumed["mode"] == "feed" and resumed["converged"]
    diff = kvctl(env, "diff", a, b)
    assert diff.returncode == 0, diff.stdout
    assert contents(a) == contents(b)  # versions too: every change applied once, as written
    assert sync_json(env, a, b)["applied_to_dst"] == 0


def test_cli_summaries_count_the_deletes_they_propagate(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    a, b = f"file://{tmp_path}/a", f"file://{tmp_path}/b"
    for key in ("k1", "k2"):
        assert kvctl(env, "-u", a, "set", key, "v").returncode == 0
    first = kvctl(env, "sync", a, b)
    assert first.stdout.startswith("diff sync: 2 applied to destination, 0 deleted,"), first.stdout
    assert kvctl(env, "-u", a, "del", "k1").returncode == 0
    second = kvctl(env, "sync", a, b)
    assert second.stdout.startswith("feed sync: 0 applied to destination, 1 deleted,"), second.stdout
    assert kvctl(env, "-u", b, "get", "k1").returncode == 1
    # both ways: a delete on either side is counted once, where it was applied
    assert kvctl(env, "sync", "--two-way", a, b).returncode == 0
    assert kvctl(env, "-u", b, "del", "k2").returncode == 0
    both = sync_json(env, a, b, "--two-way")
    assert (both["deleted"], both["applied_to_dst"], both["applied_to_src"]) == (1, 0, 0), both
    assert kvctl(env, "-u", a, "get", "k2").returncode == 1

"""The sync engine on in-process stores: convergence, last-writer-wins, skew, gaps, resumption;
and how `kvctl sync` names the keys it reports."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from pathlib import Path

import pytest

from kvctl.adapt import to_async, to_sync
from kvctl.engines.replicate import SyncEngine, SyncPlan, sync
from kvctl.errors import UnsupportedError
from kvctl.registry import open_url
from kvctl.store import TOMBSTONE, Record
from kvctl.testing.cli import clean_env, run_kvctl
from kvctl.testing.replication import scribble


def contents(url: str) -> dict[bytes, tuple[bytes, int | None]]:
    store = to_sync(open_url(url))
    return {r.key: (r.value, r.expires_at_ms) for p in store.scan() for r in p.records}


def run(plan: SyncPlan):
    return asyncio.run(sync(plan))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[str, str, Path]:
    tag = uuid.uuid4().hex[:8]
    return f"memory://a{tag}", f"memory://b{tag}", tmp_path


def test_first_run_copies_then_only_changes_move(pair: tuple[str, str, Path]) -> None:
    a, b, state = pair
    src = open_url(a)
    src.set_many(Record(b"k%03d" % i, b"v") for i in range(100))
    first = run(SyncPlan(a, b, state))
    assert (first.mode, first.applied_to_dst, first.converged) == ("diff", 100, True)
    src.set(b"k001", b"changed")
    src.delete(b"k002")
    second = run(SyncPlan(a, b, state))
    assert (second.mode, second.applied_to_dst, second.deleted, second.fallback) == ("feed", 1, 1, None)
    assert contents(a) == contents(b)
    assert run(SyncPlan(a, b, state)).applied_to_dst == 0


@pytest.mark.parametrize("seed", range(5))
def test_random_interleavings_converge(pair: tuple[str, str, Path], seed: int) -> None:
    a, b, state = pair
    rng = random.Random(seed)
    for _ in range(6):
        scribble(a, rng, rng.randint(0, 60), keys=40, ttls=(1, 5, 60_000))
        run(SyncPlan(a, b, state))
    time.sleep(0.01)
    assert contents(a) == contents(b)


def test_stale_delete_never_removes_a_newer_value(pair: tuple[str, str, Path]) -> None:
    a, b, state = pair
    dst = open_url(b)
    dst.set(b"k", b"newer")  # written at the destination after the source's delete below
    newer_version = dst.get(b"k").version
    src = open_url(a)
    src.apply_many([Record(b"k", b"", None, newer_version - 1000, TOMBSTONE)])
    src.apply_many([Record(b"j", b"old", None, newer_version - 2000)])
    src.apply_many([Record(b"j", b"", None, newer_version - 1000, TOMBSTONE)])
    plan = SyncPlan(a, b, state)
    run(plan)  # first run: diff pass
    open_url(a).set(b"other", b"x")
    run(plan)
    assert open_url(b).get(b"k").value == b"newer"


def test_feed_replay_of_a_stale_delete_is_skipped(pair: tuple[str, str, Path]) -> None:
    a, b, state = pair
    plan = SyncPlan(a, b, state)
    run(plan)
    src, dst = open_url(a), open_url(b)
    src.set(b"k", b"v1")
    src.delete(b"k")
    time.sleep(0.005)  # independent clocks order writes by time only across milliseconds
    dst.set(b"k", b"written-later-at-destination")
    result = run(plan)
    assert result.stale_skipped >= 1
    assert dst.get(b"k").value == b"written-later-at-destination"


def test_clock_skew_an_hour_behind_still_converges(pair: tuple[str, str, Path]) -> None:
    a, b, state = pair
    slow, fast = open_url(a), open_url(b)
    real = lambda: time.time_ns() // 1_000_000  # noqa: E731
    slow._clock._wall = lambda: real() - 3_600_000  # this machine's clock is an hour behind
    plan = SyncPlan(a, b, state, two_way=True)
    run(plan)
    fast.set(b"k", b"first, on the fast machine")
    run(plan)
    assert slow.get(b"k").value == b"first, on the fast machine"
    slow.set(b"k", b"second, on the slow machine")  # later in real time: must win
    run(plan)
    assert fast.get(b"k").value == b"second, on the slow machine"
    assert contents(a) == contents(b)


def test_two_way_exchanges_and_lists_conflicts(pair: tuple[str, str, Path]) -> None:
    a, b, state = pair
    left, right = open_url(a), open_url(b)
    plan = SyncPlan(a, b, state, two_way=True)
    left.set(b"shared", b"base")
    run(plan)
    left.set(b"only-left", b"L")
    right.set(b"only-right", b"R")
    left.set(b"shared", b"left edit")
    time.sleep(0.005)
    right.set(b"shared", b"right edit, later")
    right.delete(b"only-left-never-existed")
    result = run(plan)
    assert [(c.key, c.winner) for c in result.conflicts] == [(b"shared", "dst")]
    assert contents(a) == contents(b)
    assert left.get(b"shared").value == b"right edit, later"
    again = run(plan)
    assert (again.applied_to_dst, again.applied_to_src, again.conflicts) == (0, 0, [])


def test_two_way_deletes_travel_both_ways(pair: tuple[str, str, Path]) -> None:
    a, b, state = pair
    left, right = open_url(a), open_url(b)
    plan = SyncPlan(a, b, state, two_way=True)
    left.set_many([Record(b"x", b"1"), Record(b"y", b"2")])
    run(plan)
    left.delete(b"x")
    right.delete(b"y")
    run(plan)
    assert contents(a) == contents(b) == {}


def test_feed_gap_falls_back_to_a_diff_and_says_so(pair: tuple[str, str, Path]) -> None:
    a, b, state = pair
    a_small = a + "?feed_retention=10"
    plan = SyncPlan(a_small, b, state)
    run(plan)
    src = open_url(a_small)
    for i in range(50):  # more changes than the feed retains
        src.set(b"g%d" % i, b"v")
    src.delete(b"g0")
    result = run(plan)
    assert result.mode == "diff" and result.fallback and "gap" in result.fallback
    assert contents(a) == contents(b)


def test_source_without_a_feed_is_compared_every_time(tmp_path: Path) -> None:
    src_url, dst_url = f"outside://s{uuid.uuid4().hex[:6]}", f"memory://d{uuid.uuid4().hex[:6]}"
    src = open_url(src_url)
    src.set_many([Record(b"a", b"1"), Record(b"b", b"2")])
    first = run(SyncPlan(src_url, dst_url, tmp_path))
    assert first.mode == "diff" and "no change feed" in (first.fallback or "")
    src.delete_many([b"a"])
    assert run(SyncPlan(src_url, dst_url, tmp_path)).deleted == 1
    assert contents(dst_url) == {b"b": (b"2", None)}


def test_two_way_needs_feeds_on_both_sides(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="change feed"):
        run(SyncPlan(f"outside://x{uuid.uuid4().hex}", "memory://", tmp_path, two_way=True))


def test_an_interrupted_run_resumes_without_changing_the_result(pair: tuple[str, str, Path]) -> None:
    a, b, state = pair
    plan = SyncPlan(a, b, state, batch_size=10)
    run(plan)
    src = open_url(a)
    for i in range(100):
        src.set(b"r%03d" % i, b"v%d" % i)
        if i % 7 == 0:
            src.delete(b"r%03d" % (i // 2))

    class Crash(Exception):
        pass

    pages = 0

    def crash_after_three(event: str, data: dict) -> None:
        nonlocal pages
        pages += 1
        if pages == 3:
            raise Crash

    async def interrupted() -> None:
        s, d = to_async(open_url(a)), to_async(open_url(b))
        await SyncEngine(plan, s, d, crash_after_three).run_once()

    with pytest.raises(Crash):
        asyncio.run(interrupted())
    assert contents(a) != contents(b)
    resumed = run(plan)
    assert resumed.mode == "feed"
    assert contents(a) == contents(b)


def test_two_way_first_run_echoes_are_not_conflicts(pair: tuple[str, str, Path]) -> None:
    a, b, state = pair
    left, right = open_url(a), open_url(b)
    left.set_many([Record(b"x", b"1"), Record(b"y", b"2")])
    right.set(b"z", b"3")
    plan = SyncPlan(a, b, state, two_way=True)
    first = run(plan)
    assert first.mode == "diff"
    left.delete(b"x")
    second = run(plan)
    assert second.conflicts == [] and contents(a) == contents(b)
    assert set(contents(a)) == {b"y", b"z"}


def test_conflicting_and_typed_keys_are_shown_like_every_other_key() -> None:
    from kvctl.engines.replicate import Conflict, SyncResult

    result = SyncResult(conflicts=[Conflict(b"ee", "dst", 1, 2), Conflict(b"\xff\x00", "src", 4, 3)],
                        skipped_typed=[b"h:1", b"\xfe"])
    doc = result.to_dict()
    assert doc["conflicts"] == [{"key": "ee", "winner": "dst", "src_version": 1, "dst_version": 2},
                                {"key_b64": "/wA=", "winner": "src", "src_version": 4, "dst_version": 3}]
    assert doc["skipped_typed"] == [{"key": "h:1"}, {"key_b64": "/g=="}]


def test_cli_two_way_conflicts_name_keys_as_scan_does(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    a, b = f"file://{tmp_path / 'ta'}", f"file://{tmp_path / 'tb'}"

    def conflict_on(key: str, *enc: str) -> None:
        assert run_kvctl(env, *enc, "-u", a, "set", key, "from A").returncode == 0
        time.sleep(0.05)
        assert run_kvctl(env, *enc, "-u", b, "set", key, "from B, later").returncode == 0

    assert run_kvctl(env, "-u", a, "set", "x", "1").returncode == 0
    assert run_kvctl(env, "sync", "--two-way", a, b).returncode == 0
    conflict_on("ee")
    out = run_kvctl(env, "sync", "--two-way", a, b, "--json")
    assert out.returncode == 0, out.stderr
    assert [(c.get("key"), c["winner"]) for c in json.loads(out.stdout)["conflicts"]] == [("ee", "dst")]
    conflict_on("ff", "--keys", "hex")  # one byte, 0xff: not UTF-8
    out = run_kvctl(env, "sync", "--two-way", a, b, "--json")
    assert [(c.get("key_b64"), c["winner"]) for c in json.loads(out.stdout)["conflicts"]] == [("/w==", "dst")]
    conflict_on("ee")
    text = run_kvctl(env, "sync", "--two-way", a, b)
    assert text.returncode == 0 and "\n  conflict ee: dst wins (src v" in text.stdout
    assert "b'" not in text.stdout
    conflict_on("ff", "--keys", "hex")
    shown = run_kvctl(env, "--keys", "hex", "sync", "--two-way", a, b).stdout
    assert "\n  conflict ff: dst wins" in shown
    scanned = run_kvctl(env, "--keys", "hex", "-u", a, "scan", "--keys-only").stdout
    assert "ff\n" in scanned  # the same display as scan's


def test_keys_the_destination_cannot_hold_are_listed_not_fatal(tmp_path: Path) -> None:
    src, dst = f"sqlite://{tmp_path / 'src.db'}", f"lmdb://{tmp_path / 'dst'}"
    with open_url(src) as store:
        store.set_many([Record(b"", b"empty key"), Record(b"k" * 70_000, b"long key"), Record(b"ok", b"1")])
    out = run_kvctl(clean_env(tmp_path), "sync", src, dst)
    assert out.returncode == 8, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 3 and all(len(line) < 400 for line in lines), lines
    assert lines[-1].startswith("kvctl: error: 2 keys failed (first: ")
    assert "2 keys NOT copied" in out.stdout
    assert set(contents(dst)) == {b"ok"}

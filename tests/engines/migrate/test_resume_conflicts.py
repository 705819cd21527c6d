"""--resume under --on-conflict fail, skip and newer: the interrupted run's own writes past its last
checkpoint are not conflicts, and a resumed run ends with the data and the totals of an
uninterrupted one; any other content in the destination is still a conflict (in process; the
Ctrl-C and SIGKILL versions run the real command in test_migrate_resume.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kvctl.engines.migrate import Plan, Summary, checkpoint, migrate
from kvctl.engines.reporting import Progress, Reporter
from kvctl.errors import ConflictError, UnavailableError
from kvctl.store import Record, now_ms
from tests.engines.support import DictStore, state_dir, typed_caps

__all__ = ["state_dir"]

FP = "resume-conflicts"
N = 30  # keys k00..k29 in batches of 3: batch 1 is k00-k02, batch 6 k15-k17
LATER = now_ms() + 3_600_000


class LostAfterWriting(DictStore):
    """Applies its ``lost_at``-th set_many, then fails: a server that went away before it answered."""

    def __init__(self, lost_at: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.lost_at = lost_at

    async def set_many(self, records: Iterable[Record]) -> None:
        await super().set_many(records)
        if self.set_calls == self.lost_at:
            raise UnavailableError("dicttest went away")


class FirstCheckpoint(Reporter):
    """Keeps the first checkpoint the run writes, to put back after the run: what a kill leaves."""

    def __init__(self) -> None:
        self.path = checkpoint.default_path(FP)
        self.saved: bytes | None = None

    def progress(self, event: Progress) -> None:
        if self.saved is None and self.path.exists():
            self.saved = self.path.read_bytes()

    def restore(self) -> None:
        assert self.saved is not None
        self.path.write_bytes(self.saved)


def run(src: DictStore, dst: DictStore, plan: Plan, reporter: Reporter | None = None) -> Summary:
    return asyncio.run(migrate(src, dst, plan, reporter or Reporter(), FP))


def source(**kw: Any) -> DictStore:
    store = DictStore(**kw)
    for i in range(N):
        key = b"k%02d" % i
        store.data[key] = Record(key, b"v%d" % i, LATER if i % 4 == 0 else None, 1000 + i)
    return store


def interrupted(src: DictStore, plan: Plan, **kw: Any) -> DictStore:
    """The destination a killed run leaves: batches 1-2 checkpointed, 3-6 written past the checkpoint."""
    dst = LostAfterWriting(lost_at=6, **kw)
    keep = FirstCheckpoint()
    with pytest.raises(UnavailableError):
        run(src, dst, replace(plan, checkpoint_every=2, checkpoint_interval=3600), keep)
    keep.restore()  # the kill came before the error path could save a later one
    assert checkpoint.load(keep.path, FP) is not None
    after = DictStore(dst.capabilities)
    after.data = dict(dst.data)
    assert sorted(after.data) == [b"k%02d" % i for i in range(18)]
    return after


@pytest.mark.parametrize("policy", ["fail", "skip", "newer"])
def test_writes_past_the_checkpoint_are_the_runs_own(policy: str, state_dir: Path) -> None:
    src = source()
    plan = Plan(batch_size=3, on_conflict=policy)  # type: ignore[arg-type]
    dst = interrupted(src, plan)
    s = run(src, dst, replace(plan, resume=True, verify=True))
    s.check()
    assert s.resumed and dst.data == src.data
    # the totals of an uninterrupted run: every key copied once, none skipped
    assert (s.counts.read, s.counts.copied, s.counts.skipped) == (N, N, 0)
    assert not checkpoint.default_path(FP).exists()


def test_a_resume_interrupted_in_turn_still_finishes(state_dir: Path) -> None:
    """Resuming twice (the first resume interrupted too) still finishes."""
    src = source()
    plan = Plan(batch_size=3, on_conflict="fail")
    dst = interrupted(src, plan)
    lost = LostAfterWriting(lost_at=2)
    lost.data = dict(dst.data)
    with pytest.raises(UnavailableError):
        run(src, lost, replace(plan, resume=True))
    dst.data = dict(lost.data)
    s = run(src, dst, replace(plan, resume=True))
    assert dst.data == src.data and s.counts.copied == N


def _value(r: Record) -> Record:
    return r._replace(value=b"someone else's")


def _version(r: Record) -> Record:
    return r._replace(version=(r.version or 0) + 1)


def _expiry(shift_ms: int) -> Callable[[Record], Record]:
    return lambda r: r._replace(expires_at_ms=(r.expires_at_ms or LATER) + shift_ms)


@pytest.mark.parametrize(("change", "conflicts"), [
    (_value, True),
    (_version, True),  # the same bytes written by another writer
    (_expiry(10_000), True),
    (_expiry(-500), False),  # within --expiry-tolerance: a backend rounding the expiry
], ids=["value", "version", "expiry", "expiry-within-tolerance"])
def test_other_content_past_the_checkpoint_is_still_a_conflict(
        change: Callable[[Record], Record], conflicts: bool, state_dir: Path) -> None:
    src = source()
    plan = Plan(batch_size=3, on_conflict="fail")
    dst = interrupted(src, plan)
    dst.data[b"k12"] = change(dst.data[b"k12"])  # written past the checkpoint, then changed
    if conflicts:
        with pytest.raises(ConflictError, match="k12"):
            run(src, dst, replace(plan, resume=True))
        assert dst.data[b"k12"] == change(src.data[b"k12"])  # left alone
    else:
        s = run(src, dst, replace(plan, resume=True))
        assert s.counts.copied == N and dst.data == src.data


def test_skip_still_skips_other_content_past_the_checkpoint(state_dir: Path) -> None:
    src = source()
    plan = Plan(batch_size=3, on_conflict="skip")
    dst = interrupted(src, plan)
    dst.data[b"k12"] = _value(dst.data[b"k12"])
    s = run(src, dst, replace(plan, resume=True))
    assert (s.counts.copied, s.counts.skipped) == (N - 1, 1)
    assert dst.data[b"k12"].value == b"someone else's"


def test_an_identical_key_past_the_replayed_batches_is_a_conflict_as_without_resume(state_dir: Path) -> None:
    """Only the batches the interrupted run may have written are replayed: a later key the
    destination already held, even with the same content, stops a fail run as it would have."""
    src = source()
    plan = Plan(batch_size=3, on_conflict="fail")
    dst = interrupted(src, plan)
    dst.data[b"k28"] = src.data[b"k28"]  # batch 10; batch 7 (k18-k20) is absent: the replay ends there
    with pytest.raises(ConflictError, match="k28"):
        run(src, dst, replace(plan, resume=True))


def test_typed_values_past_the_checkpoint_are_compared_by_their_dumps(state_dir: Path) -> None:
    src = source(caps=typed_caps())
    src.data[b"k13"] = Record(b"k13", b"dump-of-a-hash", None, None, "hash")
    plan = Plan(batch_size=3, on_conflict="fail")
    dst = interrupted(src, plan, caps=typed_caps())
    assert dst.data[b"k13"].kind == "hash"
    s = run(src, dst, replace(plan, resume=True))
    assert s.counts.copied == N and dst.data == src.data

    dst = interrupted(src, plan, caps=typed_caps())
    dst.data[b"k13"] = Record(b"k13", b"dump-of-another-hash", None, None, "hash")
    with pytest.raises(ConflictError, match="k13"):
        run(src, dst, replace(plan, resume=True))

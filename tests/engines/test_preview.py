"""Dry runs and what sync reports: the keys a dry run would create, overwrite and delete (bounded
lists, exact counts), a dry run that changes nothing, a kept newer destination value, and a watch
that dies saying what all its runs applied."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from kvctl.adapt import to_async, to_sync
from kvctl.engines import migrate, snapshot
from kvctl.engines.preview import MAX_LISTED, KeyList
from kvctl.engines.replicate import SyncEngine, SyncPlan, SyncResult, sync
from kvctl.errors import UnavailableError
from kvctl.registry import open_url
from kvctl.store import Record

from .support import FailingStore


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _fill(url: str, pairs: dict[bytes, bytes]) -> None:
    store = to_sync(open_url(url))
    store.set_many([Record(k, v) for k, v in pairs.items()])
    store.close()


def test_key_lists_are_bounded_and_say_so() -> None:
    keys = KeyList()
    keys.add(b"k%d" % i for i in range(MAX_LISTED + 5))
    shown = keys.to_dict()
    assert shown["count"] == MAX_LISTED + 5 and len(shown["keys"]) == MAX_LISTED and shown["truncated"] is True
    assert shown["keys"][0] == {"key": "k0"}
    small = KeyList()
    small.add([b"\xff"])
    assert small.to_dict() == {"count": 1, "keys": [{"key_b64": "/w=="}], "truncated": False}


def test_migrate_dry_run_names_new_overwritten_and_extra_keys_and_writes_nothing(tmp_path: Path) -> None:
    src, dst = f"sqlite://{tmp_path / 'src.db'}", f"sqlite://{tmp_path / 'dst.db'}"
    _fill(src, {b"new": b"1", b"both": b"2"} | {b"bulk:%04d" % i: b"x" for i in range(MAX_LISTED + 10)})
    _fill(dst, {b"both": b"old", b"extra": b"9"})
    before = (tmp_path / "dst.db").read_bytes()
    summary = migrate.run(src, dst, migrate.Plan(dry_run=True, delete_extra=True, max_delete=10))
    assert summary.preview is not None
    out = summary.to_dict()
    assert out["would_create"]["count"] == MAX_LISTED + 11 and out["would_create"]["truncated"] is True
    assert len(out["would_create"]["keys"]) == MAX_LISTED
    assert out["would_overwrite"] == {"count": 1, "keys": [{"key": "both"}], "truncated": False}
    assert out["would_delete"] == {"count": 1, "keys": [{"key": "extra"}], "truncated": False}
    assert (tmp_path / "dst.db").read_bytes() == before
    missing = tmp_path / "missing.db"
    summary = migrate.run(src, f"sqlite://{missing}", migrate.Plan(dry_run=True))
    assert summary.preview is not None and summary.preview.create.count == MAX_LISTED + 12
    assert not missing.exists()  # a dry run creates no store


def test_restore_dry_run_with_replace_reports_what_it_would_delete(tmp_path: Path) -> None:
    src, dst = f"sqlite://{tmp_path / 'src.db'}", f"sqlite://{tmp_path / 'dst.db'}"
    _fill(src, {b"a": b"1", b"b": b"2"})
    snap = tmp_path / "s.kvs"
    snapshot.create(src, snap)
    _fill(dst, {b"b": b"old", b"gone": b"x"})
    before = (tmp_path / "dst.db").read_bytes()
    summary = snapshot.restore(snap, dst, replace=True, dry_run=True)
    assert summary.preview is not None
    assert (summary.preview.create.keys, summary.preview.overwrite.keys, summary.preview.delete.keys) == (
        [b"a"], [b"b"], [b"gone"])
    assert summary.to_dict()["dry_run"] is True
    assert (tmp_path / "dst.db").read_bytes() == before
    summary = snapshot.restore(snap, f"sqlite://{tmp_path / 'new.db'}", dry_run=True)
    assert summary.preview is not None and summary.preview.create.count == 2
    assert not (tmp_path / "new.db").exists()
    assert any("does not exist yet" in n for n in summary.notes)


def test_sync_dry_run_applies_nothing_and_saves_no_state(tmp_path: Path) -> None:
    src, dst = f"sqlite://{tmp_path / 'a.db'}", f"sqlite://{tmp_path / 'b.db'}"
    _fill(src, {b"a": b"1", b"b": b"2"})
    _fill(dst, {b"c": b"3"})
    before = [(tmp_path / n).read_bytes() for n in ("a.db", "b.db")]
    state = tmp_path / "state"
    result = asyncio.run(sync(SyncPlan(src, dst, state, dry_run=True)))
    assert (result.dry_run, result.applied_to_dst) == (True, 2)
    assert result.to_dst is not None and sorted(result.to_dst.create.keys) == [b"a", b"b"]
    assert result.to_dict()["to_dst"]["would_create"]["count"] == 2
    assert [(tmp_path / n).read_bytes() for n in ("a.db", "b.db")] == before
    assert not state.exists()
    result = asyncio.run(sync(SyncPlan(src, f"sqlite://{tmp_path / 'c.db'}", state, dry_run=True)))
    assert result.applied_to_dst == 2 and not (tmp_path / "c.db").exists() and not state.exists()


def test_a_one_way_sync_counts_a_newer_destination_value_as_kept(tmp_path: Path) -> None:
    a, b = f"sqlite://{tmp_path / 'a.db'}", f"sqlite://{tmp_path / 'b.db'}"  # stores that keep versions
    _fill(a, {b"k": b"old"})
    _fill(b, {b"k": b"newer at the destination"})  # written after the source's
    result = asyncio.run(sync(SyncPlan(a, b, tmp_path)))
    assert (result.applied_to_dst, result.kept_at_dst) == (0, 1)
    held = to_sync(open_url(b)).get(b"k")
    assert held is not None and held.value == b"newer at the destination"


def test_a_watch_that_dies_says_what_all_its_runs_applied(tmp_path: Path) -> None:
    a = f"memory://a{_tag()}"
    _fill(a, {b"k%d" % i: b"v" for i in range(5)})
    dst = FailingStore(fail_at=2)
    plan = SyncPlan(a, f"memory://b{_tag()}", tmp_path)
    runs: list[SyncResult] = []

    async def watch() -> None:
        engine = SyncEngine(plan, to_async(open_url(a)), dst)

        def ran(result: SyncResult) -> None:
            runs.append(result)
            _fill(a, {b"later": b"v"})  # the next run has something to apply, and fails

        await engine.watch(0.0, asyncio.Event(), ran)

    with pytest.raises(UnavailableError) as failed:
        asyncio.run(watch())
    assert runs[0].applied_to_dst == 5
    assert "after at least 5 changes applied" in (failed.value.hint or "")

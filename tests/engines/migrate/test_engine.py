"""The migrate engine: policies, filters, expiry, TTL support, limits, typed values, delete-extra,
dry runs, checkpoints and resume (in process; the SIGKILL test is in test_migrate_resume.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from kvctl.engines.migrate import Plan, Summary, checkpoint, migrate
from kvctl.engines.migrate import run as run_urls
from kvctl.engines.reporting import Reporter
from kvctl.errors import (
    ConflictError,
    DifferenceError,
    IncompleteError,
    LimitError,
    UnavailableError,
    UnsupportedError,
    UsageError,
)
from kvctl.registry import open_url
from kvctl.store import Capabilities, Record, now_ms
from tests.engines.support import DictStore, FailingStore, state_dir, typed_caps

__all__ = ["state_dir"]


def run(src: Any, dst: Any, plan: Plan | None = None, reporter: Reporter | None = None,
        fp: str = "test-plan") -> Summary:
    return asyncio.run(migrate(src, dst, plan or Plan(batch_size=3), reporter or Reporter(), fp))


def filled(n: int = 10, **kw: Any) -> DictStore:
    store = DictStore(**kw)
    store.data = {b"k%02d" % i: Record(b"k%02d" % i, b"v%d" % i, None, 1000 + i) for i in range(n)}
    return store


def values(store: DictStore) -> dict[bytes, bytes]:
    return {k: r.value for k, r in store.data.items()}


# -- the copy ----------------------------------------------------------------------------------
def test_copies_everything_in_batches_with_versions_and_expiry(state_dir: Path) -> None:
    src = filled(10)
    later = now_ms() + 60_000
    src.data[b"ttl"] = Record(b"ttl", b"t", later, 5)
    dst = DictStore()
    s = run(src, dst, Plan(batch_size=3, verify=True))
    assert s.counts.read == s.counts.copied == 11 and s.counts.bytes == sum(len(k) + len(v) for k, v in
                                                                            values(src).items())
    assert dst.data == src.data  # versions and absolute expiry kept
    assert dst.set_calls == 4
    assert s.verify is not None and s.verify.equal
    s.check()


def test_keys_expiring_in_flight_are_skipped_and_counted(state_dir: Path) -> None:
    src = filled(3, leak_expired=True)
    src.data[b"gone"] = Record(b"gone", b"x", now_ms() - 1)
    dst = DictStore()
    s = run(src, dst)
    assert s.counts.expired == 1 and s.counts.copied == 3 and b"gone" not in dst.data


def test_binary_keys_and_values_are_exact(state_dir: Path) -> None:
    src = DictStore()
    keys = [b"\x00", b"\xff\xfe", bytes(range(256)), b"a*b?[c]"]
    src.data = {k: Record(k, k[::-1] * 3) for k in keys}
    dst = DictStore()
    run(src, dst)
    assert values(dst) == values(src)


@pytest.mark.parametrize(("prefix", "glob", "expected"), [
    (b"user:", None, {b"user:1", b"user:2", b"user:10"}),
    (b"", b"user:?", {b"user:1", b"user:2"}),
    (b"user:", b"*0", {b"user:10"}),
    (b"session:", b"user:*", set()),
    (b"", b"*[!0-9]", {b"session:a"}),
])
def test_prefix_and_glob_filters(prefix: bytes, glob: bytes | None, expected: set[bytes],
                                 state_dir: Path) -> None:
    src = DictStore()
    for k in [b"user:1", b"user:2", b"user:10", b"session:a", b"session:1"]:
        src.data[k] = Record(k, b"v")
    dst = DictStore()
    s = run(src, dst, Plan(prefix=prefix, glob=glob, verify=True))
    assert set(dst.data) == expected and s.counts.read == len(expected)
    assert s.verify is not None and s.verify.equal


# -- conflict policies -------------------------------------------------------------------------
def _conflicted() -> tuple[DictStore, DictStore]:
    src = filled(4)  # versions 1000..1003
    dst = DictStore()
    dst.data[b"k00"] = Record(b"k00", b"older", None, 1)
    dst.data[b"k01"] = Record(b"k01", b"newer", None, 99_999)
    return src, dst


def test_overwrite_is_the_default(state_dir: Path) -> None:
    src, dst = _conflicted()
    s = run(src, dst)
    assert dst.data[b"k00"].value == b"v0" and dst.data[b"k01"].value == b"v1" and s.counts.skipped == 0


def test_skip_leaves_existing_keys(state_dir: Path) -> None:
    src, dst = _conflicted()
    s = run(src, dst, Plan(on_conflict="skip"))
    assert dst.data[b"k00"].value == b"older" and dst.data[b"k01"].value == b"newer"
    assert s.counts.skipped == 2 and s.counts.copied == 2


def test_newer_version_wins(state_dir: Path) -> None:
    src, dst = _conflicted()
    s = run(src, dst, Plan(on_conflict="newer"))
    assert dst.data[b"k00"].value == b"v0" and dst.data[b"k01"].value == b"newer"
    assert s.counts.skipped == 1 and s.counts.copied == 3


def test_newer_needs_versions_on_both_sides(state_dir: Path) -> None:
    src, dst = _conflicted()
    dst.capabilities = Capabilities(ttl=True, ordered_scan=True)  # type: ignore[misc]
    with pytest.raises(UnsupportedError, match="versions"):
        run(src, dst, Plan(on_conflict="newer"))
    assert dst.set_calls == 0


def test_fail_stops_at_the_first_existing_key_and_keeps_a_checkpoint(state_dir: Path) -> None:
    src, dst = _conflicted()
    with pytest.raises(ConflictError, match="k00"):
        run(src, dst, Plan(on_conflict="fail", batch_size=2))
    assert dst.data[b"k00"].value == b"older"  # the batch holding the conflict wrote nothing


def test_fail_in_a_dry_run_reports_instead_of_stopping(state_dir: Path) -> None:
    src, dst = _conflicted()
    s = run(src, dst, Plan(on_conflict="fail", dry_run=True))
    assert s.counts.failed == 2 and s.counts.copied == 2 and dst.set_calls == 0
    s.check()  # a dry run exits 0


# -- TTL support, limits -----------------------------------------------------------------------
def test_ttl_into_a_backend_without_ttl_fails_clearly_unless_dropped(state_dir: Path) -> None:
    src = filled(2)
    src.data[b"ttl"] = Record(b"ttl", b"t", now_ms() + 60_000)
    dst = DictStore(Capabilities(ordered_scan=True))
    with pytest.raises(UnsupportedError, match="--drop-ttl"):
        run(src, dst)
    dst = DictStore(Capabilities(ordered_scan=True))
    s = run(src, dst, Plan(drop_ttl=True, verify=True))
    assert dst.data[b"ttl"].expires_at_ms is None and s.counts.ttl_dropped == 1
    assert s.verify is not None and s.verify.equal  # expiry ignored when it was dropped on purpose


def test_records_over_the_destination_limits_are_named_and_counted(state_dir: Path) -> None:
    src = filled(3)
    src.data[b"big"] = Record(b"big", b"x" * 100)
    src.data[b"k" * 50] = Record(b"k" * 50, b"v")
    dst = DictStore(Capabilities(ttl=True, ordered_scan=True, max_key_size=20, max_value_size=50))
    s = run(src, dst)
    assert s.counts.failed == 2 and s.counts.copied == 3 and set(dst.data) == {b"k00", b"k01", b"k02"}
    with pytest.raises(IncompleteError, match="failed"):
        s.check()
    assert {k for k, _ in s.problems.failed} == {b"big", b"k" * 50}


# -- typed values ------------------------------------------------------------------------------
def _typed_source() -> DictStore:
    src = DictStore(typed_caps())
    src.data[b"s"] = Record(b"s", b"plain")
    src.data[b"h"] = Record(b"h", b"\x00hash-dump", now_ms() + 60_000, None, "hash")
    src.data[b"z"] = Record(b"z", b"\x00zset-dump", None, None, "zset")
    return src


def test_typed_values_are_dumped_and_restored_when_both_sides_can(state_dir: Path) -> None:
    src = _typed_source()
    dst = DictStore(typed_caps())
    s = run(src, dst, Plan(verify=True))
    assert dst.data == src.data and s.counts.copied == 3
    assert s.verify is not None and s.verify.equal
    s.check()


def test_typed_values_into_a_plain_backend_are_reported_by_name(state_dir: Path) -> None:
    src = _typed_source()
    dst = DictStore()
    s = run(src, dst)
    assert set(dst.data) == {b"s"} and s.counts.incomplete == 2
    assert sorted(s.problems.incomplete) == [(b"h", "hash"), (b"z", "zset")]
    with pytest.raises(IncompleteError) as err:
        s.check()
    assert err.value.exit_code == 8 and "hash" in str(err.value)


# -- dry run -----------------------------------------------------------------------------------
def test_dry_run_counts_keys_and_bytes_and_writes_nothing(state_dir: Path) -> None:
    src = filled(5)
    dst = DictStore()
    dst.data[b"extra"] = Record(b"extra", b"e")
    s = run(src, dst, Plan(dry_run=True, delete_extra=True, on_conflict="skip"))
    assert s.counts.copied == 5 and s.counts.bytes == sum(len(k) + len(v) for k, v in values(src).items())
    assert s.extra_found == 1 and s.deleted == 0 and set(dst.data) == {b"extra"} and dst.set_calls == 0
    assert not list(state_dir.rglob("*.json"))  # a dry run leaves no checkpoint


# -- delete-extra ------------------------------------------------------------------------------
def test_delete_extra_mirrors_the_source_under_the_filter(state_dir: Path) -> None:
    src = filled(3)
    dst = DictStore()
    for k in [b"k99", b"k50", b"other"]:
        dst.data[k] = Record(k, b"x")
    s = run(src, dst, Plan(prefix=b"k", delete_extra=True, verify=True))
    assert set(dst.data) == {b"k00", b"k01", b"k02", b"other"}  # "other" is outside the filter
    assert s.deleted == 2 and s.extra_found == 2 and s.verify is not None and s.verify.equal


def test_delete_extra_never_exceeds_max_delete(state_dir: Path) -> None:
    src = filled(2)
    dst = DictStore()
    for i in range(5):
        dst.data[b"x%d" % i] = Record(b"x%d" % i, b"x")
    s = run(src, dst, Plan(delete_extra=True, max_delete=4))
    assert s.deleted == 0 and len(dst.data) == 7 and s.delete_refused and "max-delete" in s.delete_refused
    with pytest.raises(IncompleteError):
        s.check()
    s = run(src, dst, Plan(delete_extra=True, max_delete=5))
    assert s.deleted == 5 and set(dst.data) == {b"k00", b"k01"}


def test_an_empty_source_never_empties_the_destination(state_dir: Path) -> None:
    src = DictStore()
    dst = filled(3)
    s = run(src, dst, Plan(delete_extra=True, max_delete=1_000_000))
    assert len(dst.data) == 3 and s.delete_refused and "no keys" in s.delete_refused


def test_an_unreachable_source_never_empties_the_destination(state_dir: Path) -> None:
    target = open_url("memory://mirror-target")
    target.set_many([Record(b"keep%d" % i, b"x") for i in range(3)])
    with pytest.raises(UnavailableError):
        run_urls("postgresql://nobody@127.0.0.1:1/none?connect_timeout=200ms", "memory://mirror-target",
                 Plan(delete_extra=True, max_delete=1_000_000))
    assert target.count() == 3


def test_nothing_is_deleted_after_an_incomplete_copy(state_dir: Path) -> None:
    src = _typed_source()
    dst = DictStore()
    dst.data[b"extra"] = Record(b"extra", b"x")
    s = run(src, dst, Plan(delete_extra=True))
    assert b"extra" in dst.data and s.delete_refused and "incomplete" in s.delete_refused


# -- verify ------------------------------------------------------------------------------------
def test_verify_fails_when_the_sides_did_not_converge(state_dir: Path) -> None:
    src, dst = _conflicted()
    s = run(src, dst, Plan(on_conflict="skip", verify=True))
    assert s.verify is not None and not s.verify.equal and s.verify.differing == 2
    with pytest.raises(DifferenceError) as err:
        s.check()
    assert err.value.exit_code == 1


# -- checkpoints and resume --------------------------------------------------------------------
def test_a_failed_run_leaves_a_checkpoint_and_resume_finishes_identically(state_dir: Path) -> None:
    src = filled(20)
    dst = FailingStore(fail_at=4)
    plan = Plan(batch_size=3, checkpoint_every=1)
    with pytest.raises(UnavailableError):
        run(src, dst, plan)
    files = list(state_dir.rglob("*.json"))
    assert len(files) == 1
    saved = json.loads(files[0].read_text())
    assert saved["cursor"] == "k:" + b"k08".hex() and saved["counts"]["copied"] == 9
    assert saved["done"] is False and "memory" not in saved["fingerprint"]
    healthy = DictStore()
    healthy.data = dict(dst.data)  # the destination as the failed run left it
    s = run(src, healthy, Plan(batch_size=3, resume=True, verify=True))
    assert s.resumed and s.counts.read == 20 and s.counts.copied == 20
    assert healthy.data == src.data and healthy.set_calls == 4  # only batches after the checkpoint
    assert not list(state_dir.rglob("*.json"))  # a finished run removes its checkpoint


def test_resume_without_a_checkpoint_starts_from_the_beginning(state_dir: Path) -> None:
    notes: list[str] = []

    class Notes(Reporter):
        def note(self, message: str) -> None:
            notes.append(message)

    src, dst = filled(5), DictStore()
    s = run(src, dst, Plan(resume=True), Notes())
    assert not s.resumed and dst.data == src.data and "starting from the beginning" in notes[0]


def test_a_checkpoint_of_another_plan_is_never_resumed(state_dir: Path) -> None:
    src = filled(6)
    with pytest.raises(UnavailableError):
        run(src, FailingStore(fail_at=2), Plan(batch_size=2, checkpoint_every=1), fp="plan-a")
    dst = DictStore()
    s = run(src, dst, Plan(batch_size=2, resume=True), fp="plan-b")
    assert not s.resumed and dst.data == src.data


def test_plan_fingerprint_depends_on_what_decides_the_result() -> None:
    base = Plan()
    fp = base.fingerprint("a://x", "b://y")
    assert fp == Plan(batch_size=7, verify=True).fingerprint("a://x", "b://y")
    for other in [Plan(prefix=b"p"), Plan(glob=b"*"), Plan(on_conflict="skip"), Plan(drop_ttl=True),
                  Plan(key_range=(None, b"m")), Plan(hash_slice=(0, 2))]:
        assert other.fingerprint("a://x", "b://y") != fp
    assert base.fingerprint("a://:pw1@x", "b://y") != base.fingerprint("a://:pw2@x", "b://y")


def test_checkpoint_files_hold_no_password(state_dir: Path, tmp_path: Path) -> None:
    cp = checkpoint.Checkpoint("f" * 64, "redis://:***@h/0", "memory://x")
    path = tmp_path / "cp.json"
    cp.save(path)
    assert "***" in path.read_text() and (path.stat().st_mode & 0o777) == 0o600
    assert checkpoint.load(path, "f" * 64) is not None and checkpoint.load(path, "0" * 64) is None


def test_same_store_is_refused(state_dir: Path) -> None:
    with pytest.raises(UsageError):
        run_urls("memory://same", "memory://same", Plan())


def test_urls_are_opened_through_the_registry(state_dir: Path) -> None:
    a = open_url("memory://reg-src")
    a.set_many([Record(b"x%d" % i, b"y") for i in range(50)])
    s = run_urls("memory://reg-src", "memory://reg-dst", Plan(batch_size=7, verify=True))
    assert s.counts.copied == 50 and s.verify is not None and s.verify.equal
    assert s.src == "memory://reg-src" and s.keys_per_s > 0


def test_a_real_backend_refusing_oversize_keys_gets_the_rest(state_dir: Path, tmp_path: Path) -> None:
    from tests.engines.support import all_families, caps_of, fresh_url, read_all, write

    family = next((f for f in ("lmdb", "postgres", "file") if f in all_families()), None)
    if family is None:
        pytest.skip("no backend with a small key limit is installed")
    limit = caps_of(family).max_key_size
    assert limit is not None
    src, dst = "memory://limits-src", fresh_url(family, tmp_path)
    write(src, [Record(b"ok%d" % i, b"v") for i in range(5)] + [Record(b"k" * (limit + 1), b"too long")])
    write(dst, [])
    s = run_urls(src, dst, Plan(batch_size=100))
    assert s.counts.copied == 5 and s.counts.failed == 1 and s.problems.failed[0][0] == b"k" * (limit + 1)
    assert set(read_all(dst)) == {b"ok%d" % i for i in range(5)}
    with pytest.raises(IncompleteError):
        s.check()


class RefusingStore(DictStore):
    """Refuses, with a LimitError no capability declares, every write holding one of ``refused``
    (as LMDB refuses an empty key), or every write at all (as a server out of memory does)."""

    def __init__(self, refused: set[bytes] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.refused = refused

    async def set_many(self, records: Any) -> None:
        batch = list(records)
        if self.refused is None or any(r.key in self.refused for r in batch):
            raise LimitError("dicttest cannot store this")
        await super().set_many(batch)


def test_a_record_refused_by_an_undeclared_limit_is_set_aside(state_dir: Path) -> None:
    src = filled(40)
    bad = {b"k03", b"k17", b"k18", b"k39"}
    dst = RefusingStore(bad)
    s = run(src, dst, Plan(batch_size=25))
    assert set(dst.data) == set(src.data) - bad
    assert s.counts.copied == 36 and s.counts.failed == 4 and s.counts.read == 40
    assert sorted(k for k, _ in s.problems.failed) == sorted(bad)
    assert all(why == "dicttest cannot store this" for _, why in s.problems.failed)
    with pytest.raises(IncompleteError, match="4 key"):
        s.check()


def test_a_refusal_of_everything_stops_the_copy(state_dir: Path) -> None:
    dst = RefusingStore()  # out of memory: no record is to blame, so none is listed as one
    with pytest.raises(LimitError, match="cannot store"):
        run(filled(100), dst, Plan(batch_size=50))
    assert not dst.data


@pytest.mark.parametrize("family", ["lmdb", "postgres", "file", "sqlite"])
def test_unstorable_keys_are_skipped_and_listed_on_every_backend(family: str, state_dir: Path,
                                                                 tmp_path: Path) -> None:
    from tests.engines.support import all_families, fresh_url, read_all, write

    if family not in all_families():
        pytest.skip(f"{family} is not installed")
    src, dst = f"memory://unstorable-{family}", fresh_url(family, tmp_path)
    keys = [b"", b"a" * 512, b"b" * 2700, b"k" * 70_000] + [b"ok%d" % i for i in range(5)]
    write(src, [Record(k, b"v") for k in keys])
    write(dst, [])
    s = run_urls(src, dst, Plan(batch_size=100))
    held = set(read_all(dst))
    failed = {k for k, _ in s.problems.failed}
    assert {b"ok%d" % i for i in range(5)} <= held and held | failed == set(keys) and not held & failed
    assert s.counts.copied == len(held) and s.counts.failed == len(failed)
    if family == "lmdb":
        assert failed == {b"", b"a" * 512, b"b" * 2700, b"k" * 70_000}
    if failed:
        with pytest.raises(IncompleteError):
            s.check()


def test_keys_reported_before_an_interruption_are_still_named_after_resume(state_dir: Path) -> None:
    src = DictStore(typed_caps())
    src.data = {b"a": Record(b"a", b"1"), b"h": Record(b"h", b"dump", None, None, "hash"),
                b"s": Record(b"s", b"2"), b"t": Record(b"t", b"3")}
    with pytest.raises(UnavailableError):
        run(src, FailingStore(fail_at=2), Plan(batch_size=2, checkpoint_every=1))
    s = run(src, DictStore(), Plan(batch_size=2, resume=True))
    assert s.resumed and s.counts.incomplete == 1 and s.problems.incomplete == [(b"h", "hash")]
    with pytest.raises(IncompleteError, match=r"first: h, a hash"):
        s.check()

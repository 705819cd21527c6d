"""Values compared by meaning when a side declares JSON documents: diff, migrate --verify, a
resumed migrate's replay and sync; byte for byte otherwise, and for a value that is not JSON."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from kvctl.adapt import to_sync
from kvctl.engines._compare import same_json, same_value
from kvctl.engines.diff import DiffOptions, DiffResult, compare
from kvctl.engines.migrate import Plan, Summary, migrate
from kvctl.engines.replicate import SyncEngine, SyncPlan, SyncResult
from kvctl.engines.reporting import Reporter
from kvctl.registry import open_url
from kvctl.store import Capabilities, Record
from kvctl.testing.cli import clean_env, run_kvctl
from tests.engines.support import DictStore, state_dir

__all__ = ["state_dir"]

SPACED = b'{"b": 2, "a": 1}'
COMPACT = b'{"a":1,"b":2}'


# -- the rule ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("a", "b"), [
    (COMPACT, SPACED),
    (b'{"a":{"x":[1,2,{"y":null}]}}', b'{ "a" : { "x" : [ 1 , 2 , { "y" : null } ] } }'),
    (b"1", b"1.0"), (b"1e2", b"100"), (b"10E-1", b"1"), (b"-0", b"0"), (b"[1.5]", b"[15e-1]"),
    (b"9007199254740993", b"9007199254740993.0"),  # equal decimals, though not as a double
    (b"123456789012345678901234567890", b"123456789012345678901234567890.0"),
    (b'{"a":1,"a":2}', b'{"a":2}'),  # a repeated key keeps its last value, as JSONB does
    (b'"\\u00e9t\\u00e9"', '"été"'.encode()),
    (b"[1e400]", b"[ 1e400 ]"),  # past a double's range: still a number
])
def test_equal_documents(a: bytes, b: bytes) -> None:
    assert same_json(a, b) and same_json(b, a)


@pytest.mark.parametrize(("a", "b"), [
    (b'{"a":1}', b'{"a":2}'), (b"[1,2]", b"[2,1]"), (b'{"a":null}', b"{}"),
    (b"true", b"1"), (b"[false]", b"[0.0]"), (b"1", b'"1"'), (b'"a "', b'"a"'),
    (b"0.1", b"0.10000000000000001"),  # the same double, different numbers
    (b"123456789012345678901234567890", b"123456789012345678901234567891"),
    (b'{"t":"2024-01-01 10:00:00"}', b'{"t":"2024-01-01T10:00:00Z"}'),  # strings are not interpreted
    (b"not json", b"not json "), (b"NaN", b"NaN "), (b"", b" "), (b"\xff", b"\xff "),
    (b'{"a":1', b'{"a":1 '),
])
def test_different_documents_and_not_json(a: bytes, b: bytes) -> None:
    assert not same_json(a, b) and not same_json(b, a)


def test_bytes_decide_unless_a_side_holds_json() -> None:
    assert not same_value(COMPACT, SPACED, False)
    assert same_value(COMPACT, SPACED, True)
    assert same_value(b"not json", b"not json", True)  # equal bytes are equal, JSON or not


# -- the engines -------------------------------------------------------------------------------
def store(json_values: bool, values: dict[bytes, bytes], *, ordered: bool = True) -> DictStore:
    """An unversioned store, like a mapped table without a version column."""
    s = DictStore(Capabilities(ttl=True, ordered_scan=ordered, json_values=json_values))
    s.data = {k: Record(k, v) for k, v in values.items()}
    return s


A = {b"same": COMPACT, b"text": b"plain", b"other": b'{"a":1}'}
B_SAME = {b"same": SPACED, b"text": b"plain", b"other": b'{ "a" : 1 }'}
B_DIFF = {b"same": SPACED, b"text": b"plain", b"other": b'{"a":2}'}
B_TEXT = {b"same": COMPACT, b"text": b"plain ", b"other": b'{"a":1}'}  # not JSON: bytes decide

SIDES = [(True, False), (False, True), (True, True)]


def diff(a: DictStore, b: DictStore) -> DiffResult:
    return asyncio.run(compare(a, b, DiffOptions(batch_size=2)))


@pytest.mark.parametrize("ordered", [True, False], ids=["merge", "lookup"])
@pytest.mark.parametrize(("json_a", "json_b"), SIDES, ids=["json-a", "json-b", "json-both"])
def test_diff_compares_json_by_meaning(json_a: bool, json_b: bool, ordered: bool) -> None:
    same = diff(store(json_a, A), store(json_b, B_SAME, ordered=ordered))
    assert (same.equal, same.same, same.method) == (True, 3, "merge" if ordered else "lookup")
    changed = diff(store(json_a, A), store(json_b, B_DIFF, ordered=ordered))
    assert (changed.differing, changed.reasons["value"], changed.samples["differing"]) == (1, 1, [b"other"])
    text = diff(store(json_a, A), store(json_b, B_TEXT, ordered=ordered))
    assert (text.differing, text.samples["differing"]) == (1, [b"text"])


def test_diff_without_json_compares_bytes() -> None:
    r = diff(store(False, A), store(False, B_SAME))
    assert (r.differing, r.samples["differing"]) == (2, [b"other", b"same"])


def verify(src: DictStore, dst: DictStore) -> Summary:
    # keys the destination already holds are skipped, so --verify compares what each side holds
    return asyncio.run(migrate(src, dst, Plan(batch_size=2, on_conflict="skip", verify=True), Reporter(), "json-test"))


@pytest.mark.parametrize(("json_a", "json_b"), SIDES, ids=["json-a", "json-b", "json-both"])
def test_migrate_verify_compares_json_by_meaning(state_dir: Path, json_a: bool, json_b: bool) -> None:
    done = verify(store(json_a, A), store(json_b, B_SAME))
    assert done.verify is not None and done.verify.equal and done.verify.same == 3
    done.check()
    for other in (B_DIFF, B_TEXT):
        bad = verify(store(json_a, A), store(json_b, other))
        assert bad.verify is not None and bad.verify.differing == 1
        with pytest.raises(Exception, match="verify failed") as err:
            bad.check()
        assert getattr(err.value, "exit_code", None) == 1


def test_migrate_verify_without_json_compares_bytes(state_dir: Path) -> None:
    done = verify(store(False, A), store(False, B_SAME))
    assert done.verify is not None and done.verify.differing == 2


def sync(src: DictStore, dst: DictStore, tmp: Path) -> SyncResult:
    return asyncio.run(SyncEngine(SyncPlan("memory://json-src", "memory://json-dst", tmp), src, dst).run_once())


@pytest.mark.parametrize(("json_a", "json_b"), SIDES, ids=["json-a", "json-b", "json-both"])
def test_sync_sends_only_what_differs_by_meaning(tmp_path: Path, json_a: bool, json_b: bool) -> None:
    dst = store(json_b, B_SAME)
    same = sync(store(json_a, A), dst, tmp_path / "same")
    assert (same.mode, same.applied_to_dst, same.converged) == ("diff", 0, True)
    assert dst.data[b"same"].value == SPACED  # an equal document is left as the destination holds it
    for other, key in ((B_DIFF, b"other"), (B_TEXT, b"text")):
        dst = store(json_b, other)
        changed = sync(store(json_a, A), dst, tmp_path / key.decode())
        assert changed.applied_to_dst == 1 and dst.data[key].value == A[key]


def test_sync_without_json_sends_what_differs_in_bytes(tmp_path: Path) -> None:
    dst = store(False, B_SAME)
    r = sync(store(False, A), dst, tmp_path)
    assert r.applied_to_dst == 2 and {k: r.value for k, r in dst.data.items()} == A
    assert sync(store(False, A), dst, tmp_path / "again").applied_to_dst == 0  # nothing differs now


# -- the command line --------------------------------------------------------------------------
def sqlite_with(tmp: Path, name: str, values: dict[bytes, bytes]) -> str:
    url = f"sqlite://{tmp / name}"
    s = to_sync(open_url(url))
    try:
        s.set_many([Record(k, v) for k, v in values.items()])
    finally:
        s.close()
    return url


def as_json(url: str) -> str:
    """``url`` declaring JSON values, through tests/outside_plugin's wrapper."""
    return f"slow://?delay_ms=0&json_values=true&of={url}"


def test_cli_exit_codes(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    a = sqlite_with(tmp_path, "a.db", A)
    same, changed = sqlite_with(tmp_path, "same.db", B_SAME), sqlite_with(tmp_path, "diff.db", B_DIFF)
    # diff: 0 when equal, 1 when different, whichever side declares JSON
    for x, y in ((as_json(a), same), (same, as_json(a))):
        out = run_kvctl(env, "diff", x, y, "--json")
        assert out.returncode == 0 and json.loads(out.stdout)["same"] == 3, out.stderr
    assert run_kvctl(env, "diff", a, same).returncode == 1  # neither declares JSON: bytes differ
    out = run_kvctl(env, "diff", as_json(a), changed, "--json")
    assert out.returncode == 1 and json.loads(out.stdout)["samples"]["differing"] == [{"key": "other"}]
    # migrate --verify: 0 when the skipped keys are equal documents, 1 (verify failed) otherwise
    out = run_kvctl(env, "migrate", a, as_json(same), "--on-conflict", "skip", "--verify", "--no-progress")
    assert out.returncode == 0, out.stderr
    out = run_kvctl(env, "migrate", a, as_json(changed), "--on-conflict", "skip", "--verify", "--no-progress")
    assert out.returncode == 1 and "verify failed" in out.stderr
    # sync: the destination's equal documents are neither sent nor reported as kept
    out = run_kvctl(env, "sync", a, as_json(same), "--json")
    assert out.returncode == 0, out.stderr
    assert (json.loads(out.stdout)["applied_to_dst"], json.loads(out.stdout)["kept_at_dst"]) == (0, 0)

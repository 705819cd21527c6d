"""The diff engine: missing, extra and differing keys by merge join (ordered stores) or lookups
(unordered), expiry tolerance, typed values, filters, samples."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kvctl.adapt import to_async
from kvctl.engines.diff import DiffOptions, DiffResult, compare, extra_keys
from kvctl.engines.keyfilter import KeyFilter
from kvctl.errors import DifferenceError, KvctlError
from kvctl.registry import open_url
from kvctl.store import Capabilities, Record, now_ms
from tests.engines.support import DictStore


def diff(a: Any, b: Any, **kw: Any) -> DiffResult:
    return asyncio.run(compare(a, b, DiffOptions(batch_size=3, **kw)))


def pair(ordered_b: bool = True) -> tuple[DictStore, Any]:
    """A and B with one key missing from B, one extra in B, one value and one expiry differing."""
    later = now_ms() + 600_000
    a = DictStore()
    for i in range(10):
        a.data[b"k%d" % i] = Record(b"k%d" % i, b"v%d" % i, later if i == 4 else None, i)
    b_recs = {k: r for k, r in a.data.items() if k != b"k1"}
    b_recs[b"k2"] = Record(b"k2", b"changed")
    b_recs[b"k4"] = Record(b"k4", b"v4", later + 60_000)
    b_recs[b"k3"] = Record(b"k3", b"v3", None, 12345)  # another version: not a difference
    b_recs[b"zz"] = Record(b"zz", b"extra")
    if ordered_b:
        b = DictStore()
        b.data = b_recs
        return a, b
    store = to_async(open_url(f"outside://diff-{id(b_recs)}"))
    asyncio.run(store.set_many(list(b_recs.values())))
    return a, store


@pytest.mark.parametrize("ordered_b", [True, False], ids=["merge", "lookup"])
def test_missing_extra_differing(ordered_b: bool) -> None:
    a, b = pair(ordered_b)
    r = diff(a, b)
    assert r.method == ("merge" if ordered_b else "lookup")
    assert (r.missing, r.extra, r.differing, r.same) == (1, 1, 2, 7)
    assert r.reasons == {"value": 1, "expiry": 1, "kind": 0}
    assert r.samples == {"missing": [b"k1"], "extra": [b"zz"], "differing": [b"k2", b"k4"]}
    assert not r.equal
    with pytest.raises(DifferenceError) as err:
        r.check()
    assert err.value.exit_code == 1 and "1 missing" in str(err.value)


def test_equal_stores() -> None:
    a, _ = pair()
    b = DictStore()
    b.data = dict(a.data)
    r = diff(a, b)
    assert r.equal and r.same == 10 and r.compared == 10
    r.check()
    assert r.to_dict()["equal"] is True


def test_expiry_within_the_tolerance_is_equal() -> None:
    a, b = DictStore(), DictStore()
    t = now_ms() + 600_000
    a.data[b"k"] = Record(b"k", b"v", t)
    b.data[b"k"] = Record(b"k", b"v", t + 1500)
    assert diff(a, b).equal
    assert not diff(a, b, expiry_tolerance_ms=1000).equal
    assert diff(a, b, expiry_tolerance_ms=0, ignore_expiry=True).equal
    b.data[b"k"] = Record(b"k", b"v", None)
    assert diff(a, b).reasons["expiry"] == 1


def test_a_key_expiring_now_on_one_side_is_not_a_difference() -> None:
    a, b = DictStore(), DictStore()
    a.data[b"soon"] = Record(b"soon", b"v", now_ms() + 500)
    b.data[b"soon2"] = Record(b"soon2", b"v", now_ms() + 500)
    assert diff(a, b).equal


def test_typed_values_compare_by_kind() -> None:
    a, b = DictStore(), DictStore()
    a.data[b"h"] = Record(b"h", b"dump-a", None, None, "hash")
    b.data[b"h"] = Record(b"h", b"dump-b", None, None, "hash")  # payloads are backend-specific
    assert diff(a, b).equal
    b.data[b"h"] = Record(b"h", b"", None, None, "set")
    assert diff(a, b).reasons["kind"] == 1
    b.data[b"h"] = Record(b"h", b"plain")
    assert diff(a, b).reasons["kind"] == 1


def test_prefix_and_glob_limit_the_comparison() -> None:
    a, b = pair()
    assert diff(a, b, filter=KeyFilter(b"k", b"k[5-9]")).equal
    r = diff(a, b, filter=KeyFilter(b"z"))
    assert (r.missing, r.extra) == (0, 1)


def test_samples_are_bounded_and_counts_exact() -> None:
    a, b = DictStore(), DictStore()
    a.data = {b"m%03d" % i: Record(b"m%03d" % i, b"") for i in range(100)}
    r = diff(a, b, sample=5)
    assert r.missing == 100 and len(r.samples["missing"]) == 5


def test_binary_keys_in_json_samples() -> None:
    a, b = DictStore(), DictStore()
    a.data[b"\xff\x00"] = Record(b"\xff\x00", b"")
    assert diff(a, b).to_dict()["samples"]["missing"] == [{"key_b64": "/wA="}]


def test_an_ordered_store_returning_keys_out_of_order_is_an_error() -> None:
    class Liar(DictStore):
        async def scan(self, prefix=b"", **kw):
            from kvctl.store import Page

            yield Page([Record(b"b", b""), Record(b"a", b"")], None)

    with pytest.raises(KvctlError, match="ordered"):
        diff(Liar(), DictStore())


@pytest.mark.parametrize("ordered", [True, False])
def test_extra_keys_in_batches(ordered: bool) -> None:
    a = DictStore()
    a.data = {b"k%03d" % i: Record(b"k%03d" % i, b"") for i in range(0, 100, 2)}
    b = DictStore(None if ordered else Capabilities(ttl=True))
    b.data = {b"k%03d" % i: Record(b"k%03d" % i, b"") for i in range(100)}

    async def collect() -> list[list[bytes]]:
        return [batch async for batch in extra_keys(a, b, DiffOptions(batch_size=7))]

    batches = asyncio.run(collect())
    assert sorted(k for batch in batches for k in batch) == [b"k%03d" % i for i in range(1, 100, 2)]
    assert all(len(batch) <= 7 for batch in batches)

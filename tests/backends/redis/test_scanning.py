"""Scans of real servers: the MGET read of a standalone database without expiries, its way back
to per-key reads, and a cluster's masters read at once with cursors holding every master's
position (and the older one-master-at-a-time cursors still followed)."""

from __future__ import annotations

import os
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis as redispy
from kvctl_plugins.redis import scanning

from kvctl.errors import UsageError
from kvctl.registry import open_url
from kvctl.store import Record, now_ms
from tests.conftest import service_url

RUN = f"kvctl-scan-{os.getpid()}-{uuid.uuid4().hex[:6]}:"
DB = 13  # a database no other test writes: whether it holds keys with an expiry is this file's doing


def _standalone() -> tuple[str, Any]:
    url = service_url("KVCTL_TEST_REDIS_URL")
    netloc = urlsplit(url).netloc
    host, port = netloc.rsplit(":", 1)
    return f"redis://{netloc}/{DB}", redispy.Redis(host=host, port=int(port), db=DB)


@pytest.fixture
def mget_reads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per page read by MGET: whether the page kept that path."""
    seen: list[bool] = []
    original = scanning.NodeScan._mget_records

    def spy(self: scanning.NodeScan, full_keys: list[bytes], replies: list[Any]) -> list[Record]:
        out = original(self, full_keys, replies)
        seen.append(self.mget)
        return out

    monkeypatch.setattr(scanning.NodeScan, "_mget_records", spy)
    return seen


def test_database_without_expiries_is_read_by_mget(mget_reads: list[bool]) -> None:
    url, raw = _standalone()
    ns = RUN + "plain:"
    with open_url(f"{url}?namespace={ns}") as s:
        s.clear()
        raw.delete(*[k for k in raw.scan_iter(match=b"*")] or [b"-"])  # this file's database only
        records = {b"k%04d" % i: bytes([i % 256]) * (i % 7) for i in range(2500)}  # empty values too
        s.set_many(Record(k, v) for k, v in records.items())
        raw.hset(ns + "typed", "f", "v")  # MGET answers nil for it: read through the general path
        try:
            got = {r.key: r for p in s.scan(batch_size=500) for r in p.records}
            assert {k: r.value for k, r in got.items() if r.kind is None} == records
            assert got[b"typed"].kind == "hash"
            assert all(r.expires_at_ms is None for r in got.values())
            assert mget_reads and all(mget_reads)  # every page by MGET, none sent back
        finally:
            s.clear()


def test_a_key_with_an_expiry_sends_the_scan_back_to_per_key_reads(mget_reads: list[bool]) -> None:
    url, raw = _standalone()
    ns = RUN + "ttl:"
    with open_url(f"{url}?namespace={ns}") as s:
        s.clear()
        raw.delete(*[k for k in raw.scan_iter(match=b"*")] or [b"-"])
        at = now_ms() + 3_600_000
        s.set_many([Record(b"a", b"1"), Record(b"b", b"2", at), *(Record(b"c%d" % i, b"x") for i in range(50))])
        try:
            got = {r.key: r for p in s.scan(batch_size=100) for r in p.records}
            assert len(got) == 52 and got[b"b"].expires_at_ms == at and got[b"a"].expires_at_ms is None
            assert mget_reads == [False]  # the one MGET page saw the expiry and was read again per key
        finally:
            s.clear()


def test_volatile_count_from_info_keyspace() -> None:
    info = b"# Keyspace\r\ndb0:keys=10,expires=3,avg_ttl=5\r\ndb13:keys=2,expires=0,avg_ttl=0\r\n"
    assert scanning.volatile(info, b"db0:") == 3
    assert scanning.volatile(info, b"db13:") == 0
    assert scanning.volatile(info, b"db1:") == 0  # not listed: empty
    assert scanning.volatile(b"ERR", b"db0:") is None


def test_cluster_masters_read_at_once_resume_from_any_page() -> None:
    url = service_url("KVCTL_TEST_REDIS_CLUSTER_URL")
    with open_url(f"{url}&namespace={RUN}all:") as s:
        s._by_slot = lambda prefix: True  # slot by slot, whatever else the shared cluster holds
        s.clear()
        keys = {b"k%04d" % i for i in range(900)}
        s.set_many(Record(k, k) for k in keys)
        try:
            pages = list(s.scan(batch_size=100))
            assert {r.key for p in pages for r in p.records} == keys
            assert all(r.value == r.key for p in pages for r in p.records)
            assert all(p.cursor.startswith("done:") for p in pages[:-1]) and pages[-1].cursor is None
            # resumed from a page in the middle: that page's keys and every later one's are read
            middle = len(pages) // 2
            rest = {r.key for p in s.scan(cursor=pages[middle].cursor, batch_size=100) for r in p.records}
            assert {r.key for p in pages[middle + 1:] for r in p.records} <= rest
            assert {r.key for p in pages[: middle + 1] for r in p.records} | rest == keys
            assert s.count() == len(keys)
            with pytest.raises(UsageError):
                next(iter(s.scan(cursor="m:127.0.0.1:1=5")))
            # a cursor of the one master after another scan of earlier versions is still followed
            first = s._primaries()[0][0]
            assert {r.key for p in s.scan(cursor=f"c:{first}:0") for r in p.records} == keys
            # and so is one of every master's SCAN at once
            at_once = ";".join(f"{name}=0" for name, _ in s._primaries())
            assert {r.key for p in s.scan(cursor=f"m:{at_once}") for r in p.records} == keys
        finally:
            s.clear()


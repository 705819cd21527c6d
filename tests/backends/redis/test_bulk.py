"""Bulk writes into Redis and a Redis Cluster, on the servers started by tests/services.sh.

The batch write path packs its commands with hiredis and slices batches by count unless a value
is big: a batch of several slices, binary keys and values, expiries on some records, lands
exactly, on one server and across the cluster's masters; and the slices cover every record once
within both bounds.  The feed hears every key of a bulk write; a bulk read tells missing,
expired and typed keys apart.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Generator, Iterator
from typing import NamedTuple, cast
from urllib.parse import urlsplit

import pytest
import redis
from kvctl_plugins.redis.commands import SLICE_BYTES, SLICE_KEYS, ranges
from redis.cluster import RedisCluster

from kvctl.store import Page, Record, Store, now_ms
from kvctl.testing import open_sync
from tests.backends.redis.support import with_options
from tests.conftest import service_url

HOUR_MS = 3_600_000


class Spot(NamedTuple):
    kind: str
    base: str  # the shared server's URL
    ns: str
    store: Store


@pytest.fixture(params=["standalone", "cluster"])
def spot(request: pytest.FixtureRequest) -> Iterator[Spot]:
    """A namespace of its own on the shared standalone server or cluster, cleared afterwards."""
    base = service_url("KVCTL_TEST_REDIS_URL" if request.param == "standalone" else "KVCTL_TEST_REDIS_CLUSTER_URL")
    ns = f"bulk-{uuid.uuid4().hex[:8]}:"
    with open_sync(with_options(base, namespace=ns)) as store:
        try:
            yield Spot(request.param, base, ns, store)
        finally:
            store.clear()


@pytest.mark.parametrize(("n", "size"), [(0, 1), (1, 1), (SLICE_KEYS, 10), (SLICE_KEYS + 1, 10),
                                         (5 * SLICE_KEYS + 7, 3), (40, 4 * 1024 * 1024), (3, SLICE_BYTES + 1)])
def test_slices_cover_every_record_once_within_both_bounds(n: int, size: int) -> None:
    keys = [b"k%d" % i for i in range(n)]
    values = [b"v" * size] * n
    cut = ranges(keys, values)
    assert [i for a, b in cut for i in range(a, b)] == list(range(n))
    for a, b in cut:
        assert b - a <= SLICE_KEYS
        assert b - a == 1 or sum(len(keys[i]) + len(values[i]) for i in range(a, b)) <= SLICE_BYTES


@pytest.mark.server
def test_a_batch_of_several_slices_lands_exactly(spot: Spot) -> None:
    later = now_ms() + HOUR_MS
    records = [Record(b"key:\x00\xff%06d" % i, os.urandom(i % 300), later + i if i % 4 == 0 else None)
               for i in range(5 * SLICE_KEYS + 3)]
    spot.store.set_many(records)
    got = spot.store.get_many([r.key for r in records])
    assert [(g.key, g.value) if g else None for g in got] == [(r.key, r.value) for r in records]
    for rec, held in zip(records, got, strict=True):
        assert held is not None
        if rec.expires_at_ms is None:
            assert held.expires_at_ms is None
        else:  # absolute to the millisecond (PXAT; PEXPIRETIME reads it back)
            assert held.expires_at_ms == rec.expires_at_ms


@pytest.mark.server
def test_the_last_record_of_a_key_in_a_batch_wins_with_or_without_an_expiry(spot: Spot) -> None:
    later = now_ms() + HOUR_MS
    spot.store.set_many([Record(b"a", b"first", later), Record(b"b", b"first"), Record(b"a", b"second"),
                         Record(b"b", b"second", later)])
    assert spot.store.get_many([b"a", b"b"]) == [Record(b"a", b"second"), Record(b"b", b"second", later)]


@pytest.mark.server
def test_a_bulk_scan_reads_every_record_exactly(spot: Spot) -> None:
    """The scan pages a snapshot reads: values, absolute expiries and a key of another type, with
    the replies of several slices per page checked for errors in bulk."""
    later = now_ms() + HOUR_MS
    records = [Record(b"key:\x00\xff%06d" % i, os.urandom(1 + i % 200), later + i if i % 3 == 0 else None)
               for i in range(3 * SLICE_KEYS + 5)]
    spot.store.set_many(records)
    host, _, port = urlsplit(spot.base).netloc.split(",")[0].rpartition(":")
    client = (redis.Redis(host=host, port=int(port)) if spot.kind == "standalone"
              else RedisCluster(host=host, port=int(port)))
    try:
        client.hset(spot.ns + "a-hash", "f", "v")
    finally:
        client.close()
    got = [r for page in spot.store.scan(batch_size=2 * SLICE_KEYS) for r in page.records]
    assert sorted(got) == sorted([*records, Record(b"a-hash", b"", None, kind="hash")])


@pytest.mark.server
def test_the_change_feed_hears_every_record_of_a_bulk_write(spot: Spot) -> None:
    """A reader of the feed misses no key of a batch written as one stream of plain commands, and
    reads each with its value and its absolute expiry."""
    later = now_ms() + HOUR_MS
    records = [Record(b"fed:%05d" % i, b"v%d" % i, later + i if i % 2 else None) for i in range(2 * SLICE_KEYS + 9)]
    with open_sync(with_options(spot.base, namespace=spot.ns, feed="notify")) as fed:
        cursor = fed.feed_cursor()  # type: ignore[attr-defined]
        fed.set_many(records)
        seen: dict[bytes, Record] = {}
        deadline = now_ms() + 30_000
        while len(seen) < len(records) and now_ms() < deadline:
            for page in fed.changes(cursor, batch_size=500):  # type: ignore[attr-defined]
                seen.update((r.key, r) for r in page.records)
                cursor = page.cursor or cursor
    assert sorted(seen.values()) == sorted(records)


@pytest.mark.server
def test_a_bulk_read_tells_missing_expired_and_typed_keys_apart(spot: Spot) -> None:
    """The pipelined GET + PEXPIRETIME of each key: a key of another type is reported with its
    kind, a missing one and one whose expiry passed read as None, the rest exactly."""
    spot.store.set_many([Record(b"s%04d" % i, b"x" * i) for i in range(SLICE_KEYS + 2)])
    spot.store.set_many([Record(b"soon", b"gone", now_ms() + 50)])
    host, _, port = urlsplit(spot.base).netloc.split(",")[0].rpartition(":")
    client = (redis.Redis(host=host, port=int(port)) if spot.kind == "standalone"
              else RedisCluster(host=host, port=int(port)))
    try:
        client.rpush(spot.ns + "a-list", "x")
        client.pexpireat(spot.ns + "a-list", now_ms() + HOUR_MS)
    finally:
        client.close()
    time.sleep(0.2)
    keys = [b"soon", b"nope", b"a-list", *(b"s%04d" % i for i in range(SLICE_KEYS + 2))]
    got = spot.store.get_many(keys)
    assert got[:2] == [None, None]
    assert got[2] is not None and got[2].kind == "list" and got[2].expires_at_ms is not None
    assert got[3:] == [Record(b"s%04d" % i, b"x" * i) for i in range(SLICE_KEYS + 2)]


def test_commands_built_in_bulk_are_the_bytes_hiredis_packs() -> None:
    """MSET, SET and GET + expiry streams, joined from pieces rather than packed per command:
    the same bytes, empty and binary strings included."""
    from kvctl_plugins.redis import bulk
    from kvctl_plugins.redis.scripts import pack  # hiredis's packer, one command at a time

    keys = [os.urandom(i % 40) for i in range(2 * SLICE_KEYS + 3)]
    values = [os.urandom(i % 70) for i in range(2 * SLICE_KEYS + 3)]
    msets = bulk.msets(keys, values)
    assert msets.replies == 3
    assert b"".join(msets.chunks) == b"".join(
        pack([(b"MSET", *[x for kv in zip(keys[a:b], values[a:b], strict=True) for x in kv])])
        for a, b in ranges(keys, values))
    sets = bulk.writes(keys, values, [None] * len(keys))
    assert sets.replies == len(keys)
    assert b"".join(sets.chunks) == b"".join(
        pack([(b"SET", k, v)]) for k, v in zip(keys, values, strict=True))
    # under a prefix (the namespace), in one buffer when the caller bounds the bytes, with expiries
    ns = [b"ns:" + k for k in keys]
    assert bulk.msets(keys, values, b"ns:", 10**6) == bulk.msets(ns, values)
    sets = bulk.writes(keys, values, None, b"ns:", 10**6)
    assert len(sets.chunks) == 1 and sets.oks
    assert sets.chunks[0] == b"".join(pack([(b"SET", k, v)]) for k, v in zip(ns, values, strict=True))
    exps = [None if i % 2 else 1000 + i for i in range(len(keys))]
    sets = bulk.writes(keys, values, exps, b"ns:", 10**6)
    assert b"".join(sets.chunks) == b"".join(
        pack([(b"SET", k, v) if e is None else (b"SET", k, v, b"PXAT", b"%d" % e)])
        for k, v, e in zip(ns, values, exps, strict=True))
    same = [os.urandom(8) for _ in range(50)]  # keys and values each of one length
    assert bulk.writes(same, same[::-1], None).chunks == [b"".join(
        pack([(b"SET", k, v)]) for k, v in zip(same, same[::-1], strict=True))]
    reads = bulk.reads(keys, b"PEXPIRETIME")
    assert reads.replies == 2 * len(keys)
    assert b"".join(reads.chunks) == b"".join(
        pack([(b"GET", k), (b"PEXPIRETIME", k)]) for k in keys)
    assert bulk.msets([], []) == bulk.Packed([], 0) and bulk.reads([], b"PTTL") == bulk.Packed([], 0)


def test_key_slots_in_bulk_are_redis_py_s() -> None:
    """The batch's slots from one CRC pass, or key by key when a key may hold a hash tag."""
    from kvctl_plugins.redis.routing import SlotMap, by_owner, key_slots
    from redis.crc import key_slot

    plain = [os.urandom(i % 30) for i in range(3000)]
    tagged = [b"a{b}c", b"{}x", b"x{", b"}{y}", b"{z}", b"{{a}}", *plain[:50]]
    for keys in (plain, tagged, []):
        assert key_slots(keys) == [key_slot(k) for k in keys]
    # three owners (one byte a code) and 300 (the general path), with and without hash tags
    for count in (3, 300):
        owners = [f"n{slot % count}" if slot else "" for slot in range(16384)]
        for keys in (plain, tagged, [b"{same}a", b"{same}b"]):
            groups = by_owner(keys, SlotMap(owners))
            assert sorted(i for idx in groups.values() for i in idx) == list(range(len(keys)))
            assert all(owners[key_slot(keys[i])] == name for name, idx in groups.items() for i in idx)
            assert all(idx == sorted(idx) for idx in groups.values())
    assert by_owner([], SlotMap(owners)) == {}
    # a prefix (the namespace) routes as if prepended, with a hash tag in it or in the keys
    owners = [f"n{slot % 3}" for slot in range(16384)]
    for prefix in (b"ns:", b"{ns}:", b"n{", b""):
        for keys in (plain, tagged):
            assert SlotMap(owners).masks(keys, prefix) == SlotMap(owners).masks([prefix + k for k in keys])


@pytest.mark.server
def test_a_scan_left_mid_way_or_resumed_ends_equal(spot: Spot) -> None:
    """A scan sends each page's reads with the next SCAN: one stopped with a request in flight
    leaves the store working, and one resumed from any page's cursor reads every key."""
    records = [Record(b"r%05d" % i, b"v%d" % i) for i in range(3 * SLICE_KEYS)]
    spot.store.set_many(records)
    pages = cast(Generator[Page, None, None], spot.store.scan(batch_size=100))
    first = next(pages)
    pages.close()  # its next request is in flight
    assert all(type(r) is Record for r in first.records)
    assert spot.store.get_many([b"r00001"]) == [records[1]]
    seen = {r.key for r in first.records}
    cursor = first.cursor
    while cursor is not None:
        page = next(iter(spot.store.scan(batch_size=700, cursor=cursor)), None)
        if page is None:  # nothing after that cursor
            break
        seen.update(r.key for r in page.records)
        cursor = page.cursor
    assert seen == {r.key for r in records}
    assert sorted(r for p in spot.store.scan(batch_size=500) for r in p.records) == records


@pytest.mark.server
def test_replies_read_as_oks_with_an_error_among_them() -> None:
    """bulk.read_oks: [] for replies that are all +OK; with an error reply among them, every
    reply, in order, and the connection left at the next command's reply."""
    from kvctl_plugins.redis import bulk
    from kvctl_plugins.redis.scripts import pack

    url = urlsplit(service_url("KVCTL_TEST_REDIS_URL"))
    client = redis.Redis(host=url.hostname or "127.0.0.1", port=url.port or 6379)
    conn = client.connection_pool.get_connection()
    key = f"oks-{uuid.uuid4().hex[:8]}".encode()
    try:
        sets = [(b"SET", key + b"%d" % i, b"v") for i in range(3000)]
        conn.send_packed_command([pack(sets)], check_health=False)
        assert bulk.read_oks(conn, len(sets)) == []
        odd = [*sets[:1500], (b"SET", key), *sets[1500:], (b"PING",)]  # SET without a value: an error
        conn.send_packed_command([pack(odd)], check_health=False)
        replies = bulk.read_oks(conn, len(sets) + 1)
        assert len(replies) == len(sets) + 1 and isinstance(replies[1500], redis.ResponseError)
        assert replies[:1500] == [b"OK"] * 1500 and replies[1501:] == [b"OK"] * 1500
        assert bulk.read_replies(conn, 1) == [b"PONG"]  # the reply after them, still unread
    finally:
        conn.disconnect()
        client.connection_pool.release(conn)
        client.delete(*[key + b"%d" % i for i in range(3000)])
        client.close()


@pytest.mark.server
def test_a_resp3_push_message_among_replies_is_not_taken_for_one() -> None:
    """A connection tracking a key (RESP3) hears its invalidation between the replies to a bulk
    write: read_oks and read_replies return the write's replies only, and leave the next one."""
    from kvctl_plugins.redis import bulk
    from kvctl_plugins.redis.scripts import pack

    url = urlsplit(service_url("KVCTL_TEST_REDIS_URL"))
    client = redis.Redis(host=url.hostname or "127.0.0.1", port=url.port or 6379, protocol=3)
    other = redis.Redis(host=url.hostname or "127.0.0.1", port=url.port or 6379)
    conn = client.connection_pool.get_connection()
    key = f"push-{uuid.uuid4().hex[:8]}".encode()
    try:
        other.set(key, b"0")
        conn.send_command("CLIENT", "TRACKING", "ON")
        assert conn.read_response() == b"OK"
        for read in (bulk.read_oks, bulk.read_replies):
            conn.send_command("GET", key)  # tracked from now on
            assert conn.read_response() == b"0"
            other.set(key, b"1")  # -> an invalidation push on conn, before the next replies
            time.sleep(0.05)
            sets = [(b"SET", key + b":%d" % i, b"v") for i in range(100)]
            conn.send_packed_command([pack([*sets, (b"PING",)])], check_health=False)
            got = read(conn, len(sets))
            assert got in ([], [b"OK"] * len(sets)), got[:3]
            assert bulk.read_replies(conn, 1) == [b"PONG"]
            other.set(key, b"0")
    finally:
        conn.disconnect()
        client.connection_pool.release(conn)
        other.delete(key, *[key + b":%d" % i for i in range(100)])
        client.close()
        other.close()

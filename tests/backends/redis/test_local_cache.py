"""The local cache with pub/sub invalidation (Session's "Clustered Redis") on real servers.

Two real kvctl processes share one Redis: a write in one must evict the other's cached copy
within a bounded time; a killed subscriber connection must clear the cache and reconnect rather
than serve stale data.  Plus the cache itself (LRU bound, TTL, stats, the epoch guard) and the
wire format Session's Crystal nodes send and parse.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis as redispy
from kvctl_plugins.redis.cache import LocalCache, parse_message

from kvctl.registry import open_url
from kvctl.store import Record
from tests.conftest import service_url

pytestmark = pytest.mark.server

RUN = f"kvctl-cache-{os.getpid()}-{uuid.uuid4().hex[:6]}"
BOUND_S = 2.0  # an invalidation must land within this (it takes about a millisecond)

# A kvctl process driven over stdin/stdout, one JSON command per line.
PEER = r"""
import json, sys
from kvctl.registry import open_url
store = open_url(sys.argv[1])
store.invalidator.subscribed.wait(10)
print(json.dumps({"ready": store.invalidator.node_id}), flush=True)
for line in sys.stdin:
    op, *args = json.loads(line)
    if op == "get":
        rec = store.get(args[0].encode())
        out = None if rec is None else rec.value.decode()
    elif op == "set":
        store.set(args[0].encode(), args[1].encode()); out = True
    elif op == "delete":
        out = store.delete(args[0].encode())
    elif op == "stats":
        out = {k: v for k, v in store.stats().items() if k.startswith("cache")}
    elif op == "subscribed":
        out = store.invalidator.subscribed.wait(float(args[0]))
    print(json.dumps(out), flush=True)
"""


class Peer:
    def __init__(self, url: str) -> None:
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        self.proc = subprocess.Popen([sys.executable, "-c", PEER, url], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.node_id = json.loads(self._line())["ready"]

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the peer process died"
        return line

    def __call__(self, *command: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def cached_url(base: str, name: str, **extra: Any) -> str:
    options = {"namespace": f"{RUN}:{name}:", "local_cache": 100, "cache_channel": f"{RUN}:{name}", **extra}
    return base + ("&" if "?" in base else "?") + "&".join(f"{k}={v}" for k, v in options.items())


@pytest.fixture(params=["KVCTL_TEST_REDIS_URL", "KVCTL_TEST_REDIS_CLUSTER_URL"], ids=["standalone", "cluster"])
def peers(request: pytest.FixtureRequest) -> Iterator[tuple[Peer, Peer]]:
    url = cached_url(service_url(request.param), uuid.uuid4().hex[:6])
    a, b = Peer(url), Peer(url)
    try:
        yield a, b
    finally:
        a.close()
        b.close()
        with open_url(url) as s:
            s.clear()


def wait_for(check: Any, bound: float = BOUND_S) -> float:
    start = time.monotonic()
    while time.monotonic() - start < bound:
        if check():
            return time.monotonic() - start
        time.sleep(0.005)
    raise AssertionError(f"not within {bound} s")


def test_a_write_in_one_process_evicts_the_other(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    assert a.node_id != b.node_id
    a("set", "k", "v1")
    assert b("get", "k") == "v1"  # a miss, now cached...
    # ...unless a's invalidation of its own write reached b during that read: then b rightly
    # declined to cache what it read, and the next read caches it.
    wait_for(lambda: b("get", "k") == "v1" and b("stats")["cache_hits"] >= 1)
    a("set", "k", "v2")
    took = wait_for(lambda: b("get", "k") == "v2")
    assert took < BOUND_S
    assert b("stats")["cache_invalidations"] >= 1
    a("delete", "k")
    wait_for(lambda: b("get", "k") is None)
    # Its own messages are ignored: a's cache was not cleared by its own publish.
    a("set", "own", "x")
    assert a("get", "own") == "x" and a("get", "own") == "x"
    assert a("stats")["cache_hits"] >= 1


def test_killed_subscriber_clears_the_cache_and_reconnects() -> None:
    base = service_url("KVCTL_TEST_REDIS_URL")
    url = cached_url(base, "kill")
    peer = Peer(url)
    client = redispy.Redis(host="127.0.0.1", port=urlsplit(base).port or 6379)
    try:
        peer("set", "k", "v1")
        assert peer("get", "k") == "v1"
        # A writer that does not publish (redis-cli, another app): the cached copy is still served...
        client.set(f"{RUN}:kill:k", "v2")
        assert peer("get", "k") == "v1"
        # ...until the subscription drops: then the cache is cleared, never served stale.
        subs = [c for c in client.client_list(_type="pubsub") if c.get("sub") == "1"]
        assert subs, "no subscriber connection found"
        client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        wait_for(lambda: peer("get", "k") == "v2")
        assert peer("subscribed", 5) is True
        stats = peer("stats")
        assert stats["cache_reconnects"] >= 1 and stats["cache_subscribed"] is True
        assert peer("get", "k") == "v2" and peer("get", "k") == "v2"  # caching again after reconnect
        assert peer("stats")["cache_hits"] >= 1
    finally:
        peer.close()
        client.delete(f"{RUN}:kill:k")


def test_wire_format_is_sessions() -> None:
    base = service_url("KVCTL_TEST_REDIS_URL")
    channel = f"{RUN}:wire"
    url = base + f"?local_cache=10&cache_channel={channel}&cache_prefix=session:&node_id=kvctl-1"
    client = redispy.Redis(host="127.0.0.1", port=urlsplit(base).port or 6379)
    listener = client.pubsub()
    listener.subscribe(channel)
    assert listener.get_message(timeout=2)["type"] == "subscribe"
    key = f"session:{RUN}-abc".encode()
    with open_url(url) as store:
        store.invalidator.subscribed.wait(5)
        store.set(key, b"{}")
        store.delete(key)
        messages: list[dict[str, Any]] = []
        while len(messages) < 2:
            msg = listener.get_message(timeout=2)
            assert msg is not None
            if msg["type"] == "message":
                messages.append(json.loads(msg["data"]))
        assert [m["type"] for m in messages] == ["session_invalidated", "session_deleted"]
        for m in messages:
            assert set(m) == {"type", "session_id", "node_id", "timestamp"}
            assert m["session_id"] == f"{RUN}-abc" and m["node_id"] == "kvctl-1"
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m["timestamp"])

        # What a Crystal node sends evicts our cached copy: session_deleted for one id...
        store.set(key, b"v")
        assert store.get(key) is not None and store.get(key) is not None
        hits = store.cache.hits
        client.set(key, b"changed")  # behind the cache's back
        client.publish(channel, json.dumps({"type": "session_deleted", "session_id": f"{RUN}-abc",
                                            "node_id": "crystal-1", "timestamp": "2026-01-01T00:00:00Z"}))
        wait_for(lambda: store.get(key).value == b"changed")
        assert store.cache.hits >= hits
        # ...and cache_clear for everything.
        assert store.get(key) is not None and len(store.cache) == 1
        client.publish(channel, json.dumps({"type": "cache_clear", "session_id": "", "node_id": "crystal-1",
                                            "timestamp": "2026-01-01T00:00:00Z"}))
        wait_for(lambda: len(store.cache) == 0)
        store.delete(key)
    listener.close()


def test_messages_parse_like_session() -> None:
    msg = {"type": "session_invalidated", "session_id": "abc", "node_id": "n2", "timestamp": "x"}
    assert parse_message(json.dumps(msg), "n1") == ("evict", "abc")
    assert parse_message(json.dumps(msg), "n2") is None  # our own
    assert parse_message(json.dumps({**msg, "type": "SessionDeleted"}), "n1") == ("evict", "abc")
    assert parse_message(json.dumps({**msg, "type": "cache_clear"}), "n1") == ("clear", None)
    assert parse_message(b"not json", "n1") == ("clear", None)  # not understood: clear, never stale
    assert parse_message(json.dumps({**msg, "type": "something_new"}), "n1") == ("clear", None)


# -- the cache itself ----------------------------------------------------------------------------
def active_cache(entries: int = 3, ttl_ms: int = 30_000) -> LocalCache:
    cache = LocalCache(entries, ttl_ms)
    cache.set_active(True)
    return cache


def test_lru_bound_and_stats() -> None:
    cache = active_cache()
    cache.put_many(cache.epoch, [Record(b"a", b"1"), Record(b"b", b"2"), Record(b"c", b"3")])
    assert cache.get(b"a") is not None  # a is now the most recent
    cache.put_many(cache.epoch, [Record(b"d", b"4")])
    assert cache.get(b"b") is None  # the least recently used went
    assert cache.get(b"a") is not None and len(cache) == 3
    stats = cache.stats()
    assert (stats["cache_hits"], stats["cache_misses"], stats["cache_evictions"]) == (2, 1, 1)
    assert stats["cache_hit_rate"] == round(2 / 3, 4)


def test_entries_expire_and_records_expire() -> None:
    # wide margins: a loaded CI machine may pause the test for tens of milliseconds
    cache = active_cache(ttl_ms=400)
    cache.put_many(cache.epoch, [Record(b"a", b"1"), Record(b"t", b"2", int(time.time() * 1000) + 150)])
    assert cache.get(b"a") is not None
    time.sleep(0.2)
    assert cache.get(b"t") is None  # the record's own deadline passed
    time.sleep(0.25)
    assert cache.get(b"a") is None  # cache_ttl passed


def test_a_read_that_raced_an_invalidation_is_not_cached() -> None:
    cache = active_cache()
    epoch = cache.epoch  # a read starts...
    cache.invalidate([b"k"])  # ...another node writes k meanwhile...
    cache.put_many(epoch, [Record(b"k", b"old")])  # ...the read's (maybe old) answer is dropped
    assert cache.get(b"k") is None


def test_inactive_cache_is_bypassed() -> None:
    cache = active_cache()
    cache.put_many(cache.epoch, [Record(b"k", b"v")])
    cache.set_active(False)  # the subscriber dropped
    assert cache.get(b"k") is None and len(cache) == 0
    cache.put_many(cache.epoch, [Record(b"k", b"v")])
    assert len(cache) == 0

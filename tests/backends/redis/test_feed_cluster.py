"""The Redis change feed (``?feed=notify``) on a Redis Cluster: one subscription per master, gaps
when one of them drops or the masters change; and the cluster's seed list in the URL's host part
(``redis+cluster://h1:p1,h2:p2``) beside ``?seeds=``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redispy
from kvctl_plugins.redis.options import parse

from kvctl.errors import FeedGapError
from kvctl.registry import open_url
from kvctl.store import TOMBSTONE, Record, Store
from kvctl.testing import StoreConformance
from kvctl.url import StoreURL
from tests.backends.redis.support import Server, clear_namespace, wait, with_options
from tests.conftest import service_url

pytestmark = pytest.mark.server

RUN = f"kvctl-cfeed-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def cluster_url(name: str, **options: object) -> str:
    return with_options(service_url("KVCTL_TEST_REDIS_CLUSTER_URL"), namespace=f"{RUN}:{name}:", **options)


def seeds() -> list[tuple[str, int]]:
    return parse(StoreURL.parse(service_url("KVCTL_TEST_REDIS_CLUSTER_URL")), cluster=True).seeds


def changed(store: Store, cursor: str, batch_size: int = 1000) -> list[Record]:
    return [r for p in store.changes(cursor, batch_size=batch_size) for r in p.records]  # type: ignore[attr-defined]


@pytest.fixture(scope="module", autouse=True)
def remove_leftovers() -> Iterator[None]:
    yield
    clear_namespace(RUN, "KVCTL_TEST_REDIS_CLUSTER_URL")


class TestRedisClusterFeedConformance(StoreConformance):
    """The suite with the feed on (two slow tests the feed cannot affect run in test_redis.py).

    The order tests are restated: masters notify independently, so the feed keeps each key's
    order but no order between keys of different masters (a cluster batch is not atomic either).
    """

    test_state_machine = None  # type: ignore[assignment]
    test_value_over_limit_is_refused_and_nothing_written = None  # type: ignore[assignment]

    @pytest.fixture
    def store_url(self) -> str:
        return cluster_url(f"conf{uuid.uuid4().hex[:6]}", feed="notify")

    def test_change_feed_lists_upserts_and_tombstones_in_order(self, store: Store) -> None:
        start = store.feed_cursor()  # type: ignore[attr-defined]
        store.set(b"f1", b"a")
        store.set_many([Record(b"f2", b"b"), Record(b"f1", b"c")])
        store.delete(b"f2")
        latest = {r.key: (r.kind, r.value, r.version) for r in changed(store, start, batch_size=2)}
        assert latest == {b"f1": (None, b"c", None), b"f2": (TOMBSTONE, b"", None)}

    def test_change_feed_resumes_from_page_cursor(self, store: Store) -> None:
        start = store.feed_cursor()  # type: ignore[attr-defined]
        store.set_many(Record(b"c%02d" % i, b"v") for i in range(30))
        first = next(iter(store.changes(start, batch_size=10)))  # type: ignore[attr-defined]
        rest = [r.key for r in changed(store, first.cursor, batch_size=7)]
        assert sorted([r.key for r in first.records] + rest) == [b"c%02d" % i for i in range(30)]
        assert changed(store, store.feed_cursor()) == []  # type: ignore[attr-defined]


def test_every_master_is_heard() -> None:
    with open_url(cluster_url("every", feed="notify")) as store:
        start = store.feed_cursor()
        assert len(store.stats()["feed_nodes"]) == 3
        keys = [b"key-%d" % i for i in range(60)]  # spread over every master
        store.set_many(Record(k, b"v") for k in keys)
        assert sorted(r.key for r in changed(store, start)) == sorted(keys)
        store.clear()


def test_one_master_subscriber_killed_is_a_gap() -> None:
    with open_url(cluster_url("kill", feed="notify")) as store:
        cursor = store.feed_cursor()
        node, client_id = next(iter(store.feed.sub.client_ids.items()))
        host, port = node.rsplit(":", 1)
        admin = redispy.Redis(host=host, port=int(port))
        assert admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub", "ID", client_id) == 1
        admin.close()
        with pytest.raises(FeedGapError, match=node):
            changed(store, cursor)
        fresh = store.feed_cursor()
        store.set(b"after", b"1")
        assert [r.key for r in changed(store, fresh)] == [b"after"]
        store.clear()


# -- seeds -----------------------------------------------------------------------------------------
def test_seed_list_in_the_host_part() -> None:
    listed = ",".join(f"{h}:{p}" for h, p in seeds())
    url = f"redis+cluster://{listed}?namespace={RUN}:hosts:"
    assert parse(StoreURL.parse(url), cluster=True).seeds == seeds()
    with open_url(url) as store:
        store.set(b"k", b"v")
        assert store.get(b"k").value == b"v"
        assert store.stats()["nodes"] == 3
        store.clear()
    # a dead first seed in the list, a live one given by ?seeds=
    (h1, p1), (h2, p2) = seeds()[:2]
    mixed = f"redis+cluster://127.0.0.1:1,{h1}:{p1}?seeds={h2}:{p2}&namespace={RUN}:mixed:"
    assert [p for _, p in parse(StoreURL.parse(mixed), cluster=True).seeds] == [1, p1, p2]
    with open_url(mixed) as store:
        store.set(b"k", b"v")
        assert store.get(b"k").value == b"v"
        store.clear()
    assert parse(StoreURL.parse("redis+cluster://a,b:7001"), cluster=True).seeds == [("a", 6379), ("b", 7001)]


# -- the masters changing, on a cluster of this test's own ----------------------------------------
def settled(check: Callable[[], Any]) -> None:
    wait(check, timeout=60, what="the cluster did not settle")


@pytest.fixture
def own_nodes(tmp_path: Path) -> Iterator[list[tuple[int, redispy.Redis]]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (tests/services.sh installs it)")
    started = [Server(tmp_path, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
               for _ in range(2)]
    yield [(server.port, server.client(decode_responses=True)) for server in started]
    for server in started:
        server.kill()


def test_masters_changing_is_a_gap(own_nodes: list[tuple[int, redispy.Redis]]) -> None:
    (port_a, a), (port_b, b) = own_nodes
    a.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    settled(lambda: "cluster_state:ok" in a.execute_command("CLUSTER", "INFO"))
    with open_url(f"redis+cluster://127.0.0.1:{port_a}?feed=notify&namespace=n:") as store:
        cursor = store.feed_cursor()
        store.set(b"k", b"v")
        # a second master joins and takes over an (empty) slot
        a.execute_command("CLUSTER", "MEET", "127.0.0.1", port_b)
        b_id = b.execute_command("CLUSTER", "MYID")
        settled(lambda: b_id in a.execute_command("CLUSTER", "NODES")
             and a.execute_command("CLUSTER", "MYID") in b.execute_command("CLUSTER", "NODES"))
        slot = 16383
        b.execute_command("CLUSTER", "SETSLOT", slot, "NODE", b_id)
        a.execute_command("CLUSTER", "SETSLOT", slot, "NODE", b_id)
        settled(lambda: any(int(entry[0]) <= slot <= int(entry[1]) and int(entry[2][1]) == port_b
                         for entry in a.execute_command("CLUSTER", "SLOTS")))
        with pytest.raises(FeedGapError, match="masters changed"):
            changed(store, cursor)
        fresh = store.feed_cursor()  # covers both masters now (its barrier went through both)
        assert len(store.stats()["feed_nodes"]) == 2
        store.set(b"k", b"v2")  # slot 7629, still on the first master
        assert [(r.key, r.value) for r in changed(store, fresh)] == [(b"k", b"v2")]

"""The Redis change feed (``?feed=notify``, plugins/redis/feed.py) on a standalone server: the
conformance suite's feed tests, gaps (a killed subscriber, a restarted server, an overflowing
buffer, a cursor of another subscription), and the server settings it needs (CONFIG SET, a
server refusing CONFIG, keyevent-only servers, a probe where CONFIG cannot even be read).

Work on the shared server stays under a namespace of this run; the tests that change a
server's settings or restart it use a redis-server of their own.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redispy

from kvctl.errors import BadURLError, FeedGapError, UnsupportedError, UsageError
from kvctl.registry import open_url
from kvctl.store import TOMBSTONE, Record, Store
from kvctl.testing import StoreConformance
from tests.backends.redis.support import Server, clear_namespace, with_options
from tests.conftest import service_url

pytestmark = pytest.mark.server

RUN = f"kvctl-feed-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def feed_url(name: str, **options: object) -> str:
    return with_options(service_url("KVCTL_TEST_REDIS_URL"), feed="notify", namespace=f"{RUN}:{name}:", **options)


def changed(store: Store, cursor: str, batch_size: int = 1000) -> list[Record]:
    return [r for p in store.changes(cursor, batch_size=batch_size) for r in p.records]  # type: ignore[attr-defined]


def kill_subscriber(store: Store, admin: redispy.Redis) -> None:
    """CLIENT KILL the store's subscriber connection(s), and no other client's."""
    ids = store.feed.sub.client_ids.values()  # type: ignore[attr-defined]
    for client_id in ids:
        assert admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub", "ID", client_id) == 1


@pytest.fixture(scope="module", autouse=True)
def remove_leftovers() -> Iterator[None]:
    yield
    clear_namespace(RUN, "KVCTL_TEST_REDIS_URL")


@pytest.fixture
def admin() -> Iterator[redispy.Redis]:
    client = redispy.Redis.from_url(service_url("KVCTL_TEST_REDIS_URL"))
    yield client
    client.close()


class TestRedisFeedConformance(StoreConformance):
    """The whole suite with the feed on; two slow tests that the feed cannot affect run in
    test_redis.py on the same code."""

    test_state_machine = None  # type: ignore[assignment]
    test_value_over_limit_is_refused_and_nothing_written = None  # type: ignore[assignment]

    @pytest.fixture
    def store_url(self) -> str:
        return feed_url(f"conf{uuid.uuid4().hex[:6]}")

    def test_change_feed_lists_upserts_and_tombstones_in_order(self, store: Store) -> None:
        # The suite's version expects each change's own value and a version.  A notification
        # carries neither: the feed names changed keys in notification order and reads their
        # current state (each page deduplicated), version None.
        start = store.feed_cursor()  # type: ignore[attr-defined]
        store.set(b"f1", b"a")
        store.set_many([Record(b"f2", b"b"), Record(b"f1", b"c")])
        store.delete(b"f2")
        pages = list(store.changes(start, batch_size=2))  # type: ignore[attr-defined]
        assert [[(r.key, r.kind, r.value, r.version) for r in p.records] for p in pages] == [
            [(b"f1", None, b"c", None), (b"f2", TOMBSTONE, b"", None)],
            [(b"f1", None, b"c", None), (b"f2", TOMBSTONE, b"", None)],
        ]
        assert [(r.key, r.kind) for r in changed(store, start)] == [(b"f1", None), (b"f2", TOMBSTONE)]


# -- the feed's own behaviour ------------------------------------------------------------------
def test_feed_is_an_option() -> None:
    plain = with_options(service_url("KVCTL_TEST_REDIS_URL"), namespace=f"{RUN}:plain:")
    with open_url(plain) as store:
        assert not store.capabilities.change_feed
        with pytest.raises(UnsupportedError, match="feed=notify"):
            store.feed_cursor()
    with open_url(feed_url("opt")) as store:
        assert store.capabilities.change_feed
    for bad in (feed_url("x", feed_buffer=0), with_options(plain, feed="kafka"),
                with_options(plain, feed_buffer=10)):
        with pytest.raises(BadURLError):
            open_url(bad)


def test_writes_deletes_and_expiries_are_listed_once_per_page() -> None:
    with open_url(feed_url("kinds")) as store:
        start = store.feed_cursor()
        store.set_many([Record(b"a", b"1"), Record(b"b", b"2"), Record(b"t", b"3", int(time.time() * 1000) + 60_000)])
        for i in range(5):
            store.set(b"a", b"v%d" % i)
        store.delete(b"b")
        records = changed(store, start)
        assert [(r.key, r.value, r.kind) for r in records] == [
            (b"t", b"3", None), (b"a", b"v4", None), (b"b", b"", TOMBSTONE)]
        assert records[0].expires_at_ms is not None and records[1].expires_at_ms is None
        end = store.feed_cursor()
        raw = redispy.Redis.from_url(service_url("KVCTL_TEST_REDIS_URL"))
        raw.pexpire(f"{RUN}:kinds:t", 1)
        raw.close()
        time.sleep(0.01)
        assert store.get(b"t") is None  # the read expires the key: Redis notifies "expired"
        assert [(r.key, r.kind) for r in changed(store, end)] == [(b"t", TOMBSTONE)]
        store.clear()


def test_other_namespaces_and_other_writers() -> None:
    """Only the store's namespace is heard, and writes of any client are (not just kvctl's)."""
    with open_url(feed_url("mine")) as mine, open_url(feed_url("other")) as other:
        start = mine.feed_cursor()
        other.set(b"k", b"not mine")
        raw = redispy.Redis.from_url(service_url("KVCTL_TEST_REDIS_URL"))
        raw.set(f"{RUN}:mine:by-redis-cli", "x")
        raw.incr(f"{RUN}:mine:counter")
        raw.close()
        assert [(r.key, r.value) for r in changed(mine, start)] == [(b"by-redis-cli", b"x"), (b"counter", b"1")]
        mine.clear()
        other.clear()


def test_page_cursors_resume_and_the_end_is_empty() -> None:
    with open_url(feed_url("pages")) as store:
        start = store.feed_cursor()
        store.set_many(Record(b"k%03d" % i, b"v") for i in range(250))
        pages = list(store.changes(start, batch_size=100))
        assert [len(p.records) for p in pages] == [100, 100, 50]
        assert [r.key for r in changed(store, pages[0].cursor)] == [b"k%03d" % i for i in range(100, 250)]
        assert changed(store, pages[-1].cursor) == []
        assert changed(store, store.feed_cursor()) == []
        store.clear()


def test_killed_subscriber_is_a_gap_and_a_new_cursor_starts_a_new_subscription(admin: redispy.Redis) -> None:
    with open_url(feed_url("kill")) as store:
        cursor = store.feed_cursor()
        store.set(b"before", b"1")
        kill_subscriber(store, admin)
        store.set(b"lost", b"1")  # notified to nobody
        with pytest.raises(FeedGapError, match="subscriber connection") as info:
            changed(store, cursor)
        assert store.where in str(info.value) and "\n" not in str(info.value)
        with pytest.raises(FeedGapError, match="ended"):  # and it stays a gap, saying why
            changed(store, cursor)
        fresh = store.feed_cursor()
        assert fresh.split(":")[1] != cursor.split(":")[1]
        store.set(b"after", b"1")
        assert [r.key for r in changed(store, fresh)] == [b"after"]
        assert store.stats()["feed_ended_subscriptions"] == 1
        store.clear()


def test_subscriber_dropped_while_idle_is_noticed_by_the_reader(admin: redispy.Redis) -> None:
    with open_url(feed_url("idle")) as store:
        cursor = store.feed_cursor()
        kill_subscriber(store, admin)
        deadline = time.monotonic() + 5
        while store.stats()["feed_failure"] is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "dropped" in store.stats()["feed_failure"]
        with pytest.raises(FeedGapError, match="dropped"):
            changed(store, cursor)


def test_cursor_of_another_subscription_is_a_gap() -> None:
    url = feed_url("foreign")
    with open_url(url) as a, open_url(url) as b:
        cursor = a.feed_cursor()
        with pytest.raises(FeedGapError, match="another process"):
            changed(b, cursor)
    with open_url(url) as c:
        with pytest.raises(FeedGapError, match="no history"):
            changed(c, None)  # type: ignore[arg-type]
        for bad in ("not-a-cursor", "rn:abc", "rn:abc:x", "m:12"):
            with pytest.raises(UsageError):
                changed(c, bad)
        ahead = c.feed_cursor().rsplit(":", 1)[0] + ":999999"
        with pytest.raises(FeedGapError, match="ahead"):
            changed(c, ahead)


def test_closed_store_cursor_is_a_gap() -> None:
    url = feed_url("closed")
    store = open_url(url)
    cursor = store.feed_cursor()
    store.close()
    with open_url(url) as again, pytest.raises(FeedGapError):
        changed(again, cursor)


def test_buffer_overflow_is_a_gap_never_a_silent_loss() -> None:
    with open_url(feed_url("overflow", feed_buffer=20)) as store:
        old = store.feed_cursor()
        store.set_many(Record(b"k%02d" % i, b"v") for i in range(10))
        recent = store.feed_cursor()
        store.set_many(Record(b"j%02d" % i, b"v") for i in range(15))
        with pytest.raises(FeedGapError, match="feed_buffer"):
            changed(store, old)
        assert [r.key for r in changed(store, recent)] == [b"j%02d" % i for i in range(15)]
        assert store.stats()["feed_buffered"] <= 20
        store.clear()


def test_other_value_types_are_reported_with_their_kind() -> None:
    with open_url(feed_url("types")) as store:
        start = store.feed_cursor()
        raw = redispy.Redis.from_url(service_url("KVCTL_TEST_REDIS_URL"))
        raw.hset(f"{RUN}:types:h", "f", "v")  # heard when the server sends hash events too
        raw.set(f"{RUN}:types:s", "v")
        raw.close()
        kinds = {r.key: r.kind for r in changed(store, start)}
        assert kinds[b"s"] is None and kinds.get(b"h", "hash") == "hash"
        store.clear()


# -- the server's settings, on servers of this test's own ---------------------------------------
class NotifyServer(Server):
    """A server of this test's own, with a URL that turns the feed on."""

    def __init__(self, workdir: Path, *args: str, auth: dict[str, str] | None = None) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (tests/services.sh installs it)")
        super().__init__(workdir, *args, auth=auth)

    def url(self, **options: object) -> str:
        return with_options(f"redis://127.0.0.1:{self.port}/0", feed="notify", **options)


# The only user may do everything but CONFIG (as on managed services), or but CONFIG SET.
NO_CONFIG = ("--user", "default", "off", "--user", "app", "on", ">pw", "~*", "&*", "+@all", "-config")
NO_CONFIG_SET = (*NO_CONFIG[:-1], "-config|set")
APP = {"username": "app", "password": "pw"}


def test_missing_notification_classes_are_added_with_config_set(servers: list[NotifyServer], tmp_path: Path) -> None:
    server = NotifyServer(tmp_path, "--notify-keyspace-events", "El")
    servers.append(server)
    with open_url(server.url()) as store:
        start = store.feed_cursor()
        store.set(b"k", b"v")
        assert [r.key for r in changed(store, start)] == [b"k"]
    client = redispy.Redis(port=server.port, decode_responses=True)
    flags = str(client.config_get("notify-keyspace-events")["notify-keyspace-events"])
    assert set("Klg$xe") <= set(flags.replace("A", "g$lshzxetd"))


def test_refused_config_without_notifications_is_unsupported(servers: list[NotifyServer], tmp_path: Path) -> None:
    server = NotifyServer(tmp_path, *NO_CONFIG_SET, auth=APP)
    servers.append(server)
    with open_url(server.url().replace("redis://", "redis://app:pw@")) as store:
        with pytest.raises(UnsupportedError, match=r"CONFIG SET was refused.*notify-keyspace-events") as info:
            store.feed_cursor()
        assert "pw@" not in str(info.value)


def test_refused_config_with_keyevent_notifications_configured(servers: list[NotifyServer], tmp_path: Path) -> None:
    # CONFIG GET is allowed here, CONFIG SET is not, and only keyevent (E) notifications are on.
    server = NotifyServer(tmp_path, "--notify-keyspace-events", "Eg$xe", *NO_CONFIG_SET, auth=APP)
    servers.append(server)
    with open_url(server.url(namespace="ns:").replace("redis://", "redis://app:pw@")) as store:
        start = store.feed_cursor()
        assert store.stats()["feed_nodes"] == {f"127.0.0.1:{server.port}": "keyevent"}
        raw = redispy.Redis(port=server.port, username="app", password="pw")
        raw.set("elsewhere", "x")
        raw.close()
        store.set(b"k", b"v")
        store.delete(b"k")
        assert [(r.key, r.kind) for r in changed(store, start)] == [(b"k", TOMBSTONE)]


def test_unreadable_config_is_probed(servers: list[NotifyServer], tmp_path: Path) -> None:
    on = NotifyServer(tmp_path, "--notify-keyspace-events", "Kg$xe", *NO_CONFIG, auth=APP)
    off = NotifyServer(tmp_path, *NO_CONFIG, auth=APP)
    servers.extend([on, off])
    with open_url(on.url(namespace="p:").replace("redis://", "redis://app:pw@")) as store:
        start = store.feed_cursor()
        store.set(b"k", b"v")
        assert [r.key for r in changed(store, start)] == [b"k"]  # the probe key is not a change
        assert store.count() == 1
    with (open_url(off.url(namespace="p:").replace("redis://", "redis://app:pw@")) as store,
          pytest.raises(UnsupportedError, match="probe")):
        store.feed_cursor()


def test_flushes_are_a_gap(servers: list[NotifyServer], tmp_path: Path) -> None:
    server = NotifyServer(tmp_path)
    servers.append(server)
    raw = redispy.Redis(port=server.port)
    with open_url(server.url()) as store:
        for flush in (lambda: raw.flushall(), lambda: raw.swapdb(0, 1), lambda: store.clear(),
                      lambda: redispy.Redis(port=server.port, db=3).flushdb()):
            cursor = store.feed_cursor()
            store.set(b"k", b"v")
            flush()  # empties a database and notifies no key
            with pytest.raises(FeedGapError, match="FLUSHDB, FLUSHALL or SWAPDB"):
                changed(store, cursor)
        cursor = store.feed_cursor()
        store.set(b"k", b"v")
        assert [r.key for r in changed(store, cursor)] == [b"k"]
    raw.close()


def test_server_restart_is_a_gap(servers: list[NotifyServer], tmp_path: Path) -> None:
    server = NotifyServer(tmp_path)
    servers.append(server)
    with open_url(server.url(timeout="2s")) as store:
        cursor = store.feed_cursor()
        store.set(b"k", b"v")
        server.kill()
        assert server.start()  # same port, settings back to the defaults: notifications off
        with pytest.raises(FeedGapError, match=r"dropped|no longer"):
            changed(store, cursor)
        fresh = store.feed_cursor()  # sets notify-keyspace-events again
        store.set(b"k2", b"v")
        assert [r.key for r in changed(store, fresh)] == [b"k2"]

"""``kvctl sync`` from Redis with its notification feed (``?feed=notify``), on the shared test
server: one process follows the feed after its first (diff) run, separate runs fall back to a
diff and say so, a lost subscription is repaired by the fallback, and random writes, overwrites,
deletes and expiries (from kvctl and from other clients) synced at random moments converge,
Redis to Redis and Redis to memory and SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redispy

from kvctl.adapt import to_async
from kvctl.engines.replicate import SyncEngine, SyncPlan, SyncResult, sync
from kvctl.errors import NoSuchStoreError
from kvctl.registry import open_url
from kvctl.store import Record, Store, now_ms
from tests.backends.redis.support import clear_namespace
from tests.conftest import service_url

pytestmark = pytest.mark.server

RUN = f"kvctl-syncr-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def redis_url(name: str, feed: bool = True) -> str:
    url = service_url("KVCTL_TEST_REDIS_URL")
    return url + ("&" if "?" in url else "?") + f"namespace={RUN}:{name}{uuid.uuid4().hex[:6]}:" + (
        "&feed=notify" if feed else "")


def contents(store: Store) -> dict[bytes, tuple[bytes, int | None]]:
    now = now_ms() + 50  # leave out what expires within a moment: the two sides may disagree there
    return {r.key: (r.value, r.expires_at_ms) for p in store.scan() for r in p.records
            if r.expires_at_ms is None or r.expires_at_ms > now}


def kill_subscriber(store: Store) -> None:
    admin = redispy.Redis.from_url(service_url("KVCTL_TEST_REDIS_URL"))
    for client_id in store.feed.sub.client_ids.values():  # type: ignore[attr-defined]
        admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub", "ID", client_id)
    admin.close()


@pytest.fixture(scope="module", autouse=True)
def remove_leftovers() -> Iterator[None]:
    yield
    clear_namespace(RUN, "KVCTL_TEST_REDIS_URL")


class Pair:
    """A source and a destination store and one SyncEngine over them, as ``sync --watch`` has."""

    def __init__(self, src_url: str, dst_url: str, state: Path) -> None:
        self.src: Store = open_url(src_url)
        self.dst: Store = open_url(dst_url)
        self.engine = SyncEngine(SyncPlan(src_url, dst_url, state), to_async(self.src), to_async(self.dst))

    def sync(self) -> SyncResult:
        return asyncio.run(self.engine.run_once())

    def close(self) -> None:
        self.src.clear()
        self.dst.clear()
        self.src.close()
        self.dst.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(redis_url("src"), redis_url("dst", feed=False), tmp_path)
    yield p
    p.close()


def test_one_process_follows_the_feed_after_its_first_run(pair: Pair) -> None:
    pair.src.set_many(Record(b"k%03d" % i, b"v") for i in range(100))
    first = pair.sync()
    assert (first.mode, first.applied_to_dst) == ("diff", 100)
    pair.src.set(b"k001", b"changed")
    pair.src.delete(b"k002")
    pair.src.set(b"new", b"1", ttl_ms=60_000)
    second = pair.sync()
    assert (second.mode, second.fallback, second.applied_to_dst, second.deleted) == ("feed", None, 2, 1)
    assert contents(pair.src) == contents(pair.dst)
    third = pair.sync()
    assert (third.mode, third.applied_to_dst) == ("feed", 0)


def test_separate_runs_fall_back_to_a_diff_and_say_so(tmp_path: Path) -> None:
    src_url, dst_url = redis_url("src"), redis_url("dst", feed=False)
    with open_url(src_url) as src:
        src.set(b"a", b"1")
        plan = SyncPlan(src_url, dst_url, tmp_path)
        assert asyncio.run(sync(plan)).mode == "diff"
        src.set(b"b", b"2")
        again = asyncio.run(sync(plan))
        assert again.mode == "diff" and again.converged
        assert again.fallback is not None and "change feed gap" in again.fallback
        assert "another process" in again.fallback
        with open_url(dst_url) as dst:
            assert contents(src) == contents(dst)
            dst.clear()
        src.clear()


def test_a_lost_subscription_is_repaired_by_the_fallback(pair: Pair) -> None:
    pair.src.set_many(Record(b"k%d" % i, b"v") for i in range(20))
    pair.sync()
    pair.src.set(b"k1", b"seen")
    assert pair.sync().mode == "feed"
    kill_subscriber(pair.src)
    pair.src.set(b"k2", b"unheard")  # notified to nobody
    pair.src.delete(b"k3")
    repaired = pair.sync()
    assert repaired.mode == "diff" and repaired.fallback is not None
    assert "change feed gap" in repaired.fallback and "subscriber connection" in repaired.fallback
    assert contents(pair.src) == contents(pair.dst)
    pair.src.set(b"k4", b"after")
    follow = pair.sync()  # the fallback took a new cursor: back on the feed
    assert (follow.mode, follow.applied_to_dst) == ("feed", 1)
    assert contents(pair.src) == contents(pair.dst)


def random_writes(rng: random.Random, store: Store, raw: redispy.Redis, namespace: bytes, n: int) -> None:
    """Writes, overwrites, deletes, expiries and renames, by kvctl and by another client."""
    for _ in range(n):
        key = b"k%d" % rng.randint(0, 30)
        action = rng.random()
        if action < 0.35:
            store.set(key, rng.randbytes(rng.randint(0, 12)))
        elif action < 0.5:
            store.set(key, b"short-lived", ttl_ms=rng.choice([1, 20, 60_000]))
        elif action < 0.65:
            store.delete(key)
        elif action < 0.75:
            store.set_many([Record(key, b"batch"), Record(key + b"x", b"batch", now_ms() + 30_000)])
        elif action < 0.85:
            raw.set(namespace + key, b"other client")
            raw.pexpire(namespace + key, rng.choice([5, 60_000]))
        elif action < 0.92:
            raw.append(namespace + key, b"+")
        else:
            raw.rename(namespace + key, namespace + b"k%d" % rng.randint(0, 30)) if raw.exists(namespace + key) \
                else raw.delete(namespace + key)


# Redis keeps no versions, so its changes carry none: the engine writes them as the source's
# current state, even over a versioned destination record (memory, SQLite).
VERSIONED_DESTINATIONS = ["memory", "sqlite"]


def dst_url_of(kind: str, tmp_path: Path) -> str:
    return {"redis": lambda: redis_url("dst", feed=False),
            "memory": lambda: f"memory://syncr{uuid.uuid4().hex[:8]}",
            "sqlite": lambda: f"sqlite://{tmp_path / ('dst' + uuid.uuid4().hex[:6] + '.db')}"}[kind]()


@pytest.mark.parametrize("dst_kind", ["redis", *VERSIONED_DESTINATIONS])
def test_updates_deletes_and_recreations_reach_the_destination(tmp_path: Path, dst_kind: str) -> None:
    p = Pair(redis_url("src"), dst_url_of(dst_kind, tmp_path), tmp_path / "state")
    try:
        p.src.set_many([Record(b"a", b"1"), Record(b"z", b"1")])
        p.sync()
        p.src.set(b"a", b"2")
        assert p.sync().mode == "feed"
        assert p.dst.get(b"a").value == b"2"  # type: ignore[union-attr]
        kill_subscriber(p.src)
        p.src.delete(b"z")
        assert p.sync().mode == "diff"  # the fallback deletes z at the destination
        assert p.dst.get(b"z") is None
        p.src.set(b"z", b"again")
        assert p.sync().mode == "feed"
        assert contents(p.src) == contents(p.dst)
    finally:
        p.close()


@pytest.mark.parametrize(("seed", "dst_kind"), [(0, "redis"), (1, "redis"), (2, "redis"),
                                                  (3, VERSIONED_DESTINATIONS[0]), (4, VERSIONED_DESTINATIONS[1])])
def test_random_changes_synced_at_random_moments_converge(tmp_path: Path, seed: int, dst_kind: str) -> None:
    rng = random.Random(seed)
    p = Pair(redis_url("src"), dst_url_of(dst_kind, tmp_path), tmp_path / "state")
    raw = redispy.Redis.from_url(service_url("KVCTL_TEST_REDIS_URL"))
    namespace = p.src.ns  # type: ignore[attr-defined]
    try:
        modes = []
        for round_ in range(8):
            random_writes(rng, p.src, raw, namespace, rng.randint(0, 40))
            if round_ == 4:
                kill_subscriber(p.src) if p.src.feed.sub is not None else None  # type: ignore[attr-defined]
            if rng.random() < 0.7:
                modes.append(p.sync().mode)
            if rng.random() < 0.2:
                time.sleep(0.03)  # let short TTLs run out
        modes.append(p.sync().mode)
        assert "feed" in modes
        assert contents(p.src) == contents(p.dst)
    finally:
        raw.close()
        p.close()


# -- the CLI, end to end (``env``: conftest's clean environment) -----------------------------------
def test_cli_watch_follows_and_separate_runs_announce_the_fallback(env: dict[str, str]) -> None:
    src_url, dst_url = redis_url("src"), redis_url("dst", feed=False)
    src, dst = open_url(src_url), open_url(dst_url)
    try:
        src.set(b"before", b"1")
        kvctl = [sys.executable, "-m", "kvctl", "sync", src_url, dst_url]
        once = subprocess.run(kvctl, env=env, capture_output=True, timeout=60)
        assert once.returncode == 0, once.stderr
        # The watch below is a separate process: its first run cannot use this run's cursor.
        watch = subprocess.Popen([*kvctl, "--watch", "--interval", "20ms", "--json"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            for i in range(3):
                src.set(b"live%d" % i, b"v")
                while dst.get(b"live%d" % i) is None:
                    assert watch.poll() is None, watch.communicate()
                    assert time.monotonic() < deadline, "the watch did not copy the write"
                    time.sleep(0.01)
            src.delete(b"before")
            while dst.get(b"before") is not None:
                assert time.monotonic() < deadline, "the watch did not copy the delete"
                time.sleep(0.01)
        finally:
            watch.send_signal(signal.SIGINT)
            out, err = watch.communicate(timeout=20)
        assert watch.returncode == 0, err
        totals = json.loads(out)
        # live0..2 and the delete; "before", equal on both sides, is not sent again by the fallback
        assert totals["applied"] >= 3 and totals["deleted"] >= 1
        # its first run found the other process's cursor (announced); then the feed all along
        assert err.count(b"warning: change feed gap") == 1 and b"another process" in err
        assert contents(src) == contents(dst)
    finally:
        src.clear()
        dst.clear()
        src.close()
        dst.close()


def test_cli_watch_warns_of_each_typed_key_and_ends_with_exit_8(env: dict[str, str], tmp_path: Path) -> None:
    src_url = redis_url("typed")
    namespace = src_url.split("namespace=")[1].split("&")[0]
    dst_url = f"sqlite://{tmp_path / 'watch.db'}"
    raw = redispy.Redis.from_url(service_url("KVCTL_TEST_REDIS_URL"))
    src = open_url(src_url)
    try:
        src.set(b"plain", b"1")
        watch = subprocess.Popen([sys.executable, "-m", "kvctl", "sync", src_url, dst_url, "--watch",
                                  "--interval", "20ms"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            # The watch's first write creates the file and then its table: a read in between is
            # correctly refused as "no such store", so wait for the store, not just the file.
            dst = None
            while dst is None:
                assert watch.poll() is None, watch.communicate()
                assert time.monotonic() < deadline, "the watch did not start"
                with contextlib.suppress(NoSuchStoreError):
                    dst = open_url(dst_url, access="read") if (tmp_path / "watch.db").exists() else None
                if dst is None:
                    time.sleep(0.05)
            while dst.get(b"plain") is None:  # the first run (a comparison) has copied it
                assert watch.poll() is None, watch.communicate()
                assert time.monotonic() < deadline, "the watch did not start"
                time.sleep(0.05)
            raw.hset(f"{namespace}h", "f", "v")
            src.set(b"after", b"2")
            src.delete(b"plain")
            while dst.get(b"after") is None or dst.get(b"plain") is not None:
                assert watch.poll() is None, watch.communicate()
                assert time.monotonic() < deadline, "the watch did not copy the writes"
                time.sleep(0.05)
            dst.close()
            raw.hset(f"{namespace}h", "g", "w")  # changed again: still one warning for the key
            time.sleep(0.3)
        finally:
            watch.send_signal(signal.SIGINT)
            _out, err = watch.communicate(timeout=20)
        text = err.decode()
        assert watch.returncode == 8, text
        assert text.count("kvctl: warning: not copied: h holds") == 1, text
        assert "1 deleted" in text and "1 typed key NOT copied" in text
        assert text.rstrip().splitlines()[-1].startswith("kvctl: error: 1 key holds values of a type"), text
        assert "Traceback" not in text
    finally:
        src.clear()
        src.close()
        raw.close()

"""What the conformance suite does not cover for Redis: byte-exact interplay with redis-cli, other
Redis types (reported, dumped, restored, cleared), millisecond expiries, whole-database clear,
cursors across cluster masters and URL handling.  Real servers from tests/services.sh.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis as redispy
from kvctl_plugins.redis.commands import escape_glob
from kvctl_plugins.redis.options import parse

from kvctl.errors import BadURLError, UnsupportedError
from kvctl.registry import open_url
from kvctl.store import Record
from kvctl.url import StoreURL
from tests.conftest import service_url

pytestmark = pytest.mark.server

RUN = f"kvctl-feat-{os.getpid()}-{uuid.uuid4().hex[:6]}"
# A database of its own for the tests that use no namespace (FLUSHDB is whole-database).
SPARE_DB = 11


def standalone_port() -> int:
    port = urlsplit(service_url("KVCTL_TEST_REDIS_URL")).port
    assert port is not None
    return port


def redis_cli(*args: str | bytes, stdin: bytes | None = None, db: int = 0) -> bytes:
    cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(standalone_port()), "-n", str(db), *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, check=True, timeout=10).stdout


def raw(db: int = 0) -> redispy.Redis:
    return redispy.Redis(host="127.0.0.1", port=standalone_port(), db=db)


@pytest.fixture
def plain_url() -> str:
    return service_url("KVCTL_TEST_REDIS_URL")


@pytest.fixture
def store(plain_url: str) -> Iterator:
    s = open_url(f"{plain_url}?namespace={RUN}:")
    s.clear()
    yield s
    s.clear()
    s.close()


@pytest.fixture
def spare() -> Iterator:
    """A store over a whole spare database (no namespace)."""
    s = open_url(f"redis://127.0.0.1:{standalone_port()}/{SPARE_DB}")
    s.clear()
    yield s
    s.clear()
    s.close()


# -- plain keys, exactly as other clients see them --------------------------------------------
def test_redis_cli_writes_kvctl_reads_byte_identical(plain_url: str) -> None:
    key = f"{RUN}:cli-in".encode()
    value = bytes(range(256)) + b"\r\n\x00end"
    redis_cli("-x", "set", key, stdin=value)  # -x: the value comes from stdin, byte for byte
    with open_url(plain_url) as s:
        record = s.get(key)
        assert record is not None and record.value == value and record.kind is None
        s.delete(key)


def test_kvctl_writes_redis_cli_reads_byte_identical(plain_url: str) -> None:
    key = f"{RUN}:cli-out".encode()
    value = bytes(range(256)) * 3
    with open_url(plain_url) as s:
        s.set(key, value)
        # redis-cli prints a raw value followed by one newline when its output is not a terminal.
        assert redis_cli("get", key) == value + b"\n"
        assert redis_cli("type", key) == b"string\n"
        s.delete(key)


def test_namespace_is_a_plain_key_prefix(store, plain_url: str) -> None:
    store.set(b"k", b"v")
    assert raw().get(f"{RUN}:k".encode()) == b"v"
    assert [r.key for p in store.scan() for r in p.records] == [b"k"]


# -- other Redis types ------------------------------------------------------------------------
def make_typed(client: redispy.Redis, prefix: str) -> dict[bytes, str]:
    client.hset(f"{prefix}h", mapping={"f": "v", "g": "w"})
    client.rpush(f"{prefix}l", "a", "b", "c")
    client.sadd(f"{prefix}s", "x", "y")
    client.zadd(f"{prefix}z", {"m": 1.5, "n": 2})
    client.xadd(f"{prefix}x", {"field": "value"})
    client.set(f"{prefix}str", "plain")
    client.pexpire(f"{prefix}h", 3_600_000)
    return {b"h": "hash", b"l": "list", b"s": "set", b"z": "zset", b"x": "stream", b"str": "string"}


def test_other_types_are_reported_never_dropped(store) -> None:
    kinds = make_typed(raw(), f"{RUN}:")
    got = {r.key: r for p in store.scan() for r in p.records}
    assert set(got) == set(kinds)
    for key, kind in kinds.items():
        expected = None if kind == "string" else kind
        assert got[key].kind == expected, key
        assert store.get(key).kind == expected
    assert got[b"h"].value == b"" and got[b"h"].expires_at_ms is not None
    assert [r.kind if r else None for r in store.get_many([b"h", b"str", b"nope"])] == ["hash", None, None]
    assert store.count() == len(kinds)
    assert store.capabilities.typed_values


def test_dump_and_restore_keep_type_value_and_expiry(store, plain_url: str) -> None:
    client = raw()
    kinds = make_typed(client, f"{RUN}:")
    dumped = store.dump_many([*kinds, b"missing"])
    assert dumped[-1] is None
    assert {r.key: r.kind for r in dumped if r} == {k: v for k, v in kinds.items()}
    with open_url(f"{plain_url}?namespace={RUN}:copy:") as target:
        target.restore_many([r for r in dumped if r])
        assert client.hgetall(f"{RUN}:copy:h") == {b"f": b"v", b"g": b"w"}
        assert client.lrange(f"{RUN}:copy:l", 0, -1) == [b"a", b"b", b"c"]
        assert client.zscore(f"{RUN}:copy:z", "n") == 2
        assert client.xlen(f"{RUN}:copy:x") == 1
        assert client.get(f"{RUN}:copy:str") == b"plain"
        assert client.pexpiretime(f"{RUN}:copy:h") == client.pexpiretime(f"{RUN}:h")
        # RESTORE with a deadline already past removes the key instead of writing it.
        target.restore_many([Record(b"h", dumped[0].value, int(time.time() * 1000) - 1000, kind="hash")])
        assert client.exists(f"{RUN}:copy:h") == 0
        assert target.clear() == len(kinds) - 1


def test_clear_removes_every_type(store) -> None:
    kinds = make_typed(raw(), f"{RUN}:")
    assert store.clear() == len(kinds)
    assert raw().keys(f"{RUN}:*") == []


def test_whole_database_clear_and_stats(spare) -> None:
    client = raw(SPARE_DB)
    spare.set_many([Record(b"a%d" % i, b"v") for i in range(20)])
    client.hset("ahash", "f", "v")
    stats = spare.stats()
    assert stats["keys"] == 21 and stats["server_version"].startswith("7")
    assert stats["memory_used"] > 0
    assert spare.clear() == 21
    assert client.dbsize() == 0


# -- expiry with millisecond precision --------------------------------------------------------
def test_expiry_is_exact_to_the_millisecond(store) -> None:
    deadline = int(time.time() * 1000) + 123_457
    store.set_many([Record(b"t", b"v", deadline), Record(b"u", b"w")])
    assert store.get(b"t").expires_at_ms == deadline
    assert raw().pexpiretime(f"{RUN}:t") == deadline
    assert [r.expires_at_ms for r in store.get_many([b"t", b"u"])] == [deadline, None]


def test_a_record_already_expired_removes_the_key(store) -> None:
    store.set(b"gone", b"v")
    store.set_many([Record(b"gone", b"new", int(time.time() * 1000) - 5), Record(b"kept", b"v")])
    assert store.get(b"gone") is None and store.get(b"kept") is not None
    store.set(b"short", b"v", ttl_ms=0)
    assert store.get(b"short") is None


# -- scans ------------------------------------------------------------------------------------
def test_match_pattern_escapes_glob_characters() -> None:
    assert escape_glob(b"a*b?[c]\\") == b"a\\*b\\?\\[c\\]\\\\*"
    assert escape_glob(b"") == b"*"


def test_scan_cannot_resume_after_a_key(store) -> None:
    with pytest.raises(UnsupportedError):
        list(store.scan(start_after=b"k"))


def test_cluster_scan_cursor_walks_every_master() -> None:
    url = service_url("KVCTL_TEST_REDIS_CLUSTER_URL")
    with open_url(f"{url}&namespace={RUN}:walk:") as s:
        s._by_slot = lambda prefix: True  # slot by slot, whatever else the shared cluster holds
        s.clear()
        keys = {b"w%03d" % i for i in range(300)}
        s.set_many(Record(k, b"v") for k in keys)
        seen: set[bytes] = set()
        cursor = None
        pages = 0
        while True:  # one page at a time, each from a fresh scan resumed by cursor
            page = next(iter(s.scan(cursor=cursor, batch_size=40)), None)
            if page is None:
                break
            seen.update(r.key for r in page.records)
            pages += 1
            if page.cursor is None:
                break
            assert page.cursor.startswith("done:")  # names the slots read
            cursor = page.cursor
        try:
            assert seen == keys and pages >= 3  # every master's keys, resumed page by page
            assert s.stats()["nodes"] == 3
        finally:
            s.clear()


# -- URLs -------------------------------------------------------------------------------------
def test_unknown_option_is_refused(plain_url: str) -> None:
    with pytest.raises(BadURLError, match="unknown option"):
        open_url(f"{plain_url}?namspace=x")


def test_cache_options_need_local_cache(plain_url: str) -> None:
    with pytest.raises(BadURLError, match="local_cache"):
        open_url(f"{plain_url}?cache_ttl=5s")


def test_database_number_from_path_or_option() -> None:
    port = standalone_port()
    by_path, by_option = f"redis://127.0.0.1:{port}/{SPARE_DB}", f"redis://127.0.0.1:{port}?db={SPARE_DB}"
    with open_url(by_path) as a, open_url(by_option) as b:
        a.set(b"dbkey", b"1")
        assert b.get(b"dbkey").value == b"1"
        a.delete(b"dbkey")
    with pytest.raises(BadURLError):
        open_url(f"redis://127.0.0.1:{port}/x")
    with pytest.raises(BadURLError):
        open_url(f"redis+cluster://127.0.0.1:{port}/3")


def test_cluster_seeds_in_the_host_list_or_option() -> None:
    url = service_url("KVCTL_TEST_REDIS_CLUSTER_URL")
    settings = parse(StoreURL.parse(url), cluster=True)
    assert len(settings.seeds) == 3
    # A dead first seed is fine while another answers.
    dead = f"redis+cluster://127.0.0.1:1?seeds={','.join(f'{h}:{p}' for h, p in settings.seeds)}"
    with open_url(dead + f"&namespace={RUN}:seeds:") as s:
        s.set(b"k", b"v")
        assert s.get(b"k").value == b"v"
        s.clear()


def test_password_never_shown(plain_url: str) -> None:
    s = open_url(plain_url.replace("redis://", "redis://user:sekret@"))
    assert "sekret" not in repr(s)
    s.close()


# -- big batches go as several commands, still whole ----------------------------------------------
@pytest.mark.parametrize("var", ["KVCTL_TEST_REDIS_URL", "KVCTL_TEST_REDIS_CLUSTER_URL"])
def test_batches_larger_than_one_command(var: str) -> None:
    url = service_url(var)
    deadline = int(time.time() * 1000) + 3_600_000
    records = [Record(b"big%05d" % i, b"v%d" % i, deadline if i % 3 == 0 else None) for i in range(2500)]
    with open_url(url + ("&" if "?" in url else "?") + f"namespace={RUN}:big:") as s:
        try:
            s.set_many(records)
            got = s.get_many([r.key for r in records])
            assert [(g.value, g.expires_at_ms) for g in got if g] == [(r.value, r.expires_at_ms) for r in records]
            assert s.count() == 2500
            assert s.delete_many([r.key for r in records] + [b"absent"]) == 2500
        finally:
            s.clear()


def test_ranges_split_by_count_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    from kvctl_plugins.redis import commands

    keys = [b"k%d" % i for i in range(2500)]
    assert commands.ranges(keys) == [(0, 1000), (1000, 2000), (2000, 2500)]
    monkeypatch.setattr(commands, "SLICE_BYTES", 100)
    values = [b"x" * 40] * 5
    assert commands.ranges(keys[:5], values) == [(0, 2), (2, 4), (4, 5)]
    assert commands.ranges([b"k"], [b"x" * 1000]) == [(0, 1)]  # one oversized record still goes alone


def test_errors_in_finds_errors_at_any_depth() -> None:
    from kvctl_plugins.redis.commands import errors_in, raise_first_error
    from redis.exceptions import NoScriptError, ResponseError

    plain = [[b"v", None, 3], b"OK", 1, None]
    assert errors_in(plain) == []
    raise_first_error(plain)
    first, second = ResponseError("MOVED 1 127.0.0.1:1"), NoScriptError("NOSCRIPT")
    assert errors_in([b"OK", [b"v", [1, first]], second]) == [first, second]
    with pytest.raises(ResponseError, match="MOVED"):
        raise_first_error([[b"QUEUED"], [[first]]])

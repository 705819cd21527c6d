"""Redis data types through migrate, snapshots and export, on the real servers from tests/services.sh:
kept with DUMP/RESTORE (and absolute TTLs) between Redis stores, reported by name elsewhere."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvctl.engines import migrate, snapshot
from kvctl.engines._stores import open_async
from kvctl.engines.dump import export_to, import_from
from kvctl.errors import IncompleteError
from kvctl.store import now_ms
from tests.conftest import service_url
from tests.engines.support import diff_urls, fresh_url, read_all, state_dir

__all__ = ["state_dir"]

pytestmark = pytest.mark.server


@pytest.fixture
def typed_source() -> Iterator[str]:
    """A namespaced Redis store holding a string, a hash (with a TTL), a list, a set and a zset."""
    import redis

    base = service_url("KVCTL_TEST_REDIS_URL")
    ns = f"kvctl-typed-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(base)
    p = ns.encode()
    client.set(p + b"str", b"\x00plain\xff")
    client.hset(p + b"hash", mapping={b"f1": b"v1", b"\xff": b"\x00"})
    client.pexpireat(p + b"hash", now_ms() + 3_600_000)
    client.rpush(p + b"list", b"a", b"b", b"c")
    client.sadd(p + b"set", b"x", b"y")
    client.zadd(p + b"zset", {b"m1": 1.5, b"m2": -2})
    client.close()
    yield base + ("&" if "?" in base else "?") + f"namespace={ns}"
    client = redis.Redis.from_url(base)
    for key in client.scan_iter(match=ns + "*"):
        client.delete(key)
    client.close()


def test_redis_to_redis_keeps_every_type_and_ttl(typed_source: str, tmp_path: Path, state_dir: Path) -> None:
    dst = fresh_url("redis", tmp_path)
    s = migrate.run(typed_source, dst, migrate.Plan(verify=True, batch_size=2))
    s.check()
    assert s.counts.copied == 5 and s.counts.incomplete == 0
    got = read_all(dst)
    assert {k: r.kind for k, r in got.items()} == {b"str": None, b"hash": "hash", b"list": "list",
                                                    b"set": "set", b"zset": "zset"}
    exp = got[b"hash"].expires_at_ms
    assert exp is not None and abs(exp - read_all(typed_source)[b"hash"].expires_at_ms) <= 1000  # type: ignore[operator]


def test_redis_to_cluster_keeps_every_type(typed_source: str, tmp_path: Path, state_dir: Path) -> None:
    dst = fresh_url("redis+cluster", tmp_path)
    migrate.run(typed_source, dst, migrate.Plan(verify=True)).check()
    assert diff_urls(typed_source, dst, ignore_expiry=False).equal


def test_types_into_a_plain_backend_are_reported_and_exit_8(typed_source: str, tmp_path: Path,
                                                            state_dir: Path) -> None:
    dst = fresh_url("sqlite", tmp_path)
    s = migrate.run(typed_source, dst, migrate.Plan())
    assert s.counts.copied == 1 and s.counts.incomplete == 4
    assert sorted(k for k, _ in s.problems.incomplete) == [b"hash", b"list", b"set", b"zset"]
    with pytest.raises(IncompleteError) as err:
        s.check()
    assert err.value.exit_code == 8


def test_snapshot_and_export_carry_types_between_redis_stores(typed_source: str, tmp_path: Path) -> None:
    path = tmp_path / "typed.kvs"
    created = snapshot.create(typed_source, path)
    created.check()
    assert created.records == 5 and snapshot.inspect(path).typed == 4
    restored = fresh_url("redis", tmp_path)
    snapshot.restore(path, restored).check()
    assert diff_urls(typed_source, restored, ignore_expiry=False).equal
    plain = fresh_url("sqlite", tmp_path)
    r = snapshot.restore(path, plain)
    assert r.incomplete == 4

    async def through_export() -> str:
        dst = fresh_url("redis", tmp_path)
        a, b = open_async(typed_source), open_async(dst)
        try:
            out = io.BytesIO()
            (await export_to(a, out, "jsonl")).check()
            (await import_from(b, io.BytesIO(out.getvalue()), "jsonl", "dump")).check()
        finally:
            await a.close()
            await b.close()
        return dst

    assert diff_urls(typed_source, asyncio.run(through_export()), ignore_expiry=False).equal

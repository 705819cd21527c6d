"""Redis hashes, lists, sets, sorted sets and streams read as JSON documents (``--types json``), on
a standalone server and on a cluster: get, scan, export and migrate, and the DUMP path kept."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis as redispy
from redis.cluster import RedisCluster

from kvctl.registry import open_url
from kvctl.store import now_ms
from tests.backends.redis.support import with_options
from tests.cli.test_json import in_process
from tests.conftest import service_url

pytestmark = pytest.mark.server

RUN = f"kvctl-types-{os.getpid()}-{uuid.uuid4().hex[:6]}"
VARS = ["KVCTL_TEST_REDIS_URL", "KVCTL_TEST_REDIS_CLUSTER_URL"]


@pytest.fixture(params=VARS, ids=["standalone", "cluster"])
def spot(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    """A namespaced URL and a redis-py client of the same server (or cluster)."""
    base = service_url(request.param)
    url = with_options(base, namespace=f"{RUN}:")
    host, _, port = urlsplit(base).netloc.split(",")[0].rpartition(":")
    client: Any = (RedisCluster(host=host, port=int(port)) if "cluster" in base.split(":", 1)[0]
                   else redispy.Redis(host=host, port=int(port)))
    with open_url(url) as store:
        store.clear()
    yield url, client
    with open_url(url) as store:
        store.clear()
    client.close()


@pytest.fixture
def cli(env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    return in_process(env, capsys, monkeypatch)


def fill(client: Any) -> int:
    """One key of each type (and a string); returns the hash's absolute expiry."""
    ns = f"{RUN}:"
    client.hset(ns + "h", mapping={"g": "w", "f": "v"})
    client.rpush(ns + "l", "b", "a", "b")
    client.sadd(ns + "s", "y", "x")
    client.zadd(ns + "z", {"m": 1.5, "n": float("-inf"), "o": 2})
    client.xadd(ns + "x", {"a": "1"}, id="1700000000000-0")
    client.execute_command("XADD", ns + "x", "1700000000000-1", "a", "1", "a", "2")  # a field twice
    client.set(ns + "str", "plain")
    exp = now_ms() + 3_600_000
    client.pexpireat(ns + "h", exp)
    return exp


EXPECTED = {
    b"h": {"type": "hash", "value": {"f": "v", "g": "w"}},
    b"l": {"type": "list", "value": ["b", "a", "b"]},
    b"s": {"type": "set", "value": ["x", "y"]},
    b"z": {"type": "zset", "value": [["n", "-inf"], ["m", 1.5], ["o", 2.0]]},
    b"x": {"type": "stream", "value": [{"id": "1700000000000-0", "fields": [["a", "1"]]},
                                       {"id": "1700000000000-1", "fields": [["a", "1"], ["a", "2"]]}]},
}


def test_json_many_renders_every_type_with_its_expiry(spot: tuple[str, Any]) -> None:
    url, client = spot
    exp = fill(client)
    with open_url(url) as store:
        got = store.json_many([*EXPECTED, b"str", b"missing"])
    assert got[-1] is None
    assert got[-2] is not None and (got[-2].value, got[-2].kind) == (b"plain", None)
    for rec, (key, doc) in zip(got, EXPECTED.items(), strict=False):
        assert rec is not None and rec.key == key and rec.kind is None
        assert json.loads(rec.value) == doc, key
    assert got[0] is not None and got[0].expires_at_ms == exp


def test_binary_content_is_base64_throughout(spot: tuple[str, Any]) -> None:
    url, client = spot
    client.hset(f"{RUN}:hb", mapping={b"\xff": b"text", b"name": b"\x00\x80"})
    client.rpush(f"{RUN}:lb", "caf\u00e9".encode(), b"\xc3")
    with open_url(url) as store:
        hb, lb = store.json_many([b"hb", b"lb"])
    assert hb is not None and json.loads(hb.value) == {
        "type": "hash", "value_b64": {"/w==": "dGV4dA==", "bmFtZQ==": "AIA="}}
    assert lb is not None and json.loads(lb.value) == {"type": "list", "value_b64": ["Y2Fmw6k=", "ww=="]}


def test_get_and_scan_show_json_by_default_and_dump_when_asked(spot: tuple[str, Any], cli: Any) -> None:
    url, client = spot
    fill(client)
    code, out, _ = cli("-u", url, "get", "h", "--json")
    assert code == 0 and json.loads(json.loads(out)["value"]) == EXPECTED[b"h"]
    code, out, _ = cli("-u", url, "get", "h", "--types", "dump", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["kind"] == "hash" and doc["value_b64"]  # the DUMP payload
    code, out, _ = cli("-u", url, "scan", "--json")
    shown = {d["key"]: d["value"] for d in map(json.loads, out.splitlines())}
    assert {k: json.loads(v) for k, v in shown.items() if k != "str"} == {
        k.decode(): v for k, v in EXPECTED.items()}
    assert shown["str"] == "plain"
    code, out, _ = cli("-u", url, "scan", "--keys-only")
    assert sorted(out.split()) == ["h", "l", "s", "str", "x", "z"]


def test_export_types_json_writes_plain_values(spot: tuple[str, Any], cli: Any, tmp_path: Path) -> None:
    url, client = spot
    exp = fill(client)
    out_file = tmp_path / "out.jsonl"
    code, _, _ = cli("-u", url, "export", "--types", "json", "-o", str(out_file))
    lines = {d["key"]: d for d in map(json.loads, out_file.read_text().splitlines())}
    assert code == 0 and all("kind" not in d for d in lines.values())
    assert json.loads(lines["x"]["value"]) == EXPECTED[b"x"]
    assert lines["h"]["expires_at_ms"] == exp
    code, _, _ = cli("-u", url, "export", "-o", str(out_file))  # the default: DUMP payloads
    kinds = {d["key"]: d.get("kind") for d in map(json.loads, out_file.read_text().splitlines())}
    assert code == 0 and kinds == {"h": "hash", "l": "list", "s": "set", "z": "zset", "x": "stream", "str": None}


def test_migrate_into_sqlite_needs_types_json_and_then_verifies(spot: tuple[str, Any], cli: Any,
                                                                 tmp_path: Path) -> None:
    url, client = spot
    fill(client)
    dst = f"sqlite://{tmp_path / 'a.db'}"
    code, _, err = cli("migrate", url, dst)
    assert code == 8 and "--types json" in err
    code, _, err = cli("migrate", url, f"sqlite://{tmp_path / 'b.db'}", "--types", "json", "--verify")
    assert code == 0, err
    with open_url(f"sqlite://{tmp_path / 'b.db'}") as copy:
        got = {r.key: r for p in copy.scan() for r in p.records}
    assert {k: json.loads(got[k].value) for k in EXPECTED} == EXPECTED
    assert got[b"str"].value == b"plain" and got[b"h"].expires_at_ms is not None


def test_redis_to_redis_still_copies_by_dump_and_restore(spot: tuple[str, Any], cli: Any) -> None:
    url, client = spot
    fill(client)
    target = url.replace(f"namespace={RUN}:", f"namespace={RUN}-copy:")
    try:
        code, _, err = cli("migrate", url, target, "--verify")
        assert code == 0, err
        assert client.type(f"{RUN}-copy:h") == b"hash"
        assert client.hgetall(f"{RUN}-copy:h") == {b"f": b"v", b"g": b"w"}
    finally:
        with open_url(target) as copy:
            copy.clear()

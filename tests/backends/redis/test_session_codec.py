"""``?codec=session``: Session's Redis values (plain, gzipped, encrypted, both) read as the session
JSON and edited in place, on a standalone server and on a cluster; bad input is one line with its
exit code and leaves the key as it was."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis as redispy
from redis.cluster import RedisCluster

from kvctl.registry import open_url
from tests.backends.redis.session_values import (
    OTHER_SECRET,
    SECRET,
    read_back,
    session_json,
    stored,
    unseal,
)
from tests.backends.redis.support import with_options
from tests.cli.test_json import in_process
from tests.conftest import service_url

pytestmark = pytest.mark.server

NS = f"kvctl-session-{os.getpid()}-{uuid.uuid4().hex[:6]}:session:"
FORMS: dict[str, dict[str, bool]] = {"plain": {}, "gzip": {"compress": True}, "sealed": {"encrypt": True},
                                     "gzip-sealed": {"compress": True, "encrypt": True}}
TIMEOUT_S = 3600


@pytest.fixture(params=["KVCTL_TEST_REDIS_URL", "KVCTL_TEST_REDIS_CLUSTER_URL"], ids=["standalone", "cluster"])
def spot(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    """The Session URL (namespace session:, codec=session) and a redis-py client."""
    base = service_url(request.param)
    host, _, port = urlsplit(base).netloc.split(",")[0].rpartition(":")
    client: Any = (RedisCluster(host=host, port=int(port)) if base.startswith("redis+cluster")
                   else redispy.Redis(host=host, port=int(port)))
    url = with_options(base, namespace=NS, codec="session")
    yield url, client
    with open_url(with_options(base, namespace=NS)) as store:
        store.clear()
    client.close()


@pytest.fixture
def cli(env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    return in_process({**env, "KVCTL_COOKIE_SECRET": SECRET.decode()}, capsys, monkeypatch)


def write_as_session(client: Any, form: str, *, padding: int = 300) -> tuple[str, bytes]:
    """A session written as Session's RedisStore writes it in ``form``: (its id, its JSON)."""
    sid = str(uuid.uuid4())
    plain = session_json(sid, padding=padding)
    form_of = FORMS[form]
    client.setex(NS + sid, TIMEOUT_S, stored(plain, compress=form_of.get("compress", False),
                                             encrypt=form_of.get("encrypt", False)))
    return sid, plain


@pytest.mark.parametrize("form", FORMS)
def test_get_reads_the_session_json_of_every_form(spot: tuple[str, Any], cli: Any, form: str) -> None:
    url, client = spot
    sid, plain = write_as_session(client, form)
    code, out, err = cli("-u", url, "get", sid, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["value"].encode() == plain and doc["expires_at_ms"] is not None


@pytest.mark.parametrize("form", FORMS)
def test_set_writes_back_the_same_way_and_keeps_the_ttl(spot: tuple[str, Any], cli: Any, form: str) -> None:
    url, client = spot
    sid, plain = write_as_session(client, form)
    ttl_before = client.pttl(NS + sid)
    edited = json.dumps({**json.loads(plain), "username": "grace"}, separators=(",", ":"))
    code, _, err = cli("-u", url, "set", sid, edited)
    assert code == 0, err
    raw = client.get(NS + sid)
    encrypted = FORMS[form].get("encrypt", False)
    assert read_back(raw, encrypted=encrypted) == edited.encode()  # Session reads the edit
    body = unseal(raw) if encrypted else raw
    assert (body[:2] == b"\x1f\x8b") == FORMS[form].get("compress", False)  # gzip as it was
    assert 0 < client.pttl(NS + sid) <= ttl_before  # still expiring: never made immortal
    code, _, err = cli("-u", url, "set", sid, edited, "--ttl", "2h")
    assert code == 0 and client.pttl(NS + sid) > TIMEOUT_S * 1000


def test_a_new_session_is_sealed_when_a_secret_is_given(spot: tuple[str, Any], cli: Any) -> None:
    url, client = spot
    plain = session_json("new")
    code, _, err = cli("-u", url, "set", "new", plain.decode(), "--ttl", "1h")
    assert code == 0, err
    assert read_back(client.get(NS + "new"), encrypted=True) == plain
    code, _, err = cli("-u", with_options(url, gzip="always"), "set", "new", plain.decode())
    assert code == 0 and unseal(client.get(NS + "new"))[:2] == b"\x1f\x8b"


def test_scan_and_export_decode_every_value(spot: tuple[str, Any], cli: Any) -> None:
    url, client = spot
    written = dict(write_as_session(client, form) for form in FORMS)
    code, out, err = cli("-u", url, "scan", "--json")
    assert code == 0, err
    assert {d["key"]: d["value"].encode() for d in map(json.loads, out.splitlines())} == written
    code, out, err = cli("-u", url, "export")
    assert code == 0 and {d["key"]: d["value"].encode() for d in map(json.loads, out.splitlines())} == written


def unchanged(client: Any, key: str) -> tuple[bytes, int]:
    return client.get(NS + key), client.pexpiretime(NS + key)


def test_wrong_secret_is_exit_77_and_the_key_is_untouched(spot: tuple[str, Any], cli: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url, client = spot
    sid, plain = write_as_session(client, "sealed")
    before = unchanged(client, sid)
    monkeypatch.setenv("KVCTL_COOKIE_SECRET", OTHER_SECRET.decode())
    for args in (["get", sid], ["set", sid, plain.decode()]):
        code, out, err = cli("-u", url, *args)
        assert code == 77 and "signature does not verify" in err and len(err.strip().splitlines()) == 1
        assert OTHER_SECRET.decode() not in err + out and SECRET.decode() not in err + out
    assert unchanged(client, sid) == before
    monkeypatch.delenv("KVCTL_COOKIE_SECRET")
    code, _, err = cli("-u", url, "get", sid)
    assert code == 2 and "encrypted" in err and "KVCTL_COOKIE_SECRET" in err


def test_corrupt_gzip_and_non_json_are_refused_one_line(spot: tuple[str, Any], cli: Any) -> None:
    url, client = spot
    client.setex(NS + "broken", TIMEOUT_S, b"\x1f\x8b\x08\x00garbage")
    client.setex(NS + "text", TIMEOUT_S, b"not json")
    for key, why in (("broken", "gzip-compressed Session value is damaged"), ("text", "not a Session value")):
        code, _, err = cli("-u", url, "get", key)
        assert code == 65 and why in err and key in err and len(err.strip().splitlines()) == 1
    sid, _ = write_as_session(client, "gzip")
    before = unchanged(client, sid)
    code, _, err = cli("-u", url, "set", sid, "not json")
    assert code == 2 and "must be a JSON object" in err and len(err.strip().splitlines()) == 1
    assert unchanged(client, sid) == before


def test_the_secret_never_goes_in_the_url(spot: tuple[str, Any], cli: Any) -> None:
    url, _ = spot
    code, out, err = cli("-u", with_options(url, secret="hunter2-hunter2"), "count")
    assert code == 2 and "never goes in the URL" in err and "hunter2" not in out + err
    code, _, err = cli("-u", with_options(url.replace("&codec=session", ""), gzip="keep"), "count")
    assert code == 2 and "needs codec=session" in err

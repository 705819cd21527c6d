"""expire, persist and set --nx/--xx/--keep-ttl: exit codes, --json, -q, missing and binary keys,
and a clear refusal on a backend that cannot do them atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kvctl.registry import open_url
from kvctl.store import Record, now_ms
from tests.cli.test_json import documents, in_process


@pytest.fixture
def cli(env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    return in_process(env, capsys, monkeypatch)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'a.db'}"


def expiry(url: str, key: bytes) -> tuple[bytes, int | None] | None:
    with open_url(url) as store:
        rec = store.get(key)
    return None if rec is None else (rec.value, rec.expires_at_ms)


def test_expire_then_persist(cli: Any, url: str) -> None:
    assert cli("-u", url, "set", "k", "v")[0] == 0
    code, out, err = cli("-u", url, "expire", "k", "1h", "--json")
    assert code == 0 and err == ""
    [doc] = documents(out)
    assert doc["key"] == "k" and doc["deleted"] is False
    assert expiry(url, b"k") == (b"v", doc["expires_at_ms"])
    assert 3_590_000 < doc["expires_at_ms"] - now_ms() <= 3_600_000
    assert cli("-u", url, "persist", "k") == (0, "", "")
    assert expiry(url, b"k") == (b"v", None)
    assert cli("-u", url, "persist", "k")[0] == 0  # no expiry to remove: still exit 0


def test_expire_at_an_absolute_time(cli: Any, url: str) -> None:
    cli("-u", url, "set", "k", "v")
    assert cli("-u", url, "expire", "k", "--at", "2100-01-01T00:00:00Z")[0] == 0
    assert expiry(url, b"k") == (b"v", 4_102_444_800_000)
    assert cli("-u", url, "expire", "k", "--at", "4102444800001")[0] == 0
    assert expiry(url, b"k") == (b"v", 4_102_444_800_001)


def test_expire_now_or_in_the_past_deletes(cli: Any, url: str) -> None:
    cli("-u", url, "set", "k", "v")
    code, out, _ = cli("-u", url, "expire", "k", "--at", "2000-01-01", "--json")
    assert code == 0 and documents(out)[0]["deleted"] is True
    assert expiry(url, b"k") is None
    cli("-u", url, "set", "k", "v")
    assert cli("-u", url, "expire", "k", "0")[0] == 0
    assert expiry(url, b"k") is None


@pytest.mark.parametrize("args", [["expire", "nope", "10s"], ["persist", "nope"]])
def test_a_missing_key_is_exit_1(cli: Any, url: str, args: list[str]) -> None:
    cli("-u", url, "set", "other", "v")
    code, out, err = cli("-u", url, *args)
    assert (code, out) == (1, "") and err == f"kvctl: error: key nope not found in {url}\n"
    code, out, _ = cli("-u", url, *args, "--json")
    assert code == 1 and documents(out)[0]["error"]["kind"] == "not_found"


@pytest.mark.parametrize("args", [
    ["expire", "k"], ["expire", "k", "1s", "--at", "1"], ["expire", "k", "soon"], ["expire", "k", "--at", "then"],
    ["expire", "k", "--at", "99999999999999"], ["set", "k", "v", "--nx", "--xx"],
    ["set", "k", "v", "--ttl", "1s", "--keep-ttl"],
])
def test_bad_arguments_are_usage_errors(cli: Any, url: str, args: list[str]) -> None:
    cli("-u", url, "set", "k", "v")
    code, _, err = cli("-u", url, *args)
    assert code == 2 and err.startswith("kvctl: error: ") and err.count("\n") == 1, err
    assert expiry(url, b"k") == (b"v", None)


def test_set_nx_and_xx(cli: Any, url: str) -> None:
    assert cli("-u", url, "set", "k", "one", "--xx") == (
        1, "", f"not written: key k does not exist in {url}\n")
    assert expiry(url, b"k") is None
    assert cli("-u", url, "set", "k", "one", "--nx") == (0, "", "")
    code, out, err = cli("-u", url, "set", "k", "two", "--nx", "--json")
    assert code == 1 and err == f"not written: key k already exists in {url}\n"
    assert documents(out) == [{"store": url, "key": "k", "written": False, "bytes": 3, "ttl_ms": None}]
    assert cli("-u", url, "set", "k", "two", "--nx", "-q") == (1, "", "")
    assert expiry(url, b"k") == (b"one", None)
    assert cli("-u", url, "set", "k", "three", "--xx", "--ttl", "1h")[0] == 0
    value, expires = expiry(url, b"k") or (b"", None)
    assert value == b"three" and expires is not None


def test_set_keep_ttl(cli: Any, url: str) -> None:
    cli("-u", url, "set", "k", "one", "--ttl", "1h")
    before = expiry(url, b"k")
    assert cli("-u", url, "set", "k", "two", "--keep-ttl")[0] == 0
    after = expiry(url, b"k")
    assert before is not None and after == (b"two", before[1])
    assert cli("-u", url, "set", "new", "v", "--keep-ttl")[0] == 0  # a new key: no expiry to keep
    assert expiry(url, b"new") == (b"v", None)


def test_binary_keys(cli: Any, url: str) -> None:
    assert cli("-u", url, "--keys", "hex", "set", "00ff", "v", "--nx")[0] == 0
    assert cli("-u", url, "--keys", "hex", "expire", "00ff", "1h")[0] == 0
    assert (expiry(url, b"\x00\xff") or (b"", None))[1] is not None
    code, out, _ = cli("-u", url, "--keys", "hex", "persist", "00ff", "--json")
    assert code == 0 and documents(out)[0]["key_b64"] == "AP8="
    assert expiry(url, b"\x00\xff") == (b"v", None)
    assert cli("-u", url, "--keys", "hex", "set", "00ff", "w", "--nx", "-q")[0] == 1


@pytest.mark.parametrize("args", [["expire", "k", "1h"], ["persist", "k"], ["set", "k", "v", "--nx"],
                                  ["set", "k", "v", "--keep-ttl"]])
def test_a_backend_that_cannot_is_refused_in_one_line(cli: Any, tmp_path: Path, args: list[str]) -> None:
    url = f"rocksdb://{tmp_path / 'r'}"
    cli("-u", url, "set", "k", "v")
    code, out, err = cli("-u", url, *args)
    assert code == 4 and out == "" and err.count("\n") == 1 and "cannot" in err, err


def test_a_shard_refuses_while_a_copy_sits_off_its_owner() -> None:
    from kvctl.errors import ConflictError
    from kvctl.testing import open_sync

    store: Any = open_sync("shard://?child=memory://verbs-s1&weight=1&child=memory://verbs-s2&weight=1")
    try:
        owner = store.placement.owner(b"k")
        store.children[1 - owner].set(b"k", b"stale")  # as a weight change leaves it before rebalance
        with pytest.raises(ConflictError, match="rebalance"):
            store.expire(b"k", None)
        assert store.children[owner].get(b"k") is None
        store.children[1 - owner].delete(b"k")
        assert store.set_if(Record(b"k", b"v"), exists=False) is True
        assert store.children[owner].get(b"k").value == b"v"
    finally:
        store.close()


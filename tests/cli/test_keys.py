"""The admin verbs over key sets: scan --glob/--cursor/--start, multi-key get, del --prefix/--glob
with --dry-run and a confirmation above a threshold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kvctl.cli.keys import CONFIRM_ABOVE
from kvctl.registry import open_url
from kvctl.store import Record
from tests.cli.test_json import documents, in_process


@pytest.fixture
def cli(env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    return in_process(env, capsys, monkeypatch)


def filled(tmp_path: Path, n: int = 10, url: str | None = None) -> str:
    url = url or f"sqlite://{tmp_path / 'k.db'}"
    with open_url(url) as store:
        store.set_many([Record(b"user:%02d" % i, b"v%d" % i) for i in range(n)] + [Record(b"other", b"x")])
    return url


def test_scan_glob_and_a_cursor_that_continues_where_limit_stopped(cli: Any, tmp_path: Path) -> None:
    url = filled(tmp_path)
    code, out, _ = cli("-u", url, "scan", "--glob", "user:0[2-4]", "--keys-only")
    assert (code, out) == (0, "user:02\nuser:03\nuser:04\n")
    code, out, err = cli("-u", url, "scan", "--prefix", "user:", "--limit", "4", "--keys-only")
    assert out.split() == ["user:00", "user:01", "user:02", "user:03"]
    cursor = err.split("--cursor ")[1].split()[0]
    seen = out.split()
    while cursor:
        _, out, err = cli("-u", url, "scan", "--prefix", "user:", "--limit", "4", "--keys-only", "--cursor", cursor)
        seen += out.split()
        cursor = err.split("--cursor ")[1].split()[0] if "--cursor " in err else ""
    assert seen == [f"user:{i:02d}" for i in range(10)]  # every key once, in order
    _, out, _ = cli("-u", url, "scan", "--start", "user:07", "--keys-only")
    assert out.split() == ["user:08", "user:09"]


def test_scan_cursor_on_an_unordered_backend_skips_no_key(cli: Any, tmp_path: Path) -> None:
    import os

    from tests.conftest import service_url

    # a database of its own: a SCAN walks the whole database, which other tests fill
    url = service_url("KVCTL_TEST_REDIS_URL").rsplit("/", 1)[0] + "/13"
    prefix = f"cli-keys-{os.getpid()}:".encode()
    keys = {prefix + b"%03d" % i for i in range(300)}
    with open_url(url) as store:
        store.set_many([Record(k, b"v") for k in keys])
    try:
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(100):
            args = ["-u", url, "scan", "--prefix", prefix.decode(), "--keys-only", "--limit", "30"]
            _, out, err = cli(*args, *(["--cursor", cursor] if cursor else []))
            seen += out.split()
            cursor = err.split("--cursor ")[1].split()[0] if "--cursor " in err else None
            if cursor is None:
                break
        assert {k.encode() for k in seen} == keys
    finally:
        with open_url(url) as store:
            store.delete_many(list(keys))


def test_get_several_keys(cli: Any, tmp_path: Path) -> None:
    url = filled(tmp_path)
    code, out, err = cli("-u", url, "get", "user:01", "nope", "user:02")
    assert code == 1 and out == "user:01\tv1\nuser:02\tv2\n"
    assert 'warning: key nope not found' in err and "1 of 3 keys not found" in err
    code, out, _ = cli("-u", url, "get", "user:01", "user:02", "--json")
    assert code == 0 and [d["value"] for d in documents(out)] == ["v1", "v2"]


def test_del_by_prefix_and_glob_with_dry_run(cli: Any, tmp_path: Path) -> None:
    url = filled(tmp_path)
    code, out, err = cli("-u", url, "del", "--glob", "user:0[1-3]", "--dry-run")
    assert code == 0 and out.split() == ["user:01", "user:02", "user:03"] and "would delete 3 keys" in err
    assert cli("-u", url, "count")[1] == "11\n"  # nothing deleted
    code, out, _ = cli("-u", url, "del", "--prefix", "user:", "--json")
    assert code == 0 and documents(out)[0]["deleted"] == 10
    _, out, _ = cli("-u", url, "scan", "--keys-only")
    assert out == "other\n"
    code, _, err = cli("-u", url, "del", "k", "--prefix", "user:")
    assert code == 2 and "not both" in err


def test_a_large_delete_is_refused_without_a_terminal_unless_yes(env: dict[str, str], tmp_path: Path) -> None:
    url = filled(tmp_path, CONFIRM_ABOVE + 1)

    def kv(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kvctl", "-u", url, *args], env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=60)

    refused = kv("del", "--prefix", "user:")
    assert refused.returncode == 2 and "add --yes" in refused.stderr and refused.stderr.count("\n") == 1
    assert kv("count").stdout == f"{CONFIRM_ABOVE + 2}\n"
    done = kv("del", "--prefix", "user:", "--yes")
    assert (done.returncode, done.stdout) == (0, f"{CONFIRM_ABOVE + 1}\n")


@pytest.mark.parametrize("args", [["del"], ["scan", "--cursor", "k:00", "--start", "a"]])
def test_verbs_refuse_ambiguous_input(cli: Any, args: list[str], tmp_path: Path) -> None:
    code, _, err = cli("-u", f"sqlite://{tmp_path / 'x.db'}", *args)
    assert code == 2 and err.startswith("kvctl: error: ")

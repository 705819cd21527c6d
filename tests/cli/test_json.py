"""--json on every command: the result as JSON with the same field names across commands, and a
failure as one {"error": {"code", "kind", "message"}} object on stdout besides the stderr line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kvctl.cli.app import main
from tests.cli.test_conventions import COMMANDS, command_tree, leaves


def in_process(env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run kvctl in this process (fast) in ``env``: ``run(*args)`` -> (exit code, stdout, stderr)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in [n for n in os.environ if n.startswith("KVCTL_") and n not in env]:
        if not name.startswith(("KVCTL_TEST_", "KVCTL_SERVICES")):  # the servers' URLs stay
            monkeypatch.delenv(name)

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        out = capsys.readouterr()
        return int(exit_.value.code or 0), out.out, out.err

    return run


@pytest.fixture
def cli(env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    return in_process(env, capsys, monkeypatch)


def test_every_command_has_json() -> None:
    lacking = [" ".join(path) for path, command in leaves(command_tree())
               if not any("--json" in getattr(p, "opts", []) for p in command.params)]
    assert not lacking and len(COMMANDS) > 20


def documents(out: str) -> list[Any]:
    """Every JSON value on stdout (a document, or one object a line)."""
    decoder, values, i = json.JSONDecoder(), [], 0
    while i < len(out):
        if out[i].isspace():
            i += 1
            continue
        value, i = decoder.raw_decode(out, i)
        values.append(value)
    return values


def test_results_share_field_names(cli: Any, tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'j.db'}"
    code, out, _ = cli("-u", url, "set", "k", "v", "--ttl", "1h", "--json")
    assert code == 0 and documents(out) == [{"store": url.replace("sqlite://", "sqlite://"), "key": "k",
                                            "written": True, "bytes": 1, "ttl_ms": 3_600_000}]
    _, out, _ = cli("-u", url, "get", "k", "--json")
    [got] = documents(out)
    assert got["key"] == "k" and got["value"] == "v" and got["expires_at_ms"] > 0
    _, out, _ = cli("-u", url, "scan", "--json")
    assert documents(out) == [got]  # get and scan show a record the same way
    _, out, _ = cli("-u", url, "ttl", "k", "--json")
    [ttl] = documents(out)
    assert ttl["key"] == "k" and ttl["expires_at_ms"] == got["expires_at_ms"] and 0 < ttl["ttl_ms"] <= 3_600_000
    _, out, _ = cli("-u", url, "count", "--json")
    assert documents(out)[0]["count"] == 1
    _, out, _ = cli("-u", url, "ping", "-c", "2", "--json")
    assert set(documents(out)[0]) == {"store", "round_trips", "min_ms", "avg_ms", "max_ms"}
    _, out, _ = cli("-u", url, "export", "-o", str(tmp_path / "e.jsonl"), "--json")
    assert documents(out)[0]["records"] == 1
    _, out, _ = cli("-u", url, "config", "show", "--json")
    assert documents(out)[0]["source"] == "--url"
    _, out, _ = cli("config", "path", "--json")
    assert set(documents(out)[0]) == {"config", "data", "state"}
    code, out, _ = cli("-u", url, "del", "k", "--json")
    assert code == 0 and documents(out) == [{"store": documents(out)[0]["store"], "deleted": 1}]


@pytest.mark.parametrize(
    ("args", "code", "kind"),
    [
        (["get", "nope"], 1, "not_found"),
        (["ttl", "nope"], 1, "not_found"),
        (["get", "a", "nope"], 1, "not_found"),
        (["scan", "--limit", "-1"], 2, "usage"),
        (["-u", "nosuch://x", "count"], 2, "unknown_scheme"),
        (["set", "k", "v", "--ttl", "soon"], 2, "usage"),
        (["snapshot", "verify", "missing.kvs"], 2, "usage"),
        (["config", "remove", "nope"], 2, "bad_url"),
        (["rebalance"], 4, "unsupported"),
        (["del"], 2, "usage"),
        (["export"], 2, "usage"),  # --json needs -o FILE
    ],
)
def test_a_failure_is_one_json_object_on_stdout_too(cli: Any, args: list[str], code: int, kind: str) -> None:
    got, out, err = cli(*args, "--json")
    assert got == code, err
    assert err.count("\n") == 1 and err.startswith("kvctl: error: ")
    error = documents(out)[-1]["error"]
    assert error["code"] == code and error["kind"] == kind and error["message"] in err


def test_a_json_result_is_not_followed_by_a_second_document(cli: Any, tmp_path: Path) -> None:
    a, b = f"sqlite://{tmp_path / 'a.db'}", f"sqlite://{tmp_path / 'b.db'}"
    cli("-u", a, "set", "k", "v")
    cli("-u", b, "set", "k", "other")
    code, out, err = cli("diff", a, b, "--json")
    assert code == 1 and len(documents(out)) == 1 and documents(out)[0]["equal"] is False
    assert err == ""  # a difference is diff's answer (exit 1, as cmp), not an error

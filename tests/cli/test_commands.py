"""The CLI through real subprocesses (exit codes, binary stdin/stdout) and typer's runner."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvctl.cli.app import app
from kvctl.testing.cli import run_kvctl


def test_a_read_of_the_default_store_before_any_write_creates_nothing(env: dict[str, str],
                                                                     tmp_path: Path) -> None:
    # kvctl's own default store is not a mistyped path: before its first write it reads as empty
    got = run_kvctl(env, "get", "k", binary=True)
    assert got.returncode == 1 and got.stderr.startswith(b"kvctl: error: key k not found in sqlite://")
    assert run_kvctl(env, "count", binary=True).stdout == b"0\n"
    assert run_kvctl(env, "scan", binary=True).stdout == b""
    exported = run_kvctl(env, "export", binary=True)
    assert exported.returncode == 0 and exported.stdout == b""
    assert not (tmp_path / "data").exists()
    shown = run_kvctl(env, "config", "show", binary=True).stdout.decode()
    assert shown == f"sqlite://{tmp_path}/data/kvctl/default.db?embedded=true (from embedded default)\n"
    assert not (tmp_path / "data").exists()


def test_embedded_default_works_with_no_setup(env: dict[str, str], tmp_path: Path) -> None:
    assert run_kvctl(env, "set", "greeting", "hello", binary=True).returncode == 0
    out = run_kvctl(env, "get", "greeting", binary=True)
    assert (out.returncode, out.stdout) == (0, b"hello")
    assert (tmp_path / "data" / "kvctl" / "default.db").exists()


def test_binary_value_piped_in_and_out(env: dict[str, str]) -> None:
    blob = bytes(range(256)) * 100 + b"\r\n\x00"
    assert run_kvctl(env, "set", "bin", input=blob, binary=True).returncode == 0
    assert run_kvctl(env, "set", "bin2", "-", input=blob, binary=True).returncode == 0
    assert run_kvctl(env, "get", "bin", binary=True).stdout == blob
    assert run_kvctl(env, "get", "bin2", binary=True).stdout == blob


def test_binary_keys_and_values_in_hex_and_base64(env: dict[str, str]) -> None:
    assert run_kvctl(env, "--keys", "hex", "--values", "hex", "set", "00ff25", "deadbeef", binary=True).returncode == 0
    assert run_kvctl(env, "--keys", "hex", "--values", "base64", "get", "00ff25", binary=True).stdout == b"3q2+7w==\n"
    out = run_kvctl(env, "scan", "--json", binary=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows == [{"key_b64": "AP8l", "value_b64": "3q2+7w==", "expires_at_ms": None,
                     "version": rows[0]["version"]}]


def test_value_from_file(env: dict[str, str], tmp_path: Path) -> None:
    f = tmp_path / "v.bin"
    f.write_bytes(b"\x00from file")
    assert run_kvctl(env, "set", "f", "--file", str(f), binary=True).returncode == 0
    assert run_kvctl(env, "get", "f", binary=True).stdout == b"\x00from file"
    bad = run_kvctl(env, "set", "f", "--file", str(tmp_path / "nope"), binary=True)
    assert bad.returncode == 2 and b"cannot read" in bad.stderr


def test_missing_key_is_exit_1_with_one_line(env: dict[str, str]) -> None:
    assert run_kvctl(env, "set", "other", "v", binary=True).returncode == 0  # the default store exists once written
    out = run_kvctl(env, "get", "nope", binary=True)
    assert out.returncode == 1 and out.stdout == b""
    assert out.stderr.count(b"\n") == 1 and b"not found" in out.stderr
    assert run_kvctl(env, "ttl", "nope", binary=True).returncode == 1


def test_ttl_set_and_read(env: dict[str, str]) -> None:
    assert run_kvctl(env, "set", "t", "v", "--ttl", "2h", binary=True).returncode == 0
    left = float(run_kvctl(env, "ttl", "t", binary=True).stdout.decode().rstrip("s\n"))
    assert 7100 < left <= 7200
    assert run_kvctl(env, "set", "p", "v", binary=True).returncode == 0
    assert run_kvctl(env, "ttl", "p", binary=True).stdout == b"none\n"
    assert run_kvctl(env, "ttl", "--ms", "p", binary=True).stdout == b"-1\n"
    bad = run_kvctl(env, "set", "t", "v", "--ttl", "soon", binary=True)
    assert bad.returncode == 2 and b"not a duration" in bad.stderr


def test_scan_count_del(env: dict[str, str]) -> None:
    for k in ("a%1", "a_2", "ab", "b"):
        run_kvctl(env, "set", k, "v", binary=True)
    assert run_kvctl(env, "count", binary=True).stdout == b"4\n"
    assert run_kvctl(env, "count", "--prefix", "a%", binary=True).stdout == b"1\n"
    assert run_kvctl(env, "scan", "--keys-only", "--prefix", "a", binary=True).stdout == b"a%1\na_2\nab\n"
    assert run_kvctl(env, "scan", "--limit", "1", binary=True).stdout == b"a%1\tv\n"
    assert run_kvctl(env, "del", "a%1", "nope", binary=True).stdout == b"1\n"
    assert run_kvctl(env, "count", binary=True).stdout == b"3\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-u", "nosuch://x", "get", "k"], 2, b"no backend for scheme 'nosuch'"),
        (["-u", "notaurl", "get", "k"], 2, b"no profile named 'notaurl'"),
        (["-u", "memory://?bogus=1", "get", "k"], 2, b"unknown option"),
        (["-u", "broken://", "get", "k"], 3, b"could not be loaded"),
        (["--keys", "hex", "get", "zz"], 2, b"not valid hex"),
        (["get"], 2, b"missing KEY"),
    ],
)
def test_bad_input_is_one_clear_line(env: dict[str, str], args: list[str], code: int, message: bytes) -> None:
    out = run_kvctl(env, *args, binary=True)
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert b"Traceback" not in out.stderr


def test_secrets_never_printed(env: dict[str, str]) -> None:
    out = run_kvctl(env, "-u", "nosuch://user:hunter2@host/0?authToken=tok123", "get", "k", binary=True)
    assert b"hunter2" not in out.stderr and b"tok123" not in out.stderr
    out = run_kvctl(env, "-u", "memory://user:hunter2@x/?bad=1", "get", "k", binary=True)
    assert out.returncode == 2 and b"hunter2" not in out.stderr and b"***" in out.stderr


def test_set_without_value_on_a_terminal_does_not_hang(env: dict[str, str]) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["-u", "memory://", "set", "k"], env=env)
    # CliRunner gives an empty, non-tty stdin: the empty value is stored
    assert result.exit_code == 0


def test_profiles_config_file_is_private(env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "prof.db"
    assert run_kvctl(env, "config", "set", "prod", f"sqlite://{db}", "--default", binary=True).returncode == 0
    cfg = tmp_path / "config" / "kvctl" / "config.toml"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert run_kvctl(env, "set", "k", "via-default-profile", binary=True).returncode == 0
    assert run_kvctl(env, "-u", f"sqlite://{db}", "get", "k", binary=True).stdout == b"via-default-profile"
    assert run_kvctl(env, "-u", "prod", "get", "k", binary=True).stdout == b"via-default-profile"
    assert run_kvctl(env, "config", "set", "r", "redis://:pw@h/0", binary=True).returncode == 0
    listing = run_kvctl(env, "config", "list", "--json", binary=True)
    assert b"pw" not in listing.stdout.replace(b"prod", b"")
    assert {r["name"] for r in json.loads(listing.stdout)} == {"prod", "r"}
    cfg.chmod(0o644)
    warned = run_kvctl(env, "config", "list", binary=True)
    assert b"readable by other users" in warned.stderr
    assert run_kvctl(env, "config", "remove", "nope", binary=True).returncode == 2


def test_kvctl_url_env_var(env: dict[str, str], tmp_path: Path) -> None:
    env["KVCTL_URL"] = f"sqlite://{tmp_path / 'env.db'}"
    run_kvctl(env, "set", "k", "v", binary=True)
    assert (tmp_path / "env.db").exists()


def test_completion_offers_profile_names(env: dict[str, str], tmp_path: Path) -> None:
    run_kvctl(env, "config", "set", "production", f"sqlite://{tmp_path / 'p.db'}", binary=True)
    comp_env = {**env, "_KVCTL_COMPLETE": "complete_bash", "COMP_WORDS": "kvctl -u pro", "COMP_CWORD": "2"}
    out = subprocess.run([sys.executable, "-m", "kvctl"], env=comp_env, capture_output=True, text=True)
    assert "production" in out.stdout


def test_version_and_help() -> None:
    runner = CliRunner()
    assert "kvctl" in runner.invoke(app, ["--version"]).output
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "Exit codes" in result.output


def test_rebalance_moves_only_keys_whose_owner_changed(env: dict[str, str], tmp_path: Path) -> None:
    from urllib.parse import quote

    a, b = f"sqlite://{tmp_path / 'a.db'}", f"sqlite://{tmp_path / 'b.db'}"
    before = f"shard://?child={quote(a, safe='')}&name=a&weight=1&child={quote(b, safe='')}&name=b&weight=1"
    after = before.replace("name=b&weight=1", "name=b&weight=3")
    # bulk load through the store API (200 CLI processes would be slow)
    from kvctl.adapt import to_sync
    from kvctl.registry import open_url
    from kvctl.store import Record

    with to_sync(open_url(before)) as store:
        store.set_many(Record(b"k%d" % i, b"v") for i in range(200))
    dry = run_kvctl(env, "-u", after, "rebalance", "--dry-run", "--json", binary=True)
    planned = json.loads(dry.stdout)
    assert dry.returncode == 0 and 0 < planned["moved"] < 200
    done = json.loads(run_kvctl(env, "-u", after, "rebalance", "--json", binary=True).stdout)
    assert done["moved"] == planned["moved"]
    assert json.loads(run_kvctl(env, "-u", after, "rebalance", "--json", binary=True).stdout)["moved"] == 0
    assert run_kvctl(env, "-u", after, "count", binary=True).stdout == b"200\n"
    no = run_kvctl(env, "rebalance", binary=True)
    assert no.returncode == 4 and b"nothing to rebalance" in no.stderr


def test_scan_text_output_is_one_safe_unambiguous_line_per_key(env: dict[str, str]) -> None:
    keys = [b"a\\x80", b"a\x80", b"b:\n", b"\x1b[2J", b"tab\there", b"plain", b'q"uote', b"\xff\xfe", b""]
    with_keys = {**env, "KVCTL_URL": f"sqlite://{env['HOME']}/amb.db"}
    for key in keys:
        assert run_kvctl(with_keys, "--keys", "hex", "set", key.hex(), "v", binary=True).returncode == 0
    out = run_kvctl(with_keys, "scan", "--keys-only", binary=True).stdout
    lines = out.decode().splitlines()
    assert len(lines) == len(keys) == len(set(lines))  # one line each, no two alike
    assert not any(ch < " " for line in lines for ch in line)  # no control byte reaches the terminal
    assert {"plain", r'"a\\x80"', r'"a\x80"', r'"b:\n"', r'"\x1b[2J"', r'"tab\there"', r'"q\"uote"',
            r'"\xff\xfe"', '""'} == set(lines)
    # --keys hex and --json stay exact
    assert sorted(run_kvctl(with_keys, "--keys", "hex", "scan", "--keys-only", binary=True).stdout.split()) == sorted(
        k.hex().encode() for k in keys if k)
    assert len(run_kvctl(with_keys, "scan", "--json", binary=True).stdout.splitlines()) == len(keys)


def test_a_write_to_a_store_that_ends_with_the_process_says_so(env: dict[str, str]) -> None:
    out = run_kvctl(env, "-u", "memory://", "set", "k", "v", binary=True)
    assert out.returncode == 0
    assert out.stderr == (b"kvctl: warning: memory:// is not persistent: what this command writes is gone "
                          b"when kvctl exits\n")
    assert run_kvctl(env, "-u", "memory://", "count", binary=True).stderr == b""  # a read says nothing

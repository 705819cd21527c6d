"""`kvctl migrate`, `kvctl diff`, `kvctl export`/`import` on the command line: typer's runner for
the output, real subprocesses for exit codes, binary pipes and secret redaction."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvctl.cli.app import app
from kvctl.registry import open_url
from kvctl.store import Record, now_ms
from kvctl.testing.cli import run_kvctl
from tests.engines.support import all_families, diff_urls, fresh_url, read_all, subprocess_env, write

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return subprocess_env(tmp_path)


def local(family: str, tmp: Path) -> str:
    if family not in all_families():
        pytest.skip(f"{family} is not installed")
    return fresh_url(family, tmp)


def fill(name: str, n: int = 20) -> str:
    url = f"memory://{name}"
    store = open_url(url)
    store.clear()
    store.set_many([Record(b"k%02d" % i, b"v%d" % i) for i in range(n)])
    return url


# -- in process (typer's runner) ---------------------------------------------------------------
def test_migrate_text_summary(env: dict[str, str]) -> None:
    src = fill("cli-a")
    result = runner.invoke(app, ["migrate", src, "memory://cli-b", "--verify"], env=env)
    assert result.exit_code == 0, result.output
    assert "copied" in result.output and "20" in result.output and "are equal" in result.output


def test_migrate_json_summary(env: dict[str, str]) -> None:
    src = fill("cli-c")
    result = runner.invoke(app, ["migrate", src, "memory://cli-d", "--json", "--batch-size", "6"], env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["copied"] == 20 and doc["read"] == 20 and doc["failed"] == 0 and doc["keys_per_s"] > 0


def test_migrate_dry_run_with_prefix_and_glob(env: dict[str, str]) -> None:
    src = fill("cli-e")
    result = runner.invoke(app, ["migrate", src, "memory://cli-f", "--dry-run", "--json", "-p", "k1",
                                 "--glob", "*[02468]"], env=env)
    doc = json.loads(result.output)
    assert doc["dry_run"] and doc["copied"] == 5 and doc["bytes"] == 5 * 6
    assert open_url("memory://cli-f").count() == 0


def test_diff_equal_and_different(env: dict[str, str]) -> None:
    a, b = fill("cli-g"), fill("cli-h")
    assert runner.invoke(app, ["diff", a, b], env=env).exit_code == 0
    open_url(b).set(b"k03", b"changed")
    open_url(b).set(b"zz", b"extra")
    open_url(b).delete(b"k05")
    result = runner.invoke(app, ["diff", a, b, "--json"], env=env)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert (doc["missing"], doc["extra"], doc["differing"]) == (1, 1, 1)
    assert doc["samples"]["extra"] == [{"key": "zz"}] and doc["method"] == "merge"


def test_export_import_in_process(env: dict[str, str]) -> None:
    src = fill("cli-i", 5)
    open_url(src).set_many([Record(b"\x00\xff", b"\x80\x81", now_ms() + 60_000)])
    out = runner.invoke(app, ["export", src], env=env)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 6 and lines[0]["key_b64"] == "AP8=" and lines[0]["value_b64"] == "gIE="
    result = runner.invoke(app, ["import", "-", "memory://cli-j"], input=out.stdout, env=env)
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["diff", src, "memory://cli-j"], env=env).exit_code == 0


# -- real processes ----------------------------------------------------------------------------
def test_subprocess_migrate_verify_and_exit_codes(env: dict[str, str], tmp_path: Path) -> None:
    src, dst = local("sqlite", tmp_path), local("sqlite", tmp_path)
    write(src, [Record(b"k%d" % i, b"v") for i in range(10)] + [Record(b"\x00bin", b"\xff" * 3)])
    write(dst, [Record(b"k1", b"already here")])
    out = run_kvctl(env, "migrate", src, dst, "--on-conflict", "fail", binary=True)
    assert out.returncode == 6 and out.stderr.count(b"\n") == 1 and b"k1" in out.stderr
    out = run_kvctl(env, "migrate", src, dst, "--on-conflict", "skip", "--verify", binary=True)
    assert out.returncode == 1 and b"verify" in out.stderr  # skipped k1 differs
    out = run_kvctl(env, "migrate", src, dst, "--verify", binary=True)
    assert out.returncode == 0, out.stderr
    write_extra = open_url(dst)
    write_extra.set_many([Record(b"x%d" % i, b"") for i in range(3)])
    write_extra.close()
    out = run_kvctl(env, "migrate", src, dst, "--delete-extra", "--max-delete", "2", binary=True)
    assert out.returncode == 8 and b"max-delete" in out.stderr
    out = run_kvctl(env, "migrate", src, dst, "--delete-extra", "--max-delete", "3", "--verify", binary=True)
    assert out.returncode == 0 and b"deleted 3" in out.stdout


def test_subprocess_ttl_into_a_backend_without_ttls(env: dict[str, str], tmp_path: Path) -> None:
    src, dst = local("sqlite", tmp_path), local("cookie", tmp_path)
    write(src, [Record(b"a", b"1"), Record(b"t", b"2", now_ms() + 60_000)])
    out = run_kvctl(env, "migrate", src, dst, binary=True)
    assert out.returncode == 4 and b"--drop-ttl" in out.stderr and out.stderr.count(b"\n") == 1
    out = run_kvctl(env, "migrate", src, dst, "--drop-ttl", "--verify", "--json", binary=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ttl_dropped"] == 1


def test_subprocess_export_import_binary_pipe(env: dict[str, str], tmp_path: Path) -> None:
    src, dst = local("sqlite", tmp_path), local("lmdb", tmp_path)
    records = [Record(bytes([i, 255 - i]) + b"\n\r", bytes(range(i, 256)), now_ms() + 3_600_000 if i % 3 else None)
               for i in range(40)] + [Record(b"empty", b"")]
    write(src, records)
    dump = run_kvctl(env, "export", src, binary=True)
    assert dump.returncode == 0 and dump.stdout.count(b"\n") == len(records)
    loaded = run_kvctl(env, "import", "-", dst, input=dump.stdout, binary=True)
    assert loaded.returncode == 0, loaded.stderr
    assert diff_urls(src, dst, ignore_expiry=False).equal
    got = read_all(dst)
    for rec in records:
        assert got[rec.key].value == rec.value and got[rec.key].expires_at_ms == rec.expires_at_ms


def test_subprocess_export_csv_file_round_trip(env: dict[str, str], tmp_path: Path) -> None:
    src, dst = local("sqlite", tmp_path), local("sqlite", tmp_path)
    write(src, [Record(b"a,b\"c\n", b"x,y"), Record(b"\xff", b"\x00"), Record("ü".encode(), b""),
                Record(b"k", b"abc\rdef"), Record(b"b:\r", b"\r")])  # a bare CR is quoted
    path = tmp_path / "dump.csv"
    assert run_kvctl(env, "export", src, "-o", str(path), binary=True).returncode == 0
    assert path.read_text().splitlines()[0] == "key,key_b64,value,value_b64,expires_at_ms,version,kind"
    assert run_kvctl(env, "import", str(path), dst, binary=True).returncode == 0
    assert diff_urls(src, dst, ignore_expiry=False).equal
    assert set(read_all(dst)) == set(read_all(src))  # no key invented from half a value


def test_subprocess_secrets_are_redacted(env: dict[str, str]) -> None:
    out = run_kvctl(env, "migrate", "postgresql://app:hunter2secret@127.0.0.1:1/db", "memory://x", binary=True)
    assert out.returncode == 69 and b"hunter2secret" not in out.stderr + out.stdout
    assert out.stderr.count(b"\n") == 1


def test_subprocess_malformed_import_names_the_line(env: dict[str, str], tmp_path: Path) -> None:
    dst = local("sqlite", tmp_path)
    out = run_kvctl(env, "import", "-", dst, input=b'{"key": "a", "value": "1"}\n\n{"key": 5}\n', binary=True)
    assert out.returncode == 65 and b"line 3" in out.stderr


def test_csv_on_stdin_without_format_says_to_add_it(env: dict[str, str], tmp_path: Path) -> None:
    src, dst = local("sqlite", tmp_path), local("sqlite", tmp_path)
    write(src, [Record(b"a", b"1"), Record(b"b", b"2")])
    dump = run_kvctl(env, "export", src, "-f", "csv", binary=True)
    assert dump.returncode == 0, dump.stderr
    for data, what in ((dump.stdout, "a kvctl CSV header"), (b"a,1\nb,2\n", "CSV")):
        out = run_kvctl(env, "import", "-", dst, input=data, binary=True)
        assert out.returncode == 65, out.stderr
        assert out.stderr.decode().startswith(f"kvctl: error: stdin: line 1: this looks like {what}, not a JSON "
                                              "line: import CSV with -f csv (")
        assert out.stderr.count(b"\n") == 1
    out = run_kvctl(env, "import", "-", dst, input=b'{"key": "a", "value": "1"}\n{"key": \n', binary=True)
    assert out.returncode == 65 and out.stderr.startswith(
        b"kvctl: error: stdin: line 2: not a JSON line (Expecting value at column 9) (")
    assert run_kvctl(env, "import", "-", dst, "-f", "csv", input=dump.stdout, binary=True).returncode == 0
    assert read_all(dst) == read_all(src)


# -- -o never destroys what it names: a FIFO, a device, a symlink --------------------------------
def test_export_into_a_fifo_writes_through_it(env: dict[str, str], tmp_path: Path) -> None:
    src = f"sqlite://{tmp_path}/fifo-src.db"
    assert run_kvctl(env, "-u", src, "set", "a", "1", binary=True).returncode == 0
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    proc = run_kvctl(env, "export", src, "-o", str(fifo), "--format", "jsonl", binary=True)
    reader.join(timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # still a FIFO, not a file put in its place
    assert got, "nothing came through the FIFO"
    assert [json.loads(line)["key"] for line in got[0].splitlines()] == ["a"]


def test_export_and_snapshot_through_a_symlink_replace_its_target(env: dict[str, str], tmp_path: Path) -> None:
    src = f"sqlite://{tmp_path}/link-src.db"
    assert run_kvctl(env, "-u", src, "set", "a", "1", binary=True).returncode == 0
    for args, name in ((["export", src, "--format", "jsonl"], "out.jsonl"), (["snapshot", "create", src], "s.kvs")):
        target = tmp_path / f"target-{name}"
        target.write_bytes(b"old")
        link = tmp_path / name
        link.symlink_to(target)
        proc = run_kvctl(env, *args, "-o", str(link), binary=True)
        assert proc.returncode == 0, proc.stderr.decode()
        assert link.is_symlink() and target.read_bytes() != b"old"


def test_export_into_a_directory_is_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    src = f"sqlite://{tmp_path}/dir-src.db"
    assert run_kvctl(env, "-u", src, "set", "a", "1", binary=True).returncode == 0
    proc = run_kvctl(env, "export", src, "-o", str(tmp_path), binary=True)
    assert proc.returncode == 74 and b"directory" in proc.stderr and b"Traceback" not in proc.stderr


def test_subprocess_unstorable_keys_are_listed_short(env: dict[str, str], tmp_path: Path) -> None:
    src, dst = local("sqlite", tmp_path), local("lmdb", tmp_path)
    write(src, [Record(b"", b"empty key"), Record(b"k" * 70_000, b"v"), Record(b"ok", b"v")])
    out = run_kvctl(env, "migrate", src, dst, "--no-progress", binary=True)
    assert out.returncode == 8, out.stderr
    lines = out.stderr.decode().splitlines()
    assert len(lines) == 3 and all(len(line) < 400 for line in lines), lines  # a 70 kB key is cut
    assert lines[0].startswith("kvctl: warning: not copied: kkkk") and "...:" in lines[0]
    assert lines[1].startswith('kvctl: warning: not copied: "": ') and "empty key" in lines[1]
    assert lines[2].startswith("kvctl: error: copy incomplete: 2 keys failed")
    assert set(read_all(dst)) == {b"ok"}

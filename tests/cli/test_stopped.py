"""A write that stops part-way says what it wrote and how to go on: import, snapshot restore,
sync and migrate, stopped by SIGINT, SIGTERM, a malformed line or a server gone.  Real
subprocesses and real SQLite stores; the signals arrive once rows are committed."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvctl.adapt import to_sync
from kvctl.engines import snapshot
from kvctl.engines.dump import import_from
from kvctl.errors import CorruptError, UnavailableError
from kvctl.registry import open_url
from kvctl.store import Record
from kvctl.testing.cli import run_kvctl
from tests.engines.support import DictStore, FailingStore, read_all, subprocess_env

N = 200_000  # enough that a signal sent once rows are committed lands mid-import


def dump_lines(n: int, bad_at: int | None = None) -> bytes:
    lines = [b"garbage" if i + 1 == bad_at else json.dumps({"key": f"k:{i:08d}", "value": f"v{i}"}).encode()
             for i in range(n)]
    return b"\n".join(lines) + b"\n"


def count(url: str) -> int:
    try:
        with to_sync(open_url(url, access="read")) as store:
            return store.count()
    except Exception:
        return 0  # not created yet, or a write holds it


def stop_once_written(env: dict[str, str], sig: signal.Signals, url: str, *args: str) -> tuple[int, str]:
    """Run kvctl ARGS, send ``sig`` once ``url`` holds a committed row; (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "kvctl", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while count(url) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "finished before the signal: make the input larger"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return subprocess_env(tmp_path)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stopped") / "big.jsonl"
    path.write_bytes(dump_lines(N))
    return path


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_import_says_where_to_resume(env: dict[str, str], big: Path, tmp_path: Path,
                                                    sig: signal.Signals, code: int) -> None:
    url = f"sqlite://{tmp_path / 'dst.db'}"
    rc, err = stop_once_written(env, sig, url, "import", str(big), url, "--batch-size", "1000")
    assert rc == code, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    m = re.fullmatch(rf"kvctl: warning: stopped with every record through line ([\d,]+) of {re.escape(str(big))} done, "
                     r"at least ([\d,]+) written; resume with --from-line (\d+)", lines[0])
    assert m is not None, lines[0]
    through, written, resume = (int(g.replace(",", "")) for g in m.groups())
    assert resume == through + 1 and written == through and 0 < through < N
    assert through <= count(url)  # a batch in flight may have landed as well
    out = run_kvctl(env, "import", str(big), url, "--from-line", str(resume))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"imported {N - through:,} records")
    got = read_all(url)
    assert len(got) == N and got[b"k:00000000"].value == b"v0" and got[b"k:%08d" % (N - 1)].value == b"v%d" % (N - 1)


def test_a_bad_line_after_committed_batches_says_what_was_written(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(dump_lines(12_000, bad_at=7_000))
    url = f"sqlite://{tmp_path / 'bb.db'}"
    out = run_kvctl(env, "import", str(path), url, "--batch-size", "1000")
    assert out.returncode == 65
    assert out.stderr == (f"kvctl: error: {path}: line 7000: not a JSON line (Expecting value at column 1) (stopped "
                          f"with every record through line 6,000 of {path} done, at least 6,000 written; resume with "
                          "--from-line 6001)\n")
    assert count(url) == 6_000
    path.write_bytes(dump_lines(12_000))  # the line fixed
    out = run_kvctl(env, "import", str(path), url, "--from-line", "6001")
    assert out.returncode == 0 and out.stdout.startswith("imported 6,000 records"), out.stderr
    assert count(url) == 12_000


def test_a_server_gone_mid_import_says_what_was_written() -> None:
    dst = FailingStore(fail_at=3)
    with pytest.raises(UnavailableError) as info:
        asyncio.run(import_from(dst, io.BytesIO(dump_lines(100)), "jsonl", "in.jsonl", batch_size=10))
    assert str(info.value) == ("dicttest went away (stopped with every record through line 20 of in.jsonl done, "
                               "at least 20 written; resume with --from-line 21)")
    assert len(dst.data) == 20


def test_nothing_written_says_rerun() -> None:
    with pytest.raises(CorruptError, match=r"line 1: .*\(stopped before the first batch was written; rerun"):
        asyncio.run(import_from(DictStore(), io.BytesIO(b"nope\n"), "jsonl", "in.jsonl"))


def test_an_interrupted_restore_says_what_was_written(env: dict[str, str], big: Path, tmp_path: Path) -> None:
    src, snap = f"sqlite://{tmp_path / 'src.db'}", tmp_path / "full.kvs"
    assert run_kvctl(env, "import", str(big), src).returncode == 0
    assert run_kvctl(env, "snapshot", "create", src, "-o", str(snap)).returncode == 0
    url = f"sqlite://{tmp_path / 'restored.db'}"
    rc, err = stop_once_written(env, signal.SIGTERM, url, "snapshot", "restore", str(snap), url,
                                "--batch-size", "1000")
    assert rc == 143, err
    m = re.fullmatch(r"kvctl: warning: stopped after at least ([\d,]+) records written; rerun the same restore "
                     r"to finish\n", err)
    assert m is not None, err
    assert 0 < int(m.group(1).replace(",", "")) <= count(url) < N
    assert run_kvctl(env, "snapshot", "restore", str(snap), url).returncode == 0
    assert count(url) == N


def test_a_server_gone_mid_restore_says_what_was_written(tmp_path: Path) -> None:
    src = DictStore()
    src.data = {b"k%03d" % i: Record(b"k%03d" % i, b"v") for i in range(50)}
    path = tmp_path / "s.kvs"
    asyncio.run(snapshot.create_from(src, path))
    with pytest.raises(UnavailableError,
                       match=r"went away \(stopped after at least 20 records written; rerun the same "):
        asyncio.run(snapshot.restore_into(path, FailingStore(fail_at=3), batch_size=10))


def test_an_interrupted_sync_says_what_was_applied(env: dict[str, str], big: Path, tmp_path: Path) -> None:
    src, dst = f"sqlite://{tmp_path / 'src.db'}", f"sqlite://{tmp_path / 'dst.db'}"
    assert run_kvctl(env, "import", str(big), src).returncode == 0
    rc, err = stop_once_written(env, signal.SIGINT, dst, "sync", src, dst, "--batch-size", "1000")
    assert rc == 130, err
    m = re.fullmatch(r"kvctl: warning: stopped after at least ([\d,]+) changes applied; rerun the sync to finish\n",
                     err)
    assert m is not None, err
    assert run_kvctl(env, "sync", src, dst).returncode == 0
    assert count(dst) == N


def test_sigterm_stops_a_migrate_like_ctrl_c(env: dict[str, str], big: Path, tmp_path: Path) -> None:
    src, dst = f"sqlite://{tmp_path / 'src.db'}", f"sqlite://{tmp_path / 'dst.db'}"
    assert run_kvctl(env, "import", str(big), src).returncode == 0
    rc, err = stop_once_written(env, signal.SIGTERM, dst, "migrate", src, dst, "--batch-size", "500",
                                "--checkpoint-every", "1", "--no-progress")
    assert rc == 143, err
    assert re.fullmatch(r"kvctl: warning: stopped after [\d,]+ keys; progress saved: rerun with --resume to continue\n",
                        err), err
    out = run_kvctl(env, "migrate", src, dst, "--resume", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert count(dst) == N


def test_an_interrupted_migrate_counts_the_batch_in_flight(env: dict[str, str], big: Path, tmp_path: Path) -> None:
    """The batch being written when Ctrl-C arrives is finished and counted: the note says exactly
    what the destination holds, and the checkpoint resumes after it (twice, the second time a resume)."""
    src, dst = f"sqlite://{tmp_path / 'src.db'}", f"sqlite://{tmp_path / 'dst.db'}"
    assert run_kvctl(env, "import", str(big), src).returncode == 0
    held = 0
    for resume in ([], ["--resume"]):
        args = ("migrate", src, dst, "--batch-size", "2000", "--no-progress", *resume)
        proc = subprocess.Popen([sys.executable, "-m", "kvctl", *args], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while count(dst) <= held + 10_000 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        m = re.fullmatch(r"kvctl: warning: stopped after ([\d,]+) keys; progress saved: rerun with --resume to "
                         r"continue\n", err)
        assert m is not None, err
        held = count(dst)
        assert int(m[1].replace(",", "")) == held
    assert 0 < held < N
    # the summary of the run that finishes says what it copied itself, and the total
    out = run_kvctl(env, "migrate", src, dst, "--resume", "--json", "--no-progress")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["resumed"], doc["copied"], doc["copied_this_run"]) == (True, N, N - held)


def test_a_resumed_parallel_migrate_says_what_this_run_copied(env: dict[str, str], big: Path,
                                                              tmp_path: Path) -> None:
    src, dst = f"sqlite://{tmp_path / 'src.db'}", f"sqlite://{tmp_path / 'dst.db'}"
    assert run_kvctl(env, "import", str(big), src).returncode == 0
    rc, err = stop_once_written(env, signal.SIGINT, dst, "migrate", src, dst, "--workers", "2",
                                "--batch-size", "1000", "--no-progress")
    assert rc == 130, err
    held = count(dst)
    out = run_kvctl(env, "migrate", src, dst, "--resume", "--workers", "2", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert re.search(rf"^  copied {N - held:>15,}  this run \({N:,} in total, ", out.stdout, re.M), out.stdout

"""Interruption: SIGKILL a `kvctl migrate` process at random points, `--resume`, then diff.

Uses persistent local families (a killed process's stores must outlive it); pairs whose
families are not installed are skipped.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kvctl.store import Record, now_ms
from kvctl.testing.cli import run_kvctl, start_kvctl
from tests.engines.support import all_families, diff_urls, fresh_url, subprocess_env, write

PAIRS = [("sqlite", "lmdb"), ("file", "sqlite"), ("lmdb", "file")]
N = 30_000


def _wait_for_new_checkpoint(proc: subprocess.Popen[bytes], cp: Path, before: int, limit: float = 30) -> bool:
    """True once this process has written a checkpoint (it is mid-copy); False if it exited."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if cp.stat().st_mtime_ns != before:
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    raise AssertionError("migrate wrote no checkpoint in time")


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize(("src_family", "dst_family"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_sigkill_at_random_points_then_resume_converges(src_family: str, dst_family: str,
                                                        tmp_path: Path) -> None:
    available = all_families()
    if src_family not in available or dst_family not in available:
        pytest.skip(f"{src_family} or {dst_family} is not installed")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    src, dst = fresh_url(src_family, tmp_path), fresh_url(dst_family, tmp_path)
    later = now_ms() + 3_600_000
    write(src, [Record(b"key:%06d" % i, b"%d" % i * 8, later if i % 7 == 0 else None) for i in range(N)]
          + [Record(b"\x00\xffbinary", bytes(range(256)))])
    write(dst, [])
    cp = tmp_path / "migrate.checkpoint.json"
    cmd = ["migrate", src, dst, "--batch-size", "300", "--checkpoint-every", "1",
           "--checkpoint", str(cp), "--resume", "--no-progress", "--json"]
    env = subprocess_env(tmp_path)
    kills = 0
    for _ in range(3):
        before = _mtime(cp)
        proc = start_kvctl(env, *cmd)
        try:
            if _wait_for_new_checkpoint(proc, cp, before):
                time.sleep(rng.uniform(0, 0.15))
                proc.send_signal(signal.SIGKILL)
                kills += 1
        finally:
            proc.communicate(timeout=60)
    interrupted_mid_copy = cp.exists()  # a kill may also land after the copy finished
    done = run_kvctl(env, *cmd)
    assert done.returncode == 0, (seed, done.stderr)
    summary = json.loads(done.stdout)
    # counts survive the kills: every key read exactly once as far as the totals are concerned
    assert summary["read"] == N + 1 and summary["copied"] == N + 1, (seed, summary)
    assert summary["resumed"] == interrupted_mid_copy
    assert not cp.exists()
    result = diff_urls(src, dst, ignore_expiry=False)
    assert result.equal, (seed, kills, result.to_dict())
    assert os.environ.get("XDG_STATE_HOME") != env["XDG_STATE_HOME"]


def _interrupt_mid_copy(cmd: list[str], env: dict[str, str], cp: Path, sig: signal.Signals,
                        settle: float = 0.05) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd`` in its own process group; once it has saved a checkpoint, let it copy a little
    further, then send ``sig`` to the whole group, as a terminal's Ctrl-C does."""
    proc = start_kvctl(env, *cmd, start_new_session=True)
    try:
        assert _wait_for_new_checkpoint(proc, cp, 0, limit=60), "the copy ended before it could be interrupted"
        time.sleep(settle)  # batches written past the checkpoint (the next one is a second away)
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_an_interrupted_fail_migrate_resumes_to_the_end(sig: signal.Signals, tmp_path: Path) -> None:
    """--on-conflict fail: the keys the interrupted run wrote after its last checkpoint are its
    own, not conflicts, so --resume finishes (it used to stop at the first of them, every time)."""
    available = all_families()
    if "sqlite" not in available:
        pytest.skip("sqlite is not installed")
    n = 50_000
    src, dst = fresh_url("sqlite", tmp_path), fresh_url("sqlite", tmp_path)
    write(src, [Record(b"key:%06d" % i, b"value %d" % i) for i in range(n)])
    write(dst, [])
    cp = tmp_path / "cp.json"
    cmd = ["migrate", src, dst, "--batch-size", "500", "--checkpoint-every", "1",
           "--checkpoint", str(cp), "--on-conflict", "fail", "--no-progress", "--json"]
    env = subprocess_env(tmp_path)
    stopped = _interrupt_mid_copy(cmd, env, cp, sig)
    assert stopped.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), stopped.stderr.decode()
    assert b"Traceback" not in stopped.stderr
    assert cp.exists()
    done = run_kvctl(env, *cmd, "--resume")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed"] and summary["read"] == n and summary["copied"] == n, summary
    assert not cp.exists()
    assert diff_urls(src, dst, ignore_expiry=False).equal

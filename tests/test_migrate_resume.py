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
import sys
import time
from pathlib import Path

import pytest
from test_migrate_support import all_families, diff_urls, fresh_url, subprocess_env, write

from kvctl.store import Record, now_ms

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
    cmd = [sys.executable, "-m", "kvctl", "migrate", src, dst, "--batch-size", "300", "--checkpoint-every", "1",
           "--checkpoint", str(cp), "--resume", "--no-progress", "--json"]
    env = subprocess_env(tmp_path)
    kills = 0
    for _ in range(3):
        before = _mtime(cp)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            if _wait_for_new_checkpoint(proc, cp, before):
                time.sleep(rng.uniform(0, 0.15))
                proc.send_signal(signal.SIGKILL)
                kills += 1
        finally:
            proc.communicate(timeout=60)
    interrupted_mid_copy = cp.exists()  # a kill may also land after the copy finished
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, (seed, done.stderr.decode())
    summary = json.loads(done.stdout)
    # counts survive the kills: every key read exactly once as far as the totals are concerned
    assert summary["read"] == N + 1 and summary["copied"] == N + 1, (seed, summary)
    assert summary["resumed"] == interrupted_mid_copy
    assert not cp.exists()
    result = diff_urls(src, dst, ignore_expiry=False)
    assert result.equal, (seed, kills, result.to_dict())
    assert os.environ.get("XDG_STATE_HOME") != env["XDG_STATE_HOME"]

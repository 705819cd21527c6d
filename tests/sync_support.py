"""Helpers shared by the backends' end-to-end sync tests (real `kvctl` processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kvctl.engines.replicate import state_path


def cli_env(tmp_path: Path) -> dict[str, str]:
    """A user environment of its own: XDG dirs under tmp_path, no KVCTL_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVCTL_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_DATA_HOME=str(tmp_path / "data"), HOME=str(tmp_path))
    return env


def kvctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvctl", *args], env=env, capture_output=True, text=True,
                          timeout=180)


def sync_json(env: dict[str, str], a: str, b: str, *extra: str) -> dict[str, Any]:
    out = kvctl(env, "sync", a, b, "--json", *extra)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def sigkill_mid_sync(env: dict[str, str], tmp_path: Path, a: str, b: str) -> None:
    """Start `kvctl sync a b` in small batches and SIGKILL it once it has saved some progress."""
    state = state_path(tmp_path / "state" / "kvctl", a, b, False)
    before = state.stat().st_mtime_ns
    proc = subprocess.Popen([sys.executable, "-m", "kvctl", "sync", a, b, "--batch-size", "20"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while state.stat().st_mtime_ns == before:  # the first pages were applied and saved
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.002)
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

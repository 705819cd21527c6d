"""A bench's job process never outlives the bench: its whole process group (pyperf's workers,
valgrind) ends with it, on a timeout or a Ctrl-C (SIGTERM is turned into one by the cli).
Real processes: a job stand-in that starts a long-lived grandchild, as pyperf and valgrind do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvctl.bench.suite import _run_group

# a job that starts a grandchild, writes its pid, and then waits as long as it lives
JOB = ("import subprocess, sys, time\n"
       "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
       "open(sys.argv[1], 'w').write(str(child.pid))\n"
       "time.sleep(120)\n")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def grandchild(pid_file: Path) -> int:
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(pid_file.read_text())


def gone(pid: int, within: float = 10) -> bool:
    """Did the grandchild end?  If not, the test ends it (it is the test's own)."""
    deadline = time.monotonic() + within
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        return False
    return True


def test_a_timed_out_job_takes_its_workers_with_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with pytest.raises(subprocess.TimeoutExpired):
        _run_group([sys.executable, "-c", JOB, str(pid_file)], timeout=3)
    assert gone(grandchild(pid_file))


def test_an_interrupted_bench_takes_its_job_s_workers_with_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    bench = ("import sys\nfrom kvctl.bench.suite import _run_group\n"
             f"_run_group([sys.executable, '-c', {JOB!r}, {str(pid_file)!r}], timeout=300)\n")
    proc = subprocess.Popen([sys.executable, "-c", bench], stderr=subprocess.PIPE)
    pid = grandchild(pid_file)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert b"KeyboardInterrupt" in err
    assert gone(pid), "the job's worker outlived the bench"

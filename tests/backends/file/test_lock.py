"""Two processes on one file store: one writer at a time (flock on LOCK, which names the PID), a
second one waits for up to ?timeout=; read-only opens work beside the writer and see whole batches
only, even during compaction."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvctl.errors import LockedError, UnsupportedError
from kvctl.registry import open_url
from kvctl.store import Record

# The other process: open as writer, write, say READY, then either wait for a line on stdin or
# keep rewriting ten keys as one batch (all ten carry the same round number), compacting now and then.
CHILD = r"""
import sys
from kvctl.registry import open_url
from kvctl.store import Record
store = open_url(sys.argv[1])
store.set(b"hello", b"from the child")
print("READY", flush=True)
if sys.argv[2] == "hold":
    sys.stdin.readline()
else:
    n = 0
    while True:
        n += 1
        store.set_many([Record(b"b%d" % i, b"round-%d:" % n + b"x" * 5000) for i in range(10)])
        if n % 25 == 0:
            store.compact()
"""


def start_child(url: str, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, url, mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "READY\n", proc.stderr.read() if proc.stderr else line
    return proc


def test_second_writer_is_refused_with_the_owner_pid(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db"
    child = start_child(url, "hold")
    try:
        with pytest.raises(LockedError, match=f"store is locked by PID {child.pid}; waited 0.[0-9] s"):
            open_url(url + "?timeout=300ms")
        with open_url(url + "?readonly=true") as reader:  # readers need no lock
            assert reader.get(b"hello").value == b"from the child"
            with pytest.raises(UnsupportedError, match="read-only"):
                reader.set(b"k", b"v")
    finally:
        assert child.stdin is not None
        child.stdin.write("done\n")
        child.stdin.close()
        child.wait(timeout=30)
    with open_url(url) as store:  # the lock went with the process
        assert store.get(b"hello") is not None


def test_same_process_second_open_is_refused(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db"
    with open_url(url), pytest.raises(LockedError, match="this process"):
        open_url(url)
    with open_url(url):  # close released it
        pass


def test_lock_of_a_killed_writer_is_released(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db"
    child = start_child(url, "hold")
    child.kill()
    child.wait(timeout=30)
    with open_url(url) as store:
        assert store.get(b"hello") is not None


@pytest.mark.slow
def test_readers_see_whole_batches_while_a_writer_writes_and_compacts(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db?fsync=never&segment_size=64KiB&compact_min=0&compact_ratio=0.5"
    child = start_child(url, "write")
    try:
        snapshots = 0
        seen_rounds = set()
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            with open_url(f"file://{tmp_path}/db?readonly=true") as reader:
                values = {r.key: r.value for p in reader.scan(b"b") for r in p.records}
            if not values:
                continue
            rounds = {v.split(b":")[0] for v in values.values()}
            assert len(values) == 10 and len(rounds) == 1, f"a reader saw a partial batch: {sorted(rounds)}"
            seen_rounds |= rounds
            snapshots += 1
        assert snapshots >= 5 and len(seen_rounds) >= 3
    finally:
        child.kill()
        child.wait(timeout=30)


def test_a_writer_waits_for_the_lock_and_gets_it_when_the_owner_closes(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db"
    child = start_child(url, "hold")
    assert child.stdin is not None
    started = time.monotonic()
    release = threading.Timer(0.5, lambda: (child.stdin.write("done\n"), child.stdin.flush()))  # type: ignore[union-attr]
    release.start()
    try:
        with open_url(url + "?timeout=20s") as store:  # waits for the child instead of failing
            waited = time.monotonic() - started
            store.set(b"second", b"writer")
            assert store.get(b"hello") is not None
    finally:
        release.join()
        child.wait(timeout=30)
    assert 0.4 < waited < 15


@contextlib.contextmanager
def ctrl_c_after(seconds: float) -> Iterator[None]:
    """A KeyboardInterrupt in this thread after ``seconds``, as Ctrl-C would raise; the timer and the
    previous SIGALRM handler are restored on the way out."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_an_interrupted_wait_for_the_lock_leaves_no_descriptor_behind(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db"
    child = start_child(url, "hold")

    try:
        with ctrl_c_after(0.3), pytest.raises(KeyboardInterrupt):
            open_url(url + "?timeout=20s")  # Ctrl-C while it waits for the child's lock
    finally:
        assert child.stdin is not None
        child.stdin.write("done\n")
        child.stdin.close()
        child.wait(timeout=30)
    assert str(tmp_path / "db" / "LOCK") not in open_files()


def open_files() -> list[str]:
    """What this process's descriptors point at."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # (the descriptor of the listing itself is gone by now)
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
    return found


def test_an_open_interrupted_during_replay_releases_the_lock(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db?fsync=never"
    with open_url(url) as store:  # enough records that replaying them takes a while
        store.set_many([Record(b"k%07d" % i, b"v" * 20) for i in range(200_000)])

    with ctrl_c_after(0.15), pytest.raises(KeyboardInterrupt):
        open_url(url)
        # Only if the replay was faster than the timer, or its alarm landed where Python drops
        # exceptions (a finalizer): the sleep is interrupted instead.
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        time.sleep(5)
    assert str(tmp_path / "db" / "LOCK") not in open_files()
    with open_url(url + "&timeout=0") as store:  # not "locked by this process"
        assert store.count() == 200_000

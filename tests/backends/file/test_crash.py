"""Crash safety of the file backend: SIGKILL a writer at random moments and at chosen points of
compaction, then reopen and check that every write acknowledged under fsync=always is there and
every record read back is one that was written.

The writer is this file run as a script (``python test_file_crash.py DIR SEED [KILL_POINT]``).
It logs each operation on stdout before starting it (``I``) and after it returned (``A``); the
parent replays that log into a model.  Only the operation in flight at the kill may be lost, and
a batch in flight is all there or all missing.
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

URL_OPTIONS = "fsync=always&segment_size=16KiB&compact_min=8KiB&compact_ratio=0.4&inline_max=64"
KEYS = 120

pytestmark = pytest.mark.slow


# == the writer ===============================================================================
def _install_kill_point(point: str) -> None:
    """Make this process SIGKILL itself at a chosen step (``when:function:nth``).

    The hooks wrap ``os`` functions as the plugin calls them, so the plugin code runs unchanged.
    """
    when, name, nth = point.split(":")
    real = getattr(os, name)
    calls = 0

    def hooked(*args, **kwargs):
        nonlocal calls
        relevant = name != "rename" or str(args[0]).endswith(".compact.tmp")
        if relevant:
            calls += 1
        if relevant and calls == int(nth) and when == "before":
            _die()
        result = real(*args, **kwargs)
        if relevant and calls == int(nth) and when == "after":
            _die()
        return result

    setattr(os, name, hooked)


def _die() -> None:
    print("\nKILLED", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def writer(directory: str, seed: int, kill_point: str | None) -> None:
    from kvctl.registry import open_url
    from kvctl.store import Record

    store = open_url(f"file://{directory}?{URL_OPTIONS}")
    rng = random.Random(seed)
    out = sys.stdout
    if kill_point:
        _install_kill_point(kill_point)
    print("READY", flush=True)
    n = 0
    op: dict[str, object]
    while True:
        n += 1
        tag = f"{seed}.{n}"
        roll = rng.random()
        if roll < 0.5:
            key = b"k%03d" % rng.randrange(KEYS)
            value = (tag + ":").encode() * rng.randint(1, 12)
            op = {"set": {key.hex(): value.hex()}}
            print("I", json.dumps(op), file=out, flush=True)
            store.set(key, value)
        elif roll < 0.7:
            batch = {b"k%03d" % rng.randrange(KEYS): (f"{tag}.{i}:").encode() * rng.randint(1, 40)
                     for i in range(rng.randint(2, 60))}
            op = {"set": {k.hex(): v.hex() for k, v in batch.items()}}
            print("I", json.dumps(op), file=out, flush=True)
            store.set_many([Record(k, v) for k, v in batch.items()])
        elif roll < 0.9:
            keys = list({b"k%03d" % rng.randrange(KEYS) for _ in range(rng.randint(1, 5))})
            op = {"delete": [k.hex() for k in keys]}
            print("I", json.dumps(op), file=out, flush=True)
            store.delete_many(keys)
        else:
            print("I", json.dumps({"compact": True}), file=out, flush=True)
            store.compact()
        print("A", file=out, flush=True)


# == the checker ==============================================================================
def apply(model: dict[str, str], op: dict) -> None:
    for key, value in op.get("set", {}).items():
        model[key] = value
    for key in op.get("delete", []):
        model.pop(key, None)


def read_store(directory: Path) -> dict[str, str]:
    from kvctl.registry import open_url

    store = open_url(f"file://{directory}?{URL_OPTIONS}")
    try:
        return {r.key.hex(): r.value.hex() for p in store.scan(batch_size=500) for r in p.records}
    finally:
        store.close()


def run_writer(directory: Path, seed: int, kill_point: str | None, delay: float) -> list[str]:
    """Start a writer, SIGKILL it ``delay`` seconds after it is ready (or let a kill point do it).

    The writer's log goes to a file, not a pipe: nothing it wrote before dying can be lost on the
    way, and it never blocks on a full pipe.
    """
    args = [sys.executable, __file__, str(directory), str(seed)] + ([kill_point] if kill_point else [])
    log_path = directory.parent / f"writer-{seed}.log"
    with open(log_path, "w") as log, open(log_path.with_suffix(".err"), "w") as err:
        proc = subprocess.Popen(args, stdout=log, stderr=err)
    try:
        started = time.monotonic()
        while not log_path.read_text().startswith("READY\n"):
            if proc.poll() is not None or time.monotonic() - started > 30:
                raise AssertionError(f"writer did not start: {log_path.with_suffix('.err').read_text()[-2000:]}")
            time.sleep(0.005)
        if kill_point is None:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the kill point {kill_point} was never reached") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, \
        f"writer exited {proc.returncode}: {log_path.with_suffix('.err').read_text()[-2000:]}"
    return log_path.read_text().splitlines()[1:]


def check_after_crash(model: dict[str, str], lines: list[str], actual: dict[str, str]) -> dict[str, str]:
    """Fold the acknowledged operations into ``model``; the one in flight may or may not be there."""
    in_flight = None
    for line in lines:
        if line.startswith("I "):
            try:
                in_flight = json.loads(line[2:])
            except ValueError:  # the line itself was cut by the kill: nothing was started
                in_flight = None
        elif line == "A" and in_flight is not None:
            apply(model, in_flight)
            in_flight = None
    if actual == model:
        return model
    assert in_flight is not None, _diff("acknowledged writes are missing or wrong", model, actual)
    with_it = dict(model)
    apply(with_it, in_flight)
    assert actual == with_it, _diff("neither the state before nor after the write in flight", model, actual)
    return with_it


def _diff(what: str, expected: dict[str, str], actual: dict[str, str]) -> str:
    missing = sorted(set(expected) - set(actual))[:5]
    extra = sorted(set(actual) - set(expected))[:5]
    wrong = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])[:5]
    return f"{what}: missing {missing}, unexpected {extra}, different {wrong}"


KILL_POINTS = [
    "before:rename:1",  # compacted segment written and synced, not renamed in
    "after:rename:1",  # renamed in, directory not synced, old segments not deleted
    "after:unlink:1",  # some old segments deleted
    "before:fsync:3",  # in the middle of writing/syncing segments
    "after:writev:40",  # an ordinary append, acknowledged or not
]


def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path: Path) -> None:
    directory = tmp_path / "db"
    model: dict[str, str] = {}
    rng = random.Random(1234)
    deadline = time.monotonic() + 25
    rounds = 0
    while rounds < 8 or (time.monotonic() < deadline and rounds < 60):
        rounds += 1
        lines = run_writer(directory, rounds, None, rng.uniform(0.0, 0.25))
        model = check_after_crash(model, lines, read_store(directory))
    assert rounds >= 8
    assert model, "the writers wrote nothing"


@pytest.mark.parametrize("kill_point", KILL_POINTS)
def test_sigkill_at_chosen_points_of_compaction(tmp_path: Path, kill_point: str) -> None:
    directory = tmp_path / "db"
    model: dict[str, str] = {}
    # Fill the store first, so compaction has old segments to replace.
    lines = run_writer(directory, 500, None, 0.3)
    model = check_after_crash(model, lines, read_store(directory))
    lines = run_writer(directory, 501, kill_point, 0)
    assert "KILLED" in lines
    model = check_after_crash(model, lines, read_store(directory))
    # ... and the store works on: another round of writes on top of the recovered one.
    lines = run_writer(directory, 502, None, 0.1)
    check_after_crash(model, lines, read_store(directory))
    assert not [n for n in os.listdir(directory) if n.endswith(".tmp")], "leftover temporary files"


if __name__ == "__main__":
    writer(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)

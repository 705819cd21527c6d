"""`kvctl plugins`: sizes as people write them, and a missing driver as a state of the install."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kvctl.cli.admin import _size
from kvctl.registry import schemes


@pytest.mark.parametrize(
    ("n", "shown"),
    [(None, "-"), (2692, "2,692 B"), (1024, "1 KiB"), (512 << 20, "512 MiB"), (1 << 30, "1 GiB"),
     ((1 << 30) - 1, "1.0 GiB"), (1048512 << 10, "1.0 GiB"), (3 << 29, "1.5 GiB"), (10**9, "1 GB"),
     (64_000, "64 kB")],
)
def test_sizes_as_people_write_them(n: int | None, shown: str) -> None:
    assert _size(n) == shown


def test_a_missing_driver_is_not_installed_not_an_error(env: dict[str, str]) -> None:
    if "broken" not in schemes():
        pytest.skip("the outside example plugin (broken://) is not installed")
    run = [sys.executable, "-m", "kvctl", "plugins"]
    text = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "1024.0" not in text.stdout and "error" not in text.stdout
    assert "broken: broken:// (kvctl-outside-example 1.2.3): not installed: install the Python module" in text.stdout
    rows = json.loads(subprocess.run([*run, "--json"], env=env, capture_output=True, text=True, timeout=60).stdout)
    [broken] = [r for r in rows if r["name"] == "broken"]
    assert broken["error"].startswith("not installed: ")


def test_ping_counts_in_words(env: dict[str, str]) -> None:
    one = subprocess.run([sys.executable, "-m", "kvctl", "-u", "memory://", "ping", "-c", "1"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert one.returncode == 0 and one.stdout.endswith("(1 round trip)\n")

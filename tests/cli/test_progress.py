"""Progress on long commands: one rich progress line on a terminal (done/total and % when the
store can count, rate, ETA), nothing on a pipe or under --quiet.  The terminal is a real pty."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest


def on_a_terminal(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run kvctl with stderr on a pseudo-terminal; (exit code, what the terminal showed)."""
    master, slave = os.openpty()
    shown: list[bytes] = []

    def drain() -> None:  # keep the pty from filling up while the command runs
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            shown.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    proc = subprocess.run([sys.executable, "-m", "kvctl", *args], env={**env, "COLUMNS": "160"},
                          stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL, timeout=120)
    os.close(slave)
    reader.join(10)
    os.close(master)
    return proc.returncode, b"".join(shown).decode("utf-8", "replace")


@pytest.fixture
def dump(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    with path.open("w") as fh:
        for i in range(60_000):
            fh.write(json.dumps({"key": f"k:{i:08d}", "value": "x" * 100}) + "\n")
    return path


def test_import_export_and_diff_show_progress_on_a_terminal_only(env: dict[str, str], tmp_path: Path,
                                                            dump: Path) -> None:
    url = f"sqlite://{tmp_path / 'p.db'}"
    code, shown = on_a_terminal(env, "-u", url, "import", str(dump), "--batch-size", "500")
    assert code == 0 and "import" in shown and "keys/s" in shown, shown[-500:]
    code, shown = on_a_terminal(env, "-u", url, "export", "-o", str(tmp_path / "out.jsonl"), "--batch-size", "500")
    assert code == 0 and "/60,000 keys" in shown and "%" in shown, shown[-500:]
    other = f"sqlite://{tmp_path / 'o.db'}"
    assert on_a_terminal(env, "-u", other, "import", str(dump), "-q") == (0, "")
    code, shown = on_a_terminal(env, "diff", url, other, "--batch-size", "500")
    assert code == 0 and "diff" in shown and "/60,000 keys" in shown, shown[-500:]
    code, shown = on_a_terminal(env, "-u", url, "export", "-q", "-o", str(tmp_path / "q.jsonl"))
    assert (code, shown) == (0, "")  # --quiet: nothing at all
    piped = subprocess.run([sys.executable, "-m", "kvctl", "-u", url, "export", "-o", str(tmp_path / "p.jsonl")],
                           env=env, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr.count("\n") == 1 and "keys/s" not in piped.stderr


def test_snapshot_create_verify_restore_and_sync_show_progress(env: dict[str, str], tmp_path: Path,
                                                                dump: Path) -> None:
    url = f"sqlite://{tmp_path / 'p.db'}"
    assert on_a_terminal(env, "-u", url, "import", str(dump), "-q") == (0, "")
    snap = str(tmp_path / "s.kvs")
    code, shown = on_a_terminal(env, "snapshot", "create", url, "-o", snap, "--batch-size", "500")
    assert code == 0 and "snapshot" in shown and "/60,000 keys" in shown and "%" in shown, shown[-500:]
    code, shown = on_a_terminal(env, "snapshot", "verify", snap)
    assert code == 0 and "verify" in shown and "60,000/60,000 keys" in shown, shown[-500:]
    copy = f"sqlite://{tmp_path / 'r.db'}"
    code, shown = on_a_terminal(env, "snapshot", "restore", snap, copy, "--batch-size", "500")
    # the last frame shows what the summary says: every record, out of a total that is now exact
    assert code == 0 and "restore" in shown and "60,000/60,000 keys" in shown, shown[-500:]
    code, shown = on_a_terminal(env, "sync", url, f"sqlite://{tmp_path / 'y.db'}", "--batch-size", "500")
    assert code == 0 and "compare" in shown and "/60,000 keys" in shown and "keys/s" in shown, shown[-500:]
    for args in (("snapshot", "create", url, "-o", str(tmp_path / "q.kvs")), ("snapshot", "verify", snap),
                 ("snapshot", "restore", snap, copy), ("sync", url, copy)):
        assert on_a_terminal(env, *args, "-q") == (0, "")  # --quiet: nothing at all
    piped = subprocess.run([sys.executable, "-m", "kvctl", "snapshot", "verify", snap],
                           env=env, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr == ""


def test_bench_shows_jobs_done_out_of_all(env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("pyperf")
    args = ("bench", "memory://progress", "--workload", "gridkv", "--processes", "1", "--values", "2",
            "--min-time", "0.005", "-o", str(tmp_path / "run.json"))
    code, shown = on_a_terminal(env, *args)
    assert code == 0 and "bench" in shown and "/2 jobs" in shown and "2/2 jobs" in shown, shown[-800:]
    assert "[1/2] harness" in shown  # its lines still print, above the bar


def test_rebalance_shows_keys_examined_out_of_the_store_count(env: dict[str, str], tmp_path: Path) -> None:
    from urllib.parse import quote

    from kvctl.adapt import to_sync
    from kvctl.registry import open_url
    from kvctl.store import Record

    a, b = (quote(f"sqlite://{tmp_path / n}", safe="") for n in ("a.db", "b.db"))
    before = f"shard://?child={a}&name=a&weight=1&child={b}&name=b&weight=1"
    with to_sync(open_url(before)) as store:
        store.set_many(Record(b"k%d" % i, b"v") for i in range(3000))
    after = before.replace("name=b&weight=1", "name=b&weight=3")
    code, shown = on_a_terminal(env, "-u", after, "rebalance")
    # the total is the store's count; keys moved to a child scanned later are examined again, and
    # the last frame shows what the summary says
    assert code == 0 and "rebalance" in shown and "100%" in shown, shown[-500:]
    last = re.findall(r"([\d,]+)/([\d,]+) keys", shown)[-1]
    assert last[0] == last[1] and int(last[0].replace(",", "")) >= 3000

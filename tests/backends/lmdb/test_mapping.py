"""LMDB's map replaced during bulk writes (to drop the pages they touched): a write crossing the
threshold many times ends exactly where it would have without, scans and reads of the same
environment open at the time stay correct, a read in progress is never pulled from under, and a
killed migrate resumes to an equal store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvctl_plugins.lmdb import LMDBStore, mapping

from kvctl.store import Record, now_ms
from tests.engines.support import diff_urls, fresh_url, subprocess_env, write

LATER = 4102444800000  # 2100-01-01


def open_lmdb(path: Path, query: str = "") -> LMDBStore:
    from kvctl.store import StoreURL

    return LMDBStore.from_url(StoreURL.parse(f"lmdb://{path}{query}"))


def everything(store: LMDBStore) -> dict[bytes, Record]:
    return {r.key: r for page in store.scan(batch_size=1000) for r in page.records}


def batches(start: int, count: int, size: int = 400) -> Iterator[list[Record]]:
    """Ordered batches of records with 200-byte values; every 5th expires in 2100, every 11th
    carries its own version."""
    for first in range(start, start + count, size):
        yield [Record(b"key:%07d" % i, bytes([i % 251]) * 200, LATER if i % 5 == 0 else None,
                      1000 + i if i % 11 == 0 else None)
               for i in range(first, min(first + size, start + count))]


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> int:
    """Drop the map's pages every 64 KiB of bulk writes instead of every 32 MiB."""
    monkeypatch.setattr(mapping, "REMAP_EVERY", 1 << 16)
    return 1 << 16


def same_records(got: dict[bytes, Record], written: dict[bytes, Record]) -> None:
    """Bytes and absolute expiries exact; a given version kept, the others assigned."""
    assert got.keys() == written.keys()
    for key, rec in written.items():
        have = got[key]
        assert (have.value, have.expires_at_ms) == (rec.value, rec.expires_at_ms), key
        assert have.version is not None and (rec.version is None or have.version == rec.version), key


def test_a_bulk_write_crossing_the_threshold_ends_equal_with_scans_open(small_threshold: int,
                                                                        tmp_path: Path) -> None:
    store = open_lmdb(tmp_path / "x")
    other = open_lmdb(tmp_path / "x", "?db=other")  # the same environment, so the same map
    try:
        written: dict[bytes, Record] = {}
        first = next(batches(0, 400))
        store.set_many(first)
        other.set_many([Record(b"o:%05d" % i, b"%d" % i) for i in range(3000)])
        written.update((r.key, r) for r in first)
        scan, other_scan = store.scan(batch_size=50), other.scan(batch_size=50)
        seen = list(next(scan).records)
        other_seen = list(next(other_scan).records)
        for batch in batches(400, 8000):  # about 1.7 MB: some 25 times the threshold
            store.set_many(batch)
            written.update((r.key, r) for r in batch)
            seen.extend(next(scan).records)  # one page of each paused scan between two batches
            other_seen.extend(next(other_scan).records)
        assert store._shared.map.replaced >= 20
        seen.extend(r for page in scan for r in page.records)
        other_seen.extend(r for page in other_scan for r in page.records)
        got = everything(store)
        same_records(got, written)
        assert [r.key for r in seen] == sorted(got)  # the scan went on where it was, to the end
        assert all(got[r.key] == r for r in seen)
        assert [(r.key, r.value) for r in other_seen] == [(b"o:%05d" % i, b"%d" % i) for i in range(3000)]
        assert store.count() == 8400 and store.get(b"key:0000005") == got[b"key:0000005"]
    finally:
        other.close()
        store.close()
    store = open_lmdb(tmp_path / "x")
    try:
        assert everything(store) == got  # and so on disk
    finally:
        store.close()


def test_expired_records_and_newer_only_writes_across_the_threshold(small_threshold: int,
                                                                    tmp_path: Path) -> None:
    store = open_lmdb(tmp_path / "x")
    try:
        past = now_ms() - 1000
        expected: dict[bytes, Record] = {}
        for batch in batches(0, 6000):
            batch = [Record(r.key, r.value, past, r.version) if int(r.key[4:]) % 7 == 0 else r for r in batch]
            store.set_many(batch)
            expected.update((r.key, r) for r in batch if r.expires_at_ms != past)
        # a second pass of newer versions over every other key, decided in the write transaction
        newer = [Record(k, b"new", r.expires_at_ms, 1 << 62) for k, r in sorted(expected.items())[::2]]
        for i in range(0, len(newer), 300):
            store.set_newer_many(newer[i:i + 300])
        expected.update((r.key, r) for r in newer)
        assert store._shared.map.replaced >= 10
        got = everything(store)
        same_records(got, expected)  # expired ones read as absent, expiries exact
        assert store.count() == len(expected)
        assert store.get(b"key:0000007") is None and store.get(b"key:0000014") is None
    finally:
        store.close()


def test_a_read_in_progress_is_never_pulled_from_under(small_threshold: int, tmp_path: Path) -> None:
    """A drop is skipped while another thread's read transaction is open, and a map growth (which
    cannot be skipped) waits for it; the read sees its snapshot to its end."""
    store = open_lmdb(tmp_path / "x", "?map_size=1MiB&sync=false")
    try:
        store.set_many(next(batches(0, 400)))
        opened, release = threading.Event(), threading.Event()
        results: list[object] = []

        def slow_read(txn: object) -> tuple[bytes | None, bytes | None]:
            opened.set()
            release.wait(10)
            time.sleep(0.2)  # still open after the writer was let go
            return txn.get(b"key:0000001")[16:], txn.get(b"key:0005000")  # type: ignore[attr-defined]

        reader = threading.Thread(target=lambda: results.append(store._read(slow_read)))
        reader.start()
        assert opened.wait(10)
        before = store._shared.map.replaced
        store.set_many(next(batches(400, 400)))  # past the threshold: the drop is skipped
        assert store._shared.map.replaced == before
        release.set()
        for batch in batches(800, 6000):  # 1.2 MB more: the 1 MiB map grows under the open read
            store.set_many(batch)
        reader.join(10)
        assert results == [(bytes([1]) * 200, None)]
        assert store._shared.map.replaced > before
        assert store.count() == 6800
    finally:
        store.close()


def test_reads_in_other_threads_during_bulk_writes_stay_correct(small_threshold: int, tmp_path: Path) -> None:
    store = open_lmdb(tmp_path / "x", "?map_size=1MiB&sync=false")
    try:
        store.set_many(next(batches(0, 400)))
        expected = {r.key: r.value for r in next(batches(0, 400))}
        stop = threading.Event()
        failures: list[object] = []
        reads = [0]

        def read_on() -> None:
            try:
                while not stop.is_set():
                    rec = store.get(b"key:0000123")
                    page = next(store.scan(batch_size=100))
                    if reads[0] % 5 == 0:  # env.info() reads the map too: never while it is replaced
                        store.stats()
                    if rec is None or rec.value != expected[b"key:0000123"] or \
                            [r.value for r in page.records] != [expected[b"key:%07d" % i] for i in range(100)]:
                        failures.append(rec)
                    reads[0] += 1
                    time.sleep(0.0005)
            except BaseException as exc:  # any failure, reported by the test below
                failures.append(exc)

        readers = [threading.Thread(target=read_on) for _ in range(2)]
        for t in readers:
            t.start()
        try:
            for batch in batches(400, 10000):
                store.set_many(batch)
        finally:
            stop.set()
            for t in readers:
                t.join(10)
        assert failures == []
        assert reads[0] > 10 and store._shared.map.replaced >= 5
        assert store.count() == 10400
    finally:
        store.close()


BOOT = """
import runpy, sys
from kvctl_plugins.lmdb import env, mapping
mapping.REMAP_EVERY = 1 << 16
LOG = sys.argv.pop(1)
drop = env.SharedEnv.drop_pages
def counted(self):
    done = drop(self)
    if done:
        with open(LOG, "a") as log:
            log.write(".")
    return done
env.SharedEnv.drop_pages = counted
sys.argv[0] = "kvctl"
runpy.run_module("kvctl", run_name="__main__", alter_sys=True)
"""


def test_a_migrate_killed_while_dropping_pages_resumes_to_an_equal_store(tmp_path: Path) -> None:
    n = 40_000
    src, dst = fresh_url("sqlite", tmp_path), fresh_url("lmdb", tmp_path)
    write(src, [Record(b"key:%06d" % i, b"%06d" % i * 20, LATER if i % 9 == 0 else None) for i in range(n)])
    write(dst, [])
    cp, drops = tmp_path / "cp.json", tmp_path / "drops"
    cmd = ["migrate", src, dst, "--batch-size", "300", "--checkpoint-every", "1", "--checkpoint", str(cp),
           "--resume", "--no-progress", "--json"]
    env = subprocess_env(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", BOOT, str(drops), *cmd], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (cp.exists() and drops.exists() and drops.stat().st_size >= 3):
            assert proc.poll() is None, "the migrate ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint and drops in time"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = subprocess.run([sys.executable, "-c", BOOT, str(drops), *cmd], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed"] and summary["copied"] == n, summary
    assert diff_urls(src, dst, ignore_expiry=False).equal


@pytest.mark.parametrize("keys_only", [False, True], ids=["records", "keys"])
def test_a_read_only_scan_crossing_the_threshold_drops_pages_and_changes_nothing(
        keys_only: bool, small_threshold: int, tmp_path: Path) -> None:
    store = open_lmdb(tmp_path / "x")
    try:
        expected: dict[bytes, Record] = {}
        for batch in batches(0, 4000):
            store.set_many(batch)
            expected.update((r.key, r) for r in batch)
        expected = everything(store)
    finally:
        store.close()
    data = (tmp_path / "x" / "data.mdb").read_bytes()
    reader = open_lmdb(tmp_path / "x", "?readonly=true")
    try:
        pages = reader.scan(batch_size=100, keys_only=keys_only)
        got = [r for page in pages for r in page.records]
        assert reader._shared.map.replaced >= 8  # 4000 values of 200 bytes: 800 KB read
        want = [Record(r.key, b"" if keys_only else r.value, r.expires_at_ms, r.version) for r in expected.values()]
        assert [(r.key, r.value, r.expires_at_ms, r.version) for r in got] == \
            [(r.key, r.value, r.expires_at_ms, r.version) for r in want]
        assert reader.get(b"key:0000010") == expected[b"key:0000010"]
    finally:
        reader.close()
    assert (tmp_path / "x" / "data.mdb").read_bytes() == data  # a read never writes

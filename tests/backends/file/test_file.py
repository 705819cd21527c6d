"""The file backend: conformance, plus what the suite does not cover (durability modes, TTLs
across reopen, compaction, options)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from kvctl_plugins.file import log as file_log

from kvctl.errors import BadURLError, NoSuchStoreError, StoreIOError, UnsupportedError, UsageError
from kvctl.registry import open_url
from kvctl.store import Record, now_ms
from kvctl.testing import StoreConformance


class TestFileConformance(StoreConformance):
    @pytest.fixture
    def store_url(self, tmp_path) -> str:
        return f"file://{tmp_path}/db"


class TestFileConformanceAlways(StoreConformance):
    @pytest.fixture
    def store_url(self, tmp_path) -> str:
        return f"file://{tmp_path}/db?fsync=always&inline_max=16&segment_size=4096"


# == beyond the suite ==========================================================================


def test_versions_grow_across_reopen_compaction_and_clear(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db"
    with open_url(url) as store:
        store.set(b"k", b"1")
        v1 = store.get(b"k").version
        store.set_many([Record(b"far", b"future", None, v1 + (1 << 40))])  # a version from a fast clock
        store.delete(b"far")
    with open_url(url) as store:
        store.set(b"k", b"2")
        v2 = store.get(b"k").version
        assert v2 > v1 + (1 << 40)  # the tombstone's version was seen on replay
        store.compact()
    with open_url(url) as store:
        store.set(b"k", b"3")
        v3 = store.get(b"k").version
        assert v3 > v2
        store.clear()
    with open_url(url) as store:  # clear() dropped every record, the segment header kept the floor
        store.set(b"k", b"4")
        assert store.get(b"k").version > v3


def test_ttls_survive_reopen_and_expired_records_are_dropped(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db"
    with open_url(url) as store:
        store.set(b"short", b"v", ttl_ms=100)
        store.set(b"long", b"v", ttl_ms=3_600_000)
        deadline = store.get(b"long").expires_at_ms
    time.sleep(0.2)
    with open_url(url) as store:
        assert store.get(b"short") is None
        assert store.get(b"long").expires_at_ms == deadline
        assert store.count() == 1 and store.stats()["keys"] == 1
        assert store.delete(b"short") is False


def test_compaction_reclaims_garbage_and_keeps_every_live_record(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db?segment_size=64KiB&compact_ratio=0&inline_max=256"
    model: dict[bytes, bytes] = {}
    rng = random.Random(7)
    with open_url(url) as store:
        for round_ in range(20):
            batch = {b"k%03d" % rng.randrange(300): bytes([round_]) * rng.choice([10, 300, 5000])
                     for _ in range(100)}
            store.set_many([Record(k, v) for k, v in batch.items()])
            model.update(batch)
            gone = [b"k%03d" % rng.randrange(300) for _ in range(20)]
            store.delete_many(gone)
            for k in gone:
                model.pop(k, None)
        store.set(b"ttl", b"x", ttl_ms=1)
        before = store.stats()
        time.sleep(0.01)
        summary = store.compact()
        after = store.stats()
        assert summary["segments_replaced"] == before["segments"]
        assert after["file_bytes"] < before["file_bytes"] / 2
        assert after["garbage_ratio"] < 0.05 and after["compactions"] == 1
        assert {r.key: r.value for p in store.scan() for r in p.records} == model
    with open_url(url) as store:
        assert {r.key: r.value for p in store.scan() for r in p.records} == model
        assert store.stats()["segments"] == 2  # the compacted one and the one writes went to


def test_automatic_compaction_by_garbage_ratio(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db?fsync=never&segment_size=32KiB&compact_min=64KiB&compact_ratio=0.5"
    with open_url(url) as store:
        for i in range(3000):
            store.set(b"k%02d" % (i % 50), b"v" * 200)
        deadline = time.monotonic() + 10
        while store.stats()["compactions"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = store.stats()
        assert stats["compactions"] >= 1
        assert stats["file_bytes"] < 3000 * 200 / 2
        assert store.count() == 50


def test_reads_and_writes_go_on_during_compaction(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db?fsync=never&segment_size=256KiB&compact_ratio=0&inline_max=100"
    model: dict[bytes, bytes] = {}
    with open_url(url) as store:
        for i in range(20_000):
            key, value = b"k%05d" % (i % 5000), b"%d" % i * (1 + i % 40)
            model[key] = value
        store.set_many([Record(k, v) for k, v in model.items()])
        store.set_many([Record(k, v) for k, v in model.items()])
        stop = threading.Event()
        errors: list[BaseException] = []

        def compact_repeatedly() -> None:
            try:
                while not stop.is_set():
                    store.compact()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        thread = threading.Thread(target=compact_repeatedly)
        thread.start()
        try:
            rng = random.Random(3)
            deadline = time.monotonic() + 60
            i = 0
            # at least 3,000 operations, and on until two compactions ran beside them (a loaded
            # machine may finish the writes before the compactor thread gets far)
            while i < 3000 or (store.stats()["compactions"] < 2 and time.monotonic() < deadline):
                i += 1
                key = b"k%05d" % rng.randrange(6000)
                if i % 7 == 0:
                    store.delete(key)
                    model.pop(key, None)
                else:
                    model[key] = b"w%d" % i * (1 + i % 60)
                    store.set(key, model[key])
                probe = b"k%05d" % rng.randrange(6000)
                got = store.get(probe)
                assert (got.value if got else None) == model.get(probe)
        finally:
            stop.set()
            thread.join()
        assert not errors, errors
        assert store.stats()["compactions"] >= 2
        assert {r.key: r.value for p in store.scan() for r in p.records} == model
    with open_url(url) as store:
        assert {r.key: r.value for p in store.scan() for r in p.records} == model


def test_sorted_index_stays_right_through_inserts_deletes_and_purges(tmp_path: Path) -> None:
    rng = random.Random(11)
    model: set[bytes] = set()
    with open_url(f"file://{tmp_path}/db?fsync=never") as store:
        for step in range(60):
            n = rng.choice([1, 5, 31, 33, 500, 3000])
            if rng.random() < 0.6:
                keys = {b"%06d" % rng.randrange(20_000) for _ in range(n)}
                store.set_many([Record(k, b"") for k in keys])
                model |= keys
            else:
                keys = set(rng.sample(sorted(model), min(n, len(model))))
                store.delete_many(list(keys))
                model -= keys
            if step % 3 == 0:
                prefix = b"%d" % rng.randrange(3)
                got = [r.key for p in store.scan(prefix, batch_size=777, keys_only=True) for r in p.records]
                assert got == sorted(k for k in model if k.startswith(prefix))
                assert store.count(prefix) == len(got)
        assert [r.key for p in store.scan(keys_only=True) for r in p.records] == sorted(model)


def count_syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The descriptors of every fdatasync the store makes from now on."""
    syncs: list[int] = []
    real = file_log._fdatasync

    def counting(fd: int) -> None:
        syncs.append(fd)
        real(fd)

    monkeypatch.setattr(file_log, "_fdatasync", counting)
    return syncs


def test_batch_mode_group_commits_single_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = count_syncs(monkeypatch)
    with open_url(f"file://{tmp_path}/db?fsync=batch&batch_ms=20") as store:
        store.set_many([Record(b"a", b"1"), Record(b"b", b"2")])
        assert len(syncs) == 1  # a batch call is durable when it returns
        for i in range(200):
            store.set(b"k%d" % i, b"v")
        deadline = time.monotonic() + 10
        while len(syncs) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.1)  # the window after the last write has closed
        settled = len(syncs)
        assert 1 < settled <= 1 + 200 // 2  # grouped, and flushed after the window
        time.sleep(0.1)
        assert len(syncs) == settled  # nothing dirty: no more syncs


def test_fsync_always_syncs_every_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = count_syncs(monkeypatch)
    with open_url(f"file://{tmp_path}/db?fsync=always") as store:
        store.set(b"a", b"1")
        store.delete(b"a")
        store.set_many([Record(b"b", b"2")])
        assert len(syncs) == 3


def test_values_over_inline_max_are_read_from_disk(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db?inline_max=10"
    with open_url(url) as store:
        store.set(b"small", b"tiny")
        store.set(b"big", b"B" * 1000)
        store.set_many([Record(b"big2", b"C" * 2000, None, 42)])
        assert store.stats()["values_on_disk"] == 2
        assert store.get(b"big").value == b"B" * 1000
    with open_url(url) as store:
        assert store.get_many([b"small", b"big", b"big2"])[2] == Record(b"big2", b"C" * 2000, None, 42)
        assert store.get(b"big").value == b"B" * 1000


@pytest.mark.parametrize("query", ["nope=1", "fsync=sometimes", "compact_ratio=2", "compact_ratio=x",
                                   "segment_size=lots", "readonly=maybe", "timeout=soon"])
def test_bad_options_are_refused(tmp_path: Path, query: str) -> None:
    with pytest.raises(BadURLError):
        open_url(f"file://{tmp_path}/db?{query}")


def test_options_are_read(tmp_path: Path) -> None:
    with open_url(f"file://{tmp_path}/db?fsync=batch&batch_ms=5&segment_size=1MiB") as store:
        stats = store.stats()
        assert stats["fsync"] == "batch" and stats["batch_ms"] == 5
    with open_url(f"file://{tmp_path}/db?batch_ms=1s") as store:
        assert store.stats()["batch_ms"] == 1000


def test_closed_store_and_readonly_misuse(tmp_path: Path) -> None:
    store = open_url(f"file://{tmp_path}/db")
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreIOError, match="closed"):
        store.get(b"k")
    with pytest.raises(StoreIOError, match="closed"):
        store.set(b"k", b"v")
    with pytest.raises(NoSuchStoreError, match=r"no such store: .*missing.* \(nothing was created\)"):
        open_url(f"file://{tmp_path}/missing?readonly=true")
    assert not (tmp_path / "missing").exists()


def test_unstorable_records_are_refused_before_writing(tmp_path: Path) -> None:
    with open_url(f"file://{tmp_path}/db") as store:
        with pytest.raises(UnsupportedError):
            store.set_many([Record(b"ok", b"v"), Record(b"h", b"", kind="hash")])
        with pytest.raises(UsageError, match="64 bits"):
            store.set_many([Record(b"ok", b"v"), Record(b"neg", b"", None, -5)])
        assert store.get(b"ok") is None


def test_relative_path_and_stats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_url("file:rel/db") as store:
        store.set(b"k", b"v")
        stats = store.stats()
    assert (tmp_path / "rel" / "db" / "LOCK").exists()
    for name in ("keys", "live_bytes", "file_bytes", "garbage_ratio", "segments", "segment_files",
                 "recovered_tail_bytes", "fsync", "compactions"):
        assert name in stats
    assert stats["keys"] == 1 and stats["path"] == str(tmp_path / "rel" / "db")


def test_accounting_after_reopen_matches_the_running_store(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db?fsync=never&inline_max=64&segment_size=32KiB&compact_ratio=0"
    rng = random.Random(5)
    with open_url(url) as store:
        for i in range(2000):
            key = b"k%03d" % rng.randrange(400)
            if i % 5 == 0:
                store.delete(key)
            elif i % 7 == 0:
                store.set(key, b"t" * rng.randrange(200), ttl_ms=3_600_000)
            elif i % 11 == 0:  # repeats and overwrites within one batch, some with expiries
                other = b"k%03d" % rng.randrange(400)
                store.set_many([Record(key, b"a"), Record(other, b"b" * 100, now_ms() + 3_600_000),
                                Record(key, b"c" * rng.randrange(200)), Record(other, b"d")])
            else:
                store.set_many([Record(key, b"v" * rng.randrange(200))])
        running = store.stats()
        assert running["live_bytes"] == sum(23 + len(r.key) + len(r.value) for p in store.scan() for r in p.records)
    with open_url(url) as store:
        reopened = store.stats()
    for name in ("keys", "live_bytes", "file_bytes", "garbage_bytes", "values_on_disk", "segments"):
        assert reopened[name] == running[name], name


def test_failed_compaction_leaves_the_store_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from kvctl_plugins.file import compact as file_compact

    def no_space(fd: int, chunks: list[bytes]) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    url = f"file://{tmp_path}/db?compact_ratio=0"
    with open_url(url) as store:
        store.set_many([Record(b"k%d" % i, b"v" * 50) for i in range(100)])
        store.delete_many([b"k%d" % i for i in range(50)])
        monkeypatch.setattr(file_compact, "write_all", no_space)
        with pytest.raises(StoreIOError, match=r"disk full .*\(compaction: the store is unchanged\)"):
            store.compact()
        monkeypatch.undo()
        assert store.count() == 50
        store.set(b"after", b"failure")
        assert not list((tmp_path / "db").glob("*.tmp"))
    with open_url(url) as store:
        assert store.count() == 51 and store.get(b"k60").value == b"v" * 50

"""The rocksdb backend: conformance on disk and in memory, plus what the suite does not cover."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from kvctl_plugins.rocksdb import RocksDBStore

from kvctl.errors import BadURLError, CorruptError, ForeignStoreError, LockedError, StoreIOError
from kvctl.registry import open_url
from kvctl.store import Record
from kvctl.testing import StoreConformance
from kvctl.testing import open_sync as _open_sync


def open_sync(url: str) -> RocksDBStore:
    store = _open_sync(url)
    assert isinstance(store, RocksDBStore)
    return store


class TestRocksDBConformance(StoreConformance):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"rocksdb://{tmp_path / 'db'}"


class TestRocksDBMemoryConformance(StoreConformance):
    @pytest.fixture
    def store_url(self) -> str:
        return "rocksdb://?memory=true"


def test_header_layout_on_disk(tmp_path: Path) -> None:
    from rocksdict import Options, Rdict

    store = open_sync(f"rocksdb://{tmp_path / 'db'}")
    store.set_many([Record(b"k", b"value", 4_102_444_800_000, 77)])
    store.close()
    raw = Rdict(str(tmp_path / "db"), Options(raw_mode=True))
    try:
        stored = raw[b"k"]
    finally:
        raw.close()
    assert isinstance(stored, bytes)
    assert stored[:8] == (4_102_444_800_000).to_bytes(8, "big")
    assert stored[8:16] == (77).to_bytes(8, "big")
    assert stored[16:] == b"value"


def test_versions_survive_reopen_and_clock_moves_on(tmp_path: Path) -> None:
    url = f"rocksdb://{tmp_path / 'db'}"
    store = open_sync(url)
    far = (int(time.time() * 1000) + 86_400_000) << 21  # a version a day in the future
    store.set_many([Record(b"a", b"1", None, far)])
    store.close()
    again = open_sync(url)
    again.set(b"b", b"2")
    assert again.get(b"b").version > far
    again.close()


def test_compression_options_and_bad_option(tmp_path: Path) -> None:
    for codec in ("none", "snappy", "zstd", "zlib"):
        store = open_sync(f"rocksdb://{tmp_path / codec}?compression={codec}")
        store.set_many(Record(b"k%05d" % i, b"x" * 200) for i in range(2000))
        store.compact()
        assert store.count() == 2000 and store.stats()["compression"] == codec
        store.close()
    with pytest.raises(BadURLError):
        open_sync(f"rocksdb://{tmp_path / 'x'}?compression=brotli")
    with pytest.raises(BadURLError):
        open_sync(f"rocksdb://{tmp_path / 'x'}?bogus=1")


def test_batch_is_atomic_when_a_record_is_bad(tmp_path: Path) -> None:
    store = open_sync(f"rocksdb://{tmp_path / 'db'}")
    with pytest.raises(TypeError):
        store.set_many([Record(b"ok", b"v"), Record(b"bad", "not bytes")])  # type: ignore[arg-type]
    assert store.get(b"ok") is None


def test_expired_records_are_purged_by_scans(tmp_path: Path) -> None:
    store = open_sync(f"rocksdb://{tmp_path / 'db'}")
    past = int(time.time() * 1000) - 1
    store.set_many([Record(b"gone%d" % i, b"v", past) for i in range(5)] + [Record(b"kept", b"v")])
    assert store.get_many([b"gone0", b"kept"])[0] is None
    assert store.count() == 1
    assert store.delete(b"gone1") is False  # expired: not counted as deleted
    from rocksdict import ReadOptions

    db = store._db
    assert db is not None
    assert [k for k, _ in db.items(read_opt=ReadOptions())] == [b"kept"]


def test_locked_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "db"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from kvctl.testing import open_sync; "
         f"s = open_sync('rocksdb://{path}'); print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(LockedError, match="another process"):
            open_sync(f"rocksdb://{path}")
    finally:
        holder.communicate("")


def test_not_a_rocksdb_or_not_kvctls(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CorruptError):
        open_sync(f"rocksdb://{tmp_path / 'file'}")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "CURRENT").write_text("garbage\n")
    with pytest.raises(CorruptError):
        open_sync(f"rocksdb://{tmp_path / 'bad'}")
    from rocksdict import Options, Rdict

    options = Options(raw_mode=True)
    options.create_if_missing(True)
    foreign = Rdict(str(tmp_path / "foreign"), options)
    foreign[b"k"] = b"v"
    foreign.close()
    before = Rdict.list_cf(str(tmp_path / "foreign"), Options(raw_mode=True))
    for access in ("write", "read"):
        with pytest.raises(ForeignStoreError, match="not a kvctl store"):
            open_url(f"rocksdb://{tmp_path / 'foreign'}", access=access)
    assert Rdict.list_cf(str(tmp_path / "foreign"), Options(raw_mode=True)) == before == ["default"]
    with pytest.raises(StoreIOError, match="parent directory"):
        open_sync(f"rocksdb://{tmp_path / 'missing' / 'db'}")


def test_readonly_and_memory_rules(tmp_path: Path) -> None:
    url = f"rocksdb://{tmp_path / 'db'}"
    store = open_sync(url)
    store.set(b"k", b"v")
    store.close()
    ro = open_sync(url + "?readonly=true")
    assert ro.get(b"k") is not None
    ro.close()
    with pytest.raises(BadURLError, match="takes no path"):
        open_sync(f"rocksdb://{tmp_path / 'db'}?memory=true")
    mem = open_sync("rocksdb://?memory=true")
    mem.set(b"k", b"v")
    assert mem.stats()["in_memory"] is True and mem.capabilities.persistent is False
    mem.close()

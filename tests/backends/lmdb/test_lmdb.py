"""The lmdb backend: the conformance suite, plus the record layout, map growth, processes, failures."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import lmdb
import pytest

from kvctl.errors import (
    AuthError,
    BadURLError,
    CorruptError,
    ForeignStoreError,
    LimitError,
    NoSuchStoreError,
    StoreIOError,
    UsageError,
)
from kvctl.hlc import make_version
from kvctl.registry import open_url
from kvctl.store import Record, now_ms
from kvctl.testing import StoreConformance
from tests.backends.support import async_adapter_works, two_processes_write


class TestLMDBConformance(StoreConformance):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"lmdb://{tmp_path}/env"


@pytest.fixture
def env_dir(tmp_path: Path) -> str:
    return str(tmp_path / "env")


def raw_records(path: str, db: bytes = b"kvctl") -> dict[bytes, bytes]:
    env = lmdb.open(path, max_dbs=8, readonly=True, lock=False)
    try:
        with env.begin(db=env.open_db(db, create=False)) as txn:
            return dict(txn.cursor())
    finally:
        env.close()


# -- URLs, options, the record layout ------------------------------------------------------------
def test_relative_path_and_stats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    os.mkdir("rel")
    with open_url("lmdb://rel/env?sync=false&map_size=4MiB") as store:
        store.set(b"k", b"v")
        stats = store.stats()
        assert stats["keys"] == 1 and stats["path"] == str(tmp_path / "rel" / "env")
        assert stats["sync"] is False and stats["map_size"] == 4 * 1024 * 1024 and stats["max_key_size"] == 511
    assert (tmp_path / "rel" / "env" / "data.mdb").exists()


@pytest.mark.parametrize("query", ["nope=1", "map_size=lots", "sync=perhaps", "db=kvctl.meta", "max_dbs=1"])
def test_bad_options_are_refused(env_dir: str, query: str) -> None:
    with pytest.raises(BadURLError):
        open_url(f"lmdb://{env_dir}?{query}")
    assert not os.path.exists(env_dir)


def test_record_layout(env_dir: str) -> None:
    """16-byte header: big-endian expiry ms (0 = none), big-endian version; then the value."""
    deadline = now_ms() + 60_000
    with open_url(f"lmdb://{env_dir}") as store:
        store.set_many([Record(b"plain", b"value", None, 42), Record(b"ttl", b"v", deadline, 43)])
        assert store.get(b"plain") == Record(b"plain", b"value", None, 42)
    raw = raw_records(env_dir)
    assert raw[b"plain"] == struct.pack(">QQ", 0, 42) + b"value"
    assert raw[b"ttl"] == struct.pack(">QQ", deadline, 43) + b"v"


# -- limits --------------------------------------------------------------------------------------
def test_key_limits_are_refused_before_writing(env_dir: str) -> None:
    with open_url(f"lmdb://{env_dir}") as store:
        assert store.capabilities.max_key_size == 511
        with pytest.raises(LimitError, match="512 bytes"):
            store.set(b"k" * 512, b"v")
        with pytest.raises(LimitError, match="512 bytes"):
            store.set_many([Record(b"first", b"1"), Record(b"k" * 512, b"v"), Record(b"last", b"2")])
        with pytest.raises(LimitError, match="empty key"):
            store.set_many([Record(b"first", b"1"), Record(b"", b"v")])
        assert store.count() == 0
        store.set(b"k" * 511, b"fits")
        assert store.get(b"k" * 511).value == b"fits"
        assert store.get(b"") is None and store.get(b"k" * 600) is None
        assert store.get_many([b"", b"k" * 600, b"k" * 511])[2] is not None
        assert store.delete(b"") is False and store.delete_many([b"k" * 600]) == 0


# -- map growth ----------------------------------------------------------------------------------
def test_map_grows_instead_of_failing(env_dir: str) -> None:
    with open_url(f"lmdb://{env_dir}?map_size=256KiB&sync=false") as store:
        start = store.stats()["map_size"]
        big = [Record(b"b%05d" % i, os.urandom(1024)) for i in range(2000)]  # ~2 MiB in one batch
        store.set_many(big)
        store.set(b"huge", b"h" * (5 << 20))
        assert store.stats()["map_size"] >= 8 * start
        assert [g.value for g in store.get_many([r.key for r in big])] == [r.value for r in big]
        assert len(store.get(b"huge").value) == 5 << 20
        assert store.count() == 2001
    with open_url(f"lmdb://{env_dir}2?map_size=64KiB&sync=false") as fresh:  # single sets grow it too
        for i in range(300):
            fresh.set(b"s%03d" % i, bytes([i % 256]) * 4096)
        assert fresh.count() == 300 and fresh.get(b"s299").value == bytes([299 % 256]) * 4096


def test_map_grown_by_another_process_is_adopted(env_dir: str) -> None:
    url = f"lmdb://{env_dir}?map_size=256KiB&sync=false"
    with open_url(url) as store:
        store.set(b"before", b"v")
        code = textwrap.dedent(f"""
            from kvctl.registry import open_url
            from kvctl.store import Record
            with open_url({url!r}) as s:
                s.set_many([Record(b"o%05d" % i, b"x" * 1024) for i in range(3000)])
        """)
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        assert store.get(b"o02999") is not None  # the map grew under this process
        store.set(b"after", b"v")
        assert store.count() == 3002


# -- versions and expiry -------------------------------------------------------------------------
def test_versions_grow_across_reopen_even_after_a_future_version(env_dir: str) -> None:
    future = make_version(now_ms() + 86_400_000, 5)  # a version from a clock a day ahead
    with open_url(f"lmdb://{env_dir}") as store:
        store.set(b"a", b"1")
        store.set_many([Record(b"b", b"2", None, future)])
    with open_url(f"lmdb://{env_dir}") as again:
        again.set(b"c", b"3")
        assert again.get(b"c").version > future
        again.set_many([Record(b"d", b"4"), Record(b"e", b"5")])
        d, e = again.get_many([b"d", b"e"])
        assert e.version > d.version > again.get(b"c").version


def test_expired_records_are_deleted_by_later_writes(env_dir: str) -> None:
    with open_url(f"lmdb://{env_dir}") as store:
        store.set_many([Record(b"gone%d" % i, b"v", now_ms() - 1) for i in range(3)] + [Record(b"live", b"v")])
        assert store.stats()["records"] == 4 and store.count() == 1
        assert store.get_many([b"gone0", b"gone1", b"gone2"]) == [None, None, None]
        store.set(b"next", b"v")  # deletes what the reads found expired
    assert sorted(raw_records(env_dir)) == [b"live", b"next"]


def test_short_record_is_corrupt(env_dir: str) -> None:
    with open_url(f"lmdb://{env_dir}") as store:
        store.set(b"ok", b"v")
        env = store._env
        with env.begin(write=True, db=store._db) as txn:
            txn.put(b"bad", b"short")
        with pytest.raises(CorruptError, match="header"):
            store.get(b"bad")
        with pytest.raises(CorruptError):
            list(store.scan())


# -- sharing one environment ---------------------------------------------------------------------
def test_two_stores_share_one_environment(env_dir: str) -> None:
    a = open_url(f"lmdb://{env_dir}?db=a")
    b = open_url(f"lmdb://{env_dir}/?db=b")
    try:
        assert a._shared is b._shared
        a.set(b"k", b"from a")
        b.set(b"k", b"from b")
        a.close()
        assert b.get(b"k").value == b"from b"
    finally:
        a.close()
        b.close()
    with open_url(f"lmdb://{env_dir}?db=a") as again:
        assert again.get(b"k").value == b"from a"


def test_readonly(env_dir: str) -> None:
    with pytest.raises(NoSuchStoreError, match="nothing created"):
        open_url(f"lmdb://{env_dir}?readonly=true")
    assert not os.path.exists(env_dir)
    with open_url(f"lmdb://{env_dir}") as store:
        store.set(b"k", b"v")
    with open_url(f"lmdb://{env_dir}?readonly=true") as ro:
        assert ro.get(b"k").value == b"v"
        with pytest.raises(AuthError):
            ro.set(b"k", b"w")
        with pytest.raises(UsageError):  # the same directory, writable, in the same process
            open_url(f"lmdb://{env_dir}")
    with pytest.raises(NoSuchStoreError, match="no kvctl database other"):
        open_url(f"lmdb://{env_dir}?readonly=true&db=other")


# -- the paths it is given -----------------------------------------------------------------------
def test_regular_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"data")
    with pytest.raises(StoreIOError, match="is a file"):
        open_url(f"lmdb://{path}")
    assert path.read_bytes() == b"data"


def test_missing_parent_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreIOError, match="does not exist"):
        open_url(f"lmdb://{tmp_path}/no/env")
    assert not (tmp_path / "no").exists()


def test_non_lmdb_data_file_is_corrupt_and_untouched(env_dir: str) -> None:
    os.mkdir(env_dir)
    junk = b"not an lmdb file " * 1000
    Path(env_dir, "data.mdb").write_bytes(junk)
    with pytest.raises(CorruptError, match="env"):
        open_url(f"lmdb://{env_dir}")
    assert Path(env_dir, "data.mdb").read_bytes() == junk


def test_environment_of_another_program_is_untouched(env_dir: str) -> None:
    env = lmdb.open(env_dir)
    with env.begin(write=True) as txn:
        txn.put(b"their", b"data")
    env.close()
    with pytest.raises(ForeignStoreError, match="did not create"):
        open_url(f"lmdb://{env_dir}")
    env = lmdb.open(env_dir)
    with env.begin() as txn:
        assert list(txn.cursor()) == [(b"their", b"data")]
    env.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root opens any directory")
def test_unwritable_directory(env_dir: str) -> None:
    open_url(f"lmdb://{env_dir}").close()
    os.chmod(env_dir, 0o500)
    try:
        with pytest.raises(AuthError):
            open_url(f"lmdb://{env_dir}")
    finally:
        os.chmod(env_dir, 0o700)


# -- other processes -----------------------------------------------------------------------------
def test_two_processes_write_one_environment(env_dir: str, tmp_path: Path) -> None:
    url = f"lmdb://{env_dir}?sync=false&map_size=256KiB"  # small map: growth under contention too
    two_processes_write(url, tmp_path)


def test_async_adapter_runs_it_on_a_worker_thread(env_dir: str) -> None:
    async_adapter_works(f"lmdb://{env_dir}")

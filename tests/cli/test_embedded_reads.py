"""LMDB and RocksDB under commands that only read: nothing is created or changed, a missing store
is "no such store" (exit 2), and a truncated LMDB file is refused instead of killing kvctl."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kvctl.errors import CorruptError, NoSuchStoreError
from kvctl.registry import open_url
from kvctl.store import Record
from kvctl.testing.cli import read_commands, run_kvctl

FAMILIES = ["lmdb", "rocksdb"]
# LMDB's reader table: every read transaction writes its slot there by design (shared memory,
# not store data).  Its name is compared; its bytes are not.
RUNTIME_FILES = {"lock.mdb"}


def tree(root: Path) -> dict[str, tuple[bytes, int] | None]:
    """Every path under ``root`` with its bytes and modification time (None for directories and
    runtime files): a file rewritten with the same bytes is a change too."""
    found: dict[str, tuple[bytes, int] | None] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        plain = not path.is_dir() and path.name not in RUNTIME_FILES
        found[rel] = (path.read_bytes(), path.stat().st_mtime_ns) if plain else None
    return found


def filled(url: str) -> str:
    with open_url(url) as store:
        store.set_many([Record(b"k%d" % i, b"v%d" % i) for i in range(50)])
    return url


@pytest.mark.parametrize("family", FAMILIES)
def test_reads_of_a_missing_store_create_nothing(family: str, env: dict[str, str], tmp_path: Path) -> None:
    stores = tmp_path / "stores"
    stores.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    other = filled(f"sqlite://{tmp_path / 'other.db'}")
    url = f"{family}://{stores / 'typo'}"
    for args in read_commands(url, other, out, key="k1"):
        proc = run_kvctl(env, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr == f"kvctl: error: {url}: no {'LMDB' if family == 'lmdb' else 'RocksDB'} store at " \
                              f"{stores / 'typo'} (nothing created)\n", args
        assert list(stores.iterdir()) == [] and list(out.iterdir()) == [], args


@pytest.mark.parametrize("family", FAMILIES)
def test_reads_of_an_existing_store_change_nothing(family: str, env: dict[str, str], tmp_path: Path) -> None:
    url = filled(f"{family}://{tmp_path / 'store'}")
    with open_url(url) as store:  # an expired record: a read that met it used to delete it
        store.set_many([Record(b"gone", b"v", 1)])
    before = tree(tmp_path / "store")
    out = tmp_path / "out"
    out.mkdir()
    other = filled(f"sqlite://{tmp_path / 'other.db'}")
    for args in read_commands(url, other, out, key="k1"):
        proc = run_kvctl(env, *args)
        assert proc.returncode in (0, 1), (args, proc.stderr)  # diff: the stores differ (1)
        assert tree(tmp_path / "store") == before, args
    assert (out / "out.jsonl").read_text().count("\n") == 50


@pytest.mark.parametrize("family", FAMILIES)
def test_a_read_open_refuses_a_missing_store_in_process(family: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()  # an existing, empty directory is no store either
    for path in (tmp_path / "missing", tmp_path / "empty"):
        with pytest.raises(NoSuchStoreError, match="nothing created"):
            open_url(f"{family}://{path}", access="read")
    assert [p.name for p in tmp_path.iterdir()] == ["empty"] and list((tmp_path / "empty").iterdir()) == []


def test_a_bare_copy_of_data_mdb_is_read_without_adding_lock_mdb(tmp_path: Path, env: dict[str, str]) -> None:
    filled(f"lmdb://{tmp_path / 'env'}")
    (tmp_path / "copy").mkdir()
    shutil.copy(tmp_path / "env" / "data.mdb", tmp_path / "copy" / "data.mdb")
    before = tree(tmp_path / "copy")
    proc = run_kvctl(env, "-u", f"lmdb://{tmp_path / 'copy'}", "count")
    assert (proc.returncode, proc.stdout) == (0, "50\n"), proc.stderr
    assert tree(tmp_path / "copy") == before and sorted(os.listdir(tmp_path / "copy")) == ["data.mdb"]


def test_a_read_then_a_write_of_one_lmdb_environment_in_one_process(tmp_path: Path) -> None:
    """migrate between two databases of one environment: the source opens it read-only, the
    destination needs it writable; the shared handle is reopened and the reader keeps working."""
    url = filled(f"lmdb://{tmp_path / 'env'}")
    with open_url(url, access="read") as src:
        assert src._shared.readonly
        with open_url(f"{url}?db=copy") as dst:
            assert not src._shared.readonly and src._shared is dst._shared
            dst.set_many([r for page in src.scan() for r in page.records])
            assert src.count() == dst.count() == 50
        assert src.get(b"k7").value == b"v7"


# -- a truncated data.mdb --------------------------------------------------------------------------
def truncated_copy(tmp_path: Path, size: int) -> str:
    url = f"lmdb://{tmp_path / 'lm'}"
    with open_url(url) as store:
        store.set_many([Record(b"k:%08d" % i, os.urandom(100)) for i in range(1000)])
    shutil.copytree(tmp_path / "lm", tmp_path / "cut")
    os.truncate(tmp_path / "cut" / "data.mdb", size)
    return f"lmdb://{tmp_path / 'cut'}"


@pytest.mark.parametrize("args", [["-u", "{url}", "count"], ["-u", "{url}", "scan"], ["-u", "{url}", "get", "k"],
                                  ["-u", "{url}", "set", "k", "v"],
                                  ["migrate", "{url}", "sqlite://{tmp}/out.db", "--no-progress"]])
def test_a_truncated_lmdb_file_is_refused_not_a_bus_error(args: list[str], env: dict[str, str],
                                                          tmp_path: Path) -> None:
    url = truncated_copy(tmp_path, 50_000)
    size = (tmp_path / "lm" / "data.mdb").stat().st_size
    proc = run_kvctl(env, *[a.format(url=url, tmp=tmp_path) for a in args])
    assert proc.returncode == 65, proc.stderr  # was -SIGBUS: "Bus error", no message
    assert proc.stderr == (f"kvctl: error: {url}: truncated LMDB file {tmp_path}/cut/data.mdb: 50000 bytes, "
                           f"but its last page in use ({size // 4096 - 1}) needs {size} bytes "
                           "(restore it from a complete copy)\n")
    assert (tmp_path / "cut" / "data.mdb").stat().st_size == 50_000


@pytest.mark.parametrize("size", [100, 5000])
def test_an_lmdb_file_cut_inside_its_meta_pages_is_refused(size: int, tmp_path: Path) -> None:
    url = truncated_copy(tmp_path, size)
    with pytest.raises(CorruptError, match="truncated LMDB file"):
        open_url(url, access="read")

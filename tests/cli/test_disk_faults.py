"""Full disks and read-only filesystems, on real tmpfs mounts: one line, exit 74, the store or
directory named, nothing lost, and an interrupted copy that resumes once there is room.

The mounts need root (the tests run as root); a failing mount fails the test rather than
skipping it, so these faults are never silently untested.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvctl.errors import AuthError, StoreIOError, errno_in, filesystem, filesystem_error
from kvctl.registry import open_url
from kvctl.store import Record
from kvctl.testing.cli import run_kvctl

FAMILIES = ["lmdb", "rocksdb"]
NAMES = {"lmdb": "LMDB", "rocksdb": "RocksDB"}


def mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode:
        pytest.fail(f"mount {' '.join(args)} failed (these tests need root): {proc.stderr.strip()}")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 5 MiB tmpfs of the test's own, unmounted at the end."""
    where = tmp_path / "mnt"
    where.mkdir()
    mount("-t", "tmpfs", "-o", "size=5m", "tmpfs", str(where))
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def read_only(where: Path) -> None:
    mount("-o", "remount,ro", str(where))


def one_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("kvctl: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    return proc.stderr


# -- read-only filesystems -------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_a_store_on_a_read_only_mount(family: str, tmpfs: Path, env: dict[str, str]) -> None:
    (tmpfs / "d").mkdir()
    url = f"{family}://{tmpfs / 'd' / 'st'}"
    with open_url(url) as store:
        store.set_many([Record(b"k%d" % i, b"v") for i in range(50)])
    read_only(tmpfs)
    count = run_kvctl(env, "-u", url, "count")  # a read needs no ?readonly=true
    assert (count.returncode, count.stdout, count.stderr) == (0, "50\n", "")
    hint = " (commands that only read can use it; add ?readonly=true to open it read-only)" \
        if family == "lmdb" else ""
    err = one_line(run_kvctl(env, "-u", url, "set", "k", "v"), 74)
    assert err == f"kvctl: error: {url}: read-only filesystem ({tmpfs}/d/st: Read-only file system){hint}\n"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_new_store_on_a_read_only_mount(family: str, tmpfs: Path, env: dict[str, str]) -> None:
    (tmpfs / "d").mkdir()
    read_only(tmpfs)
    url = f"{family}://{tmpfs / 'd' / 'new'}"
    err = one_line(run_kvctl(env, "-u", url, "set", "k", "v"), 74)
    assert err.startswith(f"kvctl: error: {url}: read-only filesystem ({tmpfs}/d"), err
    assert one_line(run_kvctl(env, "-u", url, "count"), 2) == \
        f"kvctl: error: {url}: no {NAMES[family]} store at {tmpfs}/d/new (nothing created)\n"


def test_the_default_store_under_a_read_only_data_home(tmpfs: Path, env: dict[str, str]) -> None:
    read_only(tmpfs)
    env = {**env, "XDG_DATA_HOME": str(tmpfs / "data")}
    err = one_line(run_kvctl(env, "set", "hello", "v"), 74)
    assert err == (f"kvctl: error: cannot create the default store's directory {tmpfs}/data/kvctl: "
                   f"read-only filesystem ({tmpfs}/data: Read-only file system)\n")
    err = one_line(run_kvctl(env, "get", "hello"), 1)  # a read does not try to create the directory
    assert err.startswith(f"kvctl: error: key hello not found in sqlite://{tmpfs}/data/kvctl/default.db")


def test_sync_with_a_read_only_state_home_applies_nothing(tmpfs: Path, env: dict[str, str],
                                                          tmp_path: Path) -> None:
    src = f"sqlite://{tmp_path / 'src.db'}"
    with open_url(src) as store:
        store.set_many([Record(b"k%d" % i, b"v") for i in range(20)])
    (tmpfs / "state").mkdir()
    read_only(tmpfs)
    env = {**env, "XDG_STATE_HOME": str(tmpfs / "state")}
    dst = tmp_path / "dst.db"
    err = one_line(run_kvctl(env, "sync", src, f"sqlite://{dst}"), 74)
    assert err == (f"kvctl: error: cannot write the sync state in {tmpfs}/state/kvctl/sync: read-only "
                   f"filesystem ({tmpfs}/state/kvctl: Read-only file system)\n")
    assert not dst.exists()  # checked before either store was opened
    err = one_line(run_kvctl(env, "migrate", src, f"sqlite://{dst}", "--no-progress"), 74)
    assert f"cannot write the migrate checkpoint in {tmpfs}/state/kvctl/migrate: read-only filesystem" in err
    with open_url(f"sqlite://{dst}", access="read") as store:
        assert store.count() == 0


# -- full disks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_a_full_disk_is_one_line_and_the_copy_resumes(family: str, tmpfs: Path, env: dict[str, str],
                                                      tmp_path: Path) -> None:
    src = f"sqlite://{tmp_path / 'src.db'}"
    with open_url(src) as store:
        store.set_many([Record(b"k:%06d" % i, os.urandom(1000)) for i in range(8000)])  # 8 MB
    url = f"{family}://{tmpfs / 'st'}"
    args = ["migrate", src, url, "--no-progress", "--batch-size", "500"]
    err = one_line(run_kvctl(env, *args), 74)
    assert re.fullmatch(rf"kvctl: error: {re.escape(url)}: disk full \({re.escape(str(tmpfs))}/st: No space left on "
                        r"device\) \(stopped after [\d,]+ keys; progress saved: rerun with --resume to continue\)\n",
                        err), err
    mount("-o", "remount,size=64m", str(tmpfs))
    resumed = run_kvctl(env, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert run_kvctl(env, "diff", src, url).returncode == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_a_full_disk_in_process(family: str, tmpfs: Path) -> None:
    url = f"{family}://{tmpfs / 'st'}"
    full = rf"^{url}: disk full \({tmpfs}/st: No space left on device\)"
    store = open_url(url)
    store.set_many([Record(b"small", b"v")])
    with pytest.raises(StoreIOError, match=full):
        for i in range(12):
            store.set_many([Record(b"b:%02d:%04d" % (i, j), os.urandom(1000)) for j in range(1000)])
    assert store.get(b"small") is not None
    try:
        store.close()  # RocksDB: its log flush repeats "Writer has previous error"
    except StoreIOError as exc:
        assert family == "rocksdb" and re.match(full, str(exc)), exc
    mount("-o", "remount,size=64m", str(tmpfs))
    with open_url(url, access="read") as again:
        assert again.get(b"small") is not None


# -- the shared wording ---------------------------------------------------------------------------
def test_filesystem_error_is_one_wording_for_every_backend(tmp_path: Path) -> None:
    full = filesystem_error("file:///d", errno.ENOSPC, "/d/000001.log")
    assert isinstance(full, StoreIOError) and full.exit_code == 74
    assert str(full) == "file:///d: disk full (/d/000001.log: No space left on device)"
    read_only_fs = filesystem_error("sqlite:///x.db", errno.EROFS, "/x.db", hint="h")
    assert isinstance(read_only_fs, StoreIOError)
    assert str(read_only_fs) == "sqlite:///x.db: read-only filesystem (/x.db: Read-only file system) (h)"
    denied = filesystem_error("lmdb:///e", errno.EACCES)
    assert isinstance(denied, AuthError) and str(denied) == "lmdb:///e: permission denied (Permission denied)"
    assert filesystem_error("x", errno.EIO, "/p") is None and filesystem_error("x", None) is None
    assert errno_in("IO error: No space left on device: While appending to file: /d/1.log") == errno.ENOSPC
    assert errno_in("Invalid argument: Column family not found") is None
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreIOError) as caught, filesystem(f"cannot write state in {tmp_path}"):
        (tmp_path / "file" / "below").mkdir()
    assert str(caught.value) == f"cannot write state in {tmp_path}: Not a directory ({tmp_path}/file/below)"

"""The file backend through the real ``kvctl`` CLI: commands that only read change nothing (a
damaged, torn, missing or locked store), concurrent writers wait their turn, a full disk is one
clear line."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kvctl.registry import open_url
from kvctl.store import Record
from kvctl.testing.cli import run_kvctl
from tests.backends.file.test_corruption import flip

# Every command that only reads, as (arguments before the URL, arguments after it); "-u" puts
# the URL in the global option.
READS = {
    "count": (["-u", "{url}", "count"], []),
    "get": (["-u", "{url}", "get", "first-key"], []),
    "scan": (["-u", "{url}", "scan"], []),
    "export": (["export", "{url}"], ["-o", "{out}/e.jsonl"]),
    "snapshot create": (["snapshot", "create", "{url}"], ["-o", "{out}/s.kvs"]),
}


def read(env: dict[str, str], command: str, url: str, out: Path) -> subprocess.CompletedProcess[str]:
    before, after = READS[command]
    args = [a.format(url=url, out=out) for a in before + after]
    return run_kvctl(env, *args)


def fingerprint(directory: Path) -> dict[str, Any]:
    """Every entry under ``directory`` with its bytes' hash: what a read must leave as it is."""
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(directory.rglob("*"))}


def make_store(directory: Path) -> Path:
    """A store with one single write then one 300-record batch (one frame, as import writes it)."""
    with open_url(f"file://{directory}") as store:
        store.set(b"first-key", b"hello")
        store.set_many([Record(b"k:%05d" % i, b"v" * 100) for i in range(300)])
    (seg,) = sorted(directory.glob("*.log"))
    return seg


def one_line(proc: subprocess.CompletedProcess[str], kind: str) -> str:
    """The one ``kvctl: <kind>:`` line of stderr (export and snapshot also print a summary there)."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("kvctl: ")]
    assert len(lines) == 1 and lines[0].startswith(f"kvctl: {kind}: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("command", list(READS))
def test_a_read_of_a_damaged_last_batch_is_exit_65_and_changes_nothing(
        command: str, tmp_path: Path, env: dict[str, str]) -> None:
    store = tmp_path / "fs"
    seg = make_store(store)
    flip(seg, seg.stat().st_size - 3000)  # inside the last (and only) batch frame
    before = fingerprint(store)
    proc = read(env, command, f"file://{store}", tmp_path)
    assert proc.returncode == 65, proc.stderr
    line = one_line(proc, "error")
    assert str(seg) in line and "corrupt record at offset" in line and "?repair=true" in line
    assert fingerprint(store) == before


@pytest.mark.parametrize("command", list(READS))
def test_a_read_of_a_torn_tail_reads_the_rest_warns_and_changes_nothing(
        command: str, tmp_path: Path, env: dict[str, str]) -> None:
    store = tmp_path / "fs"
    seg = make_store(store)
    size = seg.stat().st_size
    os.truncate(seg, size - 10)  # the batch's frame runs past the end: a write a crash cut short
    before = fingerprint(store)
    proc = read(env, command, f"file://{store}", tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = one_line(proc, "warning")
    assert "did not read" in line and "the file is unchanged" in line
    assert fingerprint(store) == before
    if command == "count":
        assert proc.stdout.strip() == "1"


def test_a_writer_still_cuts_a_torn_tail(tmp_path: Path, env: dict[str, str]) -> None:
    store = tmp_path / "fs"
    seg = make_store(store)
    os.truncate(seg, seg.stat().st_size - 10)
    proc = run_kvctl(env, "-u", f"file://{store}", "set", "after", "crash")
    assert proc.returncode == 0 and "dropped a torn tail" in one_line(proc, "warning")
    proc = run_kvctl(env, "-u", f"file://{store}", "count")
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, "2", "")


@pytest.mark.parametrize("command", list(READS))
@pytest.mark.parametrize("place", ["missing", "empty directory", "missing parent"])
def test_a_read_of_a_missing_store_is_exit_2_and_creates_nothing(
        command: str, place: str, tmp_path: Path, env: dict[str, str]) -> None:
    target = tmp_path / "typo" / "fs" if place == "missing parent" else tmp_path / "fs"
    if place == "empty directory":
        target.mkdir()
    before = fingerprint(tmp_path)
    proc = read(env, command, f"file://{target}", tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert one_line(proc, "error") == f"kvctl: error: no such store: file://{target} (nothing was created)"
    assert fingerprint(tmp_path) == before


@pytest.mark.parametrize("command", list(READS))
def test_reads_work_beside_a_writer_that_holds_the_lock(command: str, tmp_path: Path, env: dict[str, str]) -> None:
    store = tmp_path / "fs"
    make_store(store)
    with open_url(f"file://{store}") as writer:  # this process holds the lock meanwhile
        writer.set(b"while-locked", b"yes")
        proc = read(env, command, f"file://{store}", tmp_path)
    assert proc.returncode == 0 and "kvctl:" not in proc.stderr, proc.stderr
    if command == "count":
        assert proc.stdout.strip() == "302"
    if command == "get":
        assert proc.stdout.strip() == "hello"


WRITER = r"""
import subprocess, sys
url, me, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    proc = subprocess.run([sys.executable, "-m", "kvctl", "-u", url, "set", f"w{me}:{i}", f"v{i}"],
                          capture_output=True, text=True)
    if proc.returncode:
        print(f"set w{me}:{i} failed with {proc.returncode}: {proc.stderr}", flush=True)
"""


def test_concurrent_cli_writers_wait_their_turn_and_every_write_lands(tmp_path: Path, env: dict[str, str]) -> None:
    url = f"file://{tmp_path / 'fs'}"
    writers, each = 4, 12
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(w), str(each)], env=env,
                              stdout=subprocess.PIPE, text=True) for w in range(writers)]
    failures = "".join(p.communicate(timeout=600)[0] for p in procs)
    assert failures == ""
    with open_url(url, access="read") as store:
        data = {r.key: r.value for page in store.scan() for r in page.records}
    assert data == {b"w%d:%d" % (w, i): b"v%d" % i for w in range(writers) for i in range(each)}


def test_a_writer_gives_up_after_timeout_saying_how_long_it_waited(tmp_path: Path, env: dict[str, str]) -> None:
    store = tmp_path / "fs"
    with open_url(f"file://{store}"):
        proc = run_kvctl(env, "-u", f"file://{store}?timeout=400ms", "set", "k", "v")
    assert proc.returncode == 7
    line = one_line(proc, "error")
    assert f"store is locked by PID {os.getpid()}; waited 0.4 s for it" in line and "?timeout=" in line


# Runs in a private mount namespace (``unshare -Urm``) on a 256 KiB tmpfs: $1 mount point, $2 a
# value too large for it, $3 where the results go, $4 an import file too large for it, $5 the
# interpreter running the tests (its kvctl, not whichever python PATH finds first).
FULL_DISK = r"""
mount -t tmpfs -o size=256k none "$1" || exit 99
py="$5"
kv() { "$py" -m kvctl "$@"; }
kv -u "file://$1/fs" set first hello || exit 98
size=$(stat -c %s "$1"/fs/*.log)
kv -u "file://$1/fs" set big --file "$2" 2> "$3/set.err"; echo $? > "$3/set.rc"
kv import "$4" "file://$1/fs" 2> "$3/import.err"; echo $? > "$3/import.rc"
[ "$(stat -c %s "$1"/fs/*.log)" = "$size" ] && echo same > "$3/size"
kv -u "file://$1/fs" get first > "$3/get.out" 2> "$3/get.err"; echo $? > "$3/get.rc"
"""


def test_a_full_disk_is_one_line_naming_the_store_and_what_was_committed(tmp_path: Path, env: dict[str, str]) -> None:
    mount, results = tmp_path / "mnt", tmp_path / "results"
    mount.mkdir()
    results.mkdir()
    value = tmp_path / "value.bin"
    value.write_bytes(os.urandom(400_000))
    lines = tmp_path / "import.jsonl"
    lines.write_text("".join(json.dumps({"key": f"k{i}", "value": "x" * 1000}) + "\n" for i in range(400)))
    try:
        proc = subprocess.run(["unshare", "-Urm", "sh", "-c", FULL_DISK, "sh", str(mount), str(value), str(results),
                               str(lines), sys.executable], env=env, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        pytest.skip("no unshare(1) to mount a small tmpfs")
    if proc.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    url = f"file://{mount}/fs"
    for command in ("set", "import"):
        assert (results / f"{command}.rc").read_text().strip() == "74"
        err = (results / f"{command}.err").read_text()
        (line,) = [x for x in err.splitlines() if x.startswith("kvctl: ")]
        assert line.startswith(f"kvctl: error: {url}: disk full ({mount}/fs: No space left on device) "
                               f"(write to {mount}/fs/"), err
        assert "this write was rolled back; " \
               "everything written before it is committed" in line, err
    assert (results / "size").read_text().strip() == "same"  # no partial batch left in the log
    assert (results / "get.rc").read_text().strip() == "0" and (results / "get.out").read_text() == "hello"
    assert (results / "get.err").read_text() == ""


def test_a_writer_does_not_turn_somebody_elses_directory_into_a_store(tmp_path: Path, env: dict[str, str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    before = fingerprint(home)
    proc = run_kvctl(env, "-u", f"file://{home}", "set", "k", "v")
    assert proc.returncode == 2
    line = one_line(proc, "error")
    assert f"{home} holds other files and no file store; nothing was altered" in line and "?create=true" in line
    assert fingerprint(home) == before
    proc = run_kvctl(env, "-u", f"file://{home}?create=true", "set", "k", "v")  # asked for
    assert proc.returncode == 0, proc.stderr
    proc = run_kvctl(env, "-u", f"file://{home}", "get", "k")  # now it holds a store, which opens as usual
    assert (proc.returncode, proc.stdout) == (0, "v")
    assert run_kvctl(env, "-u", f"file://{home}", "set", "k2", "v").returncode == 0


def test_migrate_workers_read_a_file_source_but_refuse_a_file_destination(tmp_path: Path, env: dict[str, str]) -> None:
    src = tmp_path / "src"
    make_store(src)
    proc = run_kvctl(env, "migrate", f"file://{src}", f"sqlite://{tmp_path / 'dst.db'}", "--workers", "2",
                     "--no-progress")
    assert proc.returncode == 0, proc.stderr  # readers take no lock: every worker reads the source
    proc = run_kvctl(env, "migrate", f"file://{src}", f"file://{tmp_path / 'dst'}", "--workers", "2", "--no-progress",
                     timeout=20)  # at once, not after a worker waited for the lock
    assert proc.returncode == 2
    assert "--workers needs a destination several processes can write at once; the file backend takes one " \
           "writer at a time (use --workers 1)" in one_line(proc, "error")

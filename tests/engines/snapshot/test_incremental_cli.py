"""`kvctl snapshot create --since` and chain restores through the command line: separate processes
on file stores (one full snapshot and three incrementals restore the source; a hole, a wrong order
and a damaged file are refused with nothing written), exit 4 without a change feed, exit 9 for a
cursor the feed no longer covers."""

from __future__ import annotations

import json
import random
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from kvctl.cli.app import main
from kvctl.registry import open_url
from kvctl.testing.cli import run_kvctl
from tests.engines.snapshot.test_incremental import contents, scribble
from tests.engines.support import subprocess_env


def kvctl(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_kvctl(subprocess_env(tmp), *args)


def ok(tmp: Path, *args: str) -> dict[str, object]:
    out = kvctl(tmp, *args, "--json")
    assert out.returncode == 0, out.stderr
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


@pytest.fixture
def chain(tmp_path: Path) -> tuple[str, list[Path]]:
    """A file store and a chain of it taken by the CLI: full, --since FILE, --since CURSOR, --since FILE."""
    src = f"file://{tmp_path}/src"
    rng = random.Random(3)
    scribble(src, rng, 150)
    files = [tmp_path / f"{i}.kvs" for i in range(4)]
    full = ok(tmp_path, "snapshot", "create", src, "-o", str(files[0]))
    assert full["kind"] == "full" and isinstance(full["end_cursor"], str)
    previous = full
    for i in (1, 2, 3):
        scribble(src, rng, 60)
        since = str(previous["end_cursor"]) if i == 2 else str(files[i - 1])
        made = ok(tmp_path, "snapshot", "create", src, "--since", since, "-o", str(files[i]))
        assert made["kind"] == "incremental" and made["base_cursor"] == previous["end_cursor"]
        assert made["records"] == made["upserts"] + made["tombstones"]  # type: ignore[operator]
        previous = made
    time.sleep(0.005)  # keys written with a 1 ms TTL have expired at the source too
    return src, files


def test_a_full_and_three_incrementals_restore_the_source(chain: tuple[str, list[Path]], tmp_path: Path) -> None:
    src, files = chain
    dst = f"file://{tmp_path}/dst"
    done = ok(tmp_path, "snapshot", "restore", *map(str, files), dst)
    assert done["kind"] == "chain" and [s["kind"] for s in done["steps"]] == (  # type: ignore[attr-defined]
        ["full", "incremental", "incremental", "incremental"])
    assert contents(dst) == contents(src)
    # verify and inspect name the kind, both cursors and the counts
    checked = ok(tmp_path, "snapshot", "verify", str(files[2]))
    looked = ok(tmp_path, "snapshot", "inspect", str(files[2]))
    assert checked["ok"] and checked["kind"] == looked["kind"] == "incremental"
    assert checked["base_cursor"] == looked["base_cursor"] and checked["end_cursor"] == looked["end_cursor"]
    assert (checked["upserts"], checked["tombstones"]) == (looked["upserts"], looked["tombstones"])
    text = kvctl(tmp_path, "snapshot", "inspect", str(files[2])).stdout
    assert "tombstones" in text and "end cursor" in text and str(checked["end_cursor"]) in text
    # the store can also come from --url, with the files alone as arguments
    other = f"file://{tmp_path}/dst2"
    out = kvctl(tmp_path, "-u", other, "snapshot", "restore", *map(str, files))
    assert out.returncode == 0, out.stderr
    assert "applied" in out.stdout and "change-feed position" in out.stdout
    assert contents(other) == contents(src)


def test_a_hole_a_wrong_order_and_a_damaged_file_are_refused(chain: tuple[str, list[Path]], tmp_path: Path) -> None:
    _, files = chain
    dst = f"file://{tmp_path}/never"
    hole = kvctl(tmp_path, "snapshot", "restore", str(files[0]), str(files[2]), dst)
    assert hole.returncode == 2 and "hole" in hole.stderr and hole.stderr.count("\n") == 1
    order = kvctl(tmp_path, "snapshot", "restore", str(files[0]), str(files[2]), str(files[1]), dst)
    assert order.returncode == 2 and "chain in this order" in order.stderr
    data = bytearray(files[1].read_bytes())
    data[len(data) // 2] ^= 0x08
    files[1].write_bytes(bytes(data))
    damaged = kvctl(tmp_path, "snapshot", "restore", *map(str, files), dst)
    assert damaged.returncode == 65 and "offset" in damaged.stderr
    assert kvctl(tmp_path, "snapshot", "verify", str(files[1])).returncode == 65
    assert contents(dst) == {}  # nothing was written by any of them


def test_a_store_without_a_change_feed_exits_4(tmp_path: Path) -> None:
    open_url(f"lmdb://{tmp_path}/db").close()  # a read of a missing store would be exit 2
    out = kvctl(tmp_path, "snapshot", "create", f"lmdb://{tmp_path}/db", "--since", "x:1", "-o",
                str(tmp_path / "x.kvs"))
    assert out.returncode == 4 and "no change feed" in out.stderr
    assert not (tmp_path / "x.kvs").exists()


def test_a_cursor_the_feed_does_not_cover_exits_9(tmp_path: Path) -> None:
    a, b = f"file://{tmp_path}/a", f"file://{tmp_path}/b"
    for url in (a, b):
        with open_url(url) as store:
            store.set(b"k", b"v")
    full = ok(tmp_path, "snapshot", "create", a, "-o", str(tmp_path / "a.kvs"))
    out = kvctl(tmp_path, "snapshot", "create", b, "--since", str(tmp_path / "a.kvs"), "-o",
                str(tmp_path / "b.kvs"))  # a cursor of another store's feed
    assert out.returncode == 9 and "full snapshot" in out.stderr and str(full["end_cursor"]) in out.stderr
    assert not (tmp_path / "b.kvs").exists()


def test_since_a_cursor_passed_by_retention_exits_9(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"memory://incr-cli-{uuid.uuid4().hex[:8]}?feed_retention=10"  # in this process: main() in-process
    with open_url(url) as store:
        start = store.feed_cursor()
        for i in range(40):
            store.set(b"k%d" % i, b"v")
    with pytest.raises(SystemExit) as done:
        main(["snapshot", "create", url, "--since", start, "-o", str(tmp_path / "gap.kvs")])
    assert done.value.code == 9
    err = capsys.readouterr().err
    assert "no longer" in err and "take a new full snapshot" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []

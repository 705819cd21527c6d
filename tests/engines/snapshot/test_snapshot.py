"""Snapshots: round trips, merge by version, --replace, typed values, inspect, the CLI, and damage
(a flipped byte anywhere, a truncation, a wrong trailer) refused with the offset named."""

from __future__ import annotations

import asyncio
import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvctl.cli.app import app
from kvctl.engines import snapshot
from kvctl.engines.keyfilter import KeyFilter
from kvctl.engines.snapshot.format import (
    END_MAGIC,
    FRAME_SIZE,
    MAGIC,
    TRAILER_SIZE,
    SnapshotCorrupt,
    SnapshotReader,
    zstd_available,
)
from kvctl.errors import CorruptError, IncompleteError
from kvctl.registry import open_url
from kvctl.store import Record, now_ms
from tests.engines.support import DictStore, read_all, subprocess_env, typed_caps

CODECS = ["zlib", "none"] + (["zstd"] if zstd_available() else [])


def fill(name: str, n: int = 300) -> str:
    url = f"memory://{name}"
    store = open_url(url)
    store.clear()
    later = now_ms() + 3_600_000
    store.set_many([Record(b"user:%04d" % i, b"%d" % i * (i % 50), later if i % 5 == 0 else None)
                    for i in range(n)])
    store.set_many([Record(b"\x00\xff", bytes(range(256))), Record(b"empty", b""),
                    Record(b"big", bytes(range(256)) * 4096)])
    return url


def make(tmp: Path, name: str = "snap", codec: str = "zlib", block_size: int = 2048) -> tuple[str, Path]:
    url = fill(f"snap-{name}")
    path = tmp / f"{name}.kvs"
    snapshot.create(url, path, codec=codec, block_size=block_size).check()
    return url, path


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_is_exact_with_versions_and_expiry(tmp_path: Path, codec: str) -> None:
    url, path = make(tmp_path, f"rt-{codec}", codec)
    summary = snapshot.verify(path)
    assert summary.records == 303 and summary.blocks > 5
    restored = snapshot.restore(path, "memory://snap-rt-out-" + codec)
    restored.check()
    assert read_all(url) == read_all("memory://snap-rt-out-" + codec)


def test_the_file_is_self_describing(tmp_path: Path) -> None:
    _, path = make(tmp_path, "meta")
    data = path.read_bytes()
    assert data.startswith(MAGIC) and data.endswith(END_MAGIC)
    with open(path, "rb") as fh:
        reader = SnapshotReader(fh, str(path))
        meta = reader.header.meta
        # a memory store has a change feed: its position before the scan, for an incremental to follow
        assert meta["kind"] == "full" and meta["base_cursor"] is None and meta["end_cursor"].startswith("m:")
        assert meta["source"] == "memory://snap-meta" and meta["backend"] == "memory" and meta["ordered"]
        assert meta["codec"] == "zlib" and meta["record_checksum"] == "crc32"
        assert meta["file_hash"] == "blake2b-256" and meta["created_at_ms"] <= now_ms()
        assert sum(b.count for b in reader.blocks()) == 303
        assert reader.trailer is not None and reader.trailer.records == 303


def test_source_password_is_redacted_in_the_header(tmp_path: Path) -> None:
    store = DictStore()
    store.data[b"k"] = Record(b"k", b"v")
    from kvctl.url import StoreURL

    store.url = StoreURL.parse("redis://:hunter2@db.example:6379/0")
    path = tmp_path / "pw.kvs"
    asyncio.run(snapshot.create_from(store, path))
    assert b"hunter2" not in path.read_bytes() and b"redis://:***@db.example" in path.read_bytes()


def test_restore_merges_by_version_newer_wins(tmp_path: Path) -> None:
    src = DictStore()
    src.data = {k: Record(k, b"snap", None, 100) for k in [b"a", b"b", b"c", b"d"]}
    path = tmp_path / "merge.kvs"
    asyncio.run(snapshot.create_from(src, path))
    dst = DictStore()
    dst.data[b"a"] = Record(b"a", b"newer here", None, 200)  # kept
    dst.data[b"b"] = Record(b"b", b"older here", None, 50)  # replaced
    dst.data[b"x"] = Record(b"x", b"only here", None, 1)  # kept: a merge deletes nothing
    s = asyncio.run(snapshot.restore_into(path, dst))
    assert {k: r.value for k, r in dst.data.items()} == {
        b"a": b"newer here", b"b": b"snap", b"c": b"snap", b"d": b"snap", b"x": b"only here"}
    assert s.counts is not None and s.counts.skipped == 1 and s.counts.copied == 3


def test_restore_without_versions_lets_the_snapshot_win(tmp_path: Path) -> None:
    src = DictStore()
    src.data = {b"a": Record(b"a", b"snap")}
    path = tmp_path / "nover.kvs"
    asyncio.run(snapshot.create_from(src, path))
    dst = DictStore()
    dst.data[b"a"] = Record(b"a", b"here", None, 999)
    asyncio.run(snapshot.restore_into(path, dst))
    assert dst.data[b"a"].value == b"snap"


def test_replace_makes_the_store_exactly_the_snapshot_under_its_filter(tmp_path: Path) -> None:
    url = fill("snap-filter")
    path = tmp_path / "filtered.kvs"
    s = snapshot.create(url, path, key_filter=KeyFilter(b"user:00"))
    assert s.records == 100
    dst = open_url("memory://snap-filter-out")
    dst.clear()
    dst.set_many([Record(b"user:0099", b"changed", None, 1 << 62), Record(b"user:00zz", b"gone"),
                  Record(b"user:9", b"outside the filter"), Record(b"other", b"stays")])
    snapshot.restore(path, "memory://snap-filter-out", replace=True)
    got = read_all("memory://snap-filter-out")
    assert set(got) == {b"user:%04d" % i for i in range(100)} | {b"other", b"user:9"}
    assert got[b"user:0099"].value == read_all(url)[b"user:0099"].value


def test_expired_records_are_skipped_on_restore(tmp_path: Path) -> None:
    src = DictStore(leak_expired=True)
    src.data = {b"live": Record(b"live", b"1"), b"dead": Record(b"dead", b"2", now_ms() + 50)}
    path = tmp_path / "exp.kvs"
    asyncio.run(snapshot.create_from(src, path))
    import time

    time.sleep(0.06)
    dst = DictStore()
    s = asyncio.run(snapshot.restore_into(path, dst))
    assert set(dst.data) == {b"live"} and s.expired == 1


def test_typed_values_travel_as_dumps_and_are_reported_where_they_cannot(tmp_path: Path) -> None:
    src = DictStore(typed_caps())
    src.data = {b"s": Record(b"s", b"plain"), b"h": Record(b"h", b"\x00dump", None, 7, "hash")}
    path = tmp_path / "typed.kvs"
    created = asyncio.run(snapshot.create_from(src, path))
    assert created.records == 2 and created.incomplete == 0
    typed_dst = DictStore(typed_caps())
    asyncio.run(snapshot.restore_into(path, typed_dst))
    assert typed_dst.data == src.data
    plain_dst = DictStore()
    s = asyncio.run(snapshot.restore_into(path, plain_dst))
    assert set(plain_dst.data) == {b"s"} and s.incomplete == 1
    with pytest.raises(IncompleteError):
        s.check()
    # a source that cannot dump: the snapshot is written without them, and says so
    no_dump = DictStore()
    no_dump.data = dict(src.data)
    c = asyncio.run(snapshot.create_from(no_dump, tmp_path / "partial.kvs"))
    assert c.records == 1 and c.incomplete == 1 and c.problems.incomplete == [(b"h", "hash")]


def test_inspect_counts_and_prefix_histogram(tmp_path: Path) -> None:
    _, path = make(tmp_path, "inspect")
    result = snapshot.inspect(path)
    assert result.records == 303 and result.with_expiry == 60 and result.with_version == 303
    assert result.histogram == [("user:", 300), ("(no separator)", 3)]  # "\x00\xff", "empty", "big"
    assert result.size == path.stat().st_size and result.header["kind"] == "full"
    by_two = snapshot.inspect(path, prefix_len=2)
    assert ("us", 300) in by_two.histogram


def test_a_failed_create_leaves_no_file(tmp_path: Path) -> None:
    class Broken(DictStore):
        async def scan(self, *a, **kw):
            raise CorruptError("broken store")
            yield

    path = tmp_path / "never.kvs"
    with pytest.raises(CorruptError):
        asyncio.run(snapshot.create_from(Broken(), path))
    assert list(tmp_path.iterdir()) == []


# -- damage ------------------------------------------------------------------------------------
def _structure_starts(path: Path) -> list[int]:
    with open(path, "rb") as fh:
        reader = SnapshotReader(fh, str(path))
        starts = [0] + [b.offset for b in reader.blocks()]
        assert reader.trailer is not None
        return [*starts, reader.trailer.offset]


def _refused(path: Path) -> SnapshotCorrupt:
    with pytest.raises(SnapshotCorrupt) as err:
        snapshot.verify(path)
    target = "memory://damaged-" + path.name
    open_url(target).clear()
    with pytest.raises(CorruptError) as err2:
        snapshot.restore(path, target)
    assert open_url(target).count() == 0  # nothing written from a damaged file
    assert "offset" in str(err.value) and err2.value.exit_code == 65
    return err.value


def test_a_flipped_byte_anywhere_is_refused_with_its_offset(tmp_path: Path) -> None:
    _, good = make(tmp_path, "flip", "zlib", 4096)
    data = good.read_bytes()
    starts = _structure_starts(good)
    rng = random.Random(5)
    positions = sorted({0, 9, 14, 20, starts[1], starts[1] + 5, starts[1] + FRAME_SIZE + 3, len(data) - 1,
                        len(data) - 40, len(data) - TRAILER_SIZE, len(data) - TRAILER_SIZE + 6,
                        *(rng.randrange(len(data)) for _ in range(25))})
    for pos in positions:
        bad = tmp_path / f"flip-{pos}.kvs"
        damaged = bytearray(data)
        damaged[pos] ^= 0x20
        bad.write_bytes(bytes(damaged))
        err = _refused(bad)
        # the offset named is where the structure holding the damaged byte starts
        holder = max(s for s in starts if s <= pos)
        assert err.offset == holder, (pos, err.offset, str(err))
        bad.unlink()


@pytest.mark.parametrize("cut", [0, 5, 20, 100, -1, -8, -TRAILER_SIZE, -TRAILER_SIZE - 1, -3000])
def test_a_truncated_file_is_refused_with_the_offset(tmp_path: Path, cut: int) -> None:
    _, good = make(tmp_path, f"cut{cut}", "zlib", 4096)
    data = good.read_bytes()
    bad = tmp_path / "cut.kvs"
    bad.write_bytes(data[:cut])
    err = _refused(bad)
    assert 0 <= err.offset <= len(bad.read_bytes())
    assert "truncated" in str(err) or "magic" in str(err) or "checksum" in str(err)


def test_a_wrong_trailer_is_refused(tmp_path: Path) -> None:
    _, good = make(tmp_path, "trailer", "zlib", 4096)
    data = good.read_bytes()
    t = len(data) - TRAILER_SIZE
    for field_offset, fmt, delta in [(4, "<Q", 1), (12, "<Q", 1), (20, "<Q", 8)]:
        damaged = bytearray(data)
        (value,) = struct.unpack_from(fmt, damaged, t + field_offset)
        struct.pack_into(fmt, damaged, t + field_offset, value + delta)
        bad = tmp_path / f"trailer-{field_offset}.kvs"
        bad.write_bytes(bytes(damaged))
        assert _refused(bad).offset == t
    appended = tmp_path / "appended.kvs"
    appended.write_bytes(data + b"x")
    assert _refused(appended).offset == len(data)


# -- the command line --------------------------------------------------------------------------
def test_cli_create_verify_inspect_restore(tmp_path: Path) -> None:
    runner = CliRunner()
    url = fill("snap-cli")
    path = tmp_path / "cli.kvs"
    r = runner.invoke(app, ["snapshot", "create", url, "-o", str(path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["records"] == 303
    r = runner.invoke(app, ["snapshot", "verify", str(path)])
    assert r.exit_code == 0 and "ok:" in r.output
    r = runner.invoke(app, ["snapshot", "inspect", str(path), "--json"])
    doc = json.loads(r.output)
    assert doc["records"] == 303 and doc["prefixes"][0] == {"prefix": "user:", "keys": 300}
    r = runner.invoke(app, ["snapshot", "inspect", str(path)])
    assert "user:" in r.output and "memory://snap-cli" in r.output
    r = runner.invoke(app, ["snapshot", "restore", str(path), "memory://snap-cli-out", "--replace"])
    assert r.exit_code == 0, r.output
    assert read_all("memory://snap-cli-out") == read_all(url)


def test_cli_subprocess_refuses_a_damaged_file(tmp_path: Path) -> None:
    _, good = make(tmp_path, "sub", "zlib", 4096)
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 1
    bad = tmp_path / "bad.kvs"
    bad.write_bytes(bytes(data))
    env = subprocess_env(tmp_path)
    out = subprocess.run([sys.executable, "-m", "kvctl", "snapshot", "verify", str(bad)], env=env,
                         capture_output=True, timeout=60)
    assert out.returncode == 65 and b"offset" in out.stderr and out.stderr.count(b"\n") == 1
    db = tmp_path / "target.db"
    out = subprocess.run([sys.executable, "-m", "kvctl", "snapshot", "restore", str(bad), f"sqlite://{db}"],
                         env=env, capture_output=True, timeout=60)
    assert out.returncode == 65 and b"offset" in out.stderr

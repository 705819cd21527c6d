"""Damage to the file backend's log: a torn tail (a frame cut by the end of the file) is cut off by
a writer and reported once; a frame wholly inside the file that fails its checksum -- the last one
too -- is an error naming the file and offset (until ?repair=true).  Readers change nothing."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from kvctl_plugins.file import RecoveryWarning
from kvctl_plugins.file.format import FRAME_HEADER_SIZE, RECORD_HEADER_SIZE, SEG_HEADER_SIZE

from kvctl.errors import CorruptError
from kvctl.registry import open_url
from kvctl.store import Record


def url(directory: Path, options: str = "") -> str:
    return f"file://{directory}?fsync=never" + (f"&{options}" if options else "")


def fill(directory: Path, n: int = 50, options: str = "") -> list[int]:
    """``n`` single sets of key-<i> = value-<i>; returns the offset where each record's frame starts."""
    offsets = []
    with open_url(url(directory, options)) as store:
        for i in range(n):
            offsets.append(store.stats()["segment_files"][only_segment(directory).name])
            store.set(b"key-%03d" % i, b"value-%03d" % i)
    return offsets


def only_segment(directory: Path) -> Path:
    (seg,) = sorted(directory.glob("*.log"))
    return seg


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x5A]))


def reopen(directory: Path, options: str = "") -> tuple[dict[bytes, bytes], dict, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_url(url(directory, options)) as store:
            data = {r.key: r.value for p in store.scan() for r in p.records}
            stats = store.stats()
    return data, stats, [str(w.message) for w in caught if issubclass(w.category, RecoveryWarning)]


def expected(n: int, skip: set[int] = frozenset()) -> dict[bytes, bytes]:  # type: ignore[assignment]
    return {b"key-%03d" % i: b"value-%03d" % i for i in range(n) if i not in skip}


def last_batch(directory: Path, n: int = 200) -> tuple[int, int]:
    """One single set, then one ``n``-record batch as one frame (what an import writes).

    Returns where the batch's frame starts and the file's size."""
    with open_url(url(directory)) as store:
        store.set(b"first-key", b"hello")
        start = only_segment(directory).stat().st_size
        store.set_many([Record(b"k:%05d" % i, b"v" * 100) for i in range(n)])
    return start, only_segment(directory).stat().st_size


# Where a flip lands in the last frame: in a value, in the frame header's payload length, count
# or flags, in its checksum, in the last byte of the file.
PLACES = {"payload": 5000, "length": 8, "length past the end": 11, "count": 12, "flags": 16, "crc": 5,
          "last byte": -1}


@pytest.mark.parametrize("where", list(PLACES))
def test_a_flipped_bit_in_the_last_committed_batch_is_corruption_not_a_torn_tail(tmp_path: Path, where: str) -> None:
    start, size = last_batch(tmp_path)
    seg = only_segment(tmp_path)
    place = PLACES[where]
    flip(seg, start + place if place >= 0 else size + place)
    before = seg.read_bytes()
    for options in ("", "readonly=true"):
        with pytest.raises(CorruptError) as err:
            open_url(url(tmp_path, options))
        message = str(err.value)
        assert str(seg) in message and f"offset {start}" in message and "?repair=true" in message, message
        assert seg.read_bytes() == before  # nothing was dropped or truncated, by a writer either
    data, stats, reported = reopen(tmp_path, "repair=true")  # asked for: the batch is skipped
    assert data == {b"first-key": b"hello"} and stats["repaired_bytes"] == size - start
    assert len(reported) == 1 and f"offset {start}" in reported[0]


def test_a_length_flipped_past_the_end_in_the_middle_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    offsets = fill(tmp_path, 50)
    seg = only_segment(tmp_path)
    flip(seg, offsets[20] + 11)  # the payload length's high byte: the frame now "runs past the end"
    before = seg.read_bytes()
    for options in ("", "readonly=true"):
        with pytest.raises(CorruptError, match=f"offset {offsets[20]} .*valid records follow at offset {offsets[21]}"):
            open_url(url(tmp_path, options))
        assert seg.read_bytes() == before  # the 29 records after it were not cut off as a torn tail


def test_repair_in_a_read_skips_the_damage_for_that_read_only(tmp_path: Path) -> None:
    start, _ = last_batch(tmp_path)
    seg = only_segment(tmp_path)
    flip(seg, start + 100)
    before = seg.read_bytes()
    data, stats, reported = reopen(tmp_path, "readonly=true&repair=true")
    assert data == {b"first-key": b"hello"} and stats["repaired_bytes"] > 0
    assert len(reported) == 1 and "the file is unchanged" in reported[0]
    assert seg.read_bytes() == before
    with pytest.raises(CorruptError):  # still damaged: only a writer's repair rewrites the log
        open_url(url(tmp_path))


def test_a_flipped_bit_in_the_last_single_write_is_corruption(tmp_path: Path) -> None:
    offsets = fill(tmp_path, 50)
    seg = only_segment(tmp_path)
    flip(seg, seg.stat().st_size - 2)
    with pytest.raises(CorruptError, match=f"offset {offsets[-1]} \\(checksum mismatch\\)"):
        open_url(url(tmp_path))


@pytest.mark.parametrize("cut", [1, 7, FRAME_HEADER_SIZE - 1, FRAME_HEADER_SIZE + 3])
def test_a_reader_leaves_a_torn_tail_alone_and_says_so(tmp_path: Path, cut: int) -> None:
    offsets = fill(tmp_path, 30)
    seg = only_segment(tmp_path)
    os.truncate(seg, offsets[-1] + cut)
    before = seg.read_bytes()
    data, stats, reported = reopen(tmp_path, "readonly=true")
    assert data == expected(29) and stats["unread_tail_bytes"] == cut
    assert len(reported) == 1 and f"did not read {cut} bytes at offset {offsets[-1]}" in reported[0]
    assert seg.read_bytes() == before
    data, stats, reported = reopen(tmp_path)  # a writer cuts it, once
    assert data == expected(29) and stats["recovered_tail_bytes"] == cut and len(reported) == 1
    assert seg.stat().st_size == offsets[-1]


@pytest.mark.parametrize("cut", [1, 7, FRAME_HEADER_SIZE - 1, FRAME_HEADER_SIZE + 3])
def test_truncated_tail_keeps_the_valid_prefix(tmp_path: Path, cut: int) -> None:
    offsets = fill(tmp_path, 30)
    seg = only_segment(tmp_path)
    os.truncate(seg, offsets[-1] + cut)
    data, stats, reported = reopen(tmp_path)
    assert data == expected(29)
    assert stats["recovered_tail_bytes"] == cut and len(reported) == 1


def test_zeroed_tail_after_a_power_loss_is_cut(tmp_path: Path) -> None:
    fill(tmp_path, 10)
    seg = only_segment(tmp_path)
    with open(seg, "ab") as f:
        f.write(b"\0" * 4096)
    data, stats, _ = reopen(tmp_path)
    assert data == expected(10) and stats["recovered_tail_bytes"] == 4096


def test_writes_after_recovery_land_after_the_valid_prefix(tmp_path: Path) -> None:
    offsets = fill(tmp_path, 10)
    os.truncate(only_segment(tmp_path), offsets[-1] + 5)
    with pytest.warns(RecoveryWarning), open_url(url(tmp_path)) as store:
        store.set(b"after", b"crash")
    data, _, reported = reopen(tmp_path)
    assert data == {**expected(9), b"after": b"crash"} and reported == []


@pytest.mark.parametrize("victim", [0, 17, 48])
def test_corruption_in_the_middle_is_an_error_naming_file_and_offset(tmp_path: Path, victim: int) -> None:
    offsets = fill(tmp_path, 50)
    seg = only_segment(tmp_path)
    flip(seg, offsets[victim] + FRAME_HEADER_SIZE + RECORD_HEADER_SIZE + 2)  # inside the key
    before = seg.read_bytes()
    with pytest.raises(CorruptError) as err:
        open_url(url(tmp_path))
    assert str(seg) in str(err.value) and f"offset {offsets[victim]}" in str(err.value)
    assert "checksum" in str(err.value)
    assert seg.read_bytes() == before  # nothing was dropped or truncated
    with pytest.raises(CorruptError):  # read-only opens refuse it too
        open_url(url(tmp_path, "readonly=true"))


def test_repair_skips_the_damage_keeps_later_records_and_rewrites(tmp_path: Path) -> None:
    offsets = fill(tmp_path, 50)
    flip(only_segment(tmp_path), offsets[20] + FRAME_HEADER_SIZE + 1)
    data, stats, reported = reopen(tmp_path, "repair=true")
    assert data == expected(50, skip={20})
    assert stats["repaired_bytes"] == offsets[21] - offsets[20]
    assert len(reported) == 1 and "skipped" in reported[0]
    data, stats, reported = reopen(tmp_path)  # compaction rewrote the damaged segment
    assert data == expected(50, skip={20}) and reported == [] and stats["repaired_bytes"] == 0


def test_damage_in_an_older_segment_is_an_error_even_at_its_end(tmp_path: Path) -> None:
    with open_url(url(tmp_path, "segment_size=4096")) as store:
        for i in range(200):
            store.set(b"key-%03d" % i, b"x" * 100)
    first = sorted(tmp_path.glob("*.log"))[0]
    flip(first, first.stat().st_size - 3)
    with pytest.raises(CorruptError) as err:
        open_url(url(tmp_path))
    assert str(first) in str(err.value)


def test_a_batch_cut_before_its_last_frame_is_dropped_whole(tmp_path: Path) -> None:
    with open_url(url(tmp_path)) as store:
        store.set(b"before", b"batch")
        store.set_many([Record(b"big-%03d" % i, bytes([i]) * 40_000) for i in range(100)])  # ~4 frames
    seg = only_segment(tmp_path)
    os.truncate(seg, seg.stat().st_size - 10)  # the batch's last frame is torn
    data, stats, reported = reopen(tmp_path)
    assert data == {b"before": b"batch"}
    assert stats["recovered_tail_bytes"] > 3_000_000 and len(reported) == 1


def test_bad_segment_header_is_corrupt(tmp_path: Path) -> None:
    fill(tmp_path, 3)
    flip(only_segment(tmp_path), 3)
    with pytest.raises(CorruptError, match="not a kvctl file-store segment"):
        open_url(url(tmp_path))


def test_a_regular_file_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_bytes(b"hello")
    with pytest.raises(CorruptError, match="not a file-store directory"):
        open_url(f"file://{path}")


def test_header_only_segment_is_an_empty_store(tmp_path: Path) -> None:
    fill(tmp_path, 1)
    os.truncate(only_segment(tmp_path), SEG_HEADER_SIZE)
    data, stats, reported = reopen(tmp_path)
    assert data == {} and stats["recovered_tail_bytes"] == 0 and reported == []

"""Snapshot blocks: version 2's columns round-trip every kind of record exactly and refuse a
damaged block; version 1 files (records one after another), which kvctl wrote before, are still
read, verified and restored."""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from kvctl.engines import snapshot
from kvctl.engines.snapshot.blocks import COLUMNS, REC_V1, TOMBSTONE, TYPED, Columns, decode_v1, decode_v2, encode_v2
from kvctl.engines.snapshot.format import MAGIC, SnapshotCorrupt, SnapshotReader, SnapshotWriter
from kvctl.registry import open_url
from kvctl.store import TOMBSTONE as TOMBSTONE_KIND
from kvctl.store import Record, now_ms

LATER = now_ms() + 3_600_000


def every_kind() -> list[Record]:
    """Puts with and without expiry and version (mixed in one block), empty and binary keys and
    values, a typed value, tombstones with and without a version."""
    return [
        Record(b"plain", b"v"),
        Record(b"", b""),
        Record(b"\x00\xff", bytes(range(256)) * 3),
        Record(b"ttl", b"x", LATER),
        Record(b"past", b"x", -5),  # an expiry before the epoch is kept as given
        Record(b"ver", b"y", None, 2**63 - 1),
        Record(b"both", b"z", LATER, 7),
        Record(b"h", b"\x01dump-payload", LATER, 9, "hash"),
        Record(b"gone", b"", None, 11, TOMBSTONE_KIND),
        Record(b"gone-unversioned", b"", None, None, TOMBSTONE_KIND),
    ]


def uniform(n: int, exp: int | None, ver: int | None) -> list[Record]:
    return [Record(b"k%05d" % i, b"v" * (i % 7), exp, ver) for i in range(n)]


def sized(n: int, key: int | None, value: int | None) -> list[Record]:
    """Keys and values all of one length (an int) or of lengths that vary (None)."""
    return [Record(b"%d" % i * 9 if key is None else (b"%020d" % i)[-key:] if key else b"",
                   bytes([i % 256]) * (i % 5 if value is None else value)) for i in range(n)]


@pytest.mark.parametrize("records", [every_kind(), uniform(50, None, None), uniform(50, LATER, None),
                                     uniform(50, None, 123), uniform(50, LATER, 123), sized(300, 12, 100),
                                     sized(300, 12, None), sized(300, None, 100), sized(300, 0, 0), sized(1, 3, 0),
                                     sized(7000, None, None)],
                         ids=["every-kind", "bare", "expiry", "version", "both", "keys-and-values-of-one-size",
                              "keys-of-one-size", "values-of-one-size", "all-empty", "one", "varied"])
def test_v2_round_trip_is_exact(records: list[Record]) -> None:
    raw = encode_v2(records)
    decoded, tombstones = decode_v2(raw, len(records), check=True)
    assert decoded == records
    assert [type(r) for r in decoded] == [Record] * len(records)
    assert tombstones == sum(r.kind == TOMBSTONE_KIND for r in records)


def reference_v2(records: Sequence[Record]) -> bytes:
    """A v2 block written field by field, record by record, as FORMAT.md describes it."""
    types, flags, klens, vlens, exps, vers, keys, values = (bytearray() for _ in range(8))
    for key, value, exp, ver, kind in records:
        if kind == TOMBSTONE_KIND:
            typ, value, exp = TOMBSTONE, b"", None
        elif kind is not None:
            typ, value = TYPED, bytes((len(kind),)) + kind.encode("ascii") + value
        else:
            typ = 0
        types.append(typ)
        flags.append((exp is not None) | ((ver is not None) << 1))
        klens += struct.pack("<I", len(key))
        vlens += struct.pack("<I", len(value))
        exps += struct.pack("<q", exp or 0)
        vers += struct.pack("<Q", ver or 0)
        keys += key
        values += value
    body = bytes(types + flags + klens + vlens + exps + vers + keys + values)
    return struct.pack("<I", zlib.crc32(body)) + body


@pytest.mark.parametrize("records", [every_kind(), uniform(50, LATER, None), uniform(50, None, 123),
                                     sized(300, None, None), [*uniform(20, None, None), *every_kind()]],
                         ids=["every-kind", "expiry", "version", "varied", "puts-then-every-kind"])
def test_v2_blocks_are_the_format_byte_for_byte(records: list[Record]) -> None:
    assert encode_v2(records) == reference_v2(records)


def test_v2_a_tombstone_drops_a_value_and_an_expiry_given_with_it() -> None:
    raw = encode_v2([Record(b"k", b"ignored", LATER, 3, TOMBSTONE_KIND)])
    assert decode_v2(raw, 1, check=True) == ([Record(b"k", b"", None, 3, TOMBSTONE_KIND)], 1)


def test_v2_damage_is_refused() -> None:
    records = every_kind()
    raw = bytearray(encode_v2(records))
    n = len(records)
    flipped = bytearray(raw)
    flipped[-3] ^= 1  # a value byte: only the block's checksum sees it
    with pytest.raises(ValueError, match="checksum"):
        decode_v2(bytes(flipped), n, check=True)
    longer = bytearray(raw)
    struct.pack_into("<I", longer, 4 + 2 * n, 2)  # the first key's length no longer adds up
    with pytest.raises(ValueError, match="add up"):
        decode_v2(bytes(longer), n, check=False)
    typed = bytearray(raw)
    typed[4] = 7  # the first record's type
    with pytest.raises(ValueError, match="type"):
        decode_v2(bytes(typed), n, check=False)
    with pytest.raises(ValueError, match="too short"):
        decode_v2(bytes(raw[: 4 + COLUMNS * n - 1]), n, check=False)
    bad_tomb = bytearray(raw)
    bad_tomb[4 + 0] = TOMBSTONE  # a tombstone with a value
    with pytest.raises(ValueError, match="record 0: a tombstone"):
        decode_v2(bytes(bad_tomb), n, check=False)
    bad_typed = bytearray(raw)
    bad_typed[4 + 1] = TYPED  # a typed record whose value is shorter than the kind it announces
    with pytest.raises(ValueError, match="record 1: a typed value"):
        decode_v2(bytes(bad_typed), n, check=False)


def test_blocks_are_cut_near_the_target_size_whatever_the_batch_size(tmp_path: Path) -> None:
    records = uniform(2000, None, 1)  # 50 bytes or so each in v2
    for batch in (1, 7, 2000):
        fh = io.BytesIO()
        writer = SnapshotWriter(fh, {}, "none", block_size=4096)
        for i in range(0, len(records), batch):
            writer.add(records[i: i + batch])
        writer.finish()
        fh.seek(0)
        reader = SnapshotReader(fh, "mem")
        blocks = list(reader.blocks())
        assert [r for b in blocks for r in reader.decode(b).records] == records
        assert all(4096 <= b.raw_len < 4096 + 100 for b in blocks[:-1]), [b.raw_len for b in blocks]


def reference_cuts(records: Sequence[Record], block_size: int) -> list[int]:
    """How many records each block holds: a block ends with the record that brings its size
    (columns, key and value as given) to ``block_size``."""
    counts, size, count = [], 0, 0
    for rec in records:
        size += COLUMNS + len(rec.key) + len(rec.value)
        count += 1
        if size >= block_size:
            counts.append(count)
            size = count = 0
    return [*counts, count] if count else counts


@pytest.mark.parametrize("codec", ["none", "zlib"])
def test_a_file_is_the_same_bytes_whatever_the_batches(codec: str) -> None:
    records = [*sized(3000, None, None), *every_kind() * 20, *uniform(500, LATER, 5)]
    files = []
    for batch in (1, 13, 1000, len(records)):
        fh = io.BytesIO()
        writer = SnapshotWriter(fh, {"created_at_ms": 0}, codec, block_size=8000)
        for i in range(0, len(records), batch):
            writer.add(records[i: i + batch])
        writer.finish()
        files.append(fh.getvalue())
    assert files.count(files[0]) == len(files)
    reader = SnapshotReader(io.BytesIO(files[0]), "mem")
    blocks = list(reader.blocks())
    assert [b.count for b in blocks] == reference_cuts(records, 8000)
    start = 0
    for b in blocks:
        assert reader.decompress(b) == reference_v2(records[start: start + b.count])
        start += b.count


# -- version 1 ---------------------------------------------------------------------------------
def encode_v1(records: Sequence[Record]) -> bytes:
    """A block of records one after another, each with its crc32: how kvctl wrote version 1."""
    out = bytearray()
    for rec in records:
        key, value, exp, ver, kind = rec
        flags = (exp is not None) | ((ver is not None) << 1)
        if kind is None:
            data = REC_V1.pack(22 + len(key) + len(value), 0, flags, len(key), exp or 0, ver or 0) + key + value
        elif kind == TOMBSTONE_KIND:
            data = REC_V1.pack(22 + len(key), TOMBSTONE, flags & 2, len(key), 0, ver or 0) + key
        else:
            k = kind.encode("ascii")
            data = (REC_V1.pack(23 + len(key) + len(k) + len(value), TYPED, flags, len(key), exp or 0, ver or 0)
                    + key + bytes((len(k),)) + k + value)
        out += data + struct.pack("<I", zlib.crc32(data))
    return bytes(out)


class V1Writer(SnapshotWriter):
    version = 1

    def _encode(self, columns: Columns) -> bytes:
        return encode_v1(columns.records())


def v1_file(path: Path, records: list[Record], kind: str = "full") -> Path:
    meta = {"kind": kind, "base_cursor": None, "end_cursor": None, "source": "memory://old", "backend": "memory",
            "filter": {"prefix": "", "glob": None}, "ordered": False,
            "capabilities": {"ttl": True, "versions": True, "typed_values": False}}
    with open(path, "wb") as fh:
        writer = V1Writer(fh, meta, "zlib", block_size=512)
        writer.add(records)
        writer.finish()
    return path


def test_v1_blocks_decode_as_before() -> None:
    records = every_kind()
    assert decode_v1(encode_v1(records), check=True) == (records, 2)
    damaged = bytearray(encode_v1(records))
    damaged[REC_V1.size + 2] ^= 1  # inside the first record's key
    with pytest.raises(ValueError, match=r"record 0 .*checksum"):
        decode_v1(bytes(damaged), check=True)


def test_a_v1_file_is_verified_and_restored_exactly(tmp_path: Path) -> None:
    puts = [Record(b"user:%04d" % i, b"%d" % i * (i % 9), LATER if i % 3 == 0 else None, 1000 + i)
            for i in range(300)]
    path = v1_file(tmp_path / "old.kvs", puts)
    assert path.read_bytes()[:8] == MAGIC and struct.unpack_from("<H", path.read_bytes(), 8)[0] == 1
    summary = snapshot.verify(path)
    assert summary.records == 300 and summary.blocks > 5 and summary.with_expiry == 100
    url = "memory://from-v1"
    open_url(url).clear()
    snapshot.restore(path, url).check()
    store = open_url(url)
    assert {r.key: r for p in store.scan(batch_size=1000) for r in p.records} == {r.key: r for r in puts}


def test_a_damaged_v1_record_is_refused_at_its_block(tmp_path: Path) -> None:
    path = v1_file(tmp_path / "old.kvs", [Record(b"k%03d" % i, b"v" * 40, None, i + 1) for i in range(100)])
    with open(path, "rb") as fh:
        reader = SnapshotReader(fh, str(path))
        block = next(reader.blocks())
        raw = bytearray(zlib.decompress(block.stored))
        raw[27] ^= 1  # the first record's key k000 becomes k100, under its crc
        damaged = dataclasses.replace(block, codec=0, stored=bytes(raw))
        with pytest.raises(SnapshotCorrupt) as err:
            reader.decode(damaged)
        assert reader.decode(damaged, check=False).records[0].key == b"k100"  # unchecked, as stored
    assert err.value.offset == block.offset > 0 and "block 0, record 0" in str(err.value)

"""The kvctl snapshot file format, version 2 (specified in FORMAT.md beside this file).

    header   magic "\\x89KVS\\r\\n\\x1a\\n" | u16 version | u16 flags | u32 meta length | meta JSON | u32 crc32
    block*   24-byte frame (tag 'B', codec, count, raw and stored lengths, payload crc32, frame crc32)
             then the stored (compressed) payload: the block's records as columns (:mod:`.blocks`)
    trailer  tag 'T' | u64 records | u64 blocks | u64 own offset | blake2b-256 of all bytes before
             the hash | end magic "KVS-END\\n"

All integers are little-endian.  Writing is streaming (one block in memory, compressed on a
helper thread while the next block is encoded); reading is streaming too, of version 1 files
(records one after another) as well.  Every check failure
raises :class:`SnapshotCorrupt` naming the file offset of the structure that failed.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
import zlib
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from kvctl.errors import CorruptError, UnsupportedError
from kvctl.store import Record

from .._gc import collector_held
from .blocks import U32, Columns, decode_v1, decode_v2, encode_columns, joined

MAGIC = b"\x89KVS\r\n\x1a\n"
END_MAGIC = b"KVS-END\n"
FORMAT_VERSION = 2  # written; version 1 files are still read
READABLE_VERSIONS = (1, 2)

HEAD = struct.Struct("<8sHHI")  # magic, version, flags, meta length
FRAME = struct.Struct("<BBHIIII")  # tag, codec, reserved, count, raw_len, stored_len, payload crc32
FRAME_SIZE = FRAME.size + 4  # + crc32 of the frame
TRAILER_HEAD = struct.Struct("<B3sQQQ")  # tag, reserved, records, blocks, own offset
TRAILER_SIZE = TRAILER_HEAD.size + 32 + len(END_MAGIC)

TAG_BLOCK = 0x42  # "B"
TAG_TRAILER = 0x54  # "T"
CODECS = {"none": 0, "zlib": 1, "zstd": 2}
CODEC_NAMES = {v: k for k, v in CODECS.items()}
BLOCK_RAW_TARGET = 1 << 20  # bytes of encoded records per block before it is compressed


class SnapshotCorrupt(CorruptError):
    """A snapshot failed a check; ``offset`` is the file offset of the structure that failed."""

    def __init__(self, path: str, offset: int, what: str) -> None:
        super().__init__(f"{path}: {what} at offset {offset}")
        self.offset = offset
        self.what = what


def zstd_available() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def default_codec() -> str:
    return "zstd" if zstd_available() else "zlib"


def _compressor(codec: str) -> Any:
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=1).compress
    if codec == "zlib":
        return lambda data: zlib.compress(data, 1)
    return None


def _decompressor(codec: int, path: str, offset: int) -> Any:
    if codec == 1:
        return zlib.decompress
    if codec == 2:
        try:
            import zstandard
        except ImportError:
            raise UnsupportedError(f"{path} holds zstd-compressed blocks: install the zstandard package "
                                   "to read it") from None
        d = zstandard.ZstdDecompressor()
        return lambda data: d.decompress(data)
    if codec == 0:
        return bytes
    raise SnapshotCorrupt(path, offset, f"unknown block codec {codec}")


# -- writing -----------------------------------------------------------------------------------
class SnapshotWriter:
    """Streams records into a snapshot file object (the caller makes the file atomic).

    With ``defer_header`` the blocks go to an anonymous spool file (in ``spool_dir``) and the
    header is written by :meth:`finish`, which may add to the meta what is known only at the
    end (an incremental snapshot's ``end_cursor``); the spool is then copied after it.
    """

    version = FORMAT_VERSION

    def __init__(self, fh: BinaryIO, meta: dict[str, Any], codec: str = "zstd",
                 block_size: int = BLOCK_RAW_TARGET, *, defer_header: bool = False,
                 spool_dir: str | None = None) -> None:
        if codec not in CODECS:
            raise UnsupportedError(f"unknown compression {codec!r} (use {', '.join(CODECS)})")
        self._fh = fh
        self._hash = hashlib.blake2b(digest_size=32)
        self._offset = 0
        self._codec = codec
        self._compress = _compressor(codec)
        self._block_size = block_size
        self._pending_cols: list[Columns] = []  # the block being filled, batch by batch
        self._pending_bytes = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kvctl-snapshot") if self._compress else None
        self._pending: Future[tuple[int, bytes, int, int]] | None = None
        self.records = 0
        self.blocks = 0
        self.raw_bytes = 0
        self._meta = {**meta, "codec": codec, "record_checksum": "crc32", "file_hash": "blake2b-256"}
        # unlinked at once by the OS: a crash leaves no spool behind
        self._spool: BinaryIO | None = (  # closed by finish() or abort()
            tempfile.TemporaryFile(dir=spool_dir) if defer_header else None)  # noqa: SIM115
        if self._spool is None:
            self._write_header(self._meta)

    def _write_header(self, meta: dict[str, Any]) -> None:
        body = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
        head = HEAD.pack(MAGIC, self.version, 0, len(body)) + body
        self._write(head + U32.pack(zlib.crc32(head)))

    def _write(self, data: bytes) -> None:
        self._fh.write(data)
        self._hash.update(data)
        self._offset += len(data)

    def add(self, records: Sequence[Record]) -> None:
        """Append records: a put, a typed put when ``Record.kind`` is set, a tombstone when it
        is kvctl.store.TOMBSTONE (key and version only)."""
        if not records:
            return
        cols = Columns.of(records)
        # the usual batch fills no block: the sum of its sizes says so without the running totals
        if self._pending_bytes + (size := cols.size()) < self._block_size:
            self._pending_cols.append(cols)
            self._pending_bytes += size
            return
        # blocks stay near the target size whatever the batch size: cut where the running total
        # of the batch's sizes fills the block
        sizes = cols.sizes()
        start, base = 0, 0
        while start < len(records):
            cut = bisect_left(sizes, base + self._block_size - self._pending_bytes, lo=start)
            if cut >= len(records):
                self._pending_cols.append(cols.part(start))
                self._pending_bytes += sizes[-1] - base
                return
            self._pending_cols.append(cols.part(start, cut + 1))
            self._flush()
            start, base = cut + 1, sizes[cut]

    def _encode(self, columns: Columns) -> bytes:
        """One block's raw payload in this writer's version."""
        return encode_columns(columns)

    def _flush(self) -> None:
        parts = self._pending_cols
        if not parts:
            return
        self._pending_cols, self._pending_bytes = [], 0
        cols = joined(parts)
        raw = self._encode(cols)
        count = len(cols.keys)
        self._drain()
        if self._pool is not None:
            # compressed on the helper thread while this one encodes the next block
            self._pending = self._pool.submit(self._pack, raw, count)
        else:
            self._emit(0, raw, count, len(raw))

    def _pack(self, raw: bytes, count: int) -> tuple[int, bytes, int, int]:
        stored = self._compress(raw)
        if len(stored) >= len(raw):  # incompressible: store as is
            return 0, raw, count, len(raw)
        return CODECS[self._codec], stored, count, len(raw)

    def _drain(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._emit(*pending.result())

    def _emit(self, codec: int, stored: bytes, count: int, raw_len: int) -> None:
        frame = FRAME.pack(TAG_BLOCK, codec, 0, count, raw_len, len(stored), zlib.crc32(stored))
        put = self._write if self._spool is None else self._spool.write
        put(frame + U32.pack(zlib.crc32(frame)))
        put(stored)
        self.records += count
        self.blocks += 1
        self.raw_bytes += raw_len

    def finish(self, meta_update: dict[str, Any] | None = None) -> int:
        """Write the last block and the trailer; returns the file size.

        ``meta_update`` (deferred header only) is merged into the meta before the header is written.
        """
        try:
            self._flush()
            self._drain()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
        if self._spool is not None:
            self._write_header({**self._meta, **(meta_update or {})})
            self._spool.seek(0)
            while chunk := self._spool.read(1 << 20):
                self._write(chunk)
            self._spool.close()
            self._spool = None
        elif meta_update:
            raise ValueError("the header is already written: create the writer with defer_header=True")
        head = TRAILER_HEAD.pack(TAG_TRAILER, b"\0\0\0", self.records, self.blocks, self._offset)
        self._hash.update(head)
        digest = self._hash.digest()
        self._fh.write(head + digest + END_MAGIC)
        self._offset += len(head) + len(digest) + len(END_MAGIC)
        return self._offset

    def abort(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._spool is not None:
            self._spool.close()
            self._spool = None


# -- reading -----------------------------------------------------------------------------------
@dataclass
class Header:
    version: int
    meta: dict[str, Any]
    size: int  # bytes up to the first block


@dataclass
class Block:
    index: int
    offset: int  # file offset of the frame
    codec: int
    count: int
    raw_len: int
    stored: bytes


@dataclass
class Trailer:
    offset: int
    records: int
    blocks: int
    digest: bytes


@dataclass
class Decoded:
    # every record in file order; a tombstone is Record(key, b"", None, version, kvctl.store.TOMBSTONE)
    records: list[Record] = field(default_factory=list)
    tombstones: int = 0  # how many of ``records`` are tombstones (only incremental snapshots hold any)


class SnapshotReader:
    """Reads and checks a snapshot front to back.

    ``header`` is read on construction; iterate ``blocks()`` (frame and payload checksums are
    checked, the whole-file hash is accumulated), then the trailer is checked when the
    iteration ends.  ``decode(block)`` decompresses one block and checks its records.
    """

    def __init__(self, fh: BinaryIO, name: str) -> None:
        self._fh = fh
        self.name = name
        self._hash = hashlib.blake2b(digest_size=32)
        self._offset = 0
        self.header = self._read_header()
        self.trailer: Trailer | None = None

    def _read(self, n: int, what: str) -> bytes:
        data = self._fh.read(n)
        if len(data) != n:
            raise SnapshotCorrupt(self.name, self._offset + len(data),
                                  f"truncated: the file ends inside {what}")
        self._hash.update(data)
        self._offset += n
        return data

    def _read_header(self) -> Header:
        head = self._read(HEAD.size, "the header")
        magic, version, flags, meta_len = HEAD.unpack(head)
        if magic != MAGIC:
            raise SnapshotCorrupt(self.name, 0, "not a kvctl snapshot (bad magic)")
        if meta_len > 1 << 24:
            raise SnapshotCorrupt(self.name, 0, "header checksum mismatch (implausible header length)")
        try:
            body = self._read(meta_len, "the header")
            (crc,) = U32.unpack(self._read(4, "the header"))
        except SnapshotCorrupt:  # a damaged length is as likely as a short file: name the header
            raise SnapshotCorrupt(self.name, 0, "header damaged or truncated (the file ends inside it)") from None
        if crc != zlib.crc32(head + body):
            raise SnapshotCorrupt(self.name, 0, "header checksum mismatch")
        # only a header that passed its checksum is interpreted
        if version not in READABLE_VERSIONS:
            raise UnsupportedError(f"{self.name} is snapshot format version {version}; this kvctl reads "
                                   f"versions {', '.join(map(str, READABLE_VERSIONS))}")
        if flags != 0:
            raise UnsupportedError(f"{self.name} uses header flags {flags:#x} this kvctl does not know")
        try:
            meta = json.loads(body)
        except ValueError:
            raise SnapshotCorrupt(self.name, HEAD.size, "header metadata is not JSON") from None
        if not isinstance(meta, dict):
            raise SnapshotCorrupt(self.name, HEAD.size, "header metadata is not a JSON object")
        return Header(version, meta, self._offset)

    def blocks(self) -> Iterator[Block]:
        index = 0
        framed = 0  # records the frames announce; the trailer must agree
        while True:
            offset = self._offset
            tag = self._read(1, "a block frame or the trailer")
            if tag[0] == TAG_TRAILER:
                self._read_trailer(offset, tag, index, framed)
                return
            if tag[0] != TAG_BLOCK:
                raise SnapshotCorrupt(self.name, offset, f"expected a block or the trailer, found byte {tag[0]}")
            frame = tag + self._read(FRAME_SIZE - 1, f"block {index}'s frame")
            _, codec, reserved, count, raw_len, stored_len, payload_crc = FRAME.unpack_from(frame)
            if U32.unpack_from(frame, FRAME.size)[0] != zlib.crc32(frame[: FRAME.size]) or reserved:
                raise SnapshotCorrupt(self.name, offset, f"block {index}: frame checksum mismatch")
            stored = self._read(stored_len, f"block {index}")
            if zlib.crc32(stored) != payload_crc:
                raise SnapshotCorrupt(self.name, offset, f"block {index}: payload checksum mismatch")
            yield Block(index, offset, codec, count, raw_len, stored)
            framed += count
            index += 1

    def _read_trailer(self, offset: int, tag: bytes, blocks_seen: int, framed: int) -> None:
        rest = self._fh.read(TRAILER_SIZE - 1)
        data = tag + rest
        if len(data) != TRAILER_SIZE:
            raise SnapshotCorrupt(self.name, offset, "truncated: the trailer is incomplete")
        head = data[: TRAILER_HEAD.size]
        self._hash.update(head[1:])  # the tag byte is already hashed
        _, _, records, blocks, own_offset = TRAILER_HEAD.unpack(head)
        digest = data[TRAILER_HEAD.size: TRAILER_HEAD.size + 32]
        if data[-len(END_MAGIC):] != END_MAGIC:
            raise SnapshotCorrupt(self.name, offset, "trailer: bad end marker")
        if own_offset != offset or blocks != blocks_seen:
            raise SnapshotCorrupt(self.name, offset, f"trailer: says {blocks} blocks at offset {own_offset}, "
                                  f"found {blocks_seen} blocks and the trailer at {offset}")
        if records != framed:
            raise SnapshotCorrupt(self.name, offset, f"trailer: says {records} records, the blocks hold {framed}")
        if self._hash.digest() != digest:
            raise SnapshotCorrupt(self.name, offset, "trailer: whole-file hash mismatch")
        if self._fh.read(1):
            raise SnapshotCorrupt(self.name, offset + TRAILER_SIZE, "unexpected bytes after the trailer")
        self.trailer = Trailer(offset, records, blocks, digest)

    def decompress(self, block: Block) -> bytes:
        """The block's payload decompressed, its length checked."""
        raw = _decompressor(block.codec, self.name, block.offset)(block.stored) if block.codec else block.stored
        if len(raw) != block.raw_len:
            raise SnapshotCorrupt(self.name, block.offset, f"block {block.index}: decompressed to "
                                  f"{len(raw)} bytes, expected {block.raw_len}")
        return raw

    def decode(self, block: Block, *, check: bool = True, raw: bytes | None = None) -> Decoded:
        """The block's records, checked against the checksum of the decompressed block (version
        2) or of each record (version 1).  ``raw``: the block already decompressed.

        ``check=False`` skips that checksum: for a reader that has just verified the whole-file
        hash (and still checks every block's payload checksum as it reads).
        """
        if raw is None:
            raw = self.decompress(block)
        try:
            with collector_held():
                if self.header.version == 1:
                    records, tombstones = decode_v1(raw, check)
                else:
                    records, tombstones = decode_v2(raw, block.count, check)
        except ValueError as exc:
            raise SnapshotCorrupt(self.name, block.offset, f"block {block.index}, {exc}") from None
        if len(records) != block.count:
            raise SnapshotCorrupt(self.name, block.offset, f"block {block.index}: holds {len(records)} records, "
                                  f"its frame says {block.count}")
        return Decoded(records, tombstones)


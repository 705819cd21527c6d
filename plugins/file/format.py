"""The on-disk format of a file store: segment headers, frames and records.

A store is a directory of segment files ``<id>.log`` (``id`` zero-padded, replayed in id order).
Each segment starts with a fixed header, then holds frames back to back::

    segment header (40 bytes)
        magic "KVCTLSEG" | format u16 | flags u16 | segment id u64 | reserved u64
        | version floor u64 | crc32 u32 (of the 36 bytes before it)

    frame header (20 bytes), then payload_len bytes of records
        magic 4 bytes | crc32 u32 (of everything after it: the rest of the header and the payload)
        | payload_len u32 | record count u32 | flags u8 | 3 zero bytes

    record header (23 bytes), then the key, then the value
        key_len u16 | value_len u32 | flags u8 | expires_at_ms i64 | version u64

A frame is the unit of checksumming and of atomicity: one ``set_many``/``delete_many`` call writes
one or more frames and only the last carries ``FRAME_END``, so a crash in the middle of a batch
leaves complete-but-uncommitted frames at the tail, which recovery drops with the torn bytes.
Records stay in write order inside a segment and segments in id order, which is what the change
feed reads (:mod:`.feed`): a cursor is (segment id, version floor, frame offset, records to skip),
the floor telling a segment from the compacted file that later replaced it under the same id
(then the cursor is a gap).  Compaction keeps the newest record per key, in no particular order,
and the tombstones younger than the store's ``tombstone_retention``; automatic compaction leaves
the newest ``feed_retention`` bytes of segments alone so the feed keeps covering them.
The store's identity (random store id and HLC node id) is in the ``META`` file (:mod:`.meta`).

Segment flag ``SEG_REPLACES_EARLIER`` marks a segment written by compaction or ``clear()``: every
segment with a smaller id is obsolete once it exists (it is created under a temporary name and
renamed into place, so its existence is the atomic commit point).  ``version floor`` is a version
no smaller than any version issued before the segment was created, so versions keep growing across
restarts even after compaction or ``clear()`` dropped the records that carried them.
"""

from __future__ import annotations

import struct
import zlib

SEGMENT_SUFFIX = ".log"
TMP_SUFFIX = ".tmp"
FORMAT_VERSION = 1

SEG_MAGIC = b"KVCTLSEG"
SEG_HEADER = struct.Struct("<8sHHQQQI")
SEG_HEADER_SIZE = SEG_HEADER.size  # 40
SEG_REPLACES_EARLIER = 1

FRAME_MAGIC = b"\xf3\x9e\x1b\xc4"  # arbitrary bytes, unlikely in text keys or values
FRAME_HEADER = struct.Struct("<4sIIIB3x")
FRAME_HEADER_SIZE = FRAME_HEADER.size  # 20
FRAME_END = 1  # the last frame of a batch: everything up to here is committed

RECORD_HEADER = struct.Struct("<HIBqQ")
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 23
REC_TOMBSTONE = 1
REC_EXPIRES = 2

# The frame header after its crc field, followed by one record header: the single-record frame
# written by set()/delete() in one pack call.
SINGLE_BODY = struct.Struct("<IIB3xHIBqQ")

MAX_KEY_SIZE = 0xFFFF
MAX_VALUE_SIZE = 64 * 1024 * 1024
# Batches are cut into frames of about this size, so a huge set_many never builds one huge buffer.
FRAME_TARGET = 1024 * 1024
_U32 = struct.Struct("<I")


def segment_name(seg_id: int) -> str:
    return f"{seg_id:012d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    stem = name[: -len(SEGMENT_SUFFIX)] if name.endswith(SEGMENT_SUFFIX) else ""
    return int(stem) if stem.isdigit() else None


def encode_segment_header(seg_id: int, flags: int, version_floor: int) -> bytes:
    head = SEG_HEADER.pack(SEG_MAGIC, FORMAT_VERSION, flags, seg_id, 0, version_floor, 0)[:-4]
    return head + _U32.pack(zlib.crc32(head))


def decode_segment_header(data: bytes) -> tuple[int, int, int] | None:
    """``(segment id, flags, version floor)``, or None when the bytes are not a valid header."""
    if len(data) < SEG_HEADER_SIZE:
        return None
    magic, fmt, flags, seg_id, _reserved, floor, crc = SEG_HEADER.unpack_from(data)
    if magic != SEG_MAGIC or fmt != FORMAT_VERSION or zlib.crc32(data[: SEG_HEADER_SIZE - 4]) != crc:
        return None
    return seg_id, flags, floor


def record_size(key_len: int, value_len: int) -> int:
    """Bytes a record takes inside a frame; the unit of the live/garbage accounting."""
    return RECORD_HEADER_SIZE + key_len + value_len


def encode_frame(payload: bytes, count: int, flags: int) -> tuple[bytes, bytes]:
    """The header of a frame holding ``payload``; written with the payload by one writev."""
    tail = FRAME_HEADER.pack(FRAME_MAGIC, 0, len(payload), count, flags)[8:]
    crc = zlib.crc32(payload, zlib.crc32(tail))
    return FRAME_MAGIC + _U32.pack(crc) + tail, payload


def encode_single(key: bytes, value: bytes, rec_flags: int, expires: int, version: int) -> bytes:
    """A whole one-record committed frame (the path of single-key set/delete)."""
    body = SINGLE_BODY.pack(
        RECORD_HEADER_SIZE + len(key) + len(value), 1, FRAME_END, len(key), len(value), rec_flags, expires, version
    ) + key + value
    return FRAME_MAGIC + _U32.pack(zlib.crc32(body)) + body


class FrameDamage(Exception):
    """A frame that does not check out; ``offset`` is where it starts in its segment.

    ``torn``: the frame was cut by the end of the file (a write that never finished), as opposed
    to a frame that lies wholly inside the file and is damaged.
    """

    def __init__(self, offset: int, reason: str, *, torn: bool = False) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
        self.torn = torn


def check_frame(buf: bytes | memoryview, pos: int) -> tuple[int, int, int]:
    """Validate the frame at ``pos``: ``(payload end, count, flags)`` or raise FrameDamage.

    Only a frame cut by the end of ``buf`` is ``torn``: a header cut short, a declared length
    that runs past the end, or zeros up to the end (space a file system allocated for a write
    that never reached the disk).  A frame that lies wholly inside ``buf`` and fails its
    checksum is damage, wherever it is: a bit flip in a committed batch must not pass for a crash.
    """
    size = len(buf)
    rest = size - pos
    if rest < FRAME_HEADER_SIZE:
        head = bytes(buf[pos : pos + len(FRAME_MAGIC)])
        torn = FRAME_MAGIC.startswith(head) or _zeros_to_end(buf, pos)
        raise FrameDamage(pos, f"truncated frame header ({rest} of {FRAME_HEADER_SIZE} bytes)", torn=torn)
    magic, crc, plen, count, flags = FRAME_HEADER.unpack_from(buf, pos)
    if magic != FRAME_MAGIC:
        zeros = _zeros_to_end(buf, pos)
        raise FrameDamage(pos, "zeros up to the end of the file" if zeros else "no frame starts here (bad magic)",
                          torn=zeros)
    end = pos + FRAME_HEADER_SIZE + plen
    if end > size:
        # A flipped bit in the length field of a complete last frame also points past the end:
        # the bytes that are there then check out with the length they really have.
        whole = _crc_with_length(buf, pos, rest - FRAME_HEADER_SIZE) == crc
        raise FrameDamage(pos, "damaged frame length" if whole else
                          f"frame of {plen} bytes runs past the end of the file", torn=not whole)
    if zlib.crc32(memoryview(buf)[pos + 8 : end]) != crc:
        raise FrameDamage(pos, "checksum mismatch")
    return end, count, flags


def _zeros_to_end(buf: bytes | memoryview, pos: int) -> bool:
    data = buf if isinstance(buf, bytes) else bytes(buf)
    return data.count(0, pos) == len(data) - pos


def _crc_with_length(buf: bytes | memoryview, pos: int, plen: int) -> int:
    """The checksum the frame at ``pos`` would have if its payload were ``plen`` bytes."""
    view = memoryview(buf)
    tail = _U32.pack(plen) + bytes(view[pos + 12 : pos + FRAME_HEADER_SIZE])
    return zlib.crc32(view[pos + FRAME_HEADER_SIZE : pos + FRAME_HEADER_SIZE + plen], zlib.crc32(tail))


def find_next_frame(buf: bytes, start: int) -> int | None:
    """The offset of the first valid frame at or after ``start``, searching byte by byte.

    Used only after damage: to say in the error whether valid records follow it, and where a
    repair resumes.
    """
    pos = buf.find(FRAME_MAGIC, start)
    while pos != -1:
        try:
            check_frame(buf, pos)
            return pos
        except FrameDamage:
            pos = buf.find(FRAME_MAGIC, pos + 1)
    return None

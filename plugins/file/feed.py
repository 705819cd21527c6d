"""The change feed of a file store: the log itself, read forward from a cursor.

A cursor names a position in the log: ``f:<store id>:<segment id>:<floor>:<offset>:<skip>``,
where ``offset`` is the start of a frame in segment ``segment id`` and ``skip`` how many of that
frame's records were already delivered (a page may end inside a frame).  ``floor`` is the
segment header's version floor: compaction writes its output under the id of the last segment it
replaces, with a new floor, so a cursor into the replaced file is told apart from one into its
replacement.  ``changes()`` is then one sequence of positioned reads from the cursor, never a look
at the key directory: what it costs depends on how much changed, not on how many keys there are.

A cursor is served when its segment is still there with the same floor and the offset is a
frame start within the committed log; otherwise the feed no longer covers it (compaction or
``clear()`` removed its segment, or the store lost a tail it had delivered, e.g. a power loss
under ``fsync=never``) and :class:`~kvctl.errors.FeedGapError` sends the sync engine to a diff.

Only committed changes are served: a writer appends each batch whole under its lock (and syncs
pending group-committed writes before handing them out), and a ``?readonly=true`` reader, which
may run in another process next to the writer, serves the log of the snapshot it opened: up to
the last complete batch it found, never a batch the writer is still appending.  A reader's
cursors are positions of the same log, so the next reader (or the writer) goes on from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kvctl.errors import CorruptError, FeedGapError, KvctlError, StoreIOError, UsageError
from kvctl.store import TOMBSTONE, Record

from .format import (
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    REC_EXPIRES,
    REC_TOMBSTONE,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    SEG_HEADER_SIZE,
    FrameDamage,
    check_frame,
)
from .log import Segment

PREFIX = "f:"
# Bytes read per positioned read: a page of ~1,000 small changes in one or two reads.
READ_WINDOW = 256 * 1024
# A page also ends once it holds this many bytes of frames (big values: bounded memory per page).
PAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FeedPos:
    seg: int
    floor: int
    offset: int
    skip: int = 0

    def cursor(self, store_id: str) -> str:
        return f"{PREFIX}{store_id}:{self.seg}:{self.floor}:{self.offset}:{self.skip}"


def parse_cursor(cursor: str, store_id: str, where: str) -> FeedPos:
    """A position of this store's feed; UsageError for a malformed or foreign cursor, FeedGapError
    for a cursor of another file store (the engine then compares the stores)."""
    parts = cursor.split(":") if isinstance(cursor, str) else []
    if len(parts) != 6 or parts[0] + ":" != PREFIX:
        raise UsageError(f"{where}: not a file-store change-feed cursor: {cursor!r}")
    try:
        seg, floor, offset, skip = (int(p) for p in parts[2:])
    except ValueError:
        raise UsageError(f"{where}: malformed change-feed cursor: {cursor!r}") from None
    if parts[1] != store_id:
        raise FeedGapError(f"{where}: cursor {cursor} belongs to another file store (store id {parts[1]})")
    if seg < 0 or floor < 0 or offset < SEG_HEADER_SIZE or skip < 0:
        raise UsageError(f"{where}: malformed change-feed cursor: {cursor!r}")
    return FeedPos(seg, floor, offset, skip)


def frame_length(header: bytes) -> int:
    """The total size of the frame whose header is ``header`` (at least FRAME_HEADER_SIZE bytes)."""
    return FRAME_HEADER_SIZE + FRAME_HEADER.unpack_from(header)[2]


def decode_frame(buf: bytes, pos: int) -> tuple[list[Record], int]:
    """The changes of the frame at ``pos`` of ``buf`` (checksum verified) and where it ends."""
    end, _count, _flags = check_frame(buf, pos)
    unpack = RECORD_HEADER.unpack_from
    hsize = RECORD_HEADER_SIZE
    out: list[Record] = []
    add = out.append
    p = pos + FRAME_HEADER_SIZE
    while p < end:
        klen, vlen, flags, expires, version = unpack(buf, p)
        kpos = p + hsize
        vpos = kpos + klen
        p = vpos + vlen
        if flags & REC_TOMBSTONE:
            add(Record(buf[kpos:vpos], b"", None, version, TOMBSTONE))
        else:
            add(Record(buf[kpos:vpos], buf[vpos:p], expires if flags & REC_EXPIRES else None, version))
    if p != end:
        raise FrameDamage(pos, "records overrun their frame")
    return out, end


def read_page(
    segs: dict[int, Segment], committed_end: Callable[[Segment], int], pos: FeedPos, batch_size: int,
    where: str,
) -> tuple[list[Record], FeedPos]:
    """Up to ``batch_size`` changes from ``pos`` and the position after them.

    Called under the store's lock (a compaction must not close a file under the read).  Only the
    committed log is read: ``committed_end(seg)`` is where the last whole batch of a segment ends.
    """
    seg = segs.get(pos.seg)
    if seg is None or seg.floor != pos.floor:
        raise FeedGapError(f"{where}: the change feed no longer reaches cursor segment {pos.seg} "
                           "(compacted or cleared since; ?feed_retention= keeps more of the log)")
    end = committed_end(seg)
    if pos.offset > end:
        raise FeedGapError(f"{where}: cursor offset {pos.offset} is past the end of segment {pos.seg} "
                           f"({end} bytes): the store lost changes the cursor had seen")
    records: list[Record] = []
    offset, skip = pos.offset, pos.skip
    verified = False  # no frame decoded yet: damage there means the cursor is not a frame start
    page_bytes = 0
    while len(records) < batch_size and page_bytes < PAGE_BYTES:
        if offset >= end:
            later = [i for i in segs if i > seg.id]
            if not later:
                break
            seg = segs[min(later)]
            offset, skip, end = SEG_HEADER_SIZE, 0, committed_end(seg)
            continue
        buf = _pread(seg, offset, min(end - offset, READ_WINDOW), where)
        need = frame_length(buf) if len(buf) >= FRAME_HEADER_SIZE else end - offset + 1
        if need > end - offset:
            raise _damage(seg, offset, "a frame runs past the committed end", verified, where)
        if need > len(buf):  # a frame larger than the window: read exactly it
            buf = _pread(seg, offset, need, where)
        pos_in = 0
        while pos_in < len(buf) and len(records) < batch_size and page_bytes < PAGE_BYTES:
            if len(buf) - pos_in < FRAME_HEADER_SIZE or \
                    frame_length(buf[pos_in:pos_in + FRAME_HEADER_SIZE]) > len(buf) - pos_in:
                break  # the next frame continues past this window: read it on the next round
            try:
                changes, frame_end = decode_frame(buf, pos_in)
            except FrameDamage as damage:
                raise _damage(seg, offset + damage.offset, damage.reason, verified, where) from None
            if skip > len(changes):
                raise FeedGapError(f"{where}: cursor skips {skip} records of a frame of {len(changes)} "
                                   f"at offset {offset + pos_in} of segment {seg.id}: not this log's cursor")
            verified = True
            room = batch_size - len(records)
            take = changes[skip:skip + room]
            records.extend(take)
            if skip + len(take) < len(changes):  # the page ends inside this frame
                return records, FeedPos(seg.id, seg.floor, offset + pos_in, skip + len(take))
            skip = 0
            page_bytes += frame_end - pos_in
            pos_in = frame_end
        offset += pos_in
    # At the end of a sealed segment: point at the next one, so that compacting the sealed one
    # is no gap for this cursor.
    while offset >= committed_end(seg) and skip == 0:
        later = [i for i in segs if i > seg.id]
        if not later:
            break
        seg = segs[min(later)]
        offset = SEG_HEADER_SIZE
    return records, FeedPos(seg.id, seg.floor, offset, skip)


def _pread(seg: Segment, offset: int, length: int, where: str) -> bytes:
    try:
        data = seg.pread(offset, length)
    except OSError as exc:
        raise StoreIOError(f"{where}: read of {seg.path} failed: {exc.strerror}") from None
    if len(data) != length:
        raise CorruptError(f"{seg.path}: {length - len(data)} committed bytes at offset {offset} are missing "
                           "(file truncated?)")
    return data


def _damage(seg: Segment, offset: int, reason: str, verified: bool, where: str) -> KvctlError:
    """Damage where the feed reads.  At the cursor itself it means the cursor is not a frame start
    of this log as it is now (a gap: the engine compares the stores); after a frame that checked
    out it is corruption of the file since it was opened."""
    if not verified:
        return FeedGapError(f"{where}: no valid change at offset {offset} of {seg.path} ({reason}): "
                            "the cursor does not point into this log as it is now")
    return CorruptError(f"{seg.path}: corrupt record at offset {offset} ({reason})",
                        hint="reopen the store to recover, or with ?repair=true")

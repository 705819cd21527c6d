"""Compaction: write the live records of a snapshot into one new segment, off the store's lock.

The store (see ``compacting.CompactingStore._run_compaction``) does the steps that need its lock: it picks
the segments to replace (all of them, after sealing the active one, or for automatic compaction
those behind the change feed's retained tail), takes a snapshot of the key directory, and
afterwards swaps the result in.  This module does the long part between them: it writes
``<id>.log.compact.tmp`` with the ``SEG_REPLACES_EARLIER`` flag, fsyncs it, and reports where each
on-disk value moved.  Tombstones younger than the store's ``tombstone_retention`` are written too
(after the live records), so a deletion stays known to last-writer-wins replication across
compactions and reopens; older ones are purged here.  Until the store renames it over the last
replaced segment nothing on disk has changed, so a crash at any point of this module leaves the
old segments, and a leftover ``.tmp`` file that the next open deletes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kvctl.store import Record

from .format import (
    FRAME_END,
    FRAME_HEADER_SIZE,
    FRAME_TARGET,
    REC_EXPIRES,
    REC_TOMBSTONE,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    SEG_HEADER_SIZE,
    SEG_REPLACES_EARLIER,
    TMP_SUFFIX,
    encode_frame,
    encode_segment_header,
    segment_name,
)
from .index import Entry, Ref
from .log import write_all

COMPACT_SUFFIX = ".compact" + TMP_SUFFIX


class CompactionAborted(Exception):
    """The store was cleared or closed while the compaction ran; its output was deleted."""


@dataclass
class CompactedSegment:
    seg_id: int
    tmp_path: str
    size: int
    records: int = 0  # live records and tombstones written
    moved: list[tuple[bytes, Ref, Ref]] = field(default_factory=list)  # (key, old ref, new ref)
    expired: list[tuple[bytes, Entry]] = field(default_factory=list)  # dropped: expired at snapshot


def write_compacted(
    directory: str,
    seg_id: int,
    version_floor: int,
    keys: Sequence[bytes],
    entries: Sequence[Entry],
    now: int,
    read_ref: Callable[[Ref], bytes],
    cancelled: Callable[[], bool],
    tombstones: Sequence[tuple[bytes, int]] = (),
) -> CompactedSegment:
    """Write the live entries of a snapshot as segment ``seg_id`` under a temporary name.

    ``tombstones`` (key, version) are the deletions to keep (the caller picked them).  Segments
    with an id above ``seg_id`` stay: an on-disk value in one of them is not copied (its record is
    replayed after this segment anyway); a value in memory cannot tell where it came from and
    is copied, which replay tolerates (the later copy of the same record wins).

    ``read_ref`` fetches an on-disk value from the old segments (under the store's lock; it raises
    CompactionAborted when the store changed underneath); ``cancelled`` is polled once per frame.
    The segment is fsynced on return.
    """
    tmp = os.path.join(directory, segment_name(seg_id) + COMPACT_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        out = CompactedSegment(seg_id, tmp, SEG_HEADER_SIZE)
        write_all(fd, [encode_segment_header(seg_id, SEG_REPLACES_EARLIER, version_floor)])
        pack = RECORD_HEADER.pack
        parts: list[bytes] = []
        refs: list[tuple[bytes, Ref, int]] = []  # on-disk values of this frame: (key, old, offset in payload)
        psize = count = 0
        for key, entry in zip(keys, entries, strict=True):
            expires = entry.expires_at_ms
            if expires is not None and expires <= now:
                out.expired.append((key, entry))
                continue
            if entry.__class__ is not Record and entry.seg > seg_id:  # type: ignore[union-attr]
                continue  # its record is in a newer segment the compaction keeps (feed retention)
            if entry.__class__ is Record:
                value = entry.value
            else:
                value = read_ref(entry)  # type: ignore[arg-type]
                refs.append((key, entry, psize + RECORD_HEADER_SIZE + len(key)))  # type: ignore[arg-type]
            parts.append(pack(len(key), len(value), 0 if expires is None else REC_EXPIRES, expires or 0,
                              entry.version))
            parts.append(key)
            parts.append(value)
            psize += RECORD_HEADER_SIZE + len(key) + len(value)
            count += 1
            if psize >= FRAME_TARGET:
                _flush(fd, out, parts, count, refs)
                parts, refs, psize, count = [], [], 0, 0
                if cancelled():
                    raise CompactionAborted
        for key, version in tombstones:
            parts.append(pack(len(key), 0, REC_TOMBSTONE, 0, version))
            parts.append(key)
            psize += RECORD_HEADER_SIZE + len(key)
            count += 1
            if psize >= FRAME_TARGET:
                _flush(fd, out, parts, count, refs)
                parts, refs, psize, count = [], [], 0, 0
                if cancelled():
                    raise CompactionAborted
        if parts:
            _flush(fd, out, parts, count, refs)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return out


def _flush(fd: int, out: CompactedSegment, parts: list[bytes], count: int,
           refs: list[tuple[bytes, Ref, int]]) -> None:
    """One committed frame; each frame ends a batch because the file is committed by its rename."""
    start = out.size
    header, payload = encode_frame(b"".join(parts), count, FRAME_END)
    out.size += write_all(fd, [header, payload])
    out.records += count
    base = start + FRAME_HEADER_SIZE
    for key, old, offset in refs:
        out.moved.append((key, old, Ref(out.seg_id, base + offset, old.vlen, old.expires_at_ms, old.version)))

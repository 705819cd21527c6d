"""Open-time replay: list the segments, drop leftovers, replay committed frames, cut torn tails.

Recovery rules (the format is described in :mod:`.format`):

- ``*.tmp`` files are segments or compactions that never reached their rename: deleted (writer).
- A segment flagged ``SEG_REPLACES_EARLIER`` (written by compaction or ``clear()``) makes every
  segment with a smaller id obsolete: those are deleted (writer) or ignored (reader).  The flag is
  also honoured during replay, so a reader that raced a compaction's rename still ends up right.
- In the newest segment, a frame cut by the end of the file is a torn tail: a writer truncates it
  and reports it once (a ``RecoveryWarning`` and the stats); a reader stops there and says how
  many bytes it did not read, because a writer may be appending at that very moment.  Any other
  damage -- a frame wholly inside the file that fails its checksum, even the last one -- raises
  ``CorruptError`` (see :func:`.log.scan_segment`), unless the store was opened with
  ``repair=true``: then the damaged bytes are skipped, by a writer (which then rewrites the log
  without them) and by a reader alike (which changes nothing).
- A reader never changes a file.  Damage it finds in the newest segment is confirmed by reading
  the segment again: a writer that truncated a torn tail (at its open, or after a failed append)
  and appended over it can show a reader a mix of old and new bytes, and that is no corruption.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from kvctl.errors import CorruptError

from .format import (
    SEG_HEADER_SIZE,
    SEG_REPLACES_EARLIER,
    TMP_SUFFIX,
    decode_segment_header,
    parse_segment_name,
    segment_name,
)
from .index import KeyIndex, load_frames
from .log import Segment, SegmentScan, fsync_dir, scan_segment

_REREADS = 3  # how often a reader reads a changing newest segment again before believing its damage


@dataclass
class Loaded:
    segments: dict[int, Segment] = field(default_factory=dict)  # in id order; the last one is active
    max_version: int = 0  # the largest version or version floor seen: the clock starts past it
    recovered_tail: int = 0  # torn tail bytes cut off
    repaired: int = 0  # damaged bytes skipped on request (repair=true)
    unread_tail: int = 0  # reader only: bytes after the last committed frame, left alone

    def close(self) -> None:
        for seg in self.segments.values():
            seg.close()
        self.segments.clear()


def load_directory(
    directory: str, index: KeyIndex, *, writer: bool, repair: bool, inline_max: int,
    report: Callable[[str], None],
) -> Loaded:
    """Replay a store directory into ``index``; ``report`` gets one line per damage recovered."""
    loaded = Loaded()
    try:
        _load(directory, index, loaded, writer=writer, repair=repair, inline_max=inline_max, report=report)
    except BaseException:
        loaded.close()
        index.clear()
        raise
    return loaded


def _load(directory: str, index: KeyIndex, loaded: Loaded, *, writer: bool, repair: bool, inline_max: int,
          report: Callable[[str], None]) -> None:
    names = os.listdir(directory)
    if writer:
        for name in names:
            if name.endswith(TMP_SUFFIX):
                os.unlink(os.path.join(directory, name))
    ids = sorted(i for i in map(parse_segment_name, names) if i is not None)
    start = 0
    for pos, seg_id in enumerate(ids):
        if read_header(directory, seg_id)[1] & SEG_REPLACES_EARLIER:
            start = pos
    if writer and start:
        for seg_id in ids[:start]:  # left by a compaction or clear() that crashed after its commit
            os.unlink(os.path.join(directory, segment_name(seg_id)))
        fsync_dir(directory)
    ids = ids[start:]
    segments = loaded.segments
    for pos, seg_id in enumerate(ids):
        is_last = pos == len(ids) - 1
        path = os.path.join(directory, segment_name(seg_id))
        seg, data = Segment.open(path, writable=writer and is_last)
        if seg.flags & SEG_REPLACES_EARLIER and segments:
            # Renamed in by a compaction after this reader read the headers: it supersedes what
            # was replayed so far.
            loaded.close()
            index.clear()
        segments[seg_id] = seg
        data, scan = _scan(seg, data, is_last=is_last, repair=repair, writer=writer)
        version = load_frames(data, scan.frames, seg_id, index, inline_max, path)
        loaded.max_version = max(loaded.max_version, version, seg.floor)
        for hole_start, hole_end, why in scan.skipped:
            loaded.repaired += hole_end - hole_start
            done = "as asked by repair=true" if writer else \
                "for this read, as asked by repair=true; the file is unchanged (a command that writes, " \
                "with ?repair=true, rewrites the log without them)"
            report(f"{path}: skipped {hole_end - hole_start} damaged bytes at offset {hole_start} ({why}) {done}")
        if scan.tail_bytes:
            if writer:
                seg.truncate(scan.valid_end)
                seg.sync()
                loaded.recovered_tail += scan.tail_bytes
                report(f"{path}: dropped a torn tail of {scan.tail_bytes} bytes at offset "
                       f"{scan.valid_end} ({scan.tail_reason}); the records before it are kept")
            else:
                loaded.unread_tail = scan.tail_bytes
                report(f"{path}: did not read {scan.tail_bytes} bytes at offset {scan.valid_end} "
                       f"({scan.tail_reason}): a write in progress, or a torn tail the next writer cuts off; "
                       "the file is unchanged")
    if writer and not segments:
        seg = Segment.create(directory, 1, 0, 0)
        segments[seg.id] = seg


def _scan(seg: Segment, data: bytes, *, is_last: bool, repair: bool, writer: bool) -> tuple[bytes, SegmentScan]:
    """Scan ``seg`` (whose bytes are ``data``); a reader reads a newest segment that shows damage
    or a torn tail again, to tell a writer at work from damage that stays.

    Returns the bytes scanned (a reader may have read them again) and the scan.
    """
    for _attempt in range(0 if writer or not is_last else _REREADS):
        try:
            scan = scan_segment(data, seg.path, is_last=is_last, repair=repair)
        except CorruptError:
            again = seg.reread()
            if again[: len(data)] == data:
                raise  # the damaged bytes are still there: real damage, not a writer at work
            data = again
            continue
        if not scan.tail_bytes:
            return data, scan
        again = seg.reread()
        if again == data:
            return data, scan  # a torn tail that stays: no write is in progress
        data = again  # a write was in progress: see whether it committed
    return data, scan_segment(data, seg.path, is_last=is_last, repair=repair)


def read_header(directory: str, seg_id: int) -> tuple[int, int, int]:
    """``(id, flags, version floor)`` of a segment; CorruptError when it is not one."""
    path = os.path.join(directory, segment_name(seg_id))
    with open(path, "rb") as f:
        header = decode_segment_header(f.read(SEG_HEADER_SIZE))
    if header is None or header[0] != seg_id:
        raise CorruptError(f"{path}: not a kvctl file-store segment (bad header at offset 0)")
    return header

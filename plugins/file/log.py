"""Segment files: create, append, read, sync, and the frame scan that recovery is built on."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field

from kvctl.errors import CorruptError

from .format import (
    FRAME_END,
    SEG_HEADER_SIZE,
    TMP_SUFFIX,
    FrameDamage,
    check_frame,
    decode_segment_header,
    encode_segment_header,
    find_next_frame,
    segment_name,
)

_fdatasync = getattr(os, "fdatasync", os.fsync)


def fsync_dir(directory: str) -> None:
    """Make a create, rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, chunks: list[bytes]) -> int:
    """writev until every byte is written (a short write is legal, if rare, on regular files)."""
    total = sum(len(c) for c in chunks)
    done = os.writev(fd, chunks)
    if done == total:
        return total
    rest = b"".join(chunks)[done:]
    while rest:
        rest = rest[os.write(fd, rest):]
    return total


class Segment:
    """One open segment file.  Only the newest segment of a writer is appended to."""

    __slots__ = ("fd", "flags", "floor", "id", "path", "size")

    def __init__(self, path: str, seg_id: int, fd: int, size: int, flags: int, floor: int) -> None:
        self.path = path
        self.id = seg_id
        self.fd = fd
        self.size = size
        self.flags = flags
        self.floor = floor

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @classmethod
    def create(cls, directory: str, seg_id: int, flags: int, floor: int, body: bytes = b"") -> Segment:
        """A new segment made atomically: written under a temporary name, synced, renamed, dir synced.

        A crash leaves either no segment or a complete header, never a half-written one.
        """
        path = os.path.join(directory, segment_name(seg_id))
        tmp = path + TMP_SUFFIX
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            write_all(fd, [encode_segment_header(seg_id, flags, floor), body])
            os.fsync(fd)
            os.rename(tmp, path)
            fsync_dir(directory)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        return cls(path, seg_id, fd, SEG_HEADER_SIZE + len(body), flags, floor)

    @classmethod
    def open(cls, path: str, writable: bool) -> tuple[Segment, bytes]:
        """Open an existing segment and read it whole (the caller replays it)."""
        mode = (os.O_RDWR | os.O_APPEND) if writable else os.O_RDONLY
        fd = os.open(path, mode | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            data = _pread_all(fd, size, 0)
            header = decode_segment_header(data)
            if header is None:
                raise CorruptError(f"{path}: not a kvctl file-store segment (bad header)")
            seg_id, flags, floor = header
            return cls(path, seg_id, fd, len(data), flags, floor), data
        except BaseException:
            os.close(fd)
            raise

    def reread(self) -> bytes:
        """Read the whole segment again (a reader whose view met a writer at work)."""
        data = _pread_all(self.fd, os.fstat(self.fd).st_size, 0)
        self.size = len(data)
        return data

    def append(self, chunks: list[bytes]) -> int:
        """Append and return the offset the chunks start at."""
        start = self.size
        self.size += write_all(self.fd, chunks)
        return start

    def pread(self, offset: int, length: int) -> bytes:
        return _pread_all(self.fd, length, offset)

    def sync(self) -> None:
        _fdatasync(self.fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.size = size

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass
class SegmentScan:
    """What a scan of one segment found: committed frames and any damage."""

    frames: list[tuple[int, int]] = field(default_factory=list)  # (payload start, payload end)
    valid_end: int = SEG_HEADER_SIZE  # end of the last committed frame
    tail_bytes: int = 0  # bytes after valid_end: torn, corrupt or uncommitted
    tail_reason: str = ""
    skipped: list[tuple[int, int, str]] = field(default_factory=list)  # repaired holes (start, end, why)


def scan_segment(data: bytes, path: str, *, is_last: bool, repair: bool) -> SegmentScan:
    """Walk the frames of a segment and decide what is committed.

    A frame cut by the end of the newest segment (:attr:`.format.FrameDamage.torn`), with no
    valid frame after it, is a torn tail: the scan reports it and the caller keeps the valid
    prefix.  Any other damage -- a frame that lies wholly inside the file and fails its checksum,
    even the very last one, or damage in an older segment -- is corruption: a CorruptError naming
    the file and the offset, unless ``repair`` asks to skip the damaged bytes (reported in
    ``skipped``) and keep every valid frame after them.
    """
    scan = SegmentScan()
    frames = scan.frames
    pending: list[tuple[int, int]] = []  # frames of a batch whose last frame is not seen yet
    pending_start = pos = SEG_HEADER_SIZE
    size = len(data)
    while pos < size:
        try:
            end, _count, flags = check_frame(data, pos)
        except FrameDamage as damage:
            resume = find_next_frame(data, pos + 1)
            if damage.torn and is_last and resume is None:  # (a length flipped to point past the end
                scan.tail_reason = damage.reason            # of the file looks torn: valid frames follow)
                break
            if not repair:
                raise _corrupt(path, pos, damage.reason, resume, is_last) from None
            hole_end = resume if resume is not None else size
            scan.skipped.append((pos, hole_end, damage.reason))
            pending.clear()  # a batch cut by damage is not committed
            pos = pending_start = hole_end
            continue
        pending.append((pos, end))
        pos = end
        if flags & FRAME_END:
            frames.extend(pending)
            pending.clear()
            pending_start = pos
    if pending and not scan.tail_reason:
        scan.tail_reason = "batch without its final frame"
    scan.valid_end = pending_start
    scan.tail_bytes = size - pending_start
    if scan.tail_bytes and not is_last and not repair:
        raise _corrupt(path, pending_start, scan.tail_reason, None, is_last)
    return scan


def _corrupt(path: str, offset: int, reason: str, resume: int | None, is_last: bool) -> CorruptError:
    if resume is not None:
        follows = f"; valid records follow at offset {resume}"
    else:
        follows = "" if is_last else "; later segments follow"
    return CorruptError(f"{path}: corrupt record at offset {offset} ({reason}){follows}", hint=REPAIR_HINT)


# What a CorruptError from the scan tells the user to do (a read with repair=true skips the
# damage for that read only; a writer with repair=true also rewrites the log without it).
REPAIR_HINT = "nothing was changed; reopen with ?repair=true to skip the damaged bytes"


class GroupCommit:
    """fsync=batch for single-key writes: one fdatasync covers every write of a window.

    A write marks the store dirty; this thread syncs within ``interval_s`` of the first dirty
    write.  ``sync_now`` is the store's own sync (under its lock, on the current active segment).
    """

    def __init__(self, interval_s: float, sync_now) -> None:
        self._interval = interval_s
        self._sync_now = sync_now
        self._cond = threading.Condition()
        self._dirty = False
        self._stopped = False
        self._thread: threading.Thread | None = None

    def mark(self) -> None:
        if self._dirty:
            return
        with self._cond:
            self._dirty = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kvctl-file-sync", daemon=True)
                self._thread.start()
            self._cond.notify()

    @property
    def dirty(self) -> bool:
        """Writes are waiting for the window's fsync."""
        return self._dirty

    def clear(self) -> None:
        """The caller just synced everything."""
        self._dirty = False

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._dirty and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                self._cond.wait(self._interval)  # let the window fill; stop() cuts it short
            if self._dirty:
                self._dirty = False
                self._sync_now()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

"""Encoding a write call into frames: limits, versions, record headers, frame cuts.

Nothing here touches the disk or the key directory, so a batch that fails a check raises before
anything is written (all or nothing).  Versions come from the store's HLC: one reading per batch,
then counter ticks (``+ _STEP``), observed back into the clock, which orders the records exactly
as one ``now()`` per record would at a fraction of the cost.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from kvctl.errors import UnsupportedError, UsageError
from kvctl.hlc import HLC, make_version
from kvctl.plugin_kit import check_limits, new_record, show_key
from kvctl.store import Capabilities, Record

from .format import (
    FRAME_END,
    FRAME_HEADER_SIZE,
    FRAME_TARGET,
    MAX_KEY_SIZE,
    MAX_VALUE_SIZE,
    REC_EXPIRES,
    REC_TOMBSTONE,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    encode_frame,
)
from .index import Entry, Ref

STEP = make_version(0, 1)  # one tick of the HLC counter


@dataclass
class EncodedBatch:
    chunks: list[bytes]  # frame headers and payloads, in write order
    keys: list[bytes]
    entries: list[Entry]  # what the key directory will hold for each key (Records until placed)
    record_bytes: int  # the records' bytes (headers, keys, values), for the live-bytes count
    expiring: int  # records with an expiry
    on_disk: list[tuple[int, int]] = field(default_factory=list)  # (entry index, value offset in the batch)

    def place(self, seg_id: int, start: int) -> None:
        """The batch was written at ``start`` of segment ``seg_id``: large values stay there."""
        entries = self.entries
        for i, offset in self.on_disk:
            rec: Record = entries[i]  # type: ignore[assignment]
            entries[i] = Ref(seg_id, start + offset, len(rec.value), rec.expires_at_ms,
                             rec.version)  # type: ignore[arg-type]  # every entry has a version by now


def encode_records(recs: list[Record], clock: HLC, inline_max: int, caps: Capabilities,
                   backend: str, *, final: bool = True) -> EncodedBatch:
    """The hot loop of set_many: about 0.6 µs of CPU per record.

    ``final=False`` leaves the batch open (no ``FRAME_END``): more frames of it follow.
    """
    pack = RECORD_HEADER.pack
    hsize = RECORD_HEADER_SIZE
    new = new_record
    chunks: list[bytes] = []
    keys: list[bytes] = []
    entries: list[Entry] = []
    add_key = keys.append
    add_entry = entries.append
    on_disk: list[tuple[int, int]] = []
    parts: list[bytes] = []
    add = parts.append
    first_version = next_version = clock.now()
    max_given = 0
    written = psize = total = frame_start = expiring = 0
    for rec in recs:
        if psize >= FRAME_TARGET:  # cut before a record, so the last frame is never empty
            chunks.extend(encode_frame(b"".join(parts), len(entries) - frame_start, 0))
            written += FRAME_HEADER_SIZE + psize
            total += psize
            parts = []
            add = parts.append
            psize = 0
            frame_start = len(entries)
        key = rec.key
        value = rec.value
        klen = len(key)
        vlen = len(value)
        if klen > MAX_KEY_SIZE or vlen > MAX_VALUE_SIZE:
            check_limits(caps, backend, key, value)
        if rec.kind is not None:
            raise UnsupportedError(f"the {backend} backend holds bytes values only, not a {rec.kind} ({show_key(key)})")
        version = rec.version
        expires = rec.expires_at_ms
        if version is None:
            version = next_version
            next_version += STEP
            rec = new((key, value, expires, version, None))
        elif version > max_given:
            max_given = version
        if expires is None:
            flags = 0
        else:
            flags = REC_EXPIRES
            expiring += 1
        try:
            add(pack(klen, vlen, flags, expires or 0, version))
        except struct.error:
            raise UsageError(f"record {show_key(key)}: version {version} or expiry {expires} does not fit "
                             "64 bits (versions are unsigned)") from None
        add(key)
        add(value)
        if vlen > inline_max:
            on_disk.append((len(entries), written + FRAME_HEADER_SIZE + psize + hsize + klen))
        add_key(key)
        add_entry(rec)
        psize += hsize + klen + vlen
    chunks.extend(encode_frame(b"".join(parts), len(entries) - frame_start, FRAME_END if final else 0))
    if next_version != first_version:
        clock.observe(next_version - STEP)
    if max_given:
        clock.observe(max_given)
    return EncodedBatch(chunks, keys, entries, total + psize, expiring, on_disk)


def tombstone_versions(count: int, clock: HLC) -> list[int]:
    """``count`` fresh versions for local deletes: one clock reading, then counter ticks."""
    first = clock.now()
    versions = [first + i * STEP for i in range(count)]
    clock.observe(versions[-1])
    return versions


def encode_tombstones(keys: list[bytes], versions: list[int]) -> list[bytes]:
    """Frames of tombstones for ``keys`` with their ``versions``; the last frame ends the batch."""
    pack = RECORD_HEADER.pack
    chunks: list[bytes] = []
    parts: list[bytes] = []
    psize = count = 0
    for key, version in zip(keys, versions, strict=True):
        if psize >= FRAME_TARGET:
            chunks.extend(encode_frame(b"".join(parts), count, 0))
            parts, psize, count = [], 0, 0
        try:
            parts.append(pack(len(key), 0, REC_TOMBSTONE, 0, version))
        except struct.error:
            raise UsageError(f"tombstone {show_key(key)}: version {version} does not fit 64 bits") from None
        parts.append(key)
        psize += RECORD_HEADER_SIZE + len(key)
        count += 1
    chunks.extend(encode_frame(b"".join(parts), count, FRAME_END))
    return chunks

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
from kvctl.store import Capabilities, Record, check_limits

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
from .index import Entry, Ref, new_record

STEP = make_version(0, 1)  # one tick of the HLC counter


@dataclass
class EncodedBatch:
    chunks: list[bytes]  # frame headers and payloads, in write order
    keys: list[bytes]
    entries: list[Entry]  # what the key directory will hold for each key (Records until placed)
    on_disk: list[tuple[int, int]] = field(default_factory=list)  # (entry index, value offset in the batch)

    def place(self, seg_id: int, start: int) -> None:
        """The batch was written at ``start`` of segment ``seg_id``: large values stay there."""
        entries = self.entries
        for i, offset in self.on_disk:
            rec: Record = entries[i]  # type: ignore[assignment]
            entries[i] = Ref(seg_id, start + offset, len(rec.value), rec.expires_at_ms,
                             rec.version)  # type: ignore[arg-type]  # every entry has a version by now


def encode_records(recs: list[Record], clock: HLC, inline_max: int, caps: Capabilities,
                   backend: str) -> EncodedBatch:
    pack = RECORD_HEADER.pack
    hsize = RECORD_HEADER_SIZE
    chunks: list[bytes] = []
    keys: list[bytes] = []
    entries: list[Entry] = []
    on_disk: list[tuple[int, int]] = []
    parts: list[bytes] = []
    add = parts.append
    written = psize = count = 0
    next_version = max_given = 0
    for rec in recs:
        if psize >= FRAME_TARGET:  # cut before a record, so the last frame is never empty
            chunks.extend(encode_frame(b"".join(parts), count, 0))
            written += FRAME_HEADER_SIZE + psize
            parts = []
            add = parts.append
            psize = count = 0
        key = rec.key
        value = rec.value
        klen = len(key)
        vlen = len(value)
        if klen > MAX_KEY_SIZE or vlen > MAX_VALUE_SIZE:
            check_limits(caps, backend, key, value)
        if rec.kind is not None:
            raise UnsupportedError(f"the {backend} backend holds bytes values only, not a {rec.kind} ({key!r})")
        version = rec.version
        expires = rec.expires_at_ms
        if version is None:
            if not next_version:
                next_version = clock.now()
            version = next_version
            next_version += STEP
            rec = new_record(key, value, expires, version)
        elif version > max_given:
            max_given = version
        try:
            add(pack(klen, vlen, 0 if expires is None else REC_EXPIRES, expires or 0, version))
        except struct.error:
            raise UsageError(f"record {key!r}: version {version} or expiry {expires} does not fit "
                             "64 bits (versions are unsigned)") from None
        add(key)
        add(value)
        if vlen > inline_max:
            on_disk.append((len(entries), written + FRAME_HEADER_SIZE + psize + hsize + klen))
        keys.append(key)
        entries.append(rec)
        psize += hsize + klen + vlen
        count += 1
    chunks.extend(encode_frame(b"".join(parts), count, FRAME_END))
    if next_version:
        clock.observe(next_version - STEP)
    if max_given:
        clock.observe(max_given)
    return EncodedBatch(chunks, keys, entries, on_disk)


def encode_tombstones(keys: list[bytes], clock: HLC) -> list[bytes]:
    """Frames of tombstones for ``keys`` (which exist), one version each."""
    pack = RECORD_HEADER.pack
    chunks: list[bytes] = []
    parts: list[bytes] = []
    psize = count = 0
    version = clock.now()
    for key in keys:
        if psize >= FRAME_TARGET:
            chunks.extend(encode_frame(b"".join(parts), count, 0))
            parts, psize, count = [], 0, 0
        parts.append(pack(len(key), 0, REC_TOMBSTONE, 0, version))
        parts.append(key)
        version += STEP
        psize += RECORD_HEADER_SIZE + len(key)
        count += 1
    chunks.extend(encode_frame(b"".join(parts), count, FRAME_END))
    clock.observe(version - STEP)
    return chunks

"""`kvctl snapshot inspect`: the header, counts, sizes and a histogram of key prefixes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvctl.store import TOMBSTONE, now_ms

from .format import CODEC_NAMES, SnapshotReader
from .result import FULL
from .verification import open_file


@dataclass
class Inspection:
    path: str
    header: dict[str, Any]
    size: int = 0
    blocks: int = 0
    raw_bytes: int = 0
    records: int = 0  # upserts: records that are not tombstones
    typed: int = 0
    tombstones: int = 0
    with_expiry: int = 0
    expired_now: int = 0
    with_version: int = 0
    key_bytes: int = 0
    value_bytes: int = 0
    histogram: list[tuple[str, int]] = field(default_factory=list)
    other_prefixes: int = 0
    codecs: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "header": self.header, "kind": self.header.get("kind", FULL),
            "base_cursor": self.header.get("base_cursor"), "end_cursor": self.header.get("end_cursor"),
            "upserts": self.records, "size": self.size, "blocks": self.blocks,
            "raw_bytes": self.raw_bytes, "records": self.records, "typed": self.typed,
            "tombstones": self.tombstones, "with_expiry": self.with_expiry,
            "expired_now": self.expired_now, "with_version": self.with_version,
            "key_bytes": self.key_bytes, "value_bytes": self.value_bytes, "codecs": self.codecs,
            "prefixes": [{"prefix": p, "keys": n} for p, n in self.histogram],
            "other_prefixes": self.other_prefixes,
        }


MAX_PREFIXES = 10_000  # distinct prefixes tracked; beyond that keys count as "other" (bounded memory)


NO_SEPARATOR = "(no separator)"  # the bucket of keys without a delimiter: their first bytes mean nothing


def prefix_of(key: bytes, delimiters: bytes, prefix_len: int | None = None) -> bytes | None:
    """The histogram bucket of a key: its first ``prefix_len`` bytes when given, else its first
    segment up to and including a delimiter (within 32 bytes), else None (no separator)."""
    if prefix_len is not None:
        return key[:prefix_len]
    cut = min((i for i in (key.find(bytes((d,)), 0, 32) for d in delimiters) if i >= 0), default=-1)
    return key[: cut + 1] if cut >= 0 else None


def printable(data: bytes) -> str:
    """Bytes as text for a table: UTF-8 kept, other bytes and control characters escaped."""
    text = data.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                   for c in text)


def inspect(path: Path, *, top: int = 20, delimiters: bytes = b":/", prefix_len: int | None = None) -> Inspection:
    counts: Counter[bytes | None] = Counter()
    other = 0
    now = now_ms()
    with open_file(path) as fh:
        reader = SnapshotReader(fh, str(path))
        result = Inspection(str(path), reader.header.meta)
        for block in reader.blocks():
            result.blocks += 1
            result.raw_bytes += block.raw_len
            name = CODEC_NAMES.get(block.codec, str(block.codec))
            result.codecs[name] = result.codecs.get(name, 0) + 1
            decoded = reader.decode(block)
            result.tombstones += decoded.tombstones
            for rec in decoded.records:
                result.key_bytes += len(rec.key)
                result.with_version += rec.version is not None
                if rec.kind != TOMBSTONE:  # a tombstone counts in the histogram only
                    result.records += 1
                    result.value_bytes += len(rec.value)
                    result.typed += rec.kind is not None
                if rec.expires_at_ms is not None:
                    result.with_expiry += 1
                    result.expired_now += rec.expires_at_ms <= now
                p = prefix_of(rec.key, delimiters, prefix_len)
                if p in counts or len(counts) < MAX_PREFIXES:
                    counts[p] += 1
                else:
                    other += 1
        result.size = fh.tell()
    result.histogram = [(NO_SEPARATOR if p is None else printable(p), n) for p, n in counts.most_common(top)]
    result.other_prefixes = other + sum(counts.values()) - sum(n for _, n in result.histogram)
    return result

"""`kvctl snapshot create|verify|restore|inspect` over the format in :mod:`.snapformat`.

* **create** scans the store (read ahead on its own task) and streams records into a temporary
  file next to the target, which is fsynced, renamed over the target, and its directory fsynced.
  Typed values (``Record.kind``) are stored as their ``dump_many`` payloads when the store offers
  them, otherwise reported by name and counted (the command then exits 8, with the file written).
  The snapshot is as consistent as the backend's scan: each key as it was when its batch was read.
* **verify** reads every byte: header, frames, payload checksums, every record's checksum, the
  trailer's counts and the whole-file hash; the first failure names its file offset.
* **restore** first verifies the file's framing and whole-file hash (nothing is written from a
  file that fails), then streams records into the store.  Default: a merge by version — a
  snapshot record replaces the stored one when it is newer, or when either side has no version
  (a snapshot is an explicit request to bring these keys back).  ``--replace`` first removes
  every key under the snapshot's filter, then writes the snapshot: the result is exactly the
  snapshot.  Records already expired are skipped and counted.
* **inspect** shows the header, counts, sizes and a histogram of key prefixes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO

from kvctl import __version__
from kvctl.codec import show
from kvctl.errors import IncompleteError, StoreIOError, UnsupportedError
from kvctl.store import AsyncStore, Page, Record, now_ms

from .fsutil import atomic_writer
from .keyfilter import KeyFilter
from .pipeline import Prefetch, pump
from .snapformat import (
    BLOCK_RAW_TARGET,
    SnapshotCorrupt,
    SnapshotReader,
    SnapshotWriter,
    default_codec,
)
from .storeops import describe, has_typed_values, open_async, with_dumps
from .transfer import BatchWriter, Counts, Problems

_kind = attrgetter("kind")
_expiry = attrgetter("expires_at_ms")


@dataclass
class SnapshotSummary:
    path: str
    store: str
    records: int = 0
    blocks: int = 0
    size: int = 0
    raw_bytes: int = 0
    expired: int = 0
    incomplete: int = 0
    counts: Counts | None = None  # restore
    problems: Problems = field(default_factory=Problems)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path, "store": self.store, "records": self.records, "blocks": self.blocks,
            "size": self.size, "raw_bytes": self.raw_bytes, "expired": self.expired,
            "incomplete": self.incomplete, "seconds": round(self.seconds, 3),
            "keys_per_s": round(self.records / self.seconds, 1) if self.seconds else 0.0,
            "incomplete_keys": [[show(k, "text"), kind] for k, kind in self.problems.incomplete],
        }
        if self.counts is not None:
            out.update(self.counts.to_dict())
        return out

    def check(self) -> None:
        if self.incomplete:
            key, kind = self.problems.incomplete[0]
            raise IncompleteError(f"{self.incomplete} typed key(s) could not be carried "
                                  f"(first: {show(key, 'text')!r}, a {kind})")


# -- create ------------------------------------------------------------------------------------
def create(url: str, path: Path, *, key_filter: KeyFilter | None = None, batch_size: int = 5000,
           codec: str | None = None, block_size: int = BLOCK_RAW_TARGET) -> SnapshotSummary:
    return asyncio.run(_with_store(url, lambda s: create_from(
        s, path, key_filter=key_filter, batch_size=batch_size, codec=codec, block_size=block_size)))


async def _with_store(url: str, work: Any) -> Any:
    store = open_async(url)
    try:
        return await work(store)
    finally:
        await store.close()


async def create_from(store: AsyncStore, path: Path, *, key_filter: KeyFilter | None = None,
                      batch_size: int = 5000, codec: str | None = None,
                      block_size: int = BLOCK_RAW_TARGET) -> SnapshotSummary:
    kf = key_filter or KeyFilter()
    caps = store.capabilities
    summary = SnapshotSummary(str(path), describe(store))
    typed_ok = has_typed_values(store)
    meta = {
        "kind": "full",  # reserved: "incremental" (with base_cursor/end_cursor and tombstones)
        "base_cursor": None,
        "end_cursor": None,
        "created_at_ms": now_ms(),
        "source": describe(store),
        "backend": store.name,
        "filter": {"prefix": kf.prefix.hex(), "glob": None if kf.glob is None else kf.glob.hex()},
        "ordered": bool(caps.ordered_scan),
        "capabilities": {"ttl": caps.ttl, "versions": caps.versions, "typed_values": caps.typed_values},
        "writer": f"kvctl {__version__}",
    }
    t0 = time.perf_counter()
    try:
        with atomic_writer(path) as fh:
            writer = SnapshotWriter(fh, meta, codec or default_codec(), block_size)
            try:
                await _write_records(store, kf, batch_size, writer, summary, typed_ok)
                summary.size = writer.finish()
            except BaseException:
                writer.abort()
                raise
    except OSError as exc:
        raise StoreIOError(f"cannot write snapshot {path}: {exc.strerror}") from None
    summary.records, summary.blocks, summary.raw_bytes = writer.records, writer.blocks, writer.raw_bytes
    summary.seconds = time.perf_counter() - t0
    return summary


async def _write_records(store: AsyncStore, kf: KeyFilter, batch_size: int, writer: SnapshotWriter,
                         summary: SnapshotSummary, typed_ok: bool) -> None:
    prefix = kf.scan_prefix

    async def pages() -> AsyncIterator[Page]:
        if prefix is not None:
            async for page in store.scan(prefix, batch_size=batch_size):
                yield page

    async def consume(page: Page) -> None:
        records = kf.keep(page.records)
        now = now_ms()
        # C-level passes decide whether this batch needs the per-record loop at all
        exps = [e for e in map(_expiry, records) if e is not None]
        if list(map(_kind, records)).count(None) != len(records) or (exps and min(exps) <= now):
            records = await _typed_and_live(store, records, now, summary, typed_ok)
        writer.add(records)

    await pump(pages(), consume, depth=4)


async def _typed_and_live(store: AsyncStore, records: list[Record], now: int,
                          summary: SnapshotSummary, typed_ok: bool) -> list[Record]:
    live = []
    for r in records:
        if r.expires_at_ms is not None and r.expires_at_ms <= now:
            summary.expired += 1
        else:
            live.append(r)
    if not typed_ok:
        summary.incomplete += sum(r.kind is not None for r in live)
    return await with_dumps(store, live, typed_ok, summary.problems)


# -- verify ------------------------------------------------------------------------------------
def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise StoreIOError(f"no such snapshot: {path}") from None
    except OSError as exc:
        raise StoreIOError(f"cannot read snapshot {path}: {exc.strerror}") from None


def verify(path: Path, *, records: bool = True) -> SnapshotSummary:
    """Check the whole file; raises :class:`SnapshotCorrupt` naming the first bad offset.

    With ``records=False`` only the framing, the payload checksums, the trailer and the
    whole-file hash are checked (no decompression): what ``restore`` does before writing.
    """
    t0 = time.perf_counter()
    summary = SnapshotSummary(str(path), "")
    with _open(path) as fh:
        reader = SnapshotReader(fh, str(path))
        summary.store = str(reader.header.meta.get("source", ""))
        for block in reader.blocks():
            summary.blocks += 1
            summary.raw_bytes += block.raw_len
            if records:
                decoded = reader.decode(block)
                summary.records += len(decoded.records) + len(decoded.tombstones)
            else:
                summary.records += block.count
        summary.size = fh.tell()
    summary.seconds = time.perf_counter() - t0
    return summary


# -- restore -----------------------------------------------------------------------------------
def restore(path: Path, url: str, *, replace: bool = False, batch_size: int = 5000,
            drop_ttl: bool = False) -> SnapshotSummary:
    return asyncio.run(_with_store(url, lambda s: restore_into(path, s, replace=replace,
                                                               batch_size=batch_size, drop_ttl=drop_ttl)))


async def restore_into(path: Path, store: AsyncStore, *, replace: bool = False, batch_size: int = 5000,
                       drop_ttl: bool = False) -> SnapshotSummary:
    t0 = time.perf_counter()
    checked = verify(path, records=False)  # refuse a damaged file before writing anything
    summary = SnapshotSummary(str(path), describe(store), blocks=checked.blocks, size=checked.size)
    with _open(path) as fh:
        reader = SnapshotReader(fh, str(path))
        meta = reader.header.meta
        if meta.get("kind", "full") != "full":
            raise UnsupportedError(f"{path} is an {meta.get('kind')} snapshot; this kvctl restores full "
                                   "snapshots only")
        kf = _meta_filter(meta)
        snapshot_versions = bool(meta.get("capabilities", {}).get("versions"))
        # A merge where either side keeps no versions always lets the snapshot win: skip the reads.
        merge = not replace and snapshot_versions and store.capabilities.versions
        if replace:
            await _remove_filtered(store, kf, batch_size)
        writer = BatchWriter(store, policy="newer" if merge else "overwrite", drop_ttl=drop_ttl,
                             typed_ok=has_typed_values(store), unversioned_wins=True)

        async def pages() -> AsyncIterator[Page]:
            pending: list[Record] = []  # blocks are ~1 MiB: gather them into batch_size writes
            for block in reader.blocks():  # payload checksums are checked again as we go
                decoded = reader.decode(block, check=False)  # the whole-file hash was just verified
                if decoded.tombstones:
                    raise SnapshotCorrupt(str(path), block.offset, "tombstones in a full snapshot")
                pending += decoded.records
                while len(pending) >= batch_size:
                    yield Page(pending[:batch_size], None)
                    pending = pending[batch_size:]
            if pending:
                yield Page(pending, None)

        await pump(pages(), lambda page: writer.write(page.records), depth=2)
    summary.counts, summary.problems = writer.counts, writer.problems
    summary.records = writer.counts.read
    summary.expired = writer.counts.expired
    summary.incomplete = writer.counts.incomplete
    summary.seconds = time.perf_counter() - t0
    return summary


def _meta_filter(meta: dict[str, Any]) -> KeyFilter:
    f = meta.get("filter") or {}
    glob = f.get("glob")
    return KeyFilter(bytes.fromhex(f.get("prefix") or ""), None if glob is None else bytes.fromhex(glob))


async def _remove_filtered(store: AsyncStore, kf: KeyFilter, batch_size: int) -> None:
    """Delete every key under the filter (``clear`` when the filter is everything)."""
    prefix = kf.scan_prefix
    if prefix is None:
        return
    if prefix == b"" and not kf.needs_match:
        await store.clear()
        return
    while True:  # deleting while scanning may skip keys on unordered backends: repeat until clean
        removed = 0
        async with Prefetch(store.scan(prefix, batch_size=batch_size, keys_only=True), 2) as ahead:
            while (page := await ahead.next()) is not None:
                keys = [r.key for r in kf.keep(page.records)]
                if keys:
                    removed += len(keys)
                    await store.delete_many(keys)
        if removed == 0:
            return


# -- inspect -----------------------------------------------------------------------------------
@dataclass
class Inspection:
    path: str
    header: dict[str, Any]
    size: int = 0
    blocks: int = 0
    raw_bytes: int = 0
    records: int = 0
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
            "path": self.path, "header": self.header, "size": self.size, "blocks": self.blocks,
            "raw_bytes": self.raw_bytes, "records": self.records, "typed": self.typed,
            "tombstones": self.tombstones, "with_expiry": self.with_expiry,
            "expired_now": self.expired_now, "with_version": self.with_version,
            "key_bytes": self.key_bytes, "value_bytes": self.value_bytes, "codecs": self.codecs,
            "prefixes": [{"prefix": p, "keys": n} for p, n in self.histogram],
            "other_prefixes": self.other_prefixes,
        }


MAX_PREFIXES = 10_000  # distinct prefixes tracked; beyond that keys count as "other" (bounded memory)


def prefix_of(key: bytes, delimiters: bytes, prefix_len: int | None = None) -> bytes:
    """The histogram bucket of a key: its first ``prefix_len`` bytes when given, else its first
    segment up to and including a delimiter (within 32 bytes), else its first 2 bytes."""
    if prefix_len is not None:
        return key[:prefix_len]
    cut = min((i for i in (key.find(bytes((d,)), 0, 32) for d in delimiters) if i >= 0), default=-1)
    return key[: cut + 1] if cut >= 0 else key[:2]


def printable(data: bytes) -> str:
    """Bytes as text for a table: UTF-8 kept, other bytes and control characters escaped."""
    text = data.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                   for c in text)


def inspect(path: Path, *, top: int = 20, delimiters: bytes = b":/", prefix_len: int | None = None) -> Inspection:
    from .snapformat import CODEC_NAMES

    counts: Counter[bytes] = Counter()
    other = 0
    now = now_ms()
    with _open(path) as fh:
        reader = SnapshotReader(fh, str(path))
        result = Inspection(str(path), reader.header.meta)
        for block in reader.blocks():
            result.blocks += 1
            result.raw_bytes += block.raw_len
            name = CODEC_NAMES.get(block.codec, str(block.codec))
            result.codecs[name] = result.codecs.get(name, 0) + 1
            decoded = reader.decode(block)
            result.tombstones += len(decoded.tombstones)
            for rec in decoded.records:
                result.records += 1
                result.key_bytes += len(rec.key)
                result.value_bytes += len(rec.value)
                result.typed += rec.kind is not None
                result.with_version += rec.version is not None
                if rec.expires_at_ms is not None:
                    result.with_expiry += 1
                    result.expired_now += rec.expires_at_ms <= now
                p = prefix_of(rec.key, delimiters, prefix_len)
                if p in counts or len(counts) < MAX_PREFIXES:
                    counts[p] += 1
                else:
                    other += 1
        result.size = fh.tell()
    result.histogram = [(printable(p), n) for p, n in counts.most_common(top)]
    result.other_prefixes = other + sum(counts.values()) - sum(n for _, n in result.histogram)
    return result


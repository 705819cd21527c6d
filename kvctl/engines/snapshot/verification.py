"""Reading snapshot files back: their header, a check of every byte, and the chain a restore applies.

* **verify** reads every byte: header, frames, payload checksums, each decompressed block's
  checksum (a version 1 file: each record's), the trailer's counts and the whole-file hash; the
  first failure names its file offset.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO

from kvctl.errors import StoreIOError, UnsupportedError, UsageError

from ..reporting import Counts, Progress, Reporter
from .format import SnapshotReader
from .result import FULL, INCREMENTAL, KINDS, SnapshotSummary, meta_filter

_expiry = attrgetter("expires_at_ms")


def open_file(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise StoreIOError(f"no such snapshot: {path}") from None
    except IsADirectoryError:
        raise StoreIOError(f"not a snapshot file: {path} is a directory") from None
    except OSError as exc:
        raise StoreIOError(f"cannot read snapshot {path}: {exc.strerror}") from None


def read_meta(path: Path) -> dict[str, Any]:
    """A snapshot's header meta (the header checksum verified; nothing else is read)."""
    with open_file(path) as fh:
        return SnapshotReader(fh, str(path)).header.meta


def estimate(done: int, offset: int, size: int) -> int | None:
    """A file's record count, estimated from how far into it ``done`` records reached."""
    return done * size // offset if offset > 0 and done else None


def verify(path: Path, *, records: bool = True, reporter: Reporter | None = None) -> SnapshotSummary:
    """Check the whole file; raises :class:`SnapshotCorrupt` naming the first bad offset.

    With ``records=False`` only the framing, the payload checksums, the trailer and the
    whole-file hash are checked (no decompression): what ``restore`` does before writing a full
    snapshot.  Upserts and tombstones are counted when records are read (without, a full
    snapshot has no tombstones, and an incremental's header names its counts).  ``reporter`` is
    told of each block, out of a total estimated from the file's size.
    """
    t0 = time.perf_counter()
    summary = SnapshotSummary(str(path), "")
    with open_file(path) as fh:
        reader = SnapshotReader(fh, str(path))
        meta = reader.header.meta
        summary.store = str(meta.get("source", ""))
        summary.kind = str(meta.get("kind", FULL))
        summary.base_cursor, summary.end_cursor = meta.get("base_cursor"), meta.get("end_cursor")
        tombstones = 0
        size = os.fstat(fh.fileno()).st_size
        for block in reader.blocks():
            summary.blocks += 1
            summary.raw_bytes += block.raw_len
            if records:
                decoded = reader.decode(block)
                summary.records += len(decoded.records)
                tombstones += decoded.tombstones
                exps = list(map(_expiry, decoded.records))
                summary.with_expiry += len(exps) - exps.count(None)
            else:
                summary.records += block.count
            if reporter is not None:
                reporter.progress(Progress("verify", Counts(read=summary.records, bytes=summary.raw_bytes),
                                           estimate(summary.records, fh.tell(), size), time.perf_counter() - t0))
        summary.size = fh.tell()
        if reporter is not None:  # the last frame: the trailer is checked, the count exact
            reporter.progress(Progress("verify", Counts(read=summary.records, bytes=summary.raw_bytes),
                                       summary.records, time.perf_counter() - t0))
    if records or summary.kind == FULL:
        summary.upserts, summary.tombstones = summary.records - tombstones, tombstones
    else:
        counted = meta.get("changes")
        if isinstance(counted, dict) and all(isinstance(counted.get(k), int) for k in ("upserts", "tombstones")):
            summary.upserts, summary.tombstones = counted["upserts"], counted["tombstones"]
    summary.seconds = time.perf_counter() - t0
    return summary


# -- restore: checking the chain ---------------------------------------------------------------
@dataclass
class ChainFile:
    """One file of a chain to restore: its header, then its verification."""

    path: Path
    meta: dict[str, Any]
    checked: SnapshotSummary | None = None

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", FULL))

    @property
    def base(self) -> Any:
        return self.meta.get("base_cursor")

    @property
    def end(self) -> Any:
        return self.meta.get("end_cursor")


def survey(paths: Sequence[Path], *, full_later: bool = False) -> list[ChainFile]:
    """Read and check a chain before anything is written: every header, the chain's links (see
    :func:`check_chain`), then every file (a full one: framing, payload checksums and the hash;
    an incremental, usually small: every record's checksum too).  ``full_later``: leave a full
    snapshot unchecked (``checked`` None) for :func:`check_rest` or a load that checks it as it
    reads and can undo everything when it fails."""
    if not paths:
        raise UsageError("no snapshot file to restore")
    files = [ChainFile(Path(p), read_meta(Path(p))) for p in paths]
    check_chain(files)
    for f in files:
        if not (full_later and f.kind == FULL):
            f.checked = verify(f.path, records=f.kind != FULL)
    return files


def check_rest(files: list[ChainFile]) -> None:
    """Check the files :func:`survey` left unchecked."""
    for f in files:
        if f.checked is None:
            f.checked = verify(f.path, records=f.kind != FULL)


def check_chain(files: list[ChainFile]) -> None:
    """Refuse a chain that does not link up: a full snapshot only first; each file starting at
    the cursor where the previous one ended; one backend and one key filter throughout."""
    first = files[0]
    for i, f in enumerate(files):
        if f.kind not in KINDS:
            raise UnsupportedError(f"{f.path} is a {f.kind!r} snapshot, which this kvctl cannot restore")
        if f.kind == INCREMENTAL and not (isinstance(f.base, str) and isinstance(f.end, str)):
            raise UsageError(f"{f.path} is an incremental snapshot that names no base or end cursor")
        if i == 0:
            continue
        prev = files[i - 1]
        if f.kind == FULL:
            raise UsageError(f"{f.path} is a full snapshot: only the first file of a chain can be one",
                             hint=_order_hint(files))
        if prev.end is None:
            raise UsageError(f"{prev.path} records no change-feed position (its store had no change feed "
                             f"when it was taken), so {f.path} cannot follow it")
        if f.base != prev.end:
            raise UsageError(f"the chain has a hole: {f.path} continues from cursor {f.base}, but {prev.path} "
                             f"ends at cursor {prev.end}",
                             hint=_order_hint(files) or "a snapshot between them is missing")
        if f.meta.get("backend") != first.meta.get("backend"):
            raise UsageError(f"{f.path} was taken from a {f.meta.get('backend')} store, {first.path} from a "
                             f"{first.meta.get('backend')} store: not one chain")
        if meta_filter(f.meta) != meta_filter(first.meta):
            raise UsageError(f"{f.path} holds keys {meta_filter(f.meta).describe()}, {first.path} holds keys "
                             f"{meta_filter(first.meta).describe()}: a chain covers the same keys throughout")


def _order_hint(files: list[ChainFile]) -> str | None:
    """When the same files do form a chain in another order, say which."""
    fulls = [f for f in files if f.kind == FULL]
    heads = fulls or [f for f in files if f.base not in {g.end for g in files if g is not f}]
    if len(heads) != 1:
        return None
    order, rest = [heads[0]], [f for f in files if f is not heads[0]]
    while rest:
        following = [f for f in rest if f.kind == INCREMENTAL and f.base == order[-1].end]
        if len(following) != 1:
            return None
        order.append(following[0])
        rest.remove(following[0])
    return "they chain in this order: " + " ".join(str(f.path) for f in order)

"""`kvctl snapshot create|verify|restore|inspect` over the format in :mod:`.snapformat`.

* **create** (full) scans the store (read ahead on its own task) and streams records into a
  temporary file next to the target, which is fsynced, renamed over the target, and its directory
  fsynced.  Typed values (``Record.kind``) are stored as their ``dump_many`` payloads when the
  store offers them, otherwise reported by name and counted (the command then exits 8, with the
  file written).  The snapshot is as consistent as the backend's scan: each key as it was when its
  batch was read.  A store with a change feed has its feed position read *before* the scan and
  recorded as the header's ``end_cursor``, so an incremental snapshot can follow: a change made
  during the scan is then in both files, and applying it twice is a no-op (last writer wins).
* **create --since CURSOR** (incremental) writes every change of the store's feed after CURSOR
  (or after a snapshot file's ``end_cursor``) in commit order: upserts as records and deletions
  as tombstones, each with its version.  ``end_cursor`` is known only once the feed has been
  read, so the blocks are spooled and the header is written last.  A store without a change feed
  is refused (UnsupportedError); a cursor the feed no longer covers is a FeedGapError (exit 9):
  the chain has to start again from a new full snapshot.
* **verify** reads every byte: header, frames, payload checksums, every record's checksum, the
  trailer's counts and the whole-file hash; the first failure names its file offset.
* **restore** applies a *chain*: at most one full snapshot, first, then incremental snapshots,
  each starting at the cursor where the previous one ended.  Every file is checked, and the
  chain's links, before anything is written.  The full snapshot is a merge by version — a
  snapshot record replaces the stored one when it is newer, or when either side has no version
  (a snapshot is an explicit request to bring these keys back) — or, with ``--replace``, first
  removes every key under the snapshot's filter.  Incrementals are applied last-writer-wins
  (:func:`kvctl.engines.sync.apply_lww`, the sync engine's write path): a change takes effect only
  when it is newer than what the store holds, so a stale upsert never beats a newer delete where
  the store keeps tombstones.  ``--replace`` applies to the full snapshot only; a chain without
  one is refused with it (an incremental holds changes, not a whole store).  Records already
  expired are skipped (full) or applied as deletions at their version (incremental).
* **inspect** shows the header, counts, sizes and a histogram of key prefixes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO

from kvctl import __version__
from kvctl.codec import show
from kvctl.errors import FeedGapError, StoreIOError, UnsupportedError, UsageError
from kvctl.store import TOMBSTONE, AsyncChangeFeed, AsyncStore, Page, Record, now_ms

from . import stopped
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
from .storeops import describe, has_typed_values, open_async, restore_many, with_dumps
from .sync import apply_storable
from .transfer import BatchWriter, Counts, Problems

_kind = attrgetter("kind")
_expiry = attrgetter("expires_at_ms")
FULL, INCREMENTAL = "full", "incremental"
KINDS = (FULL, INCREMENTAL)


@dataclass
class Step:
    """What restoring one file of a chain did."""

    path: str
    kind: str
    base_cursor: str | None
    end_cursor: str | None
    records: int = 0  # records read from the file (incremental: upserts and tombstones)
    tombstones: int = 0
    applied: int = 0  # written (full) or took effect (incremental)
    stale: int = 0  # not newer than what the store holds: left alone
    expired: int = 0  # full: skipped; incremental: applied as a deletion at its version
    incomplete: int = 0  # typed values the store cannot hold
    failed: int = 0  # over a limit of the store
    ttl_dropped: int = 0


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
    counts: Counts | None = None  # restore: totals over the chain
    problems: Problems = field(default_factory=Problems)
    seconds: float = 0.0
    kind: str = FULL  # restore of several files: "chain"
    base_cursor: str | None = None
    end_cursor: str | None = None
    upserts: int | None = None  # None: not known without decoding (verify --quick of an old file)
    tombstones: int | None = None
    with_expiry: int = 0  # verify with records: how many upserts carry an expiry
    steps: list[Step] = field(default_factory=list)  # restore: one per file
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path, "store": self.store, "kind": self.kind, "base_cursor": self.base_cursor,
            "end_cursor": self.end_cursor, "records": self.records, "upserts": self.upserts,
            "tombstones": self.tombstones, "blocks": self.blocks,
            "size": self.size, "raw_bytes": self.raw_bytes, "expired": self.expired,
            "incomplete": self.incomplete, "seconds": round(self.seconds, 3),
            "keys_per_s": round(self.records / self.seconds, 1) if self.seconds else 0.0,
            "incomplete_keys": [[show(k, "text"), kind] for k, kind in self.problems.incomplete],
        }
        if self.counts is not None:
            out.update(self.counts.to_dict())
        if self.steps:
            out["steps"] = [asdict(s) for s in self.steps]
        if self.notes:
            out["notes"] = self.notes
        return out

    def check(self) -> None:
        self.problems.check("snapshot" if self.counts is None else "restore", self.incomplete,
                            0 if self.counts is None else self.counts.failed)


# -- create ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Since:
    """Where an incremental snapshot starts: a feed cursor, perhaps named by a snapshot file."""

    cursor: str
    path: Path | None = None  # the snapshot whose end_cursor this is
    key_filter: KeyFilter | None = None  # that snapshot's filter


def since_of(value: str) -> Since:
    """``--since``: an existing file is a snapshot to continue (after its ``end_cursor``);
    anything else is a change-feed cursor."""
    path = Path(value)
    if path.is_file():
        meta = read_meta(path)
        end = meta.get("end_cursor")
        if not isinstance(end, str):
            raise UsageError(f"{path} records no change-feed position (its store had no change feed, or an "
                             "older kvctl wrote it): no incremental snapshot can follow it",
                             hint="take a new full snapshot of a store with a change feed")
        return Since(end, path, meta_filter(meta))
    if path.suffix == ".kvs":
        raise StoreIOError(f"no such snapshot: {path}")
    return Since(value)


def create(url: str, path: Path, *, key_filter: KeyFilter | None = None, batch_size: int = 5000,
           codec: str | None = None, block_size: int = BLOCK_RAW_TARGET,
           since: str | None = None) -> SnapshotSummary:
    """A full snapshot, or with ``since`` (a cursor or a snapshot file) an incremental one."""
    cursor = None
    if since is not None:
        after = since_of(since)
        cursor, key_filter = after.cursor, _continued_filter(key_filter, after)
    return asyncio.run(_with_store(url, "read", lambda s: create_from(
        s, path, key_filter=key_filter, batch_size=batch_size, codec=codec, block_size=block_size,
        since=cursor)))


def _continued_filter(given: KeyFilter | None, after: Since) -> KeyFilter | None:
    """An incremental covers the keys of the snapshot it continues: inherited when no filter is
    given, refused when a different one is (restore would refuse the chain anyway)."""
    if after.key_filter is None or given is None or given == KeyFilter():
        return after.key_filter if after.key_filter is not None else given
    if given != after.key_filter:
        raise UsageError(f"{after.path} holds keys {after.key_filter.describe()}, but --prefix/--glob ask for "
                         f"{given.describe()}: an incremental snapshot covers the keys of the one it continues")
    return given


async def _with_store(url: str, access: str, work: Any) -> Any:
    store = open_async(url, access=access)
    try:
        return await work(store)
    finally:
        await store.close()


def has_feed(store: Any) -> bool:
    return bool(store.capabilities.change_feed) and isinstance(store, AsyncChangeFeed)


async def create_from(store: AsyncStore, path: Path, *, key_filter: KeyFilter | None = None,
                      batch_size: int = 5000, codec: str | None = None,
                      block_size: int = BLOCK_RAW_TARGET, since: str | None = None) -> SnapshotSummary:
    """Write a snapshot of ``store``: full, or incremental (the changes after cursor ``since``)."""
    kf = key_filter or KeyFilter()
    caps = store.capabilities
    incremental = since is not None
    if incremental and not has_feed(store):
        raise UnsupportedError(f"the {store.name} backend ({describe(store)}) has no change feed: an "
                               "incremental snapshot reads one", hint="take full snapshots of this store")
    summary = SnapshotSummary(str(path), describe(store), kind=INCREMENTAL if incremental else FULL,
                              base_cursor=since)
    typed_ok = has_typed_values(store)
    meta: dict[str, Any] = {
        "kind": summary.kind,
        "base_cursor": since,
        "end_cursor": None,
        "created_at_ms": now_ms(),
        "source": describe(store),
        "backend": store.name,
        "filter": {"prefix": kf.prefix.hex(), "glob": None if kf.glob is None else kf.glob.hex()},
        "ordered": bool(caps.ordered_scan) and not incremental,  # an incremental is in commit order
        "capabilities": {"ttl": caps.ttl, "versions": caps.versions, "typed_values": caps.typed_values},
        "writer": f"kvctl {__version__}",
    }
    if not incremental and has_feed(store):
        # the position before the scan: a change made during it is in the next increment as well
        summary.end_cursor = meta["end_cursor"] = await store.feed_cursor()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    try:
        with atomic_writer(path) as fh:
            # an incremental's end cursor is known at the end: its header is written last
            writer = SnapshotWriter(fh, meta, codec or default_codec(), block_size, defer_header=incremental,
                                    spool_dir=str(path.parent))
            try:
                if since is None:
                    await _write_records(store, kf, batch_size, writer, summary, typed_ok)
                    summary.size = writer.finish()
                else:
                    summary.end_cursor = await _write_changes(store, kf, since, batch_size, writer, summary,
                                                              typed_ok)
                    summary.size = writer.finish({"end_cursor": summary.end_cursor, "changes": {
                        "upserts": summary.upserts, "tombstones": summary.tombstones}})
            except BaseException:
                writer.abort()
                raise
    except OSError as exc:
        raise StoreIOError(f"cannot write snapshot {path}: {exc.strerror}") from None
    summary.records, summary.blocks, summary.raw_bytes = writer.records, writer.blocks, writer.raw_bytes
    if not incremental:
        summary.upserts, summary.tombstones = summary.records, 0
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


async def _write_changes(store: AsyncStore, kf: KeyFilter, since: str, batch_size: int,
                         writer: SnapshotWriter, summary: SnapshotSummary, typed_ok: bool) -> str:
    """Every change after ``since`` into ``writer``; returns the cursor after the last one read."""
    # Where the feed is now: the end cursor when nothing changed since ``since``.  Read before
    # the changes, so a change committed in between is read below rather than skipped.
    end: str = await store.feed_cursor()  # type: ignore[attr-defined]
    summary.upserts = summary.tombstones = 0
    everything = kf == KeyFilter()
    try:
        async for page in store.changes(since, batch_size=batch_size):  # type: ignore[attr-defined]
            records = page.records if everything else [r for r in page.records if kf.matches(r.key)]
            kinds = list(map(_kind, records))
            tombstones = kinds.count(TOMBSTONE)
            if kinds.count(None) + tombstones != len(records):
                records = await _typed_changes(store, records, summary, typed_ok)
            writer.add(records)
            summary.tombstones += tombstones
            summary.upserts += len(records) - tombstones
            if page.cursor is not None:
                end = page.cursor
    except FeedGapError as gap:
        raise FeedGapError(f"no incremental snapshot after cursor {since}: the change feed of {describe(store)} "
                           f"no longer covers it ({gap.message})",
                           hint="take a new full snapshot (kvctl snapshot create URL -o FILE) and continue "
                                "the chain from it") from None
    return end


async def _typed_changes(store: AsyncStore, records: list[Record], summary: SnapshotSummary,
                         typed_ok: bool) -> list[Record]:
    """Typed upserts replaced by their dumps (taken now), in place; the rest kept as they are."""
    typed = [r for r in records if r.kind not in (None, TOMBSTONE)]
    if not typed_ok:
        summary.incomplete += len(typed)
    dumps = {d.key: d for d in await with_dumps(store, typed, typed_ok, summary.problems)}
    out = []
    for r in records:
        if r.kind is None or r.kind == TOMBSTONE:
            out.append(r)
        elif (d := dumps.get(r.key)) is not None:
            out.append(d if d.version is not None else d._replace(version=r.version))
    return out


# -- verify ------------------------------------------------------------------------------------
def _open(path: Path) -> BinaryIO:
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
    with _open(path) as fh:
        return SnapshotReader(fh, str(path)).header.meta


def verify(path: Path, *, records: bool = True) -> SnapshotSummary:
    """Check the whole file; raises :class:`SnapshotCorrupt` naming the first bad offset.

    With ``records=False`` only the framing, the payload checksums, the trailer and the
    whole-file hash are checked (no decompression): what ``restore`` does before writing a full
    snapshot.  Upserts and tombstones are counted when records are read (without, a full
    snapshot has no tombstones, and an incremental's header names its counts).
    """
    t0 = time.perf_counter()
    summary = SnapshotSummary(str(path), "")
    with _open(path) as fh:
        reader = SnapshotReader(fh, str(path))
        meta = reader.header.meta
        summary.store = str(meta.get("source", ""))
        summary.kind = str(meta.get("kind", FULL))
        summary.base_cursor, summary.end_cursor = meta.get("base_cursor"), meta.get("end_cursor")
        tombstones = 0
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
        summary.size = fh.tell()
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


def survey(paths: Sequence[Path]) -> list[ChainFile]:
    """Read and check a chain before anything is written: every header, the chain's links (see
    :func:`check_chain`), then every file (a full one: framing, payload checksums and the hash;
    an incremental, usually small: every record's checksum too)."""
    if not paths:
        raise UsageError("no snapshot file to restore")
    files = [ChainFile(Path(p), read_meta(Path(p))) for p in paths]
    check_chain(files)
    for f in files:
        f.checked = verify(f.path, records=f.kind != FULL)
    return files


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


# -- restore -----------------------------------------------------------------------------------
def restore(paths: Path | Sequence[Path], url: str, *, replace: bool = False, batch_size: int = 5000,
            drop_ttl: bool = False, note: stopped.Note | None = None) -> SnapshotSummary:
    """Restore one snapshot or a chain into the store at ``url`` (checked before it is opened).

    A restore that stops part-way says how many records it wrote (:mod:`.stopped`): in the
    error's hint, or through ``note`` on an interruption."""
    files = survey([paths] if isinstance(paths, Path | str) else list(paths))
    return asyncio.run(_with_store(url, "write", lambda s: _restore_chain(
        files, s, replace=replace, batch_size=batch_size, drop_ttl=drop_ttl, note=note)))


async def restore_into(paths: Path | Sequence[Path], store: AsyncStore, *, replace: bool = False,
                       batch_size: int = 5000, drop_ttl: bool = False,
                       note: stopped.Note | None = None) -> SnapshotSummary:
    files = survey([paths] if isinstance(paths, Path | str) else list(paths))
    return await _restore_chain(files, store, replace=replace, batch_size=batch_size, drop_ttl=drop_ttl,
                                note=note)


async def _restore_chain(files: list[ChainFile], store: AsyncStore, *, replace: bool, batch_size: int,
                         drop_ttl: bool, note: stopped.Note | None = None) -> SnapshotSummary:
    t0 = time.perf_counter()
    if replace and files[0].kind != FULL:
        raise UsageError("--replace needs a full snapshot first in the chain: an incremental snapshot holds "
                         "changes, not a whole store")
    if not store.capabilities.ttl and not drop_ttl:
        for f in files:
            if f.kind == INCREMENTAL and f.checked is not None and f.checked.with_expiry:
                raise UnsupportedError(f"{f.path} holds {f.checked.with_expiry} record(s) with an expiry, but "
                                       f"the {store.name} backend cannot store expiries",
                                       hint="add --drop-ttl to restore them without their expiry")
    summary = SnapshotSummary(", ".join(str(f.path) for f in files), describe(store), counts=Counts(),
                              kind=files[0].kind if len(files) == 1 else "chain",
                              base_cursor=files[0].base, end_cursor=files[-1].end, upserts=0, tombstones=0)
    if files[0].kind == INCREMENTAL:
        summary.notes.append(f"{files[0].path} was applied to the store as it was: it continues from cursor "
                             f"{files[0].base}, which kvctl cannot check the store had reached")
    steps: list[Step] = []  # the one being applied last: its counts grow batch by batch

    def status() -> str:
        done = sum(s.applied for s in steps)
        where = f" in {steps[-1].path}" if len(files) > 1 and steps else ""
        return f"after at least {done:,} records written{where}; rerun the same restore to finish"

    with stopped.saying(status, note):
        for f in files:
            assert f.checked is not None
            step = Step(str(f.path), f.kind, f.base, f.end)
            steps.append(step)
            summary.blocks += f.checked.blocks
            summary.size += f.checked.size
            if f.kind == FULL:
                await _restore_full(f, store, step, summary, replace=replace, batch_size=batch_size,
                                    drop_ttl=drop_ttl)
            else:
                await _apply_incremental(f, store, step, summary.problems, batch_size=batch_size)
            summary.steps.append(step)
            _add_step(summary, step)
    summary.seconds = time.perf_counter() - t0
    return summary


def _add_step(summary: SnapshotSummary, step: Step) -> None:
    c = summary.counts
    assert c is not None and summary.upserts is not None and summary.tombstones is not None
    c.read += step.records
    c.copied += step.applied
    c.skipped += step.stale
    c.expired += step.expired
    c.incomplete += step.incomplete
    c.failed += step.failed
    c.ttl_dropped += step.ttl_dropped
    summary.records, summary.expired, summary.incomplete = c.read, c.expired, c.incomplete
    summary.tombstones += step.tombstones
    summary.upserts += step.records - step.tombstones


async def _restore_full(f: ChainFile, store: AsyncStore, step: Step, summary: SnapshotSummary, *,
                        replace: bool, batch_size: int, drop_ttl: bool) -> None:
    meta = f.meta
    kf = meta_filter(meta)
    snapshot_versions = bool(meta.get("capabilities", {}).get("versions"))
    # A merge where either side keeps no versions always lets the snapshot win: skip the reads.
    merge = not replace and snapshot_versions and store.capabilities.versions
    if replace:
        await _remove_filtered(store, kf, batch_size)
    writer = BatchWriter(store, policy="newer" if merge else "overwrite", drop_ttl=drop_ttl,
                         typed_ok=has_typed_values(store), unversioned_wins=True)
    with _open(f.path) as fh:
        reader = SnapshotReader(fh, str(f.path))

        async def pages() -> AsyncIterator[Page]:
            pending: list[Record] = []  # blocks are ~1 MiB: gather them into batch_size writes
            for block in reader.blocks():  # payload checksums are checked again as we go
                decoded = reader.decode(block, check=False)  # the whole-file hash was just verified
                if decoded.tombstones:
                    raise SnapshotCorrupt(str(f.path), block.offset, "tombstones in a full snapshot")
                pending += decoded.records
                while len(pending) >= batch_size:
                    yield Page(pending[:batch_size], None)
                    pending = pending[batch_size:]
            if pending:
                yield Page(pending, None)

        async def consume(page: Page) -> None:
            await writer.write(page.records)
            step.applied = writer.counts.copied  # what a stop reports

        await pump(pages(), consume, depth=2)
    c = writer.counts
    step.records, step.applied, step.stale, step.expired = c.read, c.copied, c.skipped, c.expired
    step.incomplete, step.failed, step.ttl_dropped = c.incomplete, c.failed, c.ttl_dropped
    summary.problems.extend(writer.problems)


async def _apply_incremental(f: ChainFile, store: AsyncStore, step: Step, problems: Problems, *,
                             batch_size: int) -> None:
    typed_ok = has_typed_values(store)
    with _open(f.path) as fh:
        reader = SnapshotReader(fh, str(f.path))
        pending: list[Record] = []
        for block in reader.blocks():
            pending += reader.decode(block, check=False).records  # every record was just checked
            while len(pending) >= batch_size:
                await _apply_changes(store, pending[:batch_size], step, problems, typed_ok)
                pending = pending[batch_size:]
        if pending:
            await _apply_changes(store, pending, step, problems, typed_ok)


def _is_typed(rec: Record) -> bool:
    return rec.kind is not None and rec.kind != TOMBSTONE


async def _apply_changes(store: AsyncStore, changes: list[Record], step: Step, problems: Problems,
                         typed_ok: bool) -> None:
    """One batch of an incremental, last-writer-wins, in file order."""
    now = now_ms()
    ttl_ok = store.capabilities.ttl
    ready = []
    for rec in changes:
        if rec.kind == TOMBSTONE:
            step.tombstones += 1
        elif rec.expires_at_ms is not None:
            if rec.expires_at_ms <= now:
                # Gone at the source too.  Applied as a deletion at its version (never a write a
                # store may refuse), so it still removes an older value the store holds.
                step.expired += 1
                rec = Record(rec.key, b"", None, rec.version, TOMBSTONE)
            elif not ttl_ok:  # the chain check refused this unless --drop-ttl was given
                step.ttl_dropped += 1
                rec = rec._replace(expires_at_ms=None)
        ready.append(rec)
    step.records += len(changes)

    def refuse(rec: Record, reason: str) -> None:
        step.failed += 1
        problems.note_failed(rec.key, reason)

    # Typed values travel by restore_many, outside last-writer-wins (as in sync); runs keep the
    # file order between them and the changes around them.
    for typed, run in groupby(ready, key=_is_typed):
        batch = list(run)
        if typed:
            if typed_ok:
                await restore_many(store, batch)
                step.applied += len(batch)
            else:
                step.incomplete += len(batch)
                for rec in batch:
                    problems.note_incomplete(rec.key, rec.kind or "?")
            continue
        done = await apply_storable(store, batch, refuse)
        step.applied += done.written + done.deleted
        step.stale += done.stale


def meta_filter(meta: dict[str, Any]) -> KeyFilter:
    """The key filter a snapshot's header records."""
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
    result.histogram = [(printable(p), n) for p, n in counts.most_common(top)]
    result.other_prefixes = other + sum(counts.values()) - sum(n for _, n in result.histogram)
    return result


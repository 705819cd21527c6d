"""`kvctl export` / `kvctl import`: human-readable dumps (JSON lines or CSV), exact round trip.

The format, both ways, is :mod:`.format`.  Import reads a dump back in batches through the same
writer as migrate (conflict policy, expiry, TTL support and limits), skipping records whose
expiry has passed; a malformed line stops it (CorruptError, naming the line).  Into a store
that holds no key and offers :class:`~kvctl.abilities.AsyncAtomicLoad`, a whole import from its
first line is one load: a malformed line still keeps the records before it, any other stop
(an interruption, a server gone) leaves the store as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from kvctl.codec import show_key
from kvctl.errors import CorruptError
from kvctl.store import AsyncStore, Page, Record, now_ms
from kvctl.url import redact

from .. import _stopped as stopped
from .._batches import BatchWriter, Policy, check_policy
from .._files import atomic_writer
from .._pipeline import Ready, pump, pump_ready
from .._stores import describe, has_typed_values, one_load_if_empty, open_async, start_count, with_dumps
from ..keyfilter import KeyFilter
from ..preview import open_read_only
from ..reporting import Counts, Problems, Progress, Reporter
from ..typedjson import Types, json_view
from .format import (
    CSV_COLUMNS,
    Format,
    csv_rows,
    guess_format,
    json_line,
    numbered_records,
    numbered_runs,
    read_records,
    write_chunk,
)

__all__ = ["DumpSummary", "ExportOptions", "Format", "ImportOptions", "export", "export_to", "guess_format",
           "import_", "import_from", "numbered_records", "read_records"]


@dataclass
class DumpSummary:
    store: str
    records: int = 0
    expired: int = 0
    incomplete: int = 0
    problems: Problems = field(default_factory=Problems)
    counts: Counts | None = None  # import
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"store": self.store, "records": self.records, "expired": self.expired,
                               "incomplete": self.incomplete, "seconds": round(self.seconds, 3)}
        if self.counts is not None:
            out.update(self.counts.to_dict())
        out["incomplete_keys"] = [[show_key(k), kind] for k, kind in self.problems.incomplete]
        out["failed_keys"] = [[show_key(k), why] for k, why in self.problems.failed]
        return out

    def check(self) -> None:
        self.problems.check("export" if self.counts is None else "import", self.incomplete,
                            0 if self.counts is None else self.counts.failed)


@dataclass(frozen=True)
class ExportOptions:
    fmt: Format = "jsonl"
    key_filter: KeyFilter = field(default_factory=KeyFilter)
    batch_size: int = 5000
    types: Types = "dump"  # typed values as the store's dump payloads, or as JSON documents


@dataclass(frozen=True)
class ImportOptions:
    fmt: Format = "jsonl"
    policy: Policy = "overwrite"
    batch_size: int = 5000
    drop_ttl: bool = False
    key_filter: KeyFilter = field(default_factory=KeyFilter)
    dry_run: bool = False
    from_line: int = 1  # write only the records from this line on (a stopped import's resume)


def export(url: str, out: BinaryIO | Path, opts: ExportOptions, reporter: Reporter | None = None) -> DumpSummary:
    """Export the store at ``url`` (only read) to ``out``: a stream, or a file that appears only
    once the export is complete.  Owns the command's only event loop."""
    async def work(fh: BinaryIO) -> DumpSummary:
        async with open_async(url, access="read") as store:
            return await export_to(store, fh, opts.fmt, key_filter=opts.key_filter, batch_size=opts.batch_size,
                                   reporter=reporter, types=opts.types)

    if isinstance(out, Path):
        with atomic_writer(out) as fh:
            return asyncio.run(work(fh))
    return asyncio.run(work(out))


def import_(url: str, inp: BinaryIO, name: str, opts: ImportOptions, reporter: Reporter | None = None) -> DumpSummary:
    """Import the dump ``inp`` (called ``name`` in messages) into the store at ``url``.  Owns the
    command's only event loop."""
    async def work() -> DumpSummary:
        missing: list[str] = []
        # a dry run writes nothing, so it opens the store to read (a missing one reads as empty)
        opened = open_read_only(url, missing) if opts.dry_run else open_async(url)
        async with opened as store:
            summary = await import_from(store, inp, opts.fmt, name, policy=opts.policy, batch_size=opts.batch_size,
                                     drop_ttl=opts.drop_ttl, key_filter=opts.key_filter, dry_run=opts.dry_run,
                                     from_line=opts.from_line, reporter=reporter)
        if missing:  # named as the user wrote it, not as the empty stand-in compared with
            summary.store = f"{redact(url)} (does not exist yet: a real import would create it)"
        return summary

    return asyncio.run(work())


async def export_to(store: AsyncStore, out: BinaryIO, fmt: Format, *, key_filter: KeyFilter | None = None,
                    batch_size: int = 5000, reporter: Reporter | None = None, types: Types = "dump") -> DumpSummary:
    """Write the records under ``key_filter`` to ``out``.  ``reporter``: progress events after each
    batch (phase "export"), with the store's key count as the total once it is known.  ``types``:
    typed values as the store's dump payloads (with their ``kind``), or as JSON documents
    (plain values, :mod:`..typedjson`)."""
    kf = key_filter or KeyFilter()
    store = json_view(store, types)
    done = Counts()
    total: list[int | None] = [None]
    counter = start_count(store, kf, total) if reporter is not None else None
    summary = DumpSummary(describe(store))
    typed_ok = has_typed_values(store)
    t0 = time.perf_counter()
    if fmt == "csv":
        out.write((",".join(CSV_COLUMNS) + "\n").encode())

    async def pages() -> AsyncIterator[Page]:
        prefix = kf.scan_prefix
        if prefix is not None:
            async for page in store.scan(prefix, batch_size=batch_size):
                yield page

    async def consume(page: Page) -> None:
        now = now_ms()
        records: list[Record] = []
        for rec in kf.keep(page.records):
            if rec.expires_at_ms is not None and rec.expires_at_ms <= now:
                summary.expired += 1
            else:
                records.append(rec)
        if any(r.kind is not None for r in records):
            if not typed_ok:
                summary.incomplete += sum(r.kind is not None for r in records)
            records = await with_dumps(store, records, typed_ok, summary.problems)
        if not records:
            return
        summary.records += len(records)
        text = csv_rows(records) if fmt == "csv" else "\n".join(map(json_line, records)) + "\n"
        data = text.encode("utf-8")
        write_chunk(out, data)
        if reporter is not None:
            done.read, done.bytes = summary.records, done.bytes + len(data)
            reporter.progress(Progress("export", done, total[0], time.perf_counter() - t0))

    try:
        await pump(pages(), consume, depth=4)
    finally:
        if counter is not None:
            counter.cancel()
    write_chunk(out, b"")
    summary.seconds = time.perf_counter() - t0
    return summary


def _line_of(runs: list[Sequence[int]], n: int) -> tuple[int, list[Sequence[int]]]:
    """The line of the ``n``-th record of ``runs`` (line numbers, run by run), and the runs of
    the records after it.  A run of plain lines is a range: sliced, never listed."""
    for i, run in enumerate(runs):
        if n <= len(run):
            rest = run[n:]
            return run[n - 1], [rest, *runs[i + 1:]] if rest else runs[i + 1:]
        n -= len(run)
    raise IndexError("fewer records pending than asked for")


async def import_from(store: AsyncStore, inp: BinaryIO, fmt: Format, name: str, *,
                      policy: Policy = "overwrite", batch_size: int = 5000, drop_ttl: bool = False,
                      key_filter: KeyFilter | None = None, dry_run: bool = False, from_line: int = 1,
                      reporter: Reporter | None = None) -> DumpSummary:
    """Write the dump's records into ``store`` in batches, in file order.

    ``from_line``: records starting before this line are read and checked but not written (how
    a stopped import resumes).  A stop says how many records are written and the line to resume
    from (:mod:`.._stopped`; an interruption tells ``reporter.note``): every record before it is
    in the store.  ``reporter``: progress events after each batch (phase "import").
    """
    kf = key_filter or KeyFilter()
    check_policy(policy, True, store)  # a dump carries the versions it was exported with
    writer = BatchWriter(store, policy=policy, drop_ttl=drop_ttl, dry_run=dry_run,
                         typed_ok=has_typed_values(store))
    t0 = time.perf_counter()
    done_through = [from_line - 1]  # the last line of the last batch written
    # each page's cursor is the line of its last record: once the page is written, every record
    # up to that line is in the store

    async def pages() -> AsyncIterator[Page]:
        filtering = bool(kf.prefix) or kf.glob is not None
        pending: list[Record] = []
        lines: list[Sequence[int]] = []  # the lines of the pending records, run by run
        last = 0  # the last line read
        for numbers, records in numbered_runs(inp, fmt, name):
            last = numbers[-1] if numbers else last
            if numbers and numbers[0] < from_line:
                kept = [(n, r) for n, r in zip(numbers, records, strict=True) if n >= from_line]
                numbers, records = [n for n, _ in kept], [r for _, r in kept]
            if filtering:
                kept = [(n, r) for n, r in zip(numbers, records, strict=True) if kf.matches(r.key)]
                numbers, records = [n for n, _ in kept], [r for _, r in kept]
            if not records:
                continue
            pending += records
            lines.append(numbers)
            while len(pending) >= batch_size:
                line, lines = _line_of(lines, batch_size)
                yield Page(pending[:batch_size], str(line))
                del pending[:batch_size]
        if pending:
            yield Page(pending, str(last))

    def ready(page: Page) -> Ready:
        # made ready while the batch before it is written (pump_ready)
        write = writer.ready(page.records)

        async def step() -> None:
            await write()
            done_through[0] = int(page.cursor or 0)
            if reporter is not None:
                reporter.progress(Progress("import", writer.counts, None, time.perf_counter() - t0))

        return step

    one_load = [False]  # while True, a stop undoes every write of the import

    def status() -> str:
        if one_load[0]:
            return "having written nothing: an import into an empty store is undone as a whole; rerun the import"
        # a batch in flight may land too: resuming writes it again, which changes nothing
        if done_through[0] < 1:
            return "before the first batch was written; rerun the import"
        return (f"with every record through line {done_through[0]:,} of {name} done, "
                f"at least {writer.counts.copied:,} written; resume with --from-line {done_through[0] + 1}")

    note = reporter.note if reporter is not None else None
    async def load() -> None:
        malformed: CorruptError | None = None
        async with one_load_if_empty(store, not dry_run and from_line == 1) as one:
            one_load[0] = one
            if one:
                try:
                    await pump_ready(pages(), ready, depth=2)
                except CorruptError as exc:  # the records before a malformed line are kept
                    malformed = exc
        if one_load[0]:
            one_load[0] = False  # committed
            if malformed is not None:
                raise malformed
            return
        await pump_ready(pages(), ready, depth=2)

    with contextlib.nullcontext() if dry_run else stopped.saying(status, note):
        await load()
    summary = DumpSummary(describe(store), records=writer.counts.read, expired=writer.counts.expired,
                            incomplete=writer.counts.incomplete, problems=writer.problems,
                            counts=writer.counts, seconds=time.perf_counter() - t0)
    return summary

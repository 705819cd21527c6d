"""`kvctl export` / `kvctl import`: human-readable dumps (JSON lines or CSV), exact round trip.

JSON lines: one object per record::

    {"key": "user:1", "value": "Ada", "expires_at_ms": 1767225600000, "version": 7466...}
    {"key_b64": "AP8=", "value_b64": "3q2+7w==", "expires_at_ms": null}

A key or value that is valid UTF-8 is written as text under ``key``/``value``; any other bytes
as base64 under ``key_b64``/``value_b64`` (:func:`kvctl.codec.json_bytes`).  ``expires_at_ms``
is absolute (ms since the epoch, null for none); ``version`` appears when the store keeps
versions; ``kind`` marks a typed value whose ``value`` is the store's opaque dump payload.

CSV: a header row ``key,key_b64,value,value_b64,expires_at_ms,version,kind`` and one row per
record, with the same rule (one of ``key``/``key_b64`` is filled; an empty ``value`` with an
empty ``value_b64`` is the empty value).  A field holding a comma, quote, LF or CR is quoted.

Import reads either back in batches through the same writer as migrate (conflict policy,
expiry, TTL support and limits), skipping records whose expiry has passed.  It is strict: a
record with a missing or unknown field, both ``x`` and ``x_b64``, an expiry or version that is
not an integer, a ragged CSV row or an unclosed quote stops the import (CorruptError, naming the
line).  A UTF-8 byte-order mark opening the file is ignored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import csv
import io
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from kvctl.codec import from_json_bytes, json_bytes, show_key
from kvctl.errors import CorruptError, StoreIOError, UsageError
from kvctl.store import MAX_EXPIRY_MS, MAX_VERSION, AsyncStore, Page, Record, now_ms

from . import _stopped as stopped
from ._batches import BatchWriter, Policy, check_policy
from ._files import atomic_writer
from ._pipeline import pump
from ._stores import describe, has_typed_values, open_async, start_count, with_dumps
from .keyfilter import KeyFilter
from .reporting import Counts, Problems, Progress, Reporter

Format = Literal["jsonl", "csv"]
CSV_COLUMNS = ["key", "key_b64", "value", "value_b64", "expires_at_ms", "version", "kind"]


def guess_format(name: str, explicit: str | None) -> Format:
    if explicit is not None:
        if explicit not in ("jsonl", "csv"):
            raise UsageError(f"unknown format {explicit!r} (use jsonl or csv)")
        return explicit  # type: ignore[return-value]
    return "csv" if name.lower().endswith(".csv") else "jsonl"


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
                                   reporter=reporter)

    if isinstance(out, Path):
        with atomic_writer(out) as fh:
            return asyncio.run(work(fh))
    return asyncio.run(work(out))


def import_(url: str, inp: BinaryIO, name: str, opts: ImportOptions, reporter: Reporter | None = None) -> DumpSummary:
    """Import the dump ``inp`` (called ``name`` in messages) into the store at ``url``.  Owns the
    command's only event loop."""
    async def work() -> DumpSummary:
        async with open_async(url) as store:
            return await import_from(store, inp, opts.fmt, name, policy=opts.policy, batch_size=opts.batch_size,
                                     drop_ttl=opts.drop_ttl, key_filter=opts.key_filter, dry_run=opts.dry_run,
                                     from_line=opts.from_line, reporter=reporter)

    return asyncio.run(work())


# -- export ------------------------------------------------------------------------------------
def _write(out: BinaryIO, data: bytes) -> None:
    try:
        if data:
            out.write(data)
        else:
            out.flush()
    except BrokenPipeError:
        raise  # the reader went away (`kvctl export | head`): the cli stops quietly
    except OSError as exc:
        raise StoreIOError(f"cannot write the export: {exc.strerror}") from None


def _json_line(rec: Record) -> str:
    obj: dict[str, Any] = {}
    json_bytes(obj, "key", rec.key)
    json_bytes(obj, "value", rec.value)
    obj["expires_at_ms"] = rec.expires_at_ms
    if rec.version is not None:
        obj["version"] = rec.version
    if rec.kind is not None:
        obj["kind"] = rec.kind
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _pair(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        return "", base64.b64encode(data).decode("ascii")


def _csv_rows(records: list[Record]) -> str:
    buf = io.StringIO()
    plain = csv.writer(buf, lineterminator="\n")
    # QUOTE_MINIMAL quotes a field holding the line terminator but not a bare CR, which every CSV
    # reader (ours included) also takes for the end of a record: such a row is quoted whole.
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for rec in records:
        k, kb = _pair(rec.key)
        v, vb = _pair(rec.value)
        if not rec.key:
            kb = ""  # an empty key: both columns empty
        (quoted if "\r" in k or "\r" in v else plain).writerow(
            [k, kb, v, vb, "" if rec.expires_at_ms is None else rec.expires_at_ms,
             "" if rec.version is None else rec.version, rec.kind or ""])
    return buf.getvalue()


async def export_to(store: AsyncStore, out: BinaryIO, fmt: Format, *, key_filter: KeyFilter | None = None,
                    batch_size: int = 5000, reporter: Reporter | None = None) -> DumpSummary:
    """Write the records under ``key_filter`` to ``out``.  ``reporter``: progress events after each
    batch (phase "export"), with the store's key count as the total once it is known."""
    kf = key_filter or KeyFilter()
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
        text = _csv_rows(records) if fmt == "csv" else "\n".join(map(_json_line, records)) + "\n"
        data = text.encode("utf-8")
        _write(out, data)
        if reporter is not None:
            done.read, done.bytes = summary.records, done.bytes + len(data)
            reporter.progress(Progress("export", done, total[0], time.perf_counter() - t0))

    try:
        await pump(pages(), consume, depth=4)
    finally:
        if counter is not None:
            counter.cancel()
    _write(out, b"")
    summary.seconds = time.perf_counter() - t0
    return summary


# -- import ------------------------------------------------------------------------------------
# Import is strict: a dump is read back exactly or refused with the line number (CorruptError),
# never guessed at.  JSON lines and CSV share these rules, so either format accepts the same records.
FIELDS = frozenset(CSV_COLUMNS)
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark (Excel writes one) opening a file is not data
_DIGITS = re.compile(r"[0-9]+")


def _int_field(value: Any, what: str, top: int) -> int | None:
    if value is None:
        return None
    if type(value) is not int:  # bool is an int subclass, and 1.5 or "7" are not integers here
        raise ValueError(f"{what} must be an integer, not {value!r}")
    if not 0 <= value <= top:
        raise ValueError(f"{what} {value} is outside 0..{top}")
    return value


def _record(obj: dict[str, Any]) -> Record:
    """A record from its fields (JSON names; a CSV row is mapped to them first)."""
    unknown = obj.keys() - FIELDS
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0]!r} (fields: {', '.join(CSV_COLUMNS)})")
    key = from_json_bytes(obj, "key")
    if key is None:
        raise ValueError("no key or key_b64 field")
    value = from_json_bytes(obj, "value")
    if value is None:
        raise ValueError("no value or value_b64 field")
    kind = obj.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise ValueError("kind must be a string")
    return Record(key, value, _int_field(obj.get("expires_at_ms"), "expires_at_ms", MAX_EXPIRY_MS),
                  _int_field(obj.get("version"), "version", MAX_VERSION), kind)


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        names = [name for name, _ in pairs]
        raise ValueError(f"field {next(n for n in names if names.count(n) > 1)!r} is given twice")
    return obj


def _from_json(line: bytes) -> Record:
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if line.count(b'":') > len(obj):
        # perhaps a field given twice, which json.loads settles silently by keeping the last:
        # look closer (rarely: the cheap count also sees '":' inside a string)
        json.loads(line, object_pairs_hook=_unique_names)
    return _record(obj)


def _csv_cell(name: str, cell: str, row: dict[str, str]) -> Any:
    """A CSV cell as the JSON field it stands for; None: the field is absent from this record."""
    if name in ("expires_at_ms", "version"):
        if cell == "":
            return None
        return int(cell) if _DIGITS.fullmatch(cell) else cell  # anything else is refused as not an integer
    if name == "kind" or name.endswith("_b64"):
        return cell or None
    # ``key``/``value``: empty is the empty string, unless the base64 column is filled instead
    return None if cell == "" and row.get(f"{name}_b64") else cell


def _csv_header(header: list[str], name: str) -> list[str]:
    unknown = [c for c in header if c not in FIELDS]
    missing = [f for f in ("key", "value") if f not in header and f"{f}_b64" not in header]
    if unknown or missing or len(set(header)) != len(header):
        why = (f"unknown column {unknown[0]!r}" if unknown else f"no {missing[0]} column" if missing
               else "a column appears twice")
        raise CorruptError(f"{name}: not a kvctl CSV export ({why}; columns: {', '.join(CSV_COLUMNS)})")
    return header


def _csv_records(inp: BinaryIO, name: str, where: list[int]) -> Iterator[tuple[int, Record]]:
    csv.field_size_limit(2**31 - 1)  # values can be large; the default caps a field at 128 KiB
    # strict: a quote inside an unquoted field, or text after a closing quote, is an error
    reader = csv.reader(io.TextIOWrapper(inp, encoding="utf-8-sig", newline=""), strict=True)
    try:
        header = _csv_header(next(reader), name)
    except StopIteration:
        return  # an empty file holds no records
    while True:
        where[0] = reader.line_num + 1  # a record may span lines: name the one it starts on
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "end of data" in str(exc):
                raise ValueError("a quoted field is not closed before the end of the file") from None
            raise
        if not cells:
            continue  # a blank line
        if len(cells) != len(header):
            raise ValueError(f"{len(cells)} fields where the header has {len(header)}")
        row = dict(zip(header, cells, strict=True))
        obj = {c: v for c in header if (v := _csv_cell(c, row[c], row)) is not None}
        yield where[0], _record(obj)


def _json_records(inp: BinaryIO, where: list[int]) -> Iterator[tuple[int, Record]]:
    for line in inp:
        where[0] += 1
        if where[0] == 1 and line.startswith(BOM):
            line = line[len(BOM):]
        if line.strip():
            yield where[0], _from_json(line)


def numbered_records(inp: BinaryIO, fmt: Format, name: str) -> Iterator[tuple[int, Record]]:
    """Parse a dump into (line, record); a malformed line raises :class:`CorruptError` naming it."""
    where = [0]  # the line being parsed, for the error message
    try:
        yield from _csv_records(inp, name, where) if fmt == "csv" else _json_records(inp, where)
    except (ValueError, KeyError, binascii.Error, UsageError, UnicodeDecodeError, csv.Error) as exc:
        raise CorruptError(f"{name}: line {where[0]}: {exc}") from None


def read_records(inp: BinaryIO, fmt: Format, name: str) -> Iterator[Record]:
    """Parse a dump; a malformed line raises :class:`CorruptError` naming the line."""
    for _, rec in numbered_records(inp, fmt, name):
        yield rec


async def import_from(store: AsyncStore, inp: BinaryIO, fmt: Format, name: str, *,
                      policy: Policy = "overwrite", batch_size: int = 5000, drop_ttl: bool = False,
                      key_filter: KeyFilter | None = None, dry_run: bool = False, from_line: int = 1,
                      reporter: Reporter | None = None) -> DumpSummary:
    """Write the dump's records into ``store`` in batches, in file order.

    ``from_line``: records starting before this line are read and checked but not written (how
    a stopped import resumes).  A stop says how many records are written and the line to resume
    from (:mod:`._stopped`; an interruption tells ``reporter.note``): every record before it is
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
        batch: list[Record] = []
        for line, rec in numbered_records(inp, fmt, name):
            if line >= from_line and kf.matches(rec.key):
                batch.append(rec)
                if len(batch) >= batch_size:
                    yield Page(batch, str(line))
                    batch = []
        if batch:
            yield Page(batch, str(line))

    async def consume(page: Page) -> None:
        await writer.write(page.records)
        done_through[0] = int(page.cursor or 0)
        if reporter is not None:
            reporter.progress(Progress("import", writer.counts, None, time.perf_counter() - t0))

    def status() -> str:
        # a batch in flight may land too: resuming writes it again, which changes nothing
        if done_through[0] < 1:
            return "before the first batch was written; rerun the import"
        return (f"with every record through line {done_through[0]:,} of {name} done, "
                f"at least {writer.counts.copied:,} written; resume with --from-line {done_through[0] + 1}")

    note = reporter.note if reporter is not None else None
    with contextlib.nullcontext() if dry_run else stopped.saying(status, note):
        await pump(pages(), consume, depth=2)
    summary = DumpSummary(describe(store), records=writer.counts.read, expired=writer.counts.expired,
                            incomplete=writer.counts.incomplete, problems=writer.problems,
                            counts=writer.counts, seconds=time.perf_counter() - t0)
    return summary

"""The dump format of `kvctl export` and `kvctl import`: JSON lines or CSV, both ways, exactly.

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

Reading is strict: a record with a missing or unknown field, both ``x`` and ``x_b64``, an expiry
or version that is not an integer, a ragged CSV row or an unclosed quote is refused
(CorruptError, naming the line).  A UTF-8 byte-order mark opening the file is ignored.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO, Literal

from kvctl.codec import from_json_bytes, json_bytes
from kvctl.errors import CorruptError, StoreIOError, UsageError
from kvctl.store import MAX_EXPIRY_MS, MAX_VERSION, Record

from .._gc import collector_held
from .jsonbatch import plain_records

Format = Literal["jsonl", "csv"]
CSV_COLUMNS = ["key", "key_b64", "value", "value_b64", "expires_at_ms", "version", "kind"]


def guess_format(name: str, explicit: str | None) -> Format:
    if explicit is not None:
        if explicit not in ("jsonl", "csv"):
            raise UsageError(f"unknown format {explicit!r} (use jsonl or csv)")
        return explicit  # type: ignore[return-value]
    return "csv" if name.lower().endswith(".csv") else "jsonl"


# -- writing -----------------------------------------------------------------------------------
def write_chunk(out: BinaryIO, data: bytes) -> None:
    try:
        if data:
            out.write(data)
        else:
            out.flush()
    except BrokenPipeError:
        raise  # the reader went away (`kvctl export | head`): the cli stops quietly
    except OSError as exc:
        raise StoreIOError(f"cannot write the export: {exc.strerror}") from None


def json_line(rec: Record) -> str:
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


def csv_rows(records: list[Record]) -> str:
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


# -- reading -----------------------------------------------------------------------------------
# Import is strict: a dump is read back exactly or refused with the line number (CorruptError),
# never guessed at.  JSON lines and CSV share these rules, so either format accepts the same records.
FIELDS = frozenset(CSV_COLUMNS)
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark (Excel writes one) opening a file is not data
_DIGITS = re.compile(r"[0-9]+")
RUN_BYTES = 1 << 20  # JSON lines are read and parsed in runs of about this size


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
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(_not_json(line, exc)) from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if line.count(b'"') > 2 * (len(obj) + sum(type(v) is str for v in obj.values())):
        # perhaps a field given twice, which json.loads settles silently by keeping the last: its
        # name adds two quote marks to those of the names and text values kept.  Look closer
        # (rarely: an escaped quote inside a string is counted too)
        json.loads(line, object_pairs_hook=_unique_names)
    return _record(obj)


def _not_json(line: bytes, exc: json.JSONDecodeError) -> str:
    """Why ``line`` is not a JSON record, in one phrase; CSV given as JSON lines (stdin has no file
    name to tell it by) is named as such, with the option that reads it."""
    text = line.decode("utf-8", "replace").strip()
    if "," in text and not text.startswith(("{", "[", '"')):
        header = next(csv.reader([text]))
        what = "a kvctl CSV header" if set(header) <= FIELDS and "key" in header else "CSV"
        return f"this looks like {what}, not a JSON line: import CSV with -f csv"
    column = min(exc.pos, len(exc.doc.rstrip("\r\n"))) + 1  # past the end: at the newline, not after it
    return f"not a JSON line ({exc.msg} at column {column})"


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


def _run_of_lines(inp: BinaryIO) -> list[bytes]:
    """The next lines of about RUN_BYTES, as ``readlines`` splits them.  Read in one call: a
    buffered ``readlines`` reads a few KiB at a time, each read letting another thread take the
    interpreter (a store's writer) and making this one wait to get it back."""
    data = inp.read(RUN_BYTES)
    lines = io.BytesIO(data).readlines()
    if lines and not data.endswith(b"\n"):
        lines[-1] += inp.readline()  # the rest of a line cut by the read
    return lines


def _json_records(inp: BinaryIO, where: list[int]) -> Iterator[tuple[Sequence[int], list[Record]]]:
    """Runs of (line numbers, records): a run of plain records parsed as a whole
    (:mod:`.jsonbatch`), any other run line by line, which words every error exactly."""
    while True:
        lines = _run_of_lines(inp)
        if not lines:
            return
        start = where[0] + 1
        if start == 1 and lines[0].startswith(BOM):
            lines[0] = lines[0][len(BOM):]
        with collector_held():
            records = plain_records(lines)
        if records is not None:
            where[0] += len(lines)
            yield range(start, where[0] + 1), records
            continue
        numbers: list[int] = []
        records = []
        try:
            for line in lines:
                where[0] += 1
                if line.strip():
                    records.append(_from_json(line))
                    numbers.append(where[0])
        except Exception:
            if records:  # the records before a bad line are imported, as when read one by one
                yield numbers, records
            raise
        yield numbers, records


def _single(rows: Iterator[tuple[int, Record]]) -> Iterator[tuple[Sequence[int], list[Record]]]:
    for line, rec in rows:
        yield (line,), [rec]


def numbered_runs(inp: BinaryIO, fmt: Format, name: str) -> Iterator[tuple[Sequence[int], list[Record]]]:
    """Parse a dump into runs of (line numbers, records), one line number per record; a malformed
    line raises :class:`CorruptError` naming it."""
    where = [0]  # the line being parsed, for the error message
    try:
        yield from _single(_csv_records(inp, name, where)) if fmt == "csv" else _json_records(inp, where)
    except (ValueError, KeyError, binascii.Error, UsageError, UnicodeDecodeError, csv.Error) as exc:
        raise CorruptError(f"{name}: line {where[0]}: {exc}") from None


def numbered_records(inp: BinaryIO, fmt: Format, name: str) -> Iterator[tuple[int, Record]]:
    """Parse a dump into (line, record); a malformed line raises :class:`CorruptError` naming it."""
    for numbers, records in numbered_runs(inp, fmt, name):
        yield from zip(numbers, records, strict=True)


def read_records(inp: BinaryIO, fmt: Format, name: str) -> Iterator[Record]:
    """Parse a dump; a malformed line raises :class:`CorruptError` naming the line."""
    for _, rec in numbered_records(inp, fmt, name):
        yield rec

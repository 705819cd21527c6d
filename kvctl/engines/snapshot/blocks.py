"""The records inside one decompressed snapshot block (specified in FORMAT.md).

Version 2 blocks are columns: every record's type, flags, key and value lengths, expiry and
version, then all keys, then all values.  Encoding and decoding them are a few C-level passes
per block (``array``, ``bytes.join``, one ``struct`` unpacking the keys and values, ``map``/``zip``),
with a Python step only for the rare typed records and tombstones.  Version 1 blocks (a record
after another, each with its own checksum) are still read.

Both decoders raise ``ValueError`` naming the record at fault; the reader turns it into a
:class:`~.format.SnapshotCorrupt` with the block's file offset.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain, repeat
from operator import add, or_
from typing import Any, NamedTuple

from kvctl.plugin_kit import new_records
from kvctl.store import TOMBSTONE as TOMBSTONE_KIND
from kvctl.store import Record

# record types (a TOMBSTONE record is a Record whose kind is kvctl.store.TOMBSTONE)
PUT, TOMBSTONE, TYPED = 0, 1, 2
F_EXPIRY, F_VERSION = 1, 2
U32 = struct.Struct("<I")
REC_V1 = struct.Struct("<IBBIqQ")  # body length, type, flags, key length, expires_at_ms, version
COLUMNS = 1 + 1 + 4 + 4 + 8 + 8  # v2 bytes per record before the keys: type, flags, lengths, expiry, version
_SWAP = sys.byteorder == "big"  # the columns are little-endian
assert array("I").itemsize == 4 and array("q").itemsize == 8


class Columns(NamedTuple):
    """Records as columns (a field of every record, then the next field), with the lengths of
    the keys and values: taken once per batch, they decide where blocks are cut and are what a
    block is encoded from."""

    keys: Sequence[bytes]
    values: Sequence[bytes]
    exps: Sequence[int | None]
    versions: Sequence[int | None]
    kinds: Sequence[str | None]
    klens: Sequence[int]
    vlens: Sequence[int]

    @classmethod
    def of(cls, records: Sequence[Record]) -> Columns:
        """The columns of ``records`` (non-empty)."""
        # one pass transposing the records: each record is visited once, wherever it lies in memory
        keys, values, exps, versions, kinds = zip(*records, strict=True)
        return cls(keys, values, exps, versions, kinds, list(map(len, keys)), list(map(len, values)))

    def part(self, start: int, stop: int | None = None) -> Columns:
        return Columns._make(field[start:stop] for field in self)

    def records(self) -> list[Record]:
        return new_records(zip(*self[:5], strict=True))

    def size(self) -> int:
        """The v2 bytes these records take (typed kinds aside)."""
        return sum(self.klens) + sum(self.vlens) + COLUMNS * len(self.keys)

    def sizes(self) -> list[int]:
        """Running totals of :meth:`size` record by record: where to cut blocks."""
        n = len(self.keys)
        return list(map(add, accumulate(map(add, self.klens, self.vlens)), range(COLUMNS, COLUMNS * n + 1, COLUMNS)))


def joined(parts: Sequence[Columns]) -> Columns:
    """One ``Columns`` of ``parts`` one after another."""
    if len(parts) == 1:
        return parts[0]
    return Columns._make(list(chain.from_iterable(field)) for field in zip(*parts, strict=True))


def _column(code: str, values: Iterable[int]) -> array[Any]:
    col = array(code, values)
    if _SWAP:
        col.byteswap()
    return col


def _flag_bits(values: Sequence[int | None], bit: int) -> tuple[bytes, bytes | array[Any]]:
    """The flag bit of each record (0 or ``bit``) and the column, 0 where a value is None."""
    n = len(values)
    absent = values.count(None)
    if absent == n:
        return bytes(n), bytes(8 * n)
    if absent == 0:
        return bytes((bit,)) * n, _column("Q" if bit == F_VERSION else "q", values)  # type: ignore[arg-type]
    return (bytes(bit if v is not None else 0 for v in values),
            _column("Q" if bit == F_VERSION else "q", [0 if v is None else v for v in values]))


def encode_v2(records: Sequence[Record]) -> bytes:
    """One v2 block of ``records`` (non-empty): a put, a TYPED put when ``Record.kind`` is set,
    a TOMBSTONE when it is kvctl.store.TOMBSTONE (key and version only)."""
    return encode_columns(Columns.of(records))


def encode_columns(cols: Columns) -> bytes:
    """The v2 block of the records ``cols`` holds (at least one)."""
    n = len(cols.keys)
    types = bytes(n)
    values, exps, vlens = cols.values, cols.exps, cols.vlens
    if cols.kinds.count(None) != n:
        values, exps, types = _special(values, exps, cols.kinds)
        vlens = list(map(len, values))
    eflags, ecol = _flag_bits(exps, F_EXPIRY)
    vflags, vcol = _flag_bits(cols.versions, F_VERSION)
    if eflags.count(eflags[0]) == n and vflags.count(vflags[0]) == n:  # the usual batch: one byte repeated
        flags = bytes((eflags[0] | vflags[0],)) * n
    else:
        flags = bytes(map(or_, eflags, vflags))
    body = b"".join((types, flags, _column("I", cols.klens), _column("I", vlens), ecol, vcol,
                     b"".join(cols.keys), b"".join(values)))
    return U32.pack(zlib.crc32(body)) + body


def _special(values: Sequence[bytes], exps: Sequence[int | None],
             kinds: Sequence[str | None]) -> tuple[list[bytes], list[int | None], bytes]:
    """Values, expiries and types with typed records and tombstones in their v2 form."""
    values_out, exps_out, types = list(values), list(exps), bytearray(len(values))
    for i, kind in enumerate(kinds):
        if kind is None:
            continue
        if kind == TOMBSTONE_KIND:
            types[i], values_out[i], exps_out[i] = TOMBSTONE, b"", None
        else:
            k = kind.encode("ascii")
            types[i], values_out[i] = TYPED, b"".join((bytes((len(k),)), k, values[i]))
    return values_out, exps_out, bytes(types)


def _read_column(code: str, raw: bytes, at: int, n: int) -> array[Any]:
    col = array(code)
    col.frombytes(raw[at: at + col.itemsize * n])
    if _SWAP:
        col.byteswap()
    return col


def _optional(col: array[Any], flags: bytes, bit: int) -> Iterable[int | None]:
    """The column's values where ``flags`` has ``bit``, None elsewhere."""
    n = len(flags)
    present = flags.count(bit) + flags.count(3)
    if present == 0:
        return repeat(None, n)
    if present == n:
        return col.tolist()
    return [v if f & bit else None for v, f in zip(col, flags, strict=True)]


def _format(lengths: array[Any]) -> str:
    """The struct format of byte strings of ``lengths``, one after another."""
    n = len(lengths)
    if n and lengths.count(lengths[0]) == n:  # keys of one length, values of one size
        return f"{lengths[0]}s" * n
    return ("%ds" * n) % tuple(lengths)


def _pieces(raw: bytes, start: int, klens: array[Any], vlens: array[Any]) -> tuple[bytes, ...]:
    """The keys, then the values, cut from ``raw`` at ``start`` in one C-level pass (the caller
    has checked that the lengths add up to the bytes there)."""
    return struct.Struct("<" + _format(klens) + _format(vlens)).unpack_from(raw, start)


def decode_v2(raw: bytes, count: int, check: bool) -> tuple[list[Record], int]:
    """The records of a v2 block and how many are tombstones; ``check`` checks the block crc."""
    n = count
    keys_at = 4 + COLUMNS * n
    if len(raw) < keys_at:
        raise ValueError(f"the block is {len(raw)} bytes, too short for the columns of {n} records")
    if check and zlib.crc32(memoryview(raw)[4:]) != U32.unpack_from(raw)[0]:
        raise ValueError("checksum mismatch of the decompressed records")
    types, flags = raw[4: 4 + n], raw[4 + n: 4 + 2 * n]
    if types.translate(None, b"\0\1\2") or flags.translate(None, b"\0\1\2\3"):
        raise ValueError("unknown record type or flags")
    at = 4 + 2 * n
    klens = _read_column("I", raw, at, n)
    vlens = _read_column("I", raw, at + 4 * n, n)
    exps = _optional(_read_column("q", raw, at + 8 * n, n), flags, F_EXPIRY)
    versions = _optional(_read_column("Q", raw, at + 16 * n, n), flags, F_VERSION)
    values_at = keys_at + sum(klens)
    if values_at + sum(vlens) != len(raw):
        raise ValueError(f"the key and value lengths add up to {values_at + sum(vlens)} bytes, the block "
                         f"holds {len(raw)}")
    pieces = _pieces(raw, keys_at, klens, vlens)
    records = new_records(zip(pieces[:n], pieces[n:], exps, versions, repeat(None, n), strict=True))
    if types.count(PUT) == n:
        return records, 0
    return records, _fix_special(records, types, flags)


def _fix_special(records: list[Record], types: bytes, flags: bytes) -> int:
    """Typed records and tombstones of a v2 block made whole, in place; returns the tombstones."""
    tombstones = 0
    for i, typ in enumerate(types):
        if typ == PUT:
            continue
        rec = records[i]
        if typ == TOMBSTONE:
            if flags[i] & F_EXPIRY or rec.value:
                raise ValueError(f"record {i}: a tombstone with an expiry or a value")
            records[i] = Record(rec.key, b"", None, rec.version, TOMBSTONE_KIND)
            tombstones += 1
        else:
            value = rec.value
            if not value or len(value) < 1 + value[0]:
                raise ValueError(f"record {i}: a typed value shorter than its kind")
            try:
                kind = value[1: 1 + value[0]].decode("ascii")
            except UnicodeDecodeError:
                raise ValueError(f"record {i}: a kind that is not ASCII") from None
            records[i] = Record(rec.key, value[1 + value[0]:], rec.expires_at_ms, rec.version, kind)
    return tombstones


def decode_v1(raw: bytes, check: bool) -> tuple[list[Record], int]:
    """The records of a v1 block and how many are tombstones; ``check`` checks each record's crc."""
    records: list[Record] = []
    tombstones = 0
    unpack = REC_V1.unpack_from
    crc_at = U32.unpack_from
    crc32 = zlib.crc32
    pos, end_all, n = 0, len(raw), 0
    try:
        while pos < end_all:
            body_len, typ, flags, klen, exp, ver = unpack(raw, pos)
            end = pos + 4 + body_len
            if end + 4 > end_all or klen > body_len - 22:
                raise ValueError("record length out of bounds")
            if check and crc32(raw[pos:end]) != crc_at(raw, end)[0]:
                raise ValueError("record checksum mismatch")
            kstart = pos + 26
            key = raw[kstart: kstart + klen]
            e = exp if flags & F_EXPIRY else None
            v = ver if flags & F_VERSION else None
            if typ == PUT:
                records.append(Record(key, raw[kstart + klen: end], e, v))
            elif typ == TYPED:
                kl = raw[kstart + klen]
                kind = raw[kstart + klen + 1: kstart + klen + 1 + kl].decode("ascii")
                records.append(Record(key, raw[kstart + klen + 1 + kl: end], e, v, kind))
            elif typ == TOMBSTONE:
                if flags & F_EXPIRY or end != kstart + klen:
                    raise ValueError("a tombstone with an expiry or a value")
                records.append(Record(key, b"", None, v, TOMBSTONE_KIND))
                tombstones += 1
            else:
                raise ValueError(f"unknown record type {typ}")
            pos = end + 4
            n += 1
    except (ValueError, struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"record {n} (byte {pos} of the decompressed block): {exc}") from None
    return records, tombstones

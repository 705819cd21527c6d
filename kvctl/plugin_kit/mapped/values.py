"""Values of mapped rows: the mapped columns <-> kvctl's value bytes.

One value column: its bytes (text as UTF-8, NULL as empty, numbers and times as text, JSON as
its text).  Several columns, or ``value=*``: one compact JSON object in mapping order, ``{"col":
v}``; NULL is ``null``, numbers are numbers, text is a string, a blob is
``{"$base64": true, "encoded": "…"}`` (datasette's form), JSON columns are embedded as values,
times are RFC 3339 in UTC.  The same row always reads as the same bytes.  A write takes the same
shapes back; what does not fit its column is a :class:`~kvctl.errors.LimitError` (exit 5) naming
the key and the column, before anything is written.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from kvctl.errors import LimitError
from kvctl.plugin_kit.display import show_key

from .columns import Column, Kind, Mapping, TimeMapping
from .times import datetime_of, format_text, integer_of, parse_time_us, rfc3339

__all__ = ["ValueCodec", "read_time_ms", "time_param"]

_BASE64 = "$base64"


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class ValueCodec:
    """Reads and writes a mapping's value columns (driver values in, driver values out)."""

    def __init__(self, mapping: Mapping) -> None:
        self.columns = mapping.value
        self.single = mapping.single
        self.where = mapping.where

    # -- reading -------------------------------------------------------------------------
    def read(self, row: Sequence[object]) -> bytes:
        """The value of a row's value columns (in mapping order)."""
        if self.single:
            return _bytes_of(self.columns[0], row[0])
        return _dumps({col.name: _json_of(col, v) for col, v in zip(self.columns, row, strict=True)})

    # -- writing -------------------------------------------------------------------------
    def write(self, key: bytes, value: bytes) -> list[object]:
        """Driver values for the value columns, in mapping order."""
        if self.single:
            return [self._from_bytes(key, self.columns[0], value)]
        try:
            obj = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            raise self._unfit(key, None, "is not a JSON object of the mapped columns") from None
        if not isinstance(obj, dict):
            raise self._unfit(key, None, "is not a JSON object of the mapped columns")
        names = [c.name for c in self.columns]
        missing = [n for n in names if n not in obj]
        unknown = [n for n in obj if n not in names]
        if missing or unknown:
            what = "; ".join(filter(None, [f"missing {', '.join(missing)}" if missing else "",
                                           f"unknown {', '.join(unknown)}" if unknown else ""]))
            raise self._unfit(key, None, f"does not have exactly the mapped columns ({what})")
        return [self._from_json(key, col, obj[col.name]) for col in self.columns]

    def _unfit(self, key: bytes, column: Column | None, why: str) -> LimitError:
        where = f"column {column.name} of " if column is not None else ""
        return LimitError(f"{self.where}: the value for {where}key {show_key(key)} {why}")

    def _from_bytes(self, key: bytes, col: Column, value: bytes) -> object:
        kind = col.kind
        if kind is Kind.BLOB:
            return value
        if value == b"" and kind not in (Kind.TEXT, Kind.OTHER):
            return self._null(key, col)
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise self._unfit(key, col, f"is not UTF-8 text (the column is {col.declared or kind.value})") from None
        if kind is Kind.JSON:
            try:
                json.loads(text)
            except ValueError:
                raise self._unfit(key, col, "is not JSON") from None
            return text
        if kind in (Kind.TEXT, Kind.OTHER, Kind.UUID):
            return text
        try:
            return self._from_json(key, col, json.loads(text) if kind is not Kind.TIME_TEXT else text)
        except ValueError:
            raise self._unfit(key, col, f"is not a {col.declared or kind.value}") from None

    def _null(self, key: bytes, col: Column) -> object:
        if col.not_null:
            raise self._unfit(key, col, "is empty, and the column is NOT NULL")
        return None

    def _from_json(self, key: bytes, col: Column, v: Any) -> object:
        kind = col.kind
        if v is None:
            return self._null(key, col)
        if kind is Kind.JSON:
            return _dumps(v).decode()
        if kind is Kind.BLOB:
            if isinstance(v, dict) and v.get(_BASE64) is True and isinstance(v.get("encoded"), str):
                try:
                    return base64.b64decode(v["encoded"], validate=True)
                except ValueError:
                    raise self._unfit(key, col, "is not valid base64") from None
            if isinstance(v, str):
                return v.encode()
        elif kind is Kind.INTEGER:
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            if isinstance(v, float) and v.is_integer():
                return int(v)
        elif kind is Kind.REAL:
            if isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
        elif kind is Kind.BOOL:
            if isinstance(v, bool):
                return v
        elif kind in (Kind.TIME_TEXT, Kind.TIMESTAMP):
            us = parse_time_us(v) if isinstance(v, str) else None
            if us is not None:
                return v if kind is Kind.TIME_TEXT else datetime_of(us)
        elif isinstance(v, str):  # TEXT, UUID, OTHER
            return v
        raise self._unfit(key, col, f"({json.dumps(v)[:40]}) does not fit a {col.declared or kind.value} column")


def _bytes_of(col: Column, v: object) -> bytes:
    """One column's value as the record's bytes."""
    if v is None:
        return b""
    if isinstance(v, bytes):
        return v
    if isinstance(v, memoryview | bytearray):
        return bytes(v)
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, datetime | date):
        return str(_json_of(col, v)).encode()
    if isinstance(v, dict | list) or (col.kind is Kind.JSON and isinstance(v, bool | int | float)):
        return _dumps(v)
    return str(v).encode()


def _json_of(col: Column, v: object) -> object:
    """One column's value inside a JSON object."""
    if v is None or isinstance(v, bool | int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, memoryview | bytearray):
        v = bytes(v)
    kind = col.kind
    if isinstance(v, bytes):
        if kind is not Kind.BLOB:
            with contextlib.suppress(UnicodeDecodeError):
                v = v.decode("utf-8")
        if isinstance(v, bytes):
            return {_BASE64: True, "encoded": base64.b64encode(v).decode()}
    if isinstance(v, datetime):
        us = parse_time_us(v)
        return rfc3339(us) if us is not None else str(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, str):
        if kind is Kind.JSON:
            try:
                return json.loads(v)
            except ValueError:
                return v  # not JSON after all: shown as the text it is
        if kind is Kind.TIME_TEXT:
            us = parse_time_us(v)
            return rfc3339(us) if us is not None else v
        return v
    if isinstance(v, dict | list):
        return v
    return str(v)


def read_time_ms(tm: TimeMapping, v: object) -> int | None:
    """An expires/version column's value in ms since the epoch; None when NULL or unreadable."""
    us = parse_time_us(v, tm.unit if tm.unit in ("s", "ms", "us", "ns") else None)
    return None if us is None else us // 1000


def time_param(tm: TimeMapping, ms: int | None) -> object:
    """The driver value that writes ``ms`` (None: NULL) into an expires/version column."""
    if ms is None:
        return None
    us = ms * 1000
    kind = tm.column.kind
    if kind in (Kind.INTEGER, Kind.REAL):
        assert tm.unit is not None
        return integer_of(us, tm.unit)
    if kind is Kind.TIMESTAMP:
        return datetime_of(us)
    if tm.unit in ("s", "ms", "us", "ns"):  # numbers kept in a text-affinity column
        return str(integer_of(us, tm.unit))
    return format_text(us, tm.unit or "sql")

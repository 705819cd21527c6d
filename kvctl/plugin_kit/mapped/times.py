"""Timestamps in application tables: parsing the forms applications write, and writing one back.

Applications store times as SQLite ``CURRENT_TIMESTAMP`` text (``YYYY-MM-DD HH:MM:SS``, UTC),
RFC 3339 text, Go's ``time.Time.String()`` (``2026-03-30 10:11:12.5 +0200 CEST m=+0.0012``),
integers in a stated unit, or native timestamp values (a driver's ``datetime``).  Everything is
read to microseconds since the epoch; a value that is none of these reads as None (no expiry,
no version) rather than as a guess.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["INTEGER_UNITS", "TEXT_FORMATS", "format_text", "parse_time_us", "rfc3339"]

# integer column units: microseconds per unit, or units per microsecond (ns)
INTEGER_UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1}
_NS = "ns"
TEXT_FORMATS = ("sql", "rfc3339")  # how a kvctl write spells a time in a text column
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# date, time, optional fraction, optional zone (Z, +HH:MM, +HHMM, or Go's " +0200 CEST")
_TEXT = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?(?:\s+[A-Za-z][A-Za-z0-9+-]*)?(?:\s+m=[+-]\d+(?:\.\d+)?)?\s*$",
    re.IGNORECASE,
)


def parse_time_us(value: object, unit: str | None = None) -> int | None:
    """Microseconds since the epoch of a stored time, or None when it cannot be read as one.

    ``unit`` is the integer unit (``s``, ``ms``, ``us``, ``ns``); integers without a unit are
    not guessed.  Text: SQL, RFC 3339 and Go forms; no zone means UTC (SQLite's CURRENT_TIMESTAMP).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        when = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        delta = when - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, (int, float)):
        if unit is None:
            return None
        if unit == _NS:
            return int(value // 1000)
        return int(value * INTEGER_UNITS[unit])
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    if unit is not None and re.fullmatch(r"\s*-?\d+\s*", value):
        return parse_time_us(int(value), unit)  # an integer unit over a column of text affinity
    return _parse_text(value)


def _parse_text(text: str) -> int | None:
    match = _TEXT.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        when = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                        int(second or 0), tzinfo=UTC)
    except ValueError:
        return None
    us = parse_time_us(when)
    assert us is not None
    if fraction:
        us += int((fraction + "00000")[:6])
    if zone and zone.upper() != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        us -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60) * 1_000_000
    return us


def _datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def rfc3339(us: int) -> str:
    """RFC 3339 in UTC with the fraction the time has (none, or up to 6 digits, zeros trimmed):
    the canonical text of a time in a value read as JSON."""
    when = _datetime(us)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if when.microsecond:
        text += ("." + f"{when.microsecond:06d}").rstrip("0")
    return text + "Z"


def format_text(us: int, fmt: str) -> str:
    """A time written into a text column: ``sql`` is SQLite's ``YYYY-MM-DD HH:MM:SS`` (with
    ``.SSS`` when the time has milliseconds), which SQLite's date functions read; ``rfc3339``
    as :func:`rfc3339`."""
    if fmt == "rfc3339":
        return rfc3339(us)
    when = _datetime(us)
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    ms = when.microsecond // 1000
    return f"{text}.{ms:03d}" if ms else text


def integer_of(us: int, unit: str) -> int:
    """A time written into an integer column in ``unit``."""
    if unit == _NS:
        return us * 1000
    return us // INTEGER_UNITS[unit]


def datetime_of(us: int) -> datetime:
    """A time for a native timestamp column (UTC, aware)."""
    return _datetime(us)

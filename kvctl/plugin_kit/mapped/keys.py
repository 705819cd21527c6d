"""Keys of mapped rows: key columns <-> kvctl's key bytes, and a prefix as key-column conditions.

One key column: its bytes (text as UTF-8, integers as decimal text, uuids as their lowercase
canonical text), nothing added.  Several: the components joined by ``sep``; in every component
but the last, ``%`` and every byte of ``sep`` are written ``%XX`` (two uppercase hex digits), so
a key always splits back into its row (the first ``sep`` ends the first component, and so on)
and the last component, usually the one people read, is never altered.  Gorkflow's
``workflow_state(run_id, key)`` row (``6f1c…``, ``a/b``) is key ``6f1c…/a/b``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from ..scan import prefix_end
from .columns import Column, Kind

__all__ = ["KeyCodec", "PrefixPlan", "text_successor"]

_ESCAPE = re.compile(rb"%([0-9A-F]{2})")
_INTEGER = re.compile(rb"^(0|-?[1-9][0-9]*)$")
_MAX_CODE_POINT = 0x10FFFF


@dataclass(frozen=True)
class PrefixPlan:
    """The rows whose key starts with a prefix: the first ``len(equal)`` key columns equal these
    values, and the next one (if ``lower`` is not None) in ``[lower, upper)`` (``upper`` None: no
    bound).  ``exact``: these conditions select exactly the prefix; otherwise they select more and
    the caller keeps only keys that start with the prefix.  ``empty``: no key can start with it."""

    equal: tuple[object, ...] = ()
    lower: object | None = None
    upper: object | None = None
    exact: bool = True
    empty: bool = False


class KeyCodec:
    """Key bytes of a mapping's key columns, both ways; values are the driver's Python values
    (``str`` text and uuid, ``bytes`` blobs, ``int`` integers)."""

    def __init__(self, columns: Sequence[Column], sep: bytes = b"/") -> None:
        self.columns = tuple(columns)
        self.sep = sep
        self._escaped = frozenset(b"%" + sep)

    # -- one component -------------------------------------------------------------------
    def _escape(self, raw: bytes) -> bytes:
        if not self._escaped.intersection(raw):
            return raw
        return b"".join(b"%%%02X" % b if b in self._escaped else bytes((b,)) for b in raw)

    def _unescape(self, text: bytes) -> bytes | None:
        raw = _ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), text)
        return raw if self._escape(raw) == text else None  # only the canonical spelling names a row

    @staticmethod
    def component_bytes(column: Column, value: object) -> bytes:
        """A column value's bytes in a key."""
        if isinstance(value, bytes):
            return value
        if isinstance(value, memoryview | bytearray):
            return bytes(value)
        if isinstance(value, bool):
            raise TypeError("a boolean is not a key component")
        if isinstance(value, int | uuid.UUID):
            return str(value).encode()
        return str(value).encode()

    @staticmethod
    def component_value(column: Column, raw: bytes) -> object | None:
        """The column value whose key bytes are ``raw``; None when no value has them."""
        kind = column.kind
        if kind is Kind.BLOB:
            return raw
        if kind is Kind.INTEGER:
            return int(raw) if _INTEGER.match(raw) and -(1 << 63) <= int(raw) < (1 << 63) else None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if kind is Kind.UUID:
            try:
                return text if str(uuid.UUID(text)) == text else None
            except ValueError:
                return None
        return text

    def bindable(self, values: Sequence[object]) -> tuple[object, ...]:
        """Key values as read from a row, as parameters that compare equal to them (a driver
        that reads text as bytes gets str back for text columns)."""
        out = []
        for col, value in zip(self.columns, values, strict=True):
            native = None if value is None else self.component_value(col, self.component_bytes(col, value))
            out.append(value if native is None else native)
        return tuple(out)

    # -- whole keys ----------------------------------------------------------------------
    def encode(self, values: Sequence[object]) -> bytes | None:
        """The key of a row's key values; None when one is NULL (such a row has no key)."""
        if any(v is None for v in values):
            return None
        cols = self.columns
        if len(cols) == 1:
            return self.component_bytes(cols[0], values[0])
        parts = [self._escape(self.component_bytes(c, v)) for c, v in zip(cols[:-1], values, strict=False)]
        parts.append(self.component_bytes(cols[-1], values[-1]))
        return self.sep.join(parts)

    def decode(self, key: bytes) -> tuple[object, ...] | None:
        """The key values of the row ``key`` names; None when no row can have that key."""
        cols = self.columns
        if len(cols) == 1:
            value = self.component_value(cols[0], key)
            return None if value is None else (value,)
        parts = key.split(self.sep, len(cols) - 1)
        if len(parts) != len(cols):
            return None
        values: list[object] = []
        for i, (col, part) in enumerate(zip(cols, parts, strict=True)):
            raw = part if i == len(cols) - 1 else self._unescape(part)
            value = None if raw is None else self.component_value(col, raw)
            if value is None:
                return None
            values.append(value)
        return tuple(values)

    # -- prefixes ------------------------------------------------------------------------
    def plan(self, prefix: bytes) -> PrefixPlan:
        """Conditions on the key columns for the keys that start with ``prefix`` (never a
        pattern match: equality on complete components, a range on the partial one)."""
        if not prefix:
            return PrefixPlan()
        cols, sep = self.columns, self.sep
        equal: list[object] = []
        rest = prefix
        i = 0
        while i < len(cols) - 1:
            at = rest.find(sep)
            if at < 0:
                break
            raw = self._unescape(rest[:at])
            value = None if raw is None else self.component_value(cols[i], raw)
            if value is None:
                return PrefixPlan(empty=True)
            equal.append(value)
            rest = rest[at + len(sep):]
            i += 1
        exact = True
        if i < len(cols) - 1:  # a partial escaped component: keep its complete escapes
            kept = self._complete_codes(rest)
            exact = kept == rest
            raw = self._unescape(kept)
            if raw is None:
                return PrefixPlan(empty=True)
            rest = raw
        if not rest:
            return PrefixPlan(tuple(equal), exact=exact)
        lower, upper, exact_range = _range(cols[i], rest)
        if lower is _EMPTY:
            return PrefixPlan(empty=True)
        return PrefixPlan(tuple(equal), lower, upper, exact and exact_range)

    def _complete_codes(self, text: bytes) -> bytes:
        """The longest start of an escaped partial component made of whole codes (a trailing
        ``%`` or ``%X``, or a partial separator, is left out)."""
        end = len(text)
        for back in (1, 2):
            if end >= back and text[end - back:end - back + 1] == b"%":
                end -= back
                break
        while end and text[end - 1] in self._escaped and text[end - 1:end] != b"%":
            end -= 1
        return text[:end]


_EMPTY = object()


def _range(column: Column, raw: bytes) -> tuple[object, object | None, bool]:
    """(lower, upper, exact) for column values whose key bytes start with ``raw``; lower is
    ``_EMPTY`` when none can, None when no range applies (the caller filters)."""
    kind = column.kind
    if kind is Kind.BLOB:
        return raw, prefix_end(raw), True
    if kind is Kind.TEXT:
        exact = True
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.reason != "unexpected end of data":
                return _EMPTY, None, False
            text, exact = raw[:exc.start].decode("utf-8"), False  # a character cut in the middle
        if not text:
            return None, None, False
        return text, text_successor(text), exact
    return None, None, False  # integers and uuids: filtered by the caller


def text_successor(text: str) -> str | None:
    """The smallest string above every string that starts with ``text`` in code point order
    (which is UTF-8 byte order); None when there is none."""
    chars = list(text)
    while chars:
        code = ord(chars[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000
        if code <= _MAX_CODE_POINT:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None

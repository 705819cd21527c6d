"""The bulk path of JSON-lines import: a run of lines parsed and checked as a whole.

``plain_records(lines)`` parses every line with orjson and builds the records with C-level passes
(map, set, sum, min/max) instead of a Python loop per line.  It takes only the common, unambiguous
case: every line one JSON object whose key and value are each given once, as text (``key``,
``value``) or as base64 (``key_b64``, ``value_b64``), with ``expires_at_ms`` and ``version``
absent, null or in-range integers.  Anything else -- a blank line, ``kind``, a field given twice,
bad JSON or base64, a value orjson reads differently from the standard library (numbers beyond
64 bits, lone surrogates) -- returns None, and the caller parses that run line by line with the
standard library, which accepts, refuses and words its errors exactly as import always has.  So
the fast path changes speed, never a result."""

from __future__ import annotations

import json
from base64 import b64decode
from itertools import repeat
from operator import contains, itemgetter, ne
from typing import Any

import orjson

from kvctl.plugin_kit import new_records
from kvctl.store import MAX_EXPIRY_MS, MAX_VERSION, Record

_DICT, _STR_OR_NONE = {dict}, {str, type(None)}
_is_str = str.__instancecheck__
_NONE_OR_INT = frozenset((type(None), int))
# The quote marks of a plain record's line with 2, 3 or 4 fields, when nothing is escaped: two
# per field name, two for the key's text (or base64) and two for the value's.  A field given twice adds its
# name's two, so a line with no more quotes than this holds no field twice.
_QUOTES = {2: 8, 3: 10, 4: 12}
_NULL = len("null")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a field given twice")
    return obj


def _member(name: str) -> int:
    """The bytes of ``"name":`` and of the two quotes around a text value."""
    return len(name) + 5


def _in_range(values: list[int | None], top: int) -> bool:
    if values.count(None) == len(values):
        return True
    if not set(map(type, values)) <= _NONE_OR_INT:  # bool and float are not integers here
        return False
    ints = list(filter(None, values))  # None, and 0, which is in range anyway, left out
    return not ints or (min(ints) >= 0 and max(ints) <= top)


def _optional(objs: list[dict[str, Any]], name: str) -> tuple[list[Any], int]:
    """The field ``name`` of every object (None when absent or null), and how many have it."""
    present = sum(map(contains, objs, repeat(name)))
    return (list(map(dict.get, objs, repeat(name))) if present else [None] * len(objs)), present


def _optional_size(values: list[int | None], present: int, name: str) -> int:
    """The bytes of the ``present`` members ``"name":null`` or ``"name":123`` written compactly
    (``values``: None or integers in range)."""
    if not present:
        return 0
    nulls = values.count(None) - (len(values) - present)
    digits = sum(map(len, map(str, filter(None, values)))) + values.count(0) if nulls != present else 0
    return present * (len(name) + 3) + nulls * _NULL + digits


def _bytes_of(objs: list[dict[str, Any]], name: str) -> tuple[list[bytes], int] | None:
    """The bytes field ``name`` of every object, given as text or as ``name_b64``, and the bytes
    of those members written compactly; None when an object has both or neither, or one that is
    not a string, not UTF-8 or not base64."""
    coded = f"{name}_b64"
    try:
        # every object with the text (one with base64 as well has a field too many, which the
        # caller's count of fields sees), else the way that looks at each object
        texts = list(map(itemgetter(name), objs))
    except KeyError:
        pass
    else:
        try:
            out = list(map(str.encode, texts))
        except (TypeError, UnicodeEncodeError):  # not a string; a lone surrogate (\\ud800)
            return None
        return out, sum(map(len, out)) + len(out) * _member(name)
    has_code = list(map(contains, objs, repeat(coded)))
    with_code = sum(has_code)
    try:
        if not all(map(ne, map(contains, objs, repeat(name)), has_code)):
            return None  # both, or neither
        codes: list[Any] = list(map(dict.get, objs, repeat(coded)))
        if set(map(type, codes)) - _STR_OR_NONE or codes.count(None) != len(objs) - with_code:
            return None  # base64 that is not a string (null included)
        # the exact path's own decoding, so the same strings are accepted
        given = list(filter(_is_str, codes))
        decoded = list(map(b64decode, given, repeat(None), repeat(True)))
        size = sum(map(len, given)) + with_code * _member(coded)  # base64 is ASCII once decoded
        if with_code == len(objs):
            return decoded, size
        texts = list(map(dict.get, objs, repeat(name)))
        if set(map(type, texts)) != _STR_OR_NONE or texts.count(None) != with_code:
            return None
        raw = iter(decoded)
        out = [next(raw) if t is None else t.encode() for t in texts]
        return out, size + sum(map(len, out)) - sum(map(len, decoded)) + (len(objs) - with_code) * _member(name)
    except ValueError:  # a lone surrogate, base64 that is not
        return None


def _compact(lines: list[bytes], sizes: list[int], members: int) -> bool:
    """Whether every line is its object written compactly (no space, no escape), then a newline.

    A line is never shorter than its object written so: a string takes at least its UTF-8 bytes
    and two quotes, a number at least its digits.  A field given twice adds a member more.  So
    when all lines together are no longer than their objects written compactly, no line holds a
    field twice."""
    newlines = len(lines) - (not lines[-1].endswith(b"\n"))
    braces_and_commas = len(lines) + sum(sizes)  # "{" and "}", and a comma between two fields
    return sum(map(len, lines)) == members + braces_and_commas + newlines


def plain_records(lines: list[bytes]) -> list[Record] | None:
    """The records of ``lines``, one per line, when every line is a plain record; else None."""
    try:
        objs = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        return None
    if set(map(type, objs)) != _DICT:
        return None
    keys = _bytes_of(objs, "key")
    if keys is None:
        return None
    values = _bytes_of(objs, "value")
    if values is None:
        return None
    expiries, with_expiry = _optional(objs, "expires_at_ms")
    sizes = list(map(len, objs))
    more = sum(sizes) - 2 * len(objs) - with_expiry  # the versions, and any other field
    versions: list[Any] = [None] * len(objs)
    with_version = 0
    if more:
        versions, with_version = _optional(objs, "version")
    if more != with_version:  # some object has another field
        return None
    if not _in_range(expiries, MAX_EXPIRY_MS) or not _in_range(versions, MAX_VERSION):
        return None
    # A field given twice: the parser keeps one silently, the exact path refuses it.  Lines written
    # compactly hold none; else counting quote marks flags the lines that may hold one (or an
    # escaped quote): look closer at those.
    members = (keys[1] + values[1] + _optional_size(expiries, with_expiry, "expires_at_ms")
               + _optional_size(versions, with_version, "version"))
    if not _compact(lines, sizes, members):
        quotes = list(map(bytes.count, lines, repeat(b'"')))
        if quotes != list(map(_QUOTES.__getitem__, sizes)):
            try:
                for line, size, count in zip(lines, sizes, quotes, strict=True):
                    if count > _QUOTES[size]:
                        json.loads(line, object_pairs_hook=_unique)
            except ValueError:
                return None
    return new_records(zip(keys[0], values[0], expiries, versions, repeat(None)))

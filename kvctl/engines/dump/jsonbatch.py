"""The bulk path of JSON-lines import: a run of lines parsed and checked as a whole.

``plain_records(lines)`` parses every line with orjson and builds the records with C-level passes
(map, set, min/max) instead of a Python loop per line.  It takes only the common, unambiguous
case: every line one JSON object whose fields are ``key`` and ``value`` as text, with
``expires_at_ms`` and ``version`` absent, null or in-range integers.  Anything else -- a blank
line, base64 fields, ``kind``, a field given twice, bad JSON, a value orjson reads differently
from the standard library (numbers beyond 64 bits, lone surrogates) -- returns None, and the
caller parses that run line by line with the standard library, which accepts, refuses and words
its errors exactly as import always has.  So the fast path changes speed, never a result.
"""

from __future__ import annotations

import json
from itertools import repeat
from operator import contains, itemgetter
from typing import Any

import orjson

from kvctl.plugin_kit import new_record
from kvctl.store import MAX_EXPIRY_MS, MAX_VERSION, Record

_key, _value = itemgetter("key"), itemgetter("value")
_NONE, _NONE_OR_INT = {type(None)}, frozenset((type(None), int))
# The quote marks of a plain record's line with 2, 3 or 4 fields, when nothing is escaped: two
# per field name, two for the key's text and two for the value's.  A field given twice adds its
# name's two, so a line with no more quotes than this holds no field twice.
_QUOTES = {2: 8, 3: 10, 4: 12}


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a field given twice")
    return obj


def _in_range(values: list[int | None], top: int) -> bool:
    kinds = set(map(type, values))
    if kinds == _NONE:
        return True
    if not kinds <= _NONE_OR_INT:  # bool and float are not integers here
        return False
    ints = list(filter(None, values))  # None, and 0, which is in range anyway, left out
    return not ints or (min(ints) >= 0 and max(ints) <= top)


def _optional(objs: list[dict[str, Any]], name: str) -> tuple[list[Any], int]:
    """The field ``name`` of every object (None when absent or null), and how many have it."""
    present = sum(map(contains, objs, repeat(name)))
    return (list(map(dict.get, objs, repeat(name))) if present else [None] * len(objs)), present


def plain_records(lines: list[bytes]) -> list[Record] | None:
    """The records of ``lines``, one per line, when every line is a plain record; else None."""
    try:
        objs = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        return None
    try:  # only an object can be indexed by a name: a line holding anything else fails here too
        keys, values = list(map(_key, objs)), list(map(_value, objs))
    except (KeyError, TypeError):
        return None
    expiries, with_expiry = _optional(objs, "expires_at_ms")
    versions, with_version = _optional(objs, "version")
    sizes = list(map(len, objs))
    if sum(sizes) != 2 * len(objs) + with_expiry + with_version:  # some object has another field
        return None
    if (set(map(type, keys)) | set(map(type, values))) != {str}:
        return None
    if not _in_range(expiries, MAX_EXPIRY_MS) or not _in_range(versions, MAX_VERSION):
        return None
    # A field given twice: the parser keeps one silently, the exact path refuses it.  Counting
    # quote marks flags the lines that may hold one (or an escaped quote): look closer at those.
    quotes = list(map(bytes.count, lines, repeat(b'"')))
    if quotes != list(map(_QUOTES.__getitem__, sizes)):
        try:
            for line, size, count in zip(lines, sizes, quotes, strict=True):
                if count > _QUOTES[size]:
                    json.loads(line, object_pairs_hook=_unique)
        except ValueError:
            return None
    try:
        raw_keys, raw_values = list(map(str.encode, keys)), list(map(str.encode, values))
    except UnicodeEncodeError:  # a lone surrogate (\\ud800): the exact path words the error
        return None
    return list(map(new_record, zip(raw_keys, raw_values, expiries, versions, repeat(None))))

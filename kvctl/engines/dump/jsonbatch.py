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
from operator import itemgetter
from typing import Any

import orjson

from kvctl.plugin_kit import new_record
from kvctl.store import MAX_EXPIRY_MS, MAX_VERSION, Record

# The field sets a plain record may have (every other field, or key_b64/value_b64/kind, goes the
# exact way); a frozenset per object is cheaper than testing the fields one by one.
_PLAIN_SHAPES = frozenset(
    frozenset(("key", "value", *extra))
    for extra in ((), ("expires_at_ms",), ("version",), ("expires_at_ms", "version"))
)
_key, _value = itemgetter("key"), itemgetter("value")
_NONE_OR_INT = frozenset((type(None), int))


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a field given twice")
    return obj


def _in_range(values: list[int | None], top: int) -> bool:
    if not set(map(type, values)) <= _NONE_OR_INT:  # bool and float are not integers here
        return False
    ints = [v for v in values if v is not None]
    return not ints or (min(ints) >= 0 and max(ints) <= top)


def plain_records(lines: list[bytes]) -> list[Record] | None:
    """The records of ``lines``, one per line, when every line is a plain record; else None."""
    try:
        objs = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        return None
    if set(map(type, objs)) != {dict} or not set(map(frozenset, objs)) <= _PLAIN_SHAPES:
        return None
    # A field given twice: the parser keeps one silently, the exact path refuses it.  The cheap
    # count of '":' flags the lines that may hold one (or a '":' inside a string): look closer.
    sizes = list(map(len, objs))
    marks = list(map(bytes.count, lines, repeat(b'":')))  # unbound with repeat: cheaper than methodcaller
    if marks != sizes:
        try:
            for line, size, mark in zip(lines, sizes, marks, strict=True):
                if mark > size:
                    json.loads(line, object_pairs_hook=_unique)
        except ValueError:
            return None
    keys, values = list(map(_key, objs)), list(map(_value, objs))
    get = dict.get
    expiries, versions = list(map(get, objs, repeat("expires_at_ms"))), list(map(get, objs, repeat("version")))
    if (set(map(type, keys)) | set(map(type, values))) != {str}:
        return None
    if not _in_range(expiries, MAX_EXPIRY_MS) or not _in_range(versions, MAX_VERSION):
        return None
    try:
        raw_keys, raw_values = list(map(str.encode, keys)), list(map(str.encode, values))
    except UnicodeEncodeError:  # a lone surrogate (\\ud800): the exact path words the error
        return None
    return list(map(new_record, zip(raw_keys, raw_values, expiries, versions, repeat(None))))

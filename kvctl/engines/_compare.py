"""When two values are the same: byte for byte, or by meaning when a side holds JSON documents.

diff, ``migrate --verify`` (a diff), a resumed migrate's replay and sync's comparison all ask
:func:`same_value`, with ``json`` from :func:`json_sides`.  A store that declares
``Capabilities.json_values`` (a json/jsonb column, several columns read as one object, ``json=``)
may hand back a document with other bytes than were written (PostgreSQL's JSONB reorders keys
and respaces), so for such a pair two values are the same when they parse to the same JSON
document, as PostgreSQL compares JSONB:

* whitespace between tokens, the order of an object's keys and the spelling of string escapes
  (``"\\u0061"`` is ``"a"``) do not matter;
* an object with a key given twice keeps its last value (JSONB does the same);
* numbers are equal when their decimal values are: ``1``, ``1.0``, ``1e0`` and ``10E-1`` are
  equal, ``0.1`` and ``0.10000000000000001`` are not, integers of any size are exact;
* strings compare exactly: a timestamp is a string here, and rendering one instant the same way
  on both sides is the mapped table's work, not this comparison's;
* ``true``, ``1`` and ``"1"`` are three different values.

A value that is not one valid JSON document (RFC 8259, UTF-8) on either side compares byte for
byte.  Bytes are compared first, so equal values are never parsed, and nothing is parsed for a
pair where neither side declares JSON.
"""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from typing import Any

import orjson

from kvctl.store import AsyncStore

__all__ = ["json_sides", "same_json", "same_value"]

_EXACT_NUMBERS = (int, Decimal)  # types, so that bool (a subclass of int) is not one


def json_sides(*stores: AsyncStore) -> bool:
    """Does any of ``stores`` declare that its values are JSON documents?"""
    return any(store.capabilities.json_values for store in stores)


def same_value(a: bytes, b: bytes, json_values: bool) -> bool:
    """Are ``a`` and ``b`` the same value: the same bytes or, when ``json_values``, the same JSON document?"""
    return a == b or (json_values and same_json(a, b))


def same_json(a: bytes, b: bytes) -> bool:
    """Do ``a`` and ``b`` parse to the same JSON document?  False when either is not JSON."""
    with contextlib.suppress(orjson.JSONDecodeError):  # not JSON, or a number orjson refuses (1e400)
        verdict = _same(orjson.loads(a), orjson.loads(b))
        if verdict is not None:
            return verdict
    # orjson reads a fraction, an exponent or an integer past 64 bits as a double, which can call
    # two different numbers equal: such documents are read again with exact decimals
    try:
        return _same(_exact(a), _exact(b)) is True
    except (ValueError, RecursionError):  # not JSON, or past Python's integer digits or nesting
        return False


def _exact(raw: bytes) -> Any:
    return json.loads(raw.decode(), parse_float=Decimal, parse_constant=_reject)


def _reject(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _same(x: Any, y: Any) -> bool | None:
    """Are two parsed documents the same, ``true`` not being ``1``?  None where a double is compared."""
    tx, ty = type(x), type(y)
    if tx is float or ty is float:
        return None
    if tx is not ty:
        return tx in _EXACT_NUMBERS and ty in _EXACT_NUMBERS and bool(x == y)
    if tx is dict:
        if x.keys() != y.keys():
            return False
        for k, v in x.items():
            if (verdict := _same(v, y[k])) is not True:
                return verdict
        return True
    if tx is list:
        if len(x) != len(y):
            return False
        for v, w in zip(x, y, strict=True):
            if (verdict := _same(v, w)) is not True:
                return verdict
        return True
    return bool(x == y)

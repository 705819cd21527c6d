"""Typed values (a hash, list, set, sorted set, stream) as one JSON document, the same for every
backend that holds them (:meth:`kvctl.abilities.TypedJSON.json_many`)::

    {"type": "hash",   "value": {"field": "value", ...}}                  fields in byte order
    {"type": "list",   "value": ["a", "b", ...]}                           list order
    {"type": "set",    "value": ["a", "b", ...]}                           byte order
    {"type": "zset",   "value": [["member", 1.5], ...]}                    score order, as ZRANGE
    {"type": "stream", "value": [{"id": "1700000000000-0", "fields": [["f", "v"], ...]}, ...]}

A stream entry keeps its fields as pairs, in order: an entry may name a field twice.  A score is
a JSON number, or the string ``"inf"`` / ``"-inf"``.  Bytes are text when every byte string of
the value is UTF-8; otherwise the document says ``"value_b64"`` instead of ``"value"`` and every
byte string in it (fields, members, items, stream field names and values) is base64, the
``x`` / ``x_b64`` rule of kvctl's JSON applied to the whole value, so the rendering is lossless
and a reader knows which it got from the field name alone.  Stream ids and scores are never
base64.  The document is compact JSON in UTF-8, with non-ASCII text as is.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

# What each kind's content is, as a backend hands it over:
#   hash: [(field, value)]  list, set: [item]  zset: [(member, score)]
#   stream: [(id, [(field, value)])]
Content = Sequence[Any]
KINDS = ("hash", "list", "set", "zset", "stream")


def _text(data: bytes) -> str:
    return data.decode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _score(score: float) -> float | str:
    if math.isinf(score):
        return "inf" if score > 0 else "-inf"
    return score


def _shape(kind: str, content: Content, s: Callable[[bytes], str]) -> Any:
    if kind == "hash":
        return {s(f): s(v) for f, v in sorted(content)}
    if kind == "list":
        return [s(item) for item in content]
    if kind == "set":
        return [s(item) for item in sorted(content)]
    if kind == "zset":
        return [[s(m), _score(score)] for m, score in content]
    if kind == "stream":
        return [{"id": entry_id, "fields": [[s(f), s(v)] for f, v in fields]} for entry_id, fields in content]
    raise ValueError(f"no JSON shape for a {kind}")


def document(kind: str, content: Content) -> bytes:
    """The JSON document of a value of ``kind`` (one of :data:`KINDS`) holding ``content``."""
    try:
        doc = {"type": kind, "value": _shape(kind, content, _text)}
    except UnicodeDecodeError:
        doc = {"type": kind, "value_b64": _shape(kind, content, _b64)}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

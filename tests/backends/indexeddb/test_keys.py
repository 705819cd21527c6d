"""The indexeddb key mapping is a bijection between IndexedDB keys and bytes (no browser needed)."""

from __future__ import annotations

import base64
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kvctl_plugins.indexeddb import keys
from kvctl_plugins.indexeddb.scripts import pack, value_from_wire, value_kind
from kvctl_plugins.indexeddb.store import _after_strings_with, _segments, _text_prefix

from kvctl.testing import ADVERSARIAL_KEYS

# JavaScript strings are UTF-16: any code point, plus lone surrogates.
JS_TEXT = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
                  max_size=8)
NUMBERS = st.floats(allow_nan=False).map(lambda x: ["n", keys.number_text(x)])
DATES = st.integers(-8_640_000_000_000_000, 8_640_000_000_000_000).map(lambda ms: ["d", str(ms)])
BINARY = st.binary(max_size=8).map(lambda b: ["b", base64.b64encode(b).decode()])
SCALARS = st.one_of(JS_TEXT.map(lambda s: ["s", s]), NUMBERS, DATES, BINARY)
WIRE_KEYS = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4).map(lambda xs: ["a", xs]), max_leaves=10)
TRICKY = st.sampled_from([b"\xff", b"\xffn", b"\xffn042", b"\xffn1e5", b"\xffnNaN", b"\xffs", b"\xffsabc",
                          b"\xffb\x80", b"\xffa", b"\xffa1:a", b"\xffa01:a,", b"\xffa-1:,", b"\xffd1.5",
                          b"\xffs\xed\xa0\xbd\xed\xb8\x80", *ADVERSARIAL_KEYS])


def _joined(wire: Any) -> Any:
    """A wire key as JavaScript would hand it back (surrogate pairs joined)."""
    if wire[0] == "s":
        return ["s", wire[1].encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")]
    if wire[0] == "a":
        return ["a", [_joined(w) for w in wire[1]]]
    return wire


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=24) | TRICKY)
def test_every_bytes_key_round_trips(raw: bytes) -> None:
    assert keys.to_bytes(keys.from_bytes(raw)) == raw


@settings(max_examples=500, deadline=None)
@given(WIRE_KEYS)
def test_every_indexeddb_key_round_trips(wire: Any) -> None:
    wire = _joined(wire)
    assert keys.from_bytes(keys.to_bytes(wire)) == wire


def test_documented_forms() -> None:
    assert keys.to_bytes(["s", "user:1"]) == b"user:1"
    assert keys.to_bytes(["n", "42"]) == b"\xffn42"
    assert keys.to_bytes(["n", "1e+21"]) == b"\xffn1e+21"
    assert keys.to_bytes(["n", "-Infinity"]) == b"\xffn-Infinity"
    assert keys.to_bytes(["n", "0.000001"]) == b"\xffn1e-06"  # JS text differs, the number does not
    assert keys.from_bytes(b"\xffn1e-06") == ["n", "1e-06"]
    assert keys.to_bytes(["d", "1704067200000"]) == b"\xffd1704067200000"
    assert keys.to_bytes(["a", [["s", "u"], ["n", "7"]]]) == b"\xffa1:u,3:\xffn7,"
    assert keys.to_bytes(["b", base64.b64encode(b"\xff\x00").decode()]) == b"\xff\x00"
    assert keys.to_bytes(["b", base64.b64encode(b"ab").decode()]) == b"\xffbab"
    assert keys.to_bytes(["s", "a\ud800"]) == b"\xffsa\xed\xa0\x80"
    assert keys.from_bytes(b"\xffn042") == ["b", base64.b64encode(b"\xffn042").decode()]  # not canonical
    assert keys.number_text(-0.0) == "0" and keys.number_text(math.inf) == "Infinity"


def test_values_wire() -> None:
    assert value_kind("é".encode(), "auto") == "s"
    assert value_kind(b"\xff", "auto") == "b"
    assert value_kind(b"abc", "bytes") == "b"
    assert value_kind(b"{}", "json") == "s"
    assert pack([["s", "a"], ["s", "b"]], ["s", "b"], [b"xy", b"\xff"]) == {
        "keys": [["s", "a"], ["s", "b"]], "kinds": "sb", "lens": [2, 1], "blob": "eHn/"}
    assert value_from_wire(["j", '{"a":1}']) == b'{"a":1}'
    assert value_from_wire(["s", "a\ud800"]) == b"a\xed\xa0\x80"


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=6), st.lists(WIRE_KEYS, max_size=20))
def test_prefix_segments_cover_every_matching_key(prefix: bytes, wires: list[Any]) -> None:
    """Every key whose bytes start with the prefix lies in one of the scanned ranges."""
    for wire in map(_joined, wires):
        raw = keys.to_bytes(wire)
        if not raw.startswith(prefix):
            continue
        spans = _segments(prefix)
        assert any(_in_span(wire, lo, hi) for lo, hi in spans), (prefix, wire, spans)


_TYPE_ORDER = {"n": 0, "d": 1, "s": 2, "b": 3, "a": 4}


def _sort_key(wire: Any) -> tuple[Any, ...]:
    """IndexedDB's key order, in Python (numbers, dates, UTF-16 strings, bytes, arrays)."""
    kind, payload = wire
    if kind in ("n", "d"):
        return (_TYPE_ORDER[kind], keys.parse_number(payload))
    if kind == "s":
        units = payload.encode("utf-16-be", "surrogatepass")
        return (2, tuple(int.from_bytes(units[i:i + 2], "big") for i in range(0, len(units), 2)))
    if kind == "b":
        return (3, base64.b64decode(payload))
    return (4, tuple(_sort_key(w) for w in payload))


def _in_span(wire: Any, lo: Any, hi: Any) -> bool:
    k = _sort_key(wire)
    return (lo is None or k >= _sort_key(lo)) and (hi is None or k < _sort_key(hi))


def test_string_prefix_bounds() -> None:
    assert _text_prefix("ключ".encode()[:3]) == "к"
    assert _text_prefix(b"a\xffb") is None
    assert _after_strings_with("ab") == ["s", "ac"]
    assert _after_strings_with("a\uffff") == ["s", "b"]
    assert _after_strings_with("\uffff") == ["b", ""]

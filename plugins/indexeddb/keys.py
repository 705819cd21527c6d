"""The reversible mapping between IndexedDB keys and kvctl's bytes keys.

IndexedDB keys are strings, numbers, dates, binary (ArrayBuffer) or arrays of keys; kvctl keys
are bytes.  The mapping is a bijection, so every key read can be written, deleted or fetched
again, and every bytes key kvctl writes reads back identical:

* a **string** key is its UTF-8 bytes (``"user:1"`` <-> ``b"user:1"``): the common case reads as
  you would expect;
* a **binary** key is its raw bytes when those bytes are *not* valid UTF-8 (``b"\\xff\\x00"``);
* every other key is *tagged*: byte ``0xFF`` (which never occurs in UTF-8), a type letter and a
  payload:

  ===========  ====================================  =============================
  ``\\xffn``   a number, as canonical decimal text     ``42`` -> ``b"\\xffn42"``
  ``\\xffd``   a date, as milliseconds since the epoch  ``b"\\xffd1704067200000"``
  ``\\xffa``   an array: each element's own mapping, length-prefixed (``len:bytes``)
               ``["u", 7]`` -> ``b"\\xffa1:u,3:\\xffn7,"``
  ``\\xffb``   a binary key whose bytes would read as another form (valid UTF-8 or a tag)
  ``\\xffs``   a string holding a lone UTF-16 surrogate (not encodable as UTF-8), in WTF-8
  ===========  ====================================  =============================

Writing (bytes -> key): a canonical tag is decoded; otherwise valid UTF-8 becomes a string and
anything else a binary key.  Reading (key -> bytes) chooses the plain form whenever it would
decode back to the same key, and the tag otherwise.  A tag is only *canonical* when re-encoding
what it decodes to gives the same bytes, which is what makes the two directions inverses.

IndexedDB orders keys by type first (number < date < string < binary < array) and strings by
UTF-16 code unit, which this mapping does not preserve: the backend declares no ordered scan.

Over the DevTools wire a key travels as tagged JSON (``["s", text]``, ``["n", "42"]``,
``["d", "1704067200000"]``, ``["b", base64]``, ``["a", [...]]``); numbers travel as text so
``Infinity`` survives JSON.
"""

from __future__ import annotations

import base64
import math
import re
from binascii import a2b_base64
from typing import Any

TAG = 0xFF
_NUMBER_TEXT = re.compile(rb"-?(?:Infinity|[0-9][0-9.e+\-]*)\Z")
_MAX_SAFE = 2**53

# A wire key: ["s", str] | ["n", str] | ["d", str] | ["b", base64 str] | ["a", list[wire key]]
WireKey = list[Any]


class KeyError_(ValueError):  # named so as not to shadow the builtin KeyError
    """A wire key that is not a valid IndexedDB key."""


# -- numbers ---------------------------------------------------------------------------------
def number_text(value: float) -> str:
    """Canonical text of a JavaScript number: integers plainly, others as Python's shortest repr."""
    if math.isnan(value):
        raise KeyError_("NaN is not a valid IndexedDB key")
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == int(value) and abs(value) < _MAX_SAFE:
        return str(int(value))  # also maps -0.0 to "0": IndexedDB holds 0 and -0 as one key
    return repr(value)


def parse_number(text: str) -> float:
    if text == "Infinity":
        return math.inf
    if text == "-Infinity":
        return -math.inf
    value = float(text)  # JavaScript's String(n) is always accepted by float()
    if math.isnan(value):
        raise KeyError_("NaN is not a valid IndexedDB key")
    return value


# -- key -> bytes ----------------------------------------------------------------------------
def to_bytes(wire: WireKey) -> bytes:
    """The kvctl bytes key of an IndexedDB key given in wire form."""
    kind, payload = wire
    if kind == "s":
        try:
            return payload.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate
            return b"\xffs" + _wtf8(payload)
    if kind == "b":
        raw = a2b_base64(payload)
        return raw if _plain_binary(raw) else b"\xffb" + raw
    if kind == "n":
        return b"\xffn" + number_text(parse_number(payload)).encode()
    if kind == "d":
        return b"\xffd" + number_text(parse_number(payload)).encode()
    if kind == "a":
        out = bytearray(b"\xffa")
        for element in payload:
            encoded = to_bytes(element)
            out += b"%d:" % len(encoded)
            out += encoded
            out += b","
        return bytes(out)
    raise KeyError_(f"unknown key type {kind!r}")


def _wtf8(text: str) -> bytes:
    # Surrogate pairs were already joined by the JSON decoder; only lone ones remain here.
    return text.encode("utf-8", "surrogatepass")


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _plain_binary(raw: bytes) -> bool:
    """A binary key reads as its raw bytes unless those would decode as something else."""
    return not _is_utf8(raw) and _parse_tag(raw) is None


# -- bytes -> key ----------------------------------------------------------------------------
def from_bytes(key: bytes) -> WireKey:
    """The IndexedDB key (wire form) that the kvctl bytes key ``key`` stands for."""
    if key[:1] == b"\xff":
        tagged = _parse_tag(key)
        if tagged is not None:
            return tagged
    try:
        return ["s", key.decode("utf-8")]
    except UnicodeDecodeError:
        return ["b", base64.b64encode(key).decode("ascii")]


def _parse_tag(key: bytes) -> WireKey | None:
    """The key a canonical tag decodes to, or None when ``key`` is not a canonical tag."""
    if len(key) < 2 or key[0] != TAG:
        return None
    try:
        wire = _decode_tag(key)
    except (KeyError_, ValueError, IndexError):
        return None
    # Canonical only when it encodes back to exactly these bytes (rejects "n042", "s" + valid
    # UTF-8, "b" + bytes that would read plainly, non-minimal array lengths, ...).
    try:
        return wire if to_bytes(wire) == key else None
    except (KeyError_, ValueError):
        return None


def _decode_tag(key: bytes) -> WireKey:
    kind, payload = key[1:2], key[2:]
    if kind in (b"n", b"d"):
        if not _NUMBER_TEXT.match(payload):
            raise KeyError_("not a number")
        text = payload.decode("ascii")
        parse_number(text)
        return ["n" if kind == b"n" else "d", text]
    if kind == b"s":
        text = payload.decode("utf-8", "surrogatepass")
        # Re-join surrogate pairs the way JavaScript would see them.
        return ["s", text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")]
    if kind == b"b":
        return ["b", base64.b64encode(payload).decode("ascii")]
    if kind == b"a":
        elements: list[WireKey] = []
        pos = 0
        while pos < len(payload):
            colon = payload.index(b":", pos)
            length = int(payload[pos:colon].decode("ascii"))
            start = colon + 1
            end = start + length
            if length < 0 or payload[end:end + 1] != b",":
                raise KeyError_("array element not followed by ','")
            elements.append(from_bytes(payload[start:end]))
            pos = end + 1
        return ["a", elements]
    raise KeyError_("unknown tag")


def describe(wire: WireKey) -> str:
    """A short human form of a key for messages: ``"abc"``, ``42``, ``Date(…)``, ``[…]``."""
    kind, payload = wire[0], wire[1]
    if kind == "s":
        return repr(payload)
    if kind == "n":
        return payload
    if kind == "d":
        return f"Date({payload})"
    if kind == "b":
        return f"bytes({base64.b64decode(payload).hex()})"
    return "[" + ", ".join(describe(e) for e in payload) + "]"

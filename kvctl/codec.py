"""Bytes at the human edge: how keys and values are typed on the command line and printed.

Encodings: ``text`` (UTF-8; printed as redis-cli prints keys: as is when that is safe, else in
double quotes with backslash escapes, see :func:`show`), ``hex``, ``base64``, and for values also
``raw`` (the exact bytes, for stdout/stdin).

In JSON (``scan --json``, ``export``) a bytes field ``x`` is written as ``"x": "<utf-8 text>"``
when the bytes are valid UTF-8 and as ``"x_b64": "<base64>"`` otherwise, so any JSON tool can
read it and the round trip is exact.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal, get_args

from kvctl.errors import UsageError

KeyEncoding = Literal["text", "hex", "base64"]
ValueEncoding = Literal["raw", "text", "hex", "base64"]
KEY_ENCODINGS: tuple[str, ...] = get_args(KeyEncoding)
VALUE_ENCODINGS: tuple[str, ...] = get_args(ValueEncoding)


def decode_arg(text: str, encoding: str, what: str = "key") -> bytes:
    """A command-line argument to bytes."""
    try:
        if encoding == "hex":
            return bytes.fromhex(text)
        if encoding == "base64":
            return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise UsageError(f"{what} {text!r} is not valid {encoding}") from None
    # surrogateescape: arguments the shell passed as non-UTF-8 bytes come back exactly
    return text.encode("utf-8", "surrogateescape")


def decode_input(data: bytes, encoding: str, what: str = "value") -> bytes:
    """Bytes read from stdin or a file, in the value encoding, to the stored bytes."""
    if encoding in ("raw", "text"):
        return data
    return decode_arg(data.decode("ascii", "replace").strip(), encoding, what)


def show(data: bytes, encoding: str) -> str:
    """Bytes for a person, on one line, in ``encoding``.

    ``text`` prints the bytes as they are when that is safe and unambiguous (UTF-8 text of
    printable characters, no quote or backslash, no space at either end), else :func:`quote`
    them, so every key prints on one line, nothing reaches the terminal as a control sequence,
    and two different keys never print the same (the text ``a\\x80`` is ``"a\\\\x80"``, the
    byte 0x80 after ``a`` is ``"a\\x80"``)."""
    if encoding == "hex":
        return data.hex()
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return quote(data)
    if text and text.isprintable() and text.strip() == text and '"' not in text and "\\" not in text:
        return text
    return quote(data)


_ESCAPES = {ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
            7: "\\a", 8: "\\b"}


def quote(data: bytes) -> str:
    """``data`` in double quotes with redis-cli's escapes (``\\n``, ``\\"``, ``\\xHH``...): every
    byte that is not part of a printable UTF-8 character is escaped, so the result is one line
    and reads back to exactly ``data``."""
    out = ['"']
    text = data.decode("utf-8", "surrogateescape")
    for ch in text:
        code = ord(ch)
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif not ch.isprintable():
            out.append("".join(f"\\x{b:02x}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def show_key(key: bytes, encoding: str = "text") -> str:
    """A key for a message or a list of keys: shown as :func:`show` shows it (as scan prints it),
    cut at 200 characters: a key can be far longer than a message should be."""
    text = show(key, encoding)
    return text if len(text) <= 200 else text[:200] + "..."


def json_bytes(out: dict[str, Any], name: str, data: bytes) -> None:
    try:
        out[name] = data.decode("utf-8")
    except UnicodeDecodeError:
        out[f"{name}_b64"] = base64.b64encode(data).decode("ascii")


def json_key(key: bytes) -> dict[str, Any]:
    """A key as kvctl's JSON shows one: ``{"key": text}``, or ``{"key_b64": ...}`` when not UTF-8."""
    obj: dict[str, Any] = {}
    json_bytes(obj, "key", key)
    return obj


def from_json_bytes(obj: dict[str, Any], name: str) -> bytes | None:
    """The bytes field ``name`` of kvctl's JSON: ``name`` (UTF-8 text) or ``name_b64``; None when
    neither is there.  Both at once is ambiguous and refused, never resolved by a silent choice."""
    if name in obj and f"{name}_b64" in obj:
        raise UsageError(f"both {name} and {name}_b64 are given")
    if name in obj:
        value = obj[name]
        if not isinstance(value, str):
            raise UsageError(f"field {name!r} must be a string")
        return value.encode("utf-8")
    if f"{name}_b64" in obj:
        try:
            return base64.b64decode(obj[f"{name}_b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise UsageError(f"field {name}_b64 is not valid base64") from None
    return None

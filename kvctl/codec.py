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
from kvctl.plugin_kit.display import quote, show, show_key

KeyEncoding = Literal["text", "hex", "base64"]
ValueEncoding = Literal["raw", "text", "hex", "base64"]
KEY_ENCODINGS: tuple[str, ...] = get_args(KeyEncoding)
VALUE_ENCODINGS: tuple[str, ...] = get_args(ValueEncoding)

# show, quote and show_key live in the plugin kit (plugins show keys the same way) and are kept here
__all__ = ["KEY_ENCODINGS", "VALUE_ENCODINGS", "KeyEncoding", "ValueEncoding", "decode_arg", "decode_input",
           "from_json_bytes", "json_bytes", "json_key", "quote", "show", "show_key"]


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

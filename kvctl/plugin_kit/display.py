"""Bytes for a person: how keys appear in kvctl's output and in every message, plugins' included.

``show`` prints a key as redis-cli does: bare when that is safe and unambiguous, otherwise quoted
with escapes, always one line, so no control byte reaches a terminal and no two keys print alike.
"""

from __future__ import annotations

import base64


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

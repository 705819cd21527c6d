"""Building and checking the command batches the Redis stores send: slices of a batch, MSET
and script arguments, SCAN patterns, expiry replies, errors among replies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.exceptions import ResponseError

SLICE_KEYS = 1000
SLICE_BYTES = 64 * 1024 * 1024
_GLOB = frozenset(b"*?[]\\")

# The commands one Redis node runs for one slice of a batch, and its replies.
Commands = list[tuple[Any, ...]]


def escape_glob(prefix: bytes) -> bytes:
    """A MATCH pattern for keys starting with ``prefix``: every glob character escaped."""
    out = bytearray()
    for byte in prefix:
        if byte in _GLOB:
            out.append(0x5C)  # backslash
        out.append(byte)
    return bytes(out) + b"*"


def expiry(reply: Any, now: int, relative: bool) -> int | None:
    """The absolute expiry from a PEXPIRETIME (or PTTL, when ``relative``) reply; None: none."""
    if not isinstance(reply, int) or reply < 0:
        return None
    return now + reply if relative else reply


def ranges(keys: list[bytes], values: list[bytes] | None = None, size: int | None = None) -> list[tuple[int, int]]:
    """Consecutive index ranges of at most SLICE_KEYS items and about SLICE_BYTES each.

    Redis holds a whole command in memory before running it, and one huge command (or script)
    stalls every other client, so big batches are sent as several commands.  ``size``: the
    bytes of the keys and values, when the caller has summed them already (no pass over the
    lengths when they fit in SLICE_BYTES).
    """
    n = len(keys)
    if not n:
        return []
    if size is not None and size <= SLICE_BYTES:
        return [(start, min(start + SLICE_KEYS, n)) for start in range(0, n, SLICE_KEYS)]
    largest = max(map(len, keys)) + (max(map(len, values)) if values is not None else 0)
    if largest * SLICE_KEYS <= SLICE_BYTES:  # the usual case: no slice can reach the byte bound
        return [(start, min(start + SLICE_KEYS, n)) for start in range(0, n, SLICE_KEYS)]
    out: list[tuple[int, int]] = []
    start, size = 0, 0
    for i in range(n):
        item = len(keys[i]) + (len(values[i]) if values is not None else 0)
        if i > start and (i - start >= SLICE_KEYS or size + item > SLICE_BYTES):
            out.append((start, i))
            start, size = i, 0
        size += item
    out.append((start, n))
    return out


# Reply types that are neither an error nor hold one: most replies of a bulk read are these.
_PLAIN = frozenset({bytes, int, type(None)})


def errors_in(replies: Iterable[Any]) -> list[ResponseError]:
    """Every error among ``replies``, nested lists included, in order.

    A first pass over the types runs in C: a reply of 1,000 values (MGET, a script's list) costs
    ~20 ns per value instead of a Python loop's ~1 µs, which on bulk reads was more than the
    rest of the client's work.
    """
    items = replies if isinstance(replies, list) else list(replies)
    if set(map(type, items)) <= _PLAIN:
        return []
    found: list[ResponseError] = []
    for reply in items:
        if isinstance(reply, ResponseError):
            found.append(reply)
        elif isinstance(reply, list):
            found.extend(errors_in(reply))
    return found


def raise_first_error(replies: Iterable[Any]) -> None:
    found = errors_in(replies)
    if found:
        raise found[0]


def typed_content(kind: str, reply: list[Any]) -> list[Any]:
    """The content of a typed value as typedjson.document takes it, from the TYPED script's reply
    (HGETALL, LRANGE, SMEMBERS, ZRANGE WITHSCORES or XRANGE)."""
    if kind == "hash":
        return list(zip(reply[0::2], reply[1::2], strict=True))
    if kind == "zset":
        return [(m, float(score)) for m, score in zip(reply[0::2], reply[1::2], strict=True)]
    if kind == "stream":
        return [(entry_id.decode("ascii"), list(zip(fields[0::2], fields[1::2], strict=True)))
                for entry_id, fields in reply]
    return reply

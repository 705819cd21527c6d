"""The server's limit on one key or value: ``proto-max-bulk-len``.

Redis refuses a command holding a string longer than ``proto-max-bulk-len`` (512 MiB by default,
never below 1 MiB) by replying "Protocol error: invalid bulk length" and closing the connection,
often while the client is still writing the rest (then the client sees "connection reset").
Neither says which key or how big.  So a batch holding an item over 1 MiB asks the server its
limit once (``CONFIG GET``, one round trip per store) and a record over it is refused before
anything is written.  When CONFIG is not allowed (renamed, or an ACL without it) the limit stays
unknown and a refusal is recognised after the fact instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis.exceptions as rx

from kvctl.errors import LimitError
from kvctl.plugin_kit import show_key
from kvctl.store import Record

FLOOR = 1024 * 1024  # Redis accepts no proto-max-bulk-len below 1 MiB: smaller strings always fit
CONFIG_GET = (b"CONFIG", b"GET", b"proto-max-bulk-len")


def biggest(records: Iterable[Record]) -> tuple[Record, int] | None:
    """The record holding the longest key or value over FLOOR, with that length; None: none."""
    found: tuple[Record, int] | None = None
    for r in records:
        size = max(len(r.key), len(r.value))
        if size > FLOOR and (found is None or size > found[1]):
            found = (r, size)
    return found


def parse_limit(reply: Any) -> int | None:
    """The number in a CONFIG GET reply (a [name, value] list, or a map under RESP3)."""
    if isinstance(reply, dict):
        reply = [x for pair in reply.items() for x in pair]
    if isinstance(reply, list) and len(reply) == 2:
        try:
            return int(reply[1])
        except (TypeError, ValueError):
            return None
    return None  # an error reply: CONFIG renamed or not permitted


def over(where: str, record: Record, size: int, limit: int | None, *, before: bool = False) -> LimitError:
    """The error naming the key and the length of its key or value, and the limit when known;
    ``before``: refused before anything was sent."""
    what = "key" if len(record.key) == size else "value"
    bound = (f"the server's proto-max-bulk-len of {limit:,} bytes" if limit is not None
             else "the server's proto-max-bulk-len (it closed the connection)")
    return LimitError(f"{where}: the {what} of key {show_key(record.key)} is {size:,} bytes, over {bound}"
                      + ("; nothing of its batch was written" if before else ""))


def refused_for_size(exc: BaseException, ping: Callable[[], Any]) -> bool:
    """Did the server refuse a command for an over-long string (``exc`` from writing one over
    FLOOR)?  Its protocol error says so; a connection reset means so only if the server still
    answers (else it is simply gone)."""
    if isinstance(exc, rx.ResponseError):
        return "invalid bulk length" in str(exc).lower()
    if isinstance(exc, rx.ConnectionError | ConnectionError):
        try:
            ping()
        except (rx.RedisError, OSError):
            return False
        return True
    return False

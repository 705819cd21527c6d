"""Bulk command streams for the batch paths: one plain command per key, a whole batch built as
one bytes buffer, replies taken straight from the connection's hiredis reader.

Why plain commands rather than one Lua loop or one MGET: a Redis 7 server spends about half the
CPU on pipelined ``GET`` + ``PEXPIRETIME`` (or ``SET .. PXAT``) that it spends on the same work
inside a script or behind an MGET of thousands of keys, and on a bulk copy the servers' CPU is
what the client waits for.  What made plain commands slow on the client was redis-py's
``read_response`` (~2 µs of Python per reply); :func:`read_replies` takes each reply from the
C reader in a tight loop instead, and the commands are formatted into one buffer per slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from redis._parsers import hiredis as _parsers
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from .commands import ranges

# redis-py's hiredis parser and its "the reader needs more bytes" sentinel (False before 5.1)
_HIREDIS_PARSER: Any = getattr(_parsers, "_HiredisParser", None)
_MORE: Any = getattr(_parsers, "NOT_ENOUGH_DATA", False)


class Packed(NamedTuple):
    """Commands already in RESP form: the buffers to send and how many replies they answer."""

    chunks: list[bytes]
    replies: int


def read_replies(conn: Any, count: int) -> list[Any]:
    """``count`` replies of ``conn`` (error replies returned, not raised)."""
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if _HIREDIS_PARSER is None or not isinstance(parser, _HIREDIS_PARSER) or reader is None:
        return _one_by_one(conn, count)
    out: list[Any] = []
    append, gets, fill = out.append, reader.gets, parser.read_from_socket
    for _ in range(count):
        reply = gets()
        while reply is _MORE:
            fill()
            reply = gets()
        if isinstance(reply, RedisConnectionError):
            raise reply
        append(reply)
    return out


def _one_by_one(conn: Any, count: int) -> list[Any]:
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(conn.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies


def exchange(conn: Any, packed: Packed) -> list[Any]:
    """Send ``packed`` and read its replies."""
    conn.send_packed_command(packed.chunks, check_health=False)
    return read_replies(conn, packed.replies)


def run(pool: Any, packed: Packed) -> list[Any]:
    """``exchange`` on a pooled connection; one that failed mid-way is dropped, never reused."""
    conn = pool.get_connection()
    try:
        return exchange(conn, packed)
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _bulk(item: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(item), item)


def reads(keys: list[bytes], expiry_command: bytes) -> Packed:
    """``GET key`` then ``expiry_command key`` (PEXPIRETIME, or PTTL before 7.0) for each key."""
    exp = b"*2\r\n" + _bulk(expiry_command)
    form = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" + exp + b"$%d\r\n%s\r\n"
    chunks = []
    for a, b in ranges(keys):
        chunks.append(b"".join([form % (len(k), k, len(k), k) for k in keys[a:b]]))
    return Packed(chunks, 2 * len(keys))


def writes(keys: list[bytes], values: list[bytes], expiries: Sequence[int | None]) -> Packed:
    """``SET key value`` for each record, with ``PXAT ms`` where it has an absolute expiry."""
    plain = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
    timed = b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$4\r\nPXAT\r\n%s"
    chunks = []
    for a, b in ranges(keys, values):
        exps = expiries[a:b]
        if exps.count(None) == len(exps):
            chunks.append(b"".join([plain % (len(k), k, len(v), v)
                                    for k, v in zip(keys[a:b], values[a:b], strict=True)]))
        else:
            chunks.append(b"".join([
                plain % (len(k), k, len(v), v) if e is None
                else timed % (len(k), k, len(v), v, _bulk(b"%d" % max(1, e)))
                for k, v, e in zip(keys[a:b], values[a:b], exps, strict=True)]))
    return Packed(chunks, len(keys))


def pairs(replies: list[Any]) -> list[tuple[Any, Any]]:
    """The (GET reply, expiry reply) of each key, from the replies to :func:`reads`."""
    return list(zip(replies[0::2], replies[1::2], strict=True))


def is_wrong_type(reply: Any) -> bool:
    """A GET of a key holding another Redis type."""
    return isinstance(reply, ResponseError) and str(reply).startswith("WRONGTYPE")

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
from itertools import islice
from typing import Any, NamedTuple

from redis._parsers import hiredis as _parsers
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .commands import SLICE_BYTES, ranges

# redis-py's hiredis parser and its "the reader needs more bytes" sentinel (False before 5.1)
_HIREDIS_PARSER: Any = getattr(_parsers, "_HiredisParser", None)
_MORE: Any = getattr(_parsers, "NOT_ENOUGH_DATA", False)
try:  # the type of a RESP3 push message as hiredis returns it (hiredis 3 and later)
    from hiredis import PushNotification
    _PUSH: Any = PushNotification
except ImportError:  # no hiredis (then read_replies goes one by one through redis-py) or an older one
    _PUSH = None


class Packed(NamedTuple):
    """Commands already in RESP form: the buffers to send, how many replies they answer, and
    whether each of those replies is ``+OK`` unless it is an error (see :func:`read_oks`)."""

    chunks: list[bytes]
    replies: int
    oks: bool = False


def read_replies(conn: Any, count: int) -> list[Any]:
    """``count`` replies of ``conn`` (error replies returned, not raised); replies after them
    (of commands sent later) stay unread."""
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if _HIREDIS_PARSER is None or not isinstance(parser, _HIREDIS_PARSER) or reader is None:
        return _one_by_one(conn, count)
    out: list[Any] = []
    gets, fill = reader.gets, parser.read_from_socket
    if _MORE is False:  # an old redis-py: False also stands for "more bytes needed"
        for _ in range(count):
            reply = gets()
            while reply is False:
                fill()
                reply = gets()
            out.append(reply)
    else:
        # the replies already buffered, taken by a loop in C; then more bytes, until all are in
        while True:
            out.extend(islice(iter(gets, _MORE), count - len(out)))
            if len(out) >= count:
                break
            fill()
    kinds = set(map(type, out))
    for kind in kinds:
        if issubclass(kind, RedisConnectionError):
            raise next(r for r in out if isinstance(r, RedisConnectionError))
    if _PUSH in kinds:
        # RESP3 (redis-py's default) lets the server slip a push message (an invalidation, a
        # maintenance notice) between replies: it answers none of the commands, so it is dropped
        # and as many replies again are read in its place.
        out = [r for r in out if type(r) is not _PUSH]
        out += read_replies(conn, count - len(out))
    return out


_OK = b"+OK\r\n"


def read_oks(conn: Any, count: int) -> list[Any]:
    """``count`` replies of ``conn`` to commands that answer ``+OK`` unless they fail: [] when
    every one is ``+OK``, else all of them as :func:`read_replies` returns them.

    The replies are read as raw bytes and compared with ``+OK`` repeated, one comparison in C
    per read, so a bulk write makes no object per reply; the first byte that differs hands
    what was read to the connection's reader, which parses the replies one by one."""
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    sock = getattr(parser, "_sock", None)
    if (_HIREDIS_PARSER is None or not isinstance(parser, _HIREDIS_PARSER) or reader is None
            or sock is None or reader.has_data()):
        return read_replies(conn, count)
    want = len(_OK) * count
    expected = _OK * count
    buf = bytearray(want)
    view = memoryview(buf)
    got = 0
    try:
        while got < want:
            # never more than these replies: whatever follows belongs to the next command
            n = sock.recv_into(view[got:], want - got)
            if not n:
                raise RedisConnectionError("Connection closed by server.")
            if view[got:got + n] != expected[got:got + n]:  # an error reply among them
                reader.feed(buf, 0, got + n)
                return read_replies(conn, count)
            got += n
    except TimeoutError:  # socket.timeout
        raise RedisTimeoutError("Timeout reading from socket") from None
    except OSError as exc:
        raise RedisConnectionError(f"Error while reading from socket: {exc.args}") from None
    return []


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
    exp = b"\r\n*2\r\n" + _bulk(expiry_command) + b"$%d\r\n"
    chunks = [_commands(_GET, keys[a:b], exp, keys[a:b]) for a, b in ranges(keys)]
    return Packed(chunks, 2 * len(keys))


def writes(keys: list[bytes], values: list[bytes], expiries: Sequence[int | None] | None,
           prefix: bytes = b"", size: int | None = None) -> Packed:
    """``SET prefix+key value`` for each record, with ``PXAT ms`` where it has an absolute
    expiry (``expiries`` None: no record has one).  ``size``: a bound on the bytes of the keys
    and values, when the caller knows one: a batch within SLICE_BYTES is one buffer."""
    if expiries is not None and expiries.count(None) == len(expiries):
        expiries = None
    if expiries is None and size is not None and size <= SLICE_BYTES:
        chunks = [_commands(_SET, keys, _ARG, values, prefix)] if keys else []
        return Packed(chunks, len(keys), oks=True)
    if expiries is not None and prefix:
        keys, prefix = list(map(prefix.__add__, keys)), b""
    timed = b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$4\r\nPXAT\r\n%s"
    plain = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
    chunks = []
    for a, b in ranges(keys, values, size):
        exps = expiries[a:b] if expiries is not None else None
        if exps is None or exps.count(None) == len(exps):
            chunks.append(_commands(_SET, keys[a:b], _ARG, values[a:b], prefix))
        else:
            chunks.append(b"".join([
                plain % (len(k), k, len(v), v) if e is None
                else timed % (len(k), k, len(v), v, _bulk(b"%d" % max(1, e)))
                for k, v, e in zip(keys[a:b], values[a:b], exps, strict=True)]))
    return Packed(chunks, len(keys), oks=True)


def msets(keys: list[bytes], values: list[bytes], prefix: bytes = b"", size: int | None = None) -> Packed:
    """``MSET`` of the records (each key after ``prefix``), one command per slice of
    :func:`ranges`, in one buffer.  ``size``: as for :func:`writes`."""
    slices = ranges(keys, values, size)
    if not slices:
        return Packed([], 0)
    pieces = _pieces(_ARG, keys, _ARG, values, prefix)
    for a, b in slices:  # each slice's first key opens its command
        pieces[4 * a] = b"\r\n*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * (b - a)) + pieces[4 * a][2:]
    return Packed([_joined(pieces)], len(slices), oks=True)


# Heads of a command's arguments, each opening with the CRLF that ends the item before it
_GET = b"\r\n*2\r\n$3\r\nGET\r\n$%d\r\n"
_SET = b"\r\n*3\r\n$3\r\nSET\r\n$%d\r\n"
_ARG = b"\r\n$%d\r\n"


def _commands(head: bytes, firsts: list[bytes], second_head: bytes, seconds: list[bytes],
              prefix: bytes = b"") -> bytes:
    """``head % len(prefix + first), prefix + first, second_head % len(second), second`` for each
    pair, joined, in RESP (see :func:`_pieces`)."""
    return _joined(_pieces(head, firsts, second_head, seconds, prefix))


def _pieces(head: bytes, firsts: list[bytes], second_head: bytes, seconds: list[bytes],
            prefix: bytes = b"") -> list[bytes]:
    """The pieces of :func:`_commands`, four per pair and a last CRLF, each head opening with the
    CRLF that ends the item before it (and ending with ``prefix``, so the namespaced keys are
    never built).  Built without a Python loop: each distinct length is formatted once."""
    firsts_len, seconds_len = list(map(len, firsts)), list(map(len, seconds))
    extra = len(prefix)
    heads = {n: head % (n + extra) + prefix for n in set(firsts_len)}
    second_heads = {n: second_head % n for n in set(seconds_len)}
    n = len(firsts)
    pieces: list[bytes] = [b""] * (4 * n + 1)
    # one length for all (keys of one pattern, values of one size): no lookup per item
    pieces[0:-1:4] = [*heads.values()] * n if len(heads) == 1 else map(heads.__getitem__, firsts_len)
    pieces[1::4] = firsts
    pieces[2::4] = ([*second_heads.values()] * n if len(second_heads) == 1
                    else map(second_heads.__getitem__, seconds_len))
    pieces[3::4] = seconds
    pieces[-1] = b"\r\n"
    return pieces


def _joined(pieces: list[bytes]) -> bytes:
    """``pieces`` joined, the first CRLF (which ends no item) dropped."""
    pieces[0] = pieces[0][2:]
    return b"".join(pieces)


def pairs(replies: list[Any]) -> list[tuple[Any, Any]]:
    """The (GET reply, expiry reply) of each key, from the replies to :func:`reads`."""
    return list(zip(replies[0::2], replies[1::2], strict=True))


def is_wrong_type(reply: Any) -> bool:
    """A GET of a key holding another Redis type."""
    return isinstance(reply, ResponseError) and str(reply).startswith("WRONGTYPE")

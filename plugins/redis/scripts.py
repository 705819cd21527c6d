"""Server-side Lua for the batch paths, and a low-level pipelined command runner.

Why Lua: redis-py spends ~5 µs of Python per pipelined command, so 1,000 ``PEXPIRETIME`` calls
cost far more than the reads they accompany; one script that loops on the server costs ~0.7 µs
per key.  Why keys in ARGV: in a cluster, declared KEYS must share one hash slot, while a script
flagged ``allow-cross-slot-keys`` may touch keys of several slots of its own node; a key of
another node (a slot that moved) makes the script fail with an error, never answer wrongly.

Every script takes its keys in one of two layouts, so one text serves both store kinds:
  standalone:  KEYS = k1..kn,          ARGV = a1..am
  cluster:     KEYS = (none),          ARGV = n, k1..kn, a1..am
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.connection import ConnectionPool
from redis.exceptions import NoScriptError, ResponseError

from . import bulk

_LAYOUT = """
local n, kt, ko, at, ao = #KEYS, KEYS, 0, ARGV, 0
if n == 0 then n = tonumber(ARGV[1]); kt = ARGV; ko = 1; ao = n + 1 end
"""

# For each key, read in one atomic step: its type, its whole content (false for a type without a
# JSON shape, or a missing key) and its expiry in ms (-1: none, -2: missing; absolute from
# PEXPIRETIME, relative from PTTL before 7.0).  For json_many (typedjson.py's shapes).
TYPED = """#!lua flags=no-writes,allow-cross-slot-keys
""" + _LAYOUT + """
local out = {}
for i = 1, n do
  local k = kt[ko + i]
  local t = redis.call('TYPE', k).ok
  local v = false
  if t == 'string' then v = redis.call('GET', k)
  elseif t == 'hash' then v = redis.call('HGETALL', k)
  elseif t == 'list' then v = redis.call('LRANGE', k, 0, -1)
  elseif t == 'set' then v = redis.call('SMEMBERS', k)
  elseif t == 'zset' then v = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
  elseif t == 'stream' then v = redis.call('XRANGE', k, '-', '+')
  end
  out[3 * i - 2] = t
  out[3 * i - 1] = v
  out[3 * i] = redis.call('%s', k)
end
return out
"""

DELETE = """#!lua flags=allow-cross-slot-keys
""" + _LAYOUT + """
local removed = 0
for i = 1, n do removed = removed + redis.call('UNLINK', kt[ko + i]) end
return removed
"""


class Script:
    """A Lua text and its SHA1; loaded on a node when EVALSHA first answers NOSCRIPT."""

    def __init__(self, text: str) -> None:
        self.text = text.encode()
        self.sha = hashlib.sha1(self.text).hexdigest().encode()

    def call(self, keys: Sequence[bytes], args: Sequence[Any] = (), *, cluster: bool,
             inline: bool = False) -> tuple[Any, ...]:
        """The command tuple that runs this script on ``keys``.  ``inline`` sends the text (EVAL):
        inside MULTI a NOSCRIPT would only show at EXEC, after the other commands ran."""
        head = (b"EVAL", self.text) if inline else (b"EVALSHA", self.sha)
        if cluster:
            return (*head, 0, len(keys), *keys, *args)
        return (*head, len(keys), *keys, *args)


def variants(text: str) -> dict[bool, Script]:
    """A script with PEXPIRETIME for servers since 7.0 (False) and PTTL, without the flags line,
    for older ones (True): keyed as ``relative_ttl``."""
    return {False: Script(text % "PEXPIRETIME"), True: Script(text.split("\n", 1)[1] % "PTTL")}


TYPED_SCRIPTS = variants(TYPED)


def run(pool: ConnectionPool, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` in one write and read every reply (errors are returned, not raised).

    This is what a non-transactional pipeline does, minus redis-py's per-command bookkeeping.
    """
    return bulk.run(pool, bulk.Packed([pack(commands)], len(commands)))


def pack(commands: Sequence[tuple[Any, ...]]) -> bytes:
    """``commands`` (arguments bytes or int) in RESP, as one buffer.

    Packed by hiredis in C: redis-py's ``pack_commands`` runs its encoder in Python for every
    argument, which measured ~4x the cost per record of a bulk MSET.
    """
    return b"".join(map(hiredis.pack_command, commands))


def send(conn: Any, commands: Sequence[tuple[Any, ...]]) -> None:
    """Write ``commands`` in one send."""
    conn.send_packed_command([pack(commands)], check_health=False)


def is_noscript(reply: Any) -> bool:
    return isinstance(reply, NoScriptError)


def is_unknown_pexpiretime(reply: Any) -> bool:
    text = str(reply).lower()
    return isinstance(reply, ResponseError) and "unknown" in text and "pexpiretime" in text


def is_old_server(reply: Any) -> bool:
    """A server older than 7.0: no PEXPIRETIME, no ``#!lua`` flags line (untested here: 7.0 only)."""
    return is_unknown_pexpiretime(reply) or (isinstance(reply, ResponseError) and "near '#'" in str(reply))

"""``redis://``, ``rediss://``, ``unix://``: one Redis server (redis-py's sync client with hiredis).

Keys and values are plain Redis strings, exactly as any other client writes them.  The hot paths
talk to a pooled connection directly (one write, then the replies) rather than through
redis-py's command or pipeline objects, whose bookkeeping costs more than the round trip:

* ``get``: GET + PEXPIRETIME in one round trip;
* ``get_many``: MGET + one Lua loop of PEXPIRETIME, in one round trip;
* ``set_many``: MSET for records without expiry, one Lua script of ``SET .. PXAT`` for the rest,
  wrapped in MULTI/EXEC when there are several commands: the batch is applied whole or not at all;
* ``delete_many``: one UNLINK.
"""

from __future__ import annotations

from typing import Any, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kvctl.store import Capabilities, Record, StoreURL, now_ms

from . import options, scripts
from .base import MAX_STRING, Commands, RedisStoreBase, raise_first_error

# MSET and script arguments are sent in slices: Redis holds a whole command in memory before it
# runs it, and one huge command would also stall every other client.
_SLICE_KEYS = 1000
_SLICE_BYTES = 64 * 1024 * 1024

EXPIRY = {False: scripts.Script(scripts.EXPIRY % "PEXPIRETIME"),
          True: scripts.Script(scripts.EXPIRY.split("\n", 1)[1] % "PTTL")}
WRITE = {False: scripts.Script(scripts.WRITE), True: scripts.Script(scripts.WRITE.split("\n", 1)[1])}


def slices(items: list[Any], size_of: Any) -> list[list[Any]]:
    """Consecutive slices of at most _SLICE_KEYS items and about _SLICE_BYTES."""
    out: list[list[Any]] = []
    current: list[Any] = []
    size = 0
    for item in items:
        n = size_of(item)
        if current and (len(current) >= _SLICE_KEYS or size + n > _SLICE_BYTES):
            out.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    if current:
        out.append(current)
    return out


def client_kwargs(settings: options.RedisSettings) -> dict[str, Any]:
    """redis-py client arguments: no silent retries, so a failed write is reported as failed."""
    return {**settings.connection, "retry": Retry(NoBackoff(), 0)}


class RedisStore(RedisStoreBase):
    name = "redis"
    description = ("Redis server (redis://, rediss:// TLS, unix://): plain string keys as any client "
                   "writes them; other types reported; optional local cache with pub/sub invalidation.")
    capabilities = Capabilities(
        persistent=True, ttl=True, ordered_scan=False, versions=False, atomic_batch=True,
        multi_node=False, typed_values=True, max_key_size=MAX_STRING, max_value_size=MAX_STRING,
        durability="the server's (RDB/AOF as configured; none if both are off)",
    )

    def __init__(self, url: StoreURL, settings: options.RedisSettings) -> None:
        self.client = redis.Redis(**client_kwargs(settings))
        self.pool = self.client.connection_pool
        super().__init__(url, settings)

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        return cls(url, options.parse(url, cluster=False))

    def _subscriber_client(self) -> Any:
        return redis.Redis(**client_kwargs(self.settings), health_check_interval=10)

    def _run(self, commands: Commands) -> list[Any]:
        return scripts.run(self.pool, commands)

    def _run_script(self, script_of: dict[bool, scripts.Script], commands_of: Any) -> list[Any]:
        """Run commands built by ``commands_of(script)``; load the script on NOSCRIPT, fall back to
        the pre-7.0 script when the server lacks PEXPIRETIME."""
        for _ in range(3):
            script = script_of[self.relative_ttl]
            replies = self._run(commands_of(script))
            flat = [x for r in replies for x in (r if isinstance(r, list) else [r])]
            if any(scripts.is_unknown_pexpiretime(r) or "shebang" in str(r).lower()
                   for r in flat if isinstance(r, redis.ResponseError)):
                self.relative_ttl = True
                continue
            if any(scripts.is_noscript(r) for r in flat):
                self._run([(b"SCRIPT", b"LOAD", script.text)])
                continue
            return replies
        raise_first_error(replies)
        return replies

    # -- reads -------------------------------------------------------------------------------
    def _fetch(self, keys: list[bytes]) -> list[tuple[Any, Any]]:
        if len(keys) == 1 and not self.relative_ttl:
            key = keys[0]
            value, exp = self._run([(b"GET", key), (b"PEXPIRETIME", key)])
            if isinstance(exp, redis.ResponseError) and scripts.is_unknown_pexpiretime(exp):
                self.relative_ttl = True
                return self._fetch(keys)
            if isinstance(value, redis.ResponseError):  # WRONGTYPE: another Redis type
                value = [self._run([(b"TYPE", key)])[0]]
            raise_first_error([exp])
            return [(value, exp)]
        out: list[tuple[Any, Any]] = []
        for part in slices(keys, len):
            values, exps = self._run_script(
                EXPIRY, lambda s, part=part: [(b"MGET", *part), s.call(part, cluster=False)])
            raise_first_error([values, exps])
            out.extend(zip(values, exps, strict=True))
        # MGET answers nil for a key of another type: ask those keys' types.
        odd = [i for i, (v, e) in enumerate(out) if v is None and e != -2]
        if odd:
            types = self._run([(b"TYPE", keys[i]) for i in odd])
            for i, kind in zip(odd, types, strict=True):
                if kind != b"none" and kind != b"string":
                    out[i] = ([kind], out[i][1])
        return out

    # -- writes ------------------------------------------------------------------------------
    def _write(self, records: list[Record], publish: Commands) -> None:
        now = now_ms()
        plain = [r for r in records if r.expires_at_ms is None]
        timed = [r for r in records if r.expires_at_ms is not None]
        if len(records) == 1 and not publish:  # the single-key path: one plain SET
            r = records[0]
            if r.expires_at_ms is None:
                reply = self._run([(b"SET", r.key, r.value)])
            else:
                ttl = r.expires_at_ms - now
                reply = self._run([(b"SET", r.key, r.value, b"PX", ttl) if ttl > 0 else (b"UNLINK", r.key)])
            raise_first_error(reply)
            return

        def commands(script: scripts.Script) -> Commands:
            cmds: Commands = []
            for part in slices(plain, lambda r: len(r.key) + len(r.value)):
                cmds.append((b"MSET", *[x for r in part for x in (r.key, r.value)]))
            for part in slices(timed, lambda r: len(r.key) + len(r.value)):
                args = [x for r in part for x in (r.value, r.expires_at_ms)]
                cmds.append(script.call([r.key for r in part], args, cluster=False, inline=True))
            if len(cmds) > 1 or (cmds and publish):
                cmds = [(b"MULTI",), *cmds, *publish, (b"EXEC",)]
            return cmds

        replies = self._run_script(WRITE, commands)
        raise_first_error(replies)

    def _unlink(self, keys: list[bytes], publish: Commands) -> int:
        parts = slices(keys, len)
        if len(parts) == 1 and not publish:
            reply = self._run([(b"UNLINK", *keys)])
            raise_first_error(reply)
            return int(reply[0])
        replies = self._run([(b"MULTI",), *[(b"UNLINK", *p) for p in parts], *publish, (b"EXEC",)])
        raise_first_error(replies)
        return sum(int(n) for n in replies[-1][: len(parts)])

    # -- administration ----------------------------------------------------------------------
    def _scan_targets(self) -> list[tuple[str, Any]]:
        return [("0", self.pool)]

    def _flush(self, publish: Commands) -> int:
        replies = self._run([(b"MULTI",), (b"DBSIZE",), (b"FLUSHDB",), *publish, (b"EXEC",)])
        raise_first_error(replies)
        return int(replies[-1][0])

    def _info(self) -> list[dict[str, Any]]:
        info: dict[str, Any] = self.client.info()
        info["dbsize"] = self.client.dbsize()
        return [info]

    def _dump(self, keys: list[bytes]) -> list[tuple[Any, Any, Any]]:
        exp_cmd = b"PTTL" if self.relative_ttl else b"PEXPIRETIME"
        out: list[tuple[Any, Any, Any]] = []
        for part in slices(keys, len):
            replies = self._run([c for k in part for c in ((b"DUMP", k), (exp_cmd, k), (b"TYPE", k))])
            if any(scripts.is_unknown_pexpiretime(r) for r in replies):
                self.relative_ttl = True
                return self._dump(keys)
            raise_first_error(replies)
            out.extend(zip(replies[0::3], replies[1::3], replies[2::3], strict=True))
        return out

    def _restore(self, commands: Commands) -> None:
        if len(commands) > 1:
            commands = [(b"MULTI",), *commands, (b"EXEC",)]
        replies = self._run(commands)
        raise_first_error(replies)

    def close(self) -> None:
        super().close()
        self.client.close()

"""``redis://``, ``rediss://``, ``unix://``: one Redis server (redis-py's sync client with hiredis).

Keys and values are plain Redis strings, exactly as any other client writes them.  The hot paths
talk to a pooled connection directly (one write, then the replies) rather than through
redis-py's command or pipeline objects, whose bookkeeping costs more than the round trip:

* ``get``: GET + PEXPIRETIME in one round trip;
* ``get_many``: GET + PEXPIRETIME of each key, pipelined in one round trip (bulk.py);
* ``set_many``: MSET for records without expiry, one pipelined ``SET .. PXAT`` each for the rest,
  wrapped in MULTI/EXEC when there are several commands: the batch is applied whole or not at all;
* ``delete_many``: one UNLINK.
"""

from __future__ import annotations

from typing import Any, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kvctl.store import Capabilities, StoreURL, now_ms

from . import bulk, options, scripts, tls
from .base import MAX_STRING, RedisStoreBase
from .commands import Commands, errors_in, raise_first_error, ranges


def client_kwargs(settings: options.RedisSettings) -> dict[str, Any]:
    """redis-py client arguments: no silent retries, so a failed write is reported as failed."""
    return {**settings.connection, "retry": Retry(NoBackoff(), 0)}


class RedisStore(RedisStoreBase):
    name = "redis"
    description = ("Redis server (redis://, rediss:// TLS, unix://): plain string keys as any client "
                   "writes them; hashes, lists, sets, zsets, streams read as JSON (--types json); "
                   "?codec=session for Session's values; optional local cache with pub/sub invalidation.")
    capabilities = Capabilities(
        persistent=True, ttl=True, ordered_scan=False, versions=False, atomic_batch=True,
        multi_node=False, typed_values=True, conditional_writes=True, max_key_size=MAX_STRING,
        max_value_size=MAX_STRING,
        durability="the server's (RDB/AOF as configured; none if both are off)",
    )

    def __init__(self, url: StoreURL, settings: options.RedisSettings) -> None:
        self.client = tls.client(client_kwargs(settings))
        self.pool = self.client.connection_pool
        super().__init__(url, settings)

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        return cls(url, options.parse(url, cluster=False))

    def _subscriber_client(self) -> Any:
        return tls.client({**client_kwargs(self.settings), "health_check_interval": 10})

    def _run(self, commands: Commands) -> list[Any]:
        return scripts.run(self.pool, commands)

    def _run_script(self, script_of: dict[bool, scripts.Script], commands_of: Any) -> list[Any]:
        """Run commands built by ``commands_of(script)``; load the script on NOSCRIPT, fall back to
        the pre-7.0 script when the server lacks PEXPIRETIME."""
        for _ in range(3):
            script = script_of[self.relative_ttl]
            replies = self._run(commands_of(script))
            errors = errors_in(replies)
            if any(scripts.is_old_server(r) for r in errors):
                self.relative_ttl = True
                continue
            if any(scripts.is_noscript(r) for r in errors):
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
        # one GET and one expiry command per key, pipelined (see bulk.py: cheaper for the
        # server than MGET and a Lua loop of expiries)
        replies = bulk.run(self.pool, bulk.reads(keys, b"PTTL" if self.relative_ttl else b"PEXPIRETIME"))
        out = bulk.pairs(replies)
        if not self.relative_ttl and any(scripts.is_unknown_pexpiretime(e) for _, e in out[:1]):
            self.relative_ttl = True
            return self._fetch(keys)
        # GET answers WRONGTYPE for a key of another type: ask those keys' types.
        odd = [i for i, (v, _) in enumerate(out) if bulk.is_wrong_type(v)]
        if odd:
            types = self._run([(b"TYPE", keys[i]) for i in odd])
            for i, kind in zip(odd, types, strict=True):
                out[i] = ([kind], out[i][1]) if kind != b"none" and kind != b"string" else (None, -2)
        raise_first_error([x for pair in out for x in pair])
        return out

    # -- writes ------------------------------------------------------------------------------
    def _write(self, keys: list[bytes], values: list[bytes], expiries: list[int | None],
               publish: Commands) -> None:
        packed = self._pack(keys, values, expiries, publish)
        if packed is not None:
            self._send(packed)
            return
        key, value, exp = keys[0], values[0], expiries[0]  # the single-key path: one plain SET
        if exp is None:
            command: tuple[Any, ...] = (b"SET", key, value)
        else:
            ttl = exp - now_ms()
            command = (b"SET", key, value, b"PX", ttl) if ttl > 0 else (b"UNLINK", key)
        raise_first_error(self._run([command]))

    def _unique_keys_needed(self, expiries: list[int | None]) -> bool:
        # the records without an expiry and those with one go in separate commands (_pack):
        # only a batch holding both could land a key's earlier record last
        return 0 < expiries.count(None) < len(expiries)

    def _pack(self, keys: list[bytes], values: list[bytes], expiries: list[int | None],
              publish: Commands, prefix: bytes = b"", size: int | None = None) -> bulk.Packed | None:
        """MSET for records without an expiry; one plain SET .. PXAT each for the others (bulk.py:
        about half the server's CPU of a Lua loop of SETs); in MULTI/EXEC when there are several
        commands, so the batch is applied whole or not at all.  None for one key and nothing to
        publish: ``_write`` sends one plain SET."""
        if len(keys) == 1 and not publish:
            return None
        timed = [] if expiries.count(None) == len(expiries) else [i for i, e in enumerate(expiries) if e is not None]
        if timed and len(timed) < len(keys):
            plain = [i for i, e in enumerate(expiries) if e is None]
            plain_keys, plain_values = [keys[i] for i in plain], [values[i] for i in plain]
            keys, values = [keys[i] for i in timed], [values[i] for i in timed]
            expiries = [expiries[i] for i in timed]
        elif timed:
            plain_keys, plain_values = [], []
        else:
            plain_keys, plain_values, keys = keys, values, []
        mset = bulk.msets(plain_keys, plain_values, prefix, size)
        timed_sets = bulk.writes(keys, values, expiries, prefix, size)
        count = mset.replies + timed_sets.replies
        chunks = [*mset.chunks, *timed_sets.chunks]
        if count > 1 or publish:
            chunks = [scripts.pack([(b"MULTI",)]), *chunks, scripts.pack([*publish, (b"EXEC",)])]
            count += 2 + len(publish)
        return bulk.Packed(chunks, count)

    def _send(self, packed: bulk.Packed) -> None:
        raise_first_error(bulk.run(self.pool, packed))

    def _key_command(self, command: tuple[Any, ...], publish: Commands) -> Any:
        if not publish:
            replies = self._run([command])
            raise_first_error(replies)
            return replies[0]
        replies = self._run([(b"MULTI",), command, *publish, (b"EXEC",)])
        raise_first_error(replies)
        return replies[-1][0]

    def _unlink(self, keys: list[bytes], publish: Commands) -> int:
        parts = [keys[a:b] for a, b in ranges(keys)]
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

    def _on_nodes(self, batches: dict[str, Commands]) -> dict[str, list[Any]]:
        return {name: self._run(commands) for name, commands in batches.items()}

    def _feed_nodes(self) -> list[tuple[str, Any]]:
        conn = self.settings.connection
        return [(conn.get("unix_socket_path") or f"{conn['host']}:{conn['port']}", self.pool)]

    def _info(self) -> list[dict[str, Any]]:
        info: dict[str, Any] = self.client.info()
        info["dbsize"] = self.client.dbsize()
        return [info]

    def _dump(self, keys: list[bytes]) -> list[tuple[Any, Any, Any]]:
        exp_cmd = b"PTTL" if self.relative_ttl else b"PEXPIRETIME"
        out: list[tuple[Any, Any, Any]] = []
        for a, b in ranges(keys):
            part = keys[a:b]
            replies = self._run([c for k in part for c in ((b"DUMP", k), (exp_cmd, k), (b"TYPE", k))])
            if any(scripts.is_unknown_pexpiretime(r) for r in replies):
                self.relative_ttl = True
                return self._dump(keys)
            raise_first_error(replies)
            out.extend(zip(replies[0::3], replies[1::3], replies[2::3], strict=True))
        return out

    def _read_typed(self, keys: list[bytes]) -> list[tuple[Any, Any, Any]]:
        out: list[tuple[Any, Any, Any]] = []
        for a, b in ranges(keys):
            part = keys[a:b]
            replies = self._run_script(scripts.TYPED_SCRIPTS, lambda s, part=part: [s.call(part, cluster=False)])
            raise_first_error(replies)
            flat = replies[0]  # type, content, expiry of each key
            out.extend(zip(flat[1::3], flat[2::3], flat[0::3], strict=True))
        return out

    def _restore(self, commands: Commands) -> None:
        if len(commands) > 1:
            commands = [(b"MULTI",), *commands, (b"EXEC",)]
        replies = self._run(commands)
        raise_first_error(replies)

    def close(self) -> None:
        super().close()
        self.client.close()

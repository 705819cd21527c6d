"""The notification side of the Redis change feed (see feed.py): which ``notify-keyspace-events``
flags it needs and how to subscribe under them, and one live subscription, with its reader
threads and its buffer of notified keys."""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from redis.backoff import NoBackoff
from redis.retry import Retry

from kvctl.errors import FeedGapError, one_line

from .commands import escape_glob

TAG = "rn"  # cursors: rn:<subscription id>:<sequence number>
REQUIRED_CLASSES = "g$xe"  # generic (del, expire, rename...), strings, expired, evicted
# Lists, sets, hashes, sorted sets, streams: asked for too where CONFIG SET is allowed, so a write
# to a typed key is seen and reported (a sync that cannot copy it says so) instead of missed.
TYPED_CLASSES = "lshzt"
_ALL_CLASSES = "g$lshzxetd"  # what the flag A stands for
KEYSPACE, KEYEVENT = "keyspace", "keyevent"
# Not changes: a read that missed, and key creation (always followed by the write's own event).
IGNORED_EVENTS = frozenset({b"keymiss", b"new"})

Commands = list[tuple[Any, ...]]


# -- notify-keyspace-events --------------------------------------------------------------------
def classes(flags: str) -> set[str]:
    return set(flags.replace("A", _ALL_CLASSES))


def usable_mode(flags: str) -> str | None:
    """How to subscribe under these flags (keyspace preferred); None: they do not cover the feed."""
    have = classes(flags)
    if not set(REQUIRED_CLASSES) <= have:
        return None
    return KEYSPACE if "K" in have else KEYEVENT if "E" in have else None


def with_required(flags: str) -> str:
    """``flags`` plus K and the missing required and typed classes: what CONFIG SET asks for."""
    have = classes(flags)
    return flags + "".join(c for c in "K" + REQUIRED_CLASSES + TYPED_CLASSES if c not in have)


def _config_value(reply: Any) -> str:
    """The value of a one-parameter CONFIG GET reply (a pair, or a dict by some parsers)."""
    values = list(reply.values()) if isinstance(reply, dict) else list(reply[1::2])
    value = values[0] if values else b""
    return value.decode() if isinstance(value, bytes) else str(value)


_FLUSH_STATS = re.compile(rb"^cmdstat_(?:flushdb|flushall|swapdb):calls=(\d+)", re.MULTILINE)


def flush_count(info: Any) -> int | None:
    """Calls of FLUSHDB, FLUSHALL and SWAPDB in an INFO commandstats reply (None: no reply)."""
    if isinstance(info, str):
        info = info.encode()
    if not isinstance(info, bytes):
        return None  # INFO refused (an ACL): flushes by other clients go unnoticed
    return sum(int(n) for n in _FLUSH_STATS.findall(info))


def pattern_of(mode: str, db: int, namespace: bytes) -> tuple[bytes, int]:
    """The PSUBSCRIBE pattern and the length of the channel prefix to cut off its channels."""
    if mode == KEYSPACE:
        prefix = b"__keyspace@%d__:" % db
        return prefix + escape_glob(namespace), len(prefix) + len(namespace)
    prefix = b"__keyevent@%d__:" % db
    return prefix + b"*", len(prefix)


# -- one subscription ---------------------------------------------------------------------------
class Subscription:
    """Reader threads (one per node) filling one numbered, bounded buffer of notified keys.

    The buffer holds at most ``limit`` keys: beyond that the oldest quarter is dropped in one go
    (amortised O(1) per event) and ``base`` moves up, so a cursor it passed is a gap, never a
    silent loss.  ``log[i]`` is event number ``base + i + 1``.
    """

    def __init__(self, where: str, namespace: bytes, db: int, limit: int) -> None:
        self.id = secrets.token_hex(8)
        self.where = where
        self.ns = namespace
        self.db = db
        self.limit = limit
        self.cond = threading.Condition()
        self.log: list[bytes] = []
        self.base = 0
        self.counter = 0  # barrier tokens
        self.tokens: dict[str, int] = {}  # node -> newest token its reader has seen
        self.failure: str | None = None
        self.closing = False
        self.conns: dict[str, Any] = {}
        self.modes: dict[str, str] = {}
        self.client_ids: dict[str, int] = {}
        self.threads: list[threading.Thread] = []
        self.probes: set[bytes] = set()
        self.probed: set[bytes] = set()
        self.flushes: dict[str, int | None] = {}  # node -> flush commands counted at the start
        self.started = time.time()

    @property
    def nodes(self) -> list[str]:
        return list(self.conns)

    def channel(self, node: str) -> bytes:
        return f"kvctl-feed:{self.id}:{node}".encode()

    def attach(self, node: str, pool: Any, mode: str) -> None:
        """Open ``node``'s subscriber connection, subscribe, and start its reader thread."""
        kwargs = {**pool.connection_kwargs, "socket_timeout": None, "retry": Retry(NoBackoff(), 0),
                  "health_check_interval": 0, "protocol": 2}
        conn = pool.connection_class(**kwargs)
        conn.connect()
        try:
            conn.send_command("CLIENT", "ID")
            client_id = int(conn.read_response())
            pattern, cut = pattern_of(mode, self.db, self.ns)
            conn.send_command("PSUBSCRIBE", pattern)
            conn.read_response()
            conn.send_command("SUBSCRIBE", self.channel(node))
            conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        self.conns[node] = conn
        self.modes[node] = mode
        self.client_ids[node] = client_id
        thread = threading.Thread(target=self._read, args=(node, conn, mode == KEYSPACE, cut),
                                  name=f"kvctl-redis-feed-{node}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def _read(self, node: str, conn: Any, keyspace: bool, cut: int) -> None:
        log, cond, ns, ignored = self.log, self.cond, self.ns, IGNORED_EVENTS
        skip = len(ns)
        try:
            while True:
                msg = conn.read_response()
                kind = msg[0]
                if kind == b"pmessage":
                    if keyspace:  # channel __keyspace@db__:<ns><key>, data: the event
                        key, event = msg[2][cut:], msg[3]
                    else:  # channel __keyevent@db__:<event>, data: the key
                        full, event = msg[3], msg[2][cut:]
                        if not full.startswith(ns):
                            continue
                        key = full[skip:]
                    if event in ignored:
                        continue
                    with cond:
                        if self.probes and key in self.probes:
                            self.probed.add(key)
                            continue
                        log.append(key)
                        if len(log) > self.limit:
                            drop = max(1, self.limit // 4)
                            del log[:drop]
                            self.base += drop
                elif kind == b"message":  # a barrier token
                    with cond:
                        self.tokens[node] = int(msg[2])
                        cond.notify_all()
        except BaseException as exc:  # whatever ends the reader ends the feed
            self.fail(f"the subscriber connection to {node} dropped ({one_line(exc, limit=200)}); "
                      "notifications sent since then are lost")
        finally:
            with contextlib.suppress(Exception):
                conn.disconnect()

    def fail(self, reason: str) -> None:
        """End the subscription (the first reason wins); closes every node's connection."""
        with self.cond:
            if self.closing:
                return
            if self.failure is None:
                self.failure = f"{reason} (at {time.strftime('%H:%M:%S')})"
            self.cond.notify_all()
        self._shutdown()

    def _shutdown(self) -> None:
        # Shut the sockets down rather than disconnect: each reader thread owns its connection
        # and cleans it up itself when its blocking read fails.
        for conn in self.conns.values():
            sock = getattr(conn, "_sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(2)

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self._shutdown()
        for thread in self.threads:
            thread.join(timeout=2)

    def check(self) -> None:
        if self.failure is not None:
            raise FeedGapError(f"{self.where}: change feed {self.id} ended: {self.failure}")

    def barrier(self, on_nodes: Callable[[dict[str, Commands]], dict[str, list[Any]]], timeout: float) -> int:
        """The number of the newest event once every write acknowledged before this call has
        been notified (see the module docstring).  The same round trip reads each node's count
        of FLUSHDB, FLUSHALL and SWAPDB, which empty a database without notifying any key."""
        with self.cond:
            self.check()
            self.counter += 1
            token = self.counter
        replies = on_nodes({node: [(b"PUBLISH", self.channel(node), token), (b"INFO", b"commandstats")]
                            for node in self.conns})
        for node, (count, info) in replies.items():
            if not isinstance(count, int) or count < 1:
                self.fail(f"the server no longer has the subscriber connection to {node} "
                          f"(PUBLISH reached {count!r} clients); notifications were lost")
            flushes = flush_count(info)
            before = self.flushes.setdefault(node, flushes)
            if flushes != before:
                self.fail(f"FLUSHDB, FLUSHALL or SWAPDB ran on {node} (on this or another database): "
                          "Redis notifies no key they remove")
        with self.cond:
            done = self.cond.wait_for(
                lambda: self.failure is not None or all(self.tokens.get(n, 0) >= token for n in self.conns),
                timeout)
        if not done:
            self.fail(f"no message came back through the subscriber connections within {timeout:g}s")
        with self.cond:
            self.check()
            return self.base + len(self.log)

    def slice(self, start: int, end: int) -> list[bytes]:
        """Keys of events ``start+1 .. end`` (sequence numbers)."""
        with self.cond:
            self.check()
            if start < self.base:
                raise FeedGapError(
                    f"{self.where}: more than {self.limit:,} notifications arrived after change-feed "
                    f"position {start} and the oldest were dropped (raise ?feed_buffer=)")
            return self.log[start - self.base:end - self.base]

    def stats(self) -> dict[str, Any]:
        with self.cond:
            return {"feed_subscription": self.id, "feed_position": self.base + len(self.log),
                    "feed_buffered": len(self.log), "feed_dropped": self.base,
                    "feed_nodes": {n: self.modes[n] for n in self.conns},
                    "feed_failure": self.failure}

"""The change feed of the Redis backends (``?feed=notify``), built on keyspace notifications.

Redis keeps no history of changes: it can only *tell* a subscriber, as it happens, that a key
changed (``notify-keyspace-events``), and what it sends while nobody listens is gone.  So the
feed is a live subscription held by this process:

* ``feed_cursor()`` starts it (once) on a dedicated connection per node (every master of a
  cluster: notifications are node-local).  A reader thread per connection appends each notified
  key of the store's namespace to one bounded buffer, numbering them.
* A cursor names the subscription (a random id) and a number in its buffer.  ``changes(cursor)``
  reads the keys notified after it; each page's keys are deduplicated and their *current* value
  and expiry read in one round trip (a key that is gone is a tombstone with version None).
  Notifications carry no values, so the feed says which keys changed, not through which values.
* Whatever can lose notifications ends the subscription: its connection dropping (a restart, a
  network fault, ``CLIENT KILL``), the cluster's masters changing, a buffer overflowing past a
  cursor, and FLUSHDB, FLUSHALL or SWAPDB, which empty a database without notifying a key (seen
  in INFO commandstats, server-wide: a flush of another database also counts, costing one
  needless comparison rather than a loss).  A cursor of an ended subscription, of another
  process, or behind the buffer raises FeedGapError saying why; the sync engine then compares
  both stores instead (announced).

Knowing that the notifications of every acknowledged write have arrived: before it reads, the
store PUBLISHes a token, on each node, on a channel only its own subscriber connection listens
to.  Redis queues a write's notification when the write runs and delivers one client's messages
in order, so once the reader has seen the token, every write acknowledged before the PUBLISH is
in the buffer.  PUBLISH's receiver count also tells at once that the server dropped the
subscriber, and the same round trip reads the flush counters.

The server must send keyspace (K) or keyevent (E) notifications of the generic, string, expired
and evicted classes (``g$xe``); the typed classes (``lshzt``) make writes to hashes, lists, sets,
sorted sets and streams seen too, so a sync reports such keys rather than missing them.  The
store adds what is missing with CONFIG SET; where CONFIG is
refused it uses what is configured, and where even CONFIG GET is refused (managed services) it
checks with a probe key that notifications arrive.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from redis.backoff import NoBackoff
from redis.retry import Retry

from kvctl.errors import FeedGapError, KvctlError, UnsupportedError, UsageError, one_line
from kvctl.plugin_kit import page_size
from kvctl.store import TOMBSTONE, Page, Record

from .base import escape_glob

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


# -- the feed of one store ------------------------------------------------------------------
class NotifyFeed:
    """``feed_cursor`` / ``changes`` of one store; ``host`` is the store (see base.py), which
    runs commands on its nodes and reads records."""

    def __init__(self, host: Any, limit: int, timeout_s: float) -> None:
        self.host = host
        self.limit = limit
        self.timeout_s = timeout_s
        self.sub: Subscription | None = None
        self.ended: dict[str, str] = {}  # ids of this store's earlier subscriptions -> why they ended

    # -- cursors ---------------------------------------------------------------------------
    def cursor(self) -> str:
        sub = self._live()
        return f"{TAG}:{sub.id}:{self._barrier(sub)}"

    def _parse(self, cursor: str | None) -> tuple[str, int]:
        where = self.host.where
        if cursor is None:
            raise FeedGapError(f"{where}: Redis keeps no history of changes, so a feed cannot start "
                               "before a cursor taken with feed_cursor()")
        tag, _, rest = cursor.partition(":")
        sub_id, _, seq = rest.partition(":")
        if tag != TAG or not sub_id or not seq.isdigit():
            raise UsageError(f"not a change-feed cursor of {where}: {cursor!r}")
        return sub_id, int(seq)

    def _resume(self, sub_id: str, cursor: str) -> Subscription:
        where = self.host.where
        sub = self.sub
        if sub is not None and sub.id == sub_id:
            if sub.failure is not None:
                self._end(sub)
                raise FeedGapError(f"{where}: change feed {sub_id} ended: {self.ended[sub_id]}")
            return sub
        if sub_id in self.ended:
            raise FeedGapError(f"{where}: change feed {sub_id} ended: {self.ended[sub_id]}")
        raise FeedGapError(
            f"{where}: cursor {cursor} names a notification subscription this process does not hold "
            "(another process's, or a closed store's); Redis keeps no history of changes, so what "
            "changed since then is unknown")

    # -- subscription life -----------------------------------------------------------------
    def _live(self) -> Subscription:
        sub = self.sub
        if sub is not None and sub.failure is None:
            return sub
        if sub is not None:
            self._end(sub)
        self.sub = self._start()
        return self.sub

    def _end(self, sub: Subscription) -> None:
        self.ended[sub.id] = sub.failure or "the store was closed"
        sub.close()
        if self.sub is sub:
            self.sub = None

    def _start(self) -> Subscription:
        host = self.host
        nodes = host._feed_nodes()  # (name, pool) of every node to listen to
        modes = self._configure(nodes)
        sub = Subscription(host.where, host.ns, host.settings.db, self.limit)
        try:
            for name, pool in nodes:
                sub.attach(name, pool, modes[name] or KEYSPACE)
            self._barrier(sub)  # every subscription confirmed
            unknown = [name for name, _ in nodes if modes[name] is None]
            if unknown:
                self._probe(sub, unknown)
        except BaseException:
            sub.close()
            raise
        return sub

    def _configure(self, nodes: list[tuple[str, Any]]) -> dict[str, str | None]:
        """Each node's subscription mode, after adding missing notification classes where
        CONFIG SET is allowed.  None: the settings cannot be read (probe them)."""
        host, where = self.host, self.host.where
        replies = host._on_nodes({name: [(b"CONFIG", b"GET", b"notify-keyspace-events")] for name, _ in nodes})
        modes: dict[str, str | None] = {}
        flags: dict[str, str] = {}
        for name, _ in nodes:
            reply = replies[name][0]
            if isinstance(reply, Exception):
                modes[name] = None  # CONFIG refused (a managed service): probe
                continue
            flags[name] = _config_value(reply)
            if usable_mode(flags[name]) == KEYSPACE and set(TYPED_CLASSES) <= classes(flags[name]):
                modes[name] = KEYSPACE
        wanted = {name: with_required(f) for name, f in flags.items() if name not in modes}
        if not wanted:
            return modes
        set_replies = host._on_nodes({name: [(b"CONFIG", b"SET", b"notify-keyspace-events", want.encode())]
                                      for name, want in wanted.items()})
        for name in wanted:
            reply = set_replies[name][0]
            if not isinstance(reply, Exception):
                modes[name] = KEYSPACE
            elif usable_mode(flags[name]) is not None:
                modes[name] = usable_mode(flags[name])
            else:
                raise UnsupportedError(
                    f"{where}: keyspace notifications are not enabled on {name} "
                    f"(notify-keyspace-events={flags[name]!r}) and CONFIG SET was refused "
                    f"({one_line(reply, limit=200)}); the change feed needs K (or E) and {REQUIRED_CLASSES}: "
                    f"set notify-keyspace-events {with_required(flags[name])!r} on the server, "
                    "or drop ?feed=notify")
        return modes

    def _probe(self, sub: Subscription, nodes: list[str]) -> None:
        """Write and delete one probe key per node; each must come back as a notification."""
        host = self.host
        stem = host.ns + b"\x00kvctl-feed-probe:" + sub.id.encode()
        keys = {name: host._key_on(name, stem) for name in nodes}
        with sub.cond:
            sub.probes = {k[len(host.ns):] for k in keys.values()}
        host._on_nodes({name: [(b"SET", key, b"1", b"PX", 10_000), (b"DEL", key)] for name, key in keys.items()})
        # The probe's notifications, if any, were queued before the barrier's token: one is enough.
        self._barrier(sub)
        with sub.cond:
            missing = sub.probes - sub.probed
            sub.probes = set()
        if missing:
            silent = sorted(n for n, k in keys.items() if k[len(host.ns):] in missing)
            raise UnsupportedError(
                f"{host.where}: the server refuses CONFIG and sent no keyspace notification for a "
                f"probe key on {', '.join(silent)}: the change feed needs notify-keyspace-events with "
                f"K and {REQUIRED_CLASSES} (set it in the service's parameters), or drop ?feed=notify")

    def _barrier(self, sub: Subscription) -> int:
        lost = self.host._feed_moved(sub.nodes)
        if lost:
            sub.fail(lost)
        return sub.barrier(self.host._on_nodes, self.timeout_s)

    # -- reading ---------------------------------------------------------------------------
    def changes(self, cursor: str | None, batch_size: int) -> Iterator[Page]:
        sub_id, seq = self._parse(cursor)
        sub = self._resume(sub_id, cursor or "")
        try:
            end = self._barrier(sub)
        except FeedGapError:
            self._end(sub)
            raise
        if seq > end:
            raise FeedGapError(f"{self.host.where}: cursor {cursor} is ahead of change feed {sub_id}")
        batch_size = page_size(batch_size)
        while seq < end:
            try:
                keys = sub.slice(seq, min(end, seq + batch_size))
            except FeedGapError:
                if sub.failure is not None:
                    self._end(sub)
                raise
            seq += len(keys)
            yield Page(self._records(keys), f"{TAG}:{sub.id}:{seq}")

    def _records(self, keys: list[bytes]) -> list[Record]:
        # Deduplicated, each key where it was last notified: one read gives its current state.
        unique = list(dict.fromkeys(reversed(keys)))
        unique.reverse()
        records = self.host._records(unique)
        return [r if r is not None else Record(k, b"", None, None, TOMBSTONE)
                for k, r in zip(unique, records, strict=True)]

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"feed": "notify", "feed_buffer": self.limit,
                               "feed_ended_subscriptions": len(self.ended)}
        if self.sub is not None:
            out.update(self.sub.stats())
        return out

    def close(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(KvctlError):
                self._end(self.sub)

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
from collections.abc import Iterator
from typing import Any

from kvctl.errors import FeedGapError, KvctlError, SettingChangedWarning, UnsupportedError, UsageError, one_line
from kvctl.plugin_kit import page_size
from kvctl.store import TOMBSTONE, Page, Record

from .subscription import (
    KEYSPACE,
    REQUIRED_CLASSES,
    TAG,
    TYPED_CLASSES,
    Subscription,
    _config_value,
    classes,
    usable_mode,
    with_required,
)


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
                _changed_notice(where, name, flags[name], wanted[name])
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


def _changed_notice(where: str, node: str, before: str, after: str) -> None:
    """Say that CONFIG SET changed the server's notify-keyspace-events (the cli shows it)."""
    import warnings

    warnings.warn(SettingChangedWarning(
        f"{where}: changed notify-keyspace-events on {node} from {before!r} to {after!r} for the change feed "
        f"(to revert: redis-cli CONFIG SET notify-keyspace-events {before!r})"), stacklevel=2)

"""The local cache with pub/sub invalidation of Session's "Clustered Redis" store.

Each kvctl process keeps a bounded LRU of records it read (entries live ``ttl_ms`` from when they
were cached).  Every write and delete goes to Redis first and then publishes, on a channel shared
by all nodes (Session's default ``session:cluster:invalidate``), one JSON message per key:

    {"type": "session_invalidated" | "session_deleted" | "cache_clear",
     "session_id": "<key without cache_prefix>", "node_id": "<this node>",
     "timestamp": "2024-05-01T12:00:00Z"}

which is what Session's Crystal nodes send and parse (its enum and ``Time`` serialised by
``JSON::Serializable``), so kvctl can sit beside them.  Receivers ignore their own node id and
only evict.  Two rules keep the cache from ever serving data it was not told about:

* it is used only while the subscriber is connected: when that connection drops, the cache is
  cleared and bypassed until a new subscription is confirmed (which clears it again: messages
  sent in between are lost);
* a record read from Redis is cached only if no invalidation arrived while it was being read
  (an epoch counter), so a reply that raced a remote write is not kept.

A message that cannot be understood clears the whole cache: never wrong, at worst slower.
Writes by clients that do not publish (redis-cli, other apps) are seen only after ``ttl_ms``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from kvctl.store import Record

from .options import CacheSettings

# Session's ClusterMessageType members as Crystal serialises them (underscored names).
INVALIDATED = "session_invalidated"
DELETED = "session_deleted"
CACHE_CLEAR = "cache_clear"
_EVICT_TYPES = {"sessioninvalidated", "sessiondeleted", "invalidated", "deleted", "0", "1"}
_CLEAR_TYPES = {"cacheclear", "clear", "2"}


class LocalCache:
    """A bounded LRU of live records.  ``get`` runs on the store's thread; invalidations on the
    subscriber's thread; the lock orders inserts against invalidations."""

    def __init__(self, max_entries: int, ttl_ms: int) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_ms / 1000
        self._data: OrderedDict[bytes, tuple[float, Record]] = OrderedDict()
        self._lock = threading.Lock()
        self.epoch = 0  # bumped by every invalidation; see put_many
        self.active = False  # True only while invalidations are being received
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.invalidations = 0

    def get(self, key: bytes) -> Record | None:
        """The cached live record, or None (a miss).  The hot path: keep it short."""
        entry = self._data.get(key)
        if entry is not None and self.active:
            record = entry[1]
            exp = record.expires_at_ms
            if entry[0] > time.monotonic() and (exp is None or exp > time.time_ns() // 1_000_000):
                try:  # noqa: SIM105 - a bare try costs less than contextlib.suppress on the hot path
                    self._data.move_to_end(key)
                except KeyError:  # evicted by the subscriber thread a moment ago
                    pass
                self.hits += 1
                return record
            self._data.pop(key, None)
        self.misses += 1
        return None

    def put_many(self, epoch: int, records: Iterable[Record]) -> None:
        """Cache records read from Redis, unless an invalidation arrived since ``epoch`` was taken."""
        deadline = time.monotonic() + self.ttl_s
        with self._lock:
            if epoch != self.epoch or not self.active:
                return
            data = self._data
            for record in records:
                data[record.key] = (deadline, record)
                data.move_to_end(record.key)
            while len(data) > self.max_entries:
                data.popitem(last=False)
                self.evictions += 1

    def invalidate(self, keys: Iterable[bytes]) -> None:
        with self._lock:
            self.epoch += 1
            for key in keys:
                self._data.pop(key, None)
                self.invalidations += 1

    def clear(self) -> None:
        with self._lock:
            self.epoch += 1
            self._data.clear()

    def set_active(self, active: bool) -> None:
        with self._lock:
            self.epoch += 1
            self._data.clear()
            self.active = active

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {
            "cache_entries": len(self._data),
            "cache_max_entries": self.max_entries,
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "cache_evictions": self.evictions,
            "cache_invalidations": self.invalidations,
            "cache_hit_rate": round(self.hits / total, 4) if total else 0.0,
            "cache_active": self.active,
        }


def encode_id(key: bytes, prefix: bytes) -> str:
    """A Redis key as Session's session_id: without the prefix, non-UTF-8 bytes kept losslessly."""
    if prefix and key.startswith(prefix):
        key = key[len(prefix):]
    return key.decode("utf-8", "surrogateescape")


def decode_id(session_id: str, prefix: bytes) -> bytes:
    return prefix + session_id.encode("utf-8", "surrogateescape")


def timestamp() -> str:
    """Now as Crystal's ``Time#to_json`` writes it (RFC 3339, UTC, whole seconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def message(kind: str, session_id: str, node_id: str, stamp: str | None = None) -> bytes:
    stamp = stamp or timestamp()
    return json.dumps({"type": kind, "session_id": session_id, "node_id": node_id,
                       "timestamp": stamp}).encode()


def parse_message(raw: bytes | str, own_node: str) -> tuple[str, str | None] | None:
    """("evict", id) / ("clear", None) for a message to act on; None for our own messages."""
    try:
        data = json.loads(raw)
        kind = str(data["type"]).lower().replace("_", "").replace("-", "")
        node = data.get("node_id")
        session_id = data.get("session_id")
    except (ValueError, KeyError, TypeError, AttributeError):
        return ("clear", None)
    if node == own_node:
        return None
    if kind in _EVICT_TYPES and isinstance(session_id, str):
        return ("evict", session_id)
    return ("clear", None)


class Invalidator:
    """Publishes this node's invalidations and applies other nodes' ones on a daemon thread.

    ``connect`` returns a fresh redis-py client with retries disabled: a dropped subscription must
    surface here (and clear the cache), not be silently re-established by the driver.
    """

    def __init__(self, settings: CacheSettings, cache: LocalCache, namespace: bytes,
                 connect: Callable[[], Any]) -> None:
        self.settings = settings
        self.cache = cache
        self.namespace = namespace
        self.node_id = settings.node_id or str(uuid.uuid4())
        self.channel = settings.channel.encode()
        self._connect = connect
        self._stop = threading.Event()
        self._pubsub: Any = None
        self.reconnects = 0
        self.subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvctl-redis-invalidate", daemon=True)
        self._thread.start()

    # -- publishing ------------------------------------------------------------------------
    def messages(self, kind: str, keys: Iterable[bytes]) -> list[tuple[bytes, bytes, bytes]]:
        """PUBLISH commands for ``keys`` (store keys, without the namespace)."""
        prefix, ns, node, stamp = self.settings.prefix, self.namespace, self.node_id, timestamp()
        return [(b"PUBLISH", self.channel, message(kind, encode_id(ns + key, prefix), node, stamp))
                for key in keys]

    def clear_message(self) -> tuple[bytes, bytes, bytes]:
        return (b"PUBLISH", self.channel, message(CACHE_CLEAR, "", self.node_id))

    # -- receiving -------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.05
            except Exception:  # any failure: forget everything, then resubscribe
                pass
            finally:
                self.subscribed.clear()
                self.cache.set_active(False)
                self._close_pubsub()
            if self._stop.is_set():
                return
            self.reconnects += 1
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _listen(self) -> None:
        client = self._connect()
        pubsub = client.pubsub()
        self._pubsub = pubsub
        pubsub.subscribe(self.channel)
        while not self._stop.is_set():
            msg = pubsub.get_message(timeout=1.0)
            if msg is None:
                continue
            if msg["type"] == "subscribe":
                # Only now are we sure to hear every later invalidation: start caching afresh.
                self.cache.set_active(True)
                self.subscribed.set()
            elif msg["type"] == "message":
                self._apply(msg["data"])

    def _apply(self, raw: bytes) -> None:
        action = parse_message(raw, self.node_id)
        if action is None:
            return
        what, session_id = action
        if what == "evict" and session_id is not None:
            key = decode_id(session_id, self.settings.prefix)
            if key.startswith(self.namespace):
                self.cache.invalidate([key[len(self.namespace):]])
        else:
            self.cache.clear()

    def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def close(self) -> None:
        self._stop.set()
        pubsub = self._pubsub
        if pubsub is not None and pubsub.connection is not None:
            with contextlib.suppress(Exception):  # wakes the thread out of its blocking read
                pubsub.connection.disconnect()
        self._thread.join(timeout=3)
        self.cache.set_active(False)

    def stats(self) -> dict[str, Any]:
        return {"cache_node_id": self.node_id, "cache_channel": self.settings.channel,
                "cache_subscribed": self.subscribed.is_set(), "cache_reconnects": self.reconnects}

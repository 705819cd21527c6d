"""The Store protocol: the contract between kvctl's engines and its backend plugins.

Keys and values are ``bytes`` end to end.  A :class:`Record` carries an optional absolute expiry
(milliseconds since the epoch) and an optional version (see :mod:`kvctl.hlc`).  Batch calls
(``get_many``, ``set_many``, ``delete_many``, ``scan``) are the first-class operations: the
engines use nothing else, and each backend maps them to its fastest native bulk path.  Single-key
calls exist for the CLI.

A plugin implements either :class:`Store` (sync) or :class:`AsyncStore` (async) with the same
method names; :mod:`kvctl.adapt` converts between the two once per command.  What plugins share
(default implementations, scan ranges, cursors, limits) is in :mod:`kvctl.plugin_kit`.

Optional abilities (a change feed, last-writer-wins apply, conditional writes, …) are typed
protocols of their own in :mod:`kvctl.abilities`, each offered by a store that declares the
matching :class:`Capabilities` flag where there is one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, NamedTuple, Protocol, Self, runtime_checkable

from kvctl.errors import UnsupportedError
from kvctl.url import StoreURL

__all__ = [
    "MAX_EXPIRY_MS",
    "MAX_VERSION",
    "TOMBSTONE",
    "AsyncStore",
    "Capabilities",
    "Page",
    "Record",
    "Store",
    "StoreURL",
    "is_live",
    "newer",
    "now_ms",
]

TOMBSTONE = "tombstone"  # Record.kind of a deletion in a change feed or an apply batch
MAX_EXPIRY_MS = (1 << 42) - 1  # 2109-05-15: the millisecond field of kvctl's versions
MAX_VERSION = (1 << 63) - 1  # a signed 64-bit column


def now_ms() -> int:
    """The wall clock every expiry is judged by, in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class Record(NamedTuple):
    """One key's state.  ``expires_at_ms`` is absolute (ms since the epoch); ``version`` an HLC.

    ``kind`` is None for a plain bytes value.  A backend that holds other value types (a Redis
    hash, list, set, zset, stream) returns such keys from ``scan``/``get_many`` with ``kind`` set
    to the type name and ``value`` empty, so nothing is silently dropped; :class:`TypedValues`
    copies them.  In a change feed or an apply batch, ``kind == TOMBSTONE`` is a deletion.

    A named tuple: immutable, hashable and cheaper to build than a frozen dataclass, which
    matters on the read path of the embedded backends.  Build it with fields, never compare it
    with a plain tuple.
    """

    key: bytes
    value: bytes = b""
    expires_at_ms: int | None = None
    version: int | None = None
    kind: str | None = None


def is_live(record: Record, now: int | None = None) -> bool:
    """False once the record's expiry has passed (at ``now``, default the wall clock)."""
    exp = record.expires_at_ms
    return exp is None or exp > (now_ms() if now is None else now)


def newer(incoming: Record, current: Record | None) -> bool:
    """Last-writer-wins: does ``incoming`` replace ``current``?

    Higher version wins; a record without a version never beats one with a version.  Equal
    versions with equal content are the same write, so applying a change twice is a no-op;
    equal versions with different content (two writers whose clocks share a node id) are
    ordered by content, so every replica picks the same winner.
    """
    if current is None:
        return True
    if incoming.version is None:
        return current.version is None
    if current.version is None or incoming.version != current.version:
        return current.version is None or incoming.version > current.version
    return _content(incoming) > _content(current)


def _content(rec: Record) -> tuple[bool, bytes, int, str]:
    return (rec.kind != TOMBSTONE, rec.value, rec.expires_at_ms or 0, rec.kind or "")


@dataclass(frozen=True, slots=True)
class Page:
    """One batch of a scan or a change feed.  ``cursor`` resumes right after this page."""

    records: list[Record]
    cursor: str | None


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; engines and the conformance suite consult this, never the scheme."""

    persistent: bool = False
    ttl: bool = False
    ordered_scan: bool = False
    versions: bool = False  # keeps versions; offers Replicable (and may offer NewerWrites)
    atomic_batch: bool = False
    multi_node: bool = False
    # its data is a path on the host that opens it (a file, a directory): a process on another
    # host opens a different store, so remote executors refuse it unless the path is shared
    host_local: bool = False
    partitioned: bool = False  # offers Partitioned
    change_feed: bool = False  # offers ChangeFeed
    typed_values: bool = False  # holds non-string values (e.g. Redis hashes); offers TypedValues
    # offers Expiry and ConditionalWrites, atomically (expire, persist, set --nx/--xx/--keep-ttl)
    conditional_writes: bool = False
    # One process writes at a time (a lock file; others wait or are refused): parallel writers
    # into it, such as migrate --workers, cannot work.
    one_writer: bool = False
    # Its values are JSON documents (a json/jsonb column, several columns read as one object):
    # diff, --verify and sync compare such values by meaning, not byte for byte.
    json_values: bool = False
    max_key_size: int | None = None
    max_value_size: int | None = None
    durability: str = ""  # e.g. "fsync per commit", "none (in memory)"
    # Sync stores whose calls block on I/O run batch calls on a worker thread when adapted.
    blocking_io: bool = True

    def flags(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def require(self, name: str, backend: str) -> None:
        """Raise :class:`~kvctl.errors.UnsupportedError` unless the flag ``name`` is set."""
        if not getattr(self, name):
            raise UnsupportedError(f"the {backend} backend does not support {name.replace('_', ' ')}")


@runtime_checkable
class Store(Protocol):
    """The synchronous form of the protocol.

    Every call may raise a :class:`~kvctl.errors.KvctlError` subclass (never a driver's own
    exception): :class:`~kvctl.errors.LimitError` for a record over a limit (before anything of
    the batch is written), :class:`~kvctl.errors.UsageError` for bad arguments such as a foreign
    cursor, :class:`~kvctl.errors.UnavailableError` and friends for the backend's failures.
    An expired record is never returned, counted or scanned.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        """A store for ``url``; connections may open lazily.  Refuses an unknown option with
        :class:`~kvctl.errors.BadURLError`; when ``url.reads_only`` it creates and alters nothing
        and a missing store is :class:`~kvctl.errors.NoSuchStoreError`."""

    def get(self, key: bytes) -> Record | None:
        """The live record of ``key``, or None when it is missing or expired."""

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        """One entry per key, in the order given; None for a key that is missing or expired."""

    def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        """Write one key, expiring ``ttl_ms`` from now (None: never); a TTL past 2109 is a
        :class:`~kvctl.errors.UsageError`."""

    def set_many(self, records: Iterable[Record]) -> None:
        """Write every record (value and absolute expiry; the last of a key given twice wins).
        Limits are checked before anything is written; atomic when ``atomic_batch``."""

    def delete(self, key: bytes) -> bool:
        """Delete one key; True when a live key was removed."""

    def delete_many(self, keys: Sequence[bytes]) -> int:
        """Delete the keys; returns how many live keys were removed (missing ones are ignored)."""

    def scan(
        self,
        prefix: bytes = b"",
        *,
        start_after: bytes | None = None,
        cursor: str | None = None,
        batch_size: int = 1000,
        keys_only: bool = False,
    ) -> Iterator[Page]:
        """Every live key starting with ``prefix``, in pages of at most ``batch_size`` (at least 1).

        With ``ordered_scan`` keys come in bytewise order and ``start_after`` resumes after a key;
        otherwise the order is the backend's and ``start_after`` is
        :class:`~kvctl.errors.UnsupportedError`.  ``cursor`` (a page's ``Page.cursor``) resumes
        after that page; a cursor of another backend is a :class:`~kvctl.errors.UsageError`.
        With ``keys_only`` values are empty.  Writes between pages may or may not be seen.
        """

    def count(self, prefix: bytes = b"") -> int:
        """How many live keys start with ``prefix``."""

    def stats(self) -> dict[str, Any]:
        """Backend facts for ``kvctl info`` (JSON-ready); at least ``keys`` where cheap."""

    def clear(self) -> int:
        """Delete every key; returns how many were removed."""

    def close(self) -> None:
        """Release connections and files; later calls are not supported."""

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None:
        """Close; when the block failed, a failure to close does not replace its error."""


@runtime_checkable
class AsyncStore(Protocol):
    """The asynchronous form: the same names and promises as :class:`Store`, awaited;
    ``scan`` is an async iterator."""

    name: ClassVar[str]
    description: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        """As :meth:`Store.from_url`."""

    async def get(self, key: bytes) -> Record | None:
        """As :meth:`Store.get`."""

    async def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        """As :meth:`Store.get_many`: one entry per key, in order, None for missing or expired."""

    async def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        """As :meth:`Store.set`."""

    async def set_many(self, records: Iterable[Record]) -> None:
        """As :meth:`Store.set_many`."""

    async def delete(self, key: bytes) -> bool:
        """As :meth:`Store.delete`."""

    async def delete_many(self, keys: Sequence[bytes]) -> int:
        """As :meth:`Store.delete_many`: how many live keys were removed."""

    def scan(
        self,
        prefix: bytes = b"",
        *,
        start_after: bytes | None = None,
        cursor: str | None = None,
        batch_size: int = 1000,
        keys_only: bool = False,
    ) -> AsyncIterator[Page]:
        """As :meth:`Store.scan`."""

    async def count(self, prefix: bytes = b"") -> int:
        """As :meth:`Store.count`."""

    async def stats(self) -> dict[str, Any]:
        """As :meth:`Store.stats`."""

    async def clear(self) -> int:
        """As :meth:`Store.clear`."""

    async def close(self) -> None:
        """As :meth:`Store.close`."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None:
        """As :meth:`Store.__exit__`."""

"""The Store protocol: the contract between kvctl's engines and its backend plugins.

Keys and values are ``bytes`` end to end.  A :class:`Record` carries an optional absolute expiry
(milliseconds since the epoch) and an optional version (see :mod:`kvctl.hlc`).  Batch calls
(``get_many``, ``set_many``, ``delete_many``, ``scan``) are the first-class operations: the
engines use nothing else, and each backend maps them to its fastest native bulk path.  Single-key
calls exist for the CLI and default to the batch calls.

A plugin implements either :class:`Store` (sync) or :class:`AsyncStore` (async) with the same
method names; :mod:`kvctl.adapt` converts between the two once per command.  Subclassing
:class:`StoreBase` / :class:`AsyncStoreBase` is optional but gives the defaults and helpers.

Optional methods, offered by a store that declares the matching capability:

``typed_values``
    ``dump_many(keys) -> list[Record | None]`` and ``restore_many(records)``: opaque payloads of
    non-bytes values (see :class:`Record`).
``change_feed``
    ``feed_cursor() -> str``: the position just after the newest change.
    ``changes(cursor, *, batch_size=1000) -> Iterator[Page]``: every change after ``cursor`` in
    the order it was made, upserts as records and deletions as tombstones
    (``kind == TOMBSTONE``), each with its version; ``Page.cursor`` resumes after the page.
    Raises :class:`~kvctl.errors.FeedGapError` when the feed no longer covers ``cursor``.
``rebalance`` (composite stores)
    ``rebalance(*, dry_run=False)`` moves keys to the child that owns them after a placement
    change and returns a report with ``as_dict()``; ``kvctl rebalance`` calls it.
``partitioned``
    ``partitions(prefix) -> list[str]``: names of disjoint parts that together hold every key
    (Redis Cluster: its masters), so executors read each part once, not the whole store per
    slice.  ``scan_partition(partition, prefix, *, cursor=None, batch_size=1000,
    keys_only=False) -> Iterator[Page]``: ``scan`` of one part; its cursors resume within it.
    A part that no longer exists raises :class:`~kvctl.errors.UnavailableError` (re-plan).
``versions``
    ``apply_many(records) -> int``: last-writer-wins apply for replication.  Each record (or
    tombstone) takes effect only if its version is newer than what the store holds for that key,
    counting a retained tombstone; returns how many took effect.  Stores that keep tombstones
    make a stale upsert after a newer delete a no-op.  For a store without ``apply_many`` the
    engines compare versions from ``get_many`` with :func:`newer` and write the winners.
    ``set_newer_many(records) -> (written, bytes)``, optional beside it: ``--on-conflict newer``
    decided by the store in the write itself -- each record is written unless the store holds
    its key live at an equal or higher version (a record without a version is always written);
    returns how many were written and their key and value bytes.  Without it the engines read
    the keys with ``get_many`` and compare.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, ClassVar, NamedTuple, Protocol, Self, runtime_checkable

from kvctl.errors import ForeignStoreError, LimitError, UnsupportedError, UsageError
from kvctl.url import StoreURL, redact

__all__ = [
    "MAX_EXPIRY_MS",
    "MAX_VERSION",
    "TOMBSTONE",
    "AsyncStore",
    "AsyncStoreBase",
    "Capabilities",
    "Page",
    "Record",
    "Store",
    "StoreBase",
    "StoreURL",
    "check_limits",
    "deadline_ms",
    "foreign_store_error",
    "is_live",
    "key_cursor",
    "new_record",
    "newer",
    "now_ms",
    "page_size",
    "parse_key_cursor",
    "prefix_end",
    "record_of",
]


TOMBSTONE = "tombstone"  # Record.kind of a deletion in a change feed or an apply batch


def now_ms() -> int:
    return time.time_ns() // 1_000_000


FOREIGN_TABLES_SHOWN = 8


def foreign_store_error(url: StoreURL, tables: Sequence[str], *, option: str = "table") -> ForeignStoreError:
    """The refusal of a database that holds other programs' tables and none of kvctl's: a plain
    URL never changes a database kvctl did not create.  Each table is named with the URL that
    addresses it (``?table=NAME``), so the listing stays useful once kvctl can map other tables."""
    base = url.without_options(option, "create")
    glue = "&" if "?" in base else "?"
    listed = ", ".join(f"{name} ({redact(f'{base}{glue}{option}={name}')})" for name in tables[:FOREIGN_TABLES_SHOWN])
    if len(tables) > FOREIGN_TABLES_SHOWN:
        listed += f" and {len(tables) - FOREIGN_TABLES_SHOWN} more"
    hint = "kvctl cannot map other programs' tables yet"
    if not url.reads_only:
        hint += "; add create=true to the URL to keep a kvctl table beside them"
    return ForeignStoreError(
        f"{url.redacted()} holds other programs' tables and none of kvctl's: {listed}; nothing was changed",
        hint=hint,
    )


class Record(NamedTuple):
    """One key's state.  ``expires_at_ms`` is absolute (ms since the epoch); ``version`` an HLC.

    ``kind`` is None for a plain bytes value.  A backend that holds other value types (a Redis
    hash, list, set, zset, stream) returns such keys from ``scan``/``get_many`` with ``kind`` set
    to the type name and ``value`` empty, so nothing is silently dropped; when it declares the
    ``typed_values`` capability it also offers ``dump_many(keys) -> list[Record | None]`` (values
    are opaque serialized payloads, ``kind`` kept) and ``restore_many(records)``.

    A named tuple: immutable, hashable and cheap to build (0.35 µs; hot loops that already hold
    all five fields use :func:`new_record`, 0.17 µs), where a frozen dataclass costs 0.8 µs, more
    than an LMDB read.  Build it with fields, never compare it with a plain tuple.
    """

    key: bytes
    value: bytes = b""
    expires_at_ms: int | None = None
    version: int | None = None
    kind: str | None = None


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


new_record = partial(tuple.__new__, Record)
"""``new_record((key, value, expires_at_ms, version, kind))``: a Record from exactly five fields,
at C speed (no defaults, no checks: for rows a backend has just decoded)."""

_tuple_new = tuple.__new__


def record_of(key: bytes, value: bytes, expires_at_ms: int | None, version: int | None) -> Record:
    """A bytes-valued Record from a decoded row, about twice as fast as ``Record(...)``."""
    return _tuple_new(Record, (key, value, expires_at_ms, version, None))


def is_live(record: Record, now: int | None = None) -> bool:
    exp = record.expires_at_ms
    return exp is None or exp > (now_ms() if now is None else now)


MAX_EXPIRY_MS = (1 << 42) - 1  # 2109-05-15: the millisecond field of kvctl's versions
MAX_VERSION = (1 << 63) - 1  # a signed 64-bit column


def deadline_ms(ttl_ms: int | None) -> int | None:
    """Absolute expiry for a relative TTL.

    An expiry is at most 2**42 - 1 ms after the epoch (2109-05-15): the millisecond field of
    kvctl's versions (:mod:`kvctl.hlc`), which every backend's expiry fits (a signed 64-bit
    column, LMDB's and RocksDB's headers, Redis's PEXPIREAT).  A TTL reaching further, or a
    deadline before the epoch, is a :class:`~kvctl.errors.UsageError` (exit 2) on every backend.
    """
    if ttl_ms is None:
        return None
    deadline = now_ms() + ttl_ms
    if not 0 <= deadline <= MAX_EXPIRY_MS:
        raise UsageError("TTL out of range", hint="an expiry must fall between 1970 and 2109-05-15: kvctl keeps "
                         "expiry times as 42-bit milliseconds since the epoch, the time field of its versions")
    return deadline


@dataclass(frozen=True, slots=True)
class Page:
    """One batch of a scan.  ``cursor`` resumes the scan right after this page."""

    records: list[Record]
    cursor: str | None


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; engines and the conformance suite consult this, never the scheme."""

    persistent: bool = False
    ttl: bool = False
    ordered_scan: bool = False
    versions: bool = False
    atomic_batch: bool = False
    multi_node: bool = False
    # its data is a path on the host that opens it (a file, a directory): a process on another
    # host opens a different store, so remote executors refuse it unless the path is shared
    host_local: bool = False
    partitioned: bool = False  # offers partitions() and scan_partition() (see the module docstring)
    change_feed: bool = False
    typed_values: bool = False  # holds non-string values (e.g. Redis hashes) copied by dump/restore
    # One process writes at a time (a lock file; others wait or are refused): parallel writers
    # into it, such as migrate --workers, cannot work.
    one_writer: bool = False
    max_key_size: int | None = None
    max_value_size: int | None = None
    durability: str = ""  # e.g. "fsync per commit", "none (in memory)"
    # Sync stores whose calls block on I/O run batch calls on a worker thread when adapted.
    blocking_io: bool = True

    def flags(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def require(self, name: str, backend: str) -> None:
        if not getattr(self, name):
            raise UnsupportedError(f"the {backend} backend does not support {name.replace('_', ' ')}")


def check_limits(caps: Capabilities, backend: str, key: bytes, value: bytes) -> None:
    """Raise :class:`LimitError` before anything is written when a record is over a limit."""
    if caps.max_key_size is not None and len(key) > caps.max_key_size:
        raise LimitError(
            f"key of {len(key)} bytes is over the {backend} limit of {caps.max_key_size} bytes "
            f"by {len(key) - caps.max_key_size}"
        )
    if caps.max_value_size is not None and len(value) > caps.max_value_size:
        raise LimitError(
            f"value of {len(value)} bytes is over the {backend} limit of {caps.max_value_size} bytes "
            f"by {len(value) - caps.max_value_size}"
        )


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no upper bound).

    Ordered backends scan the range ``[prefix, prefix_end(prefix))``; this is how a prefix scan
    avoids LIKE/glob patterns, which over-match on ``%``, ``_``, ``*`` and friends.
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def page_size(batch_size: int) -> int:
    """The records per page a scan or change feed serves: ``batch_size``, and 1 for anything
    below 1 (one rule for every backend; a page of 0 would never make progress)."""
    return batch_size if batch_size > 0 else 1


def key_cursor(key: bytes) -> str:
    """The cursor of an ordered scan: the last key returned, hex-encoded."""
    return "k:" + key.hex()


def parse_key_cursor(cursor: str) -> bytes:
    from kvctl.errors import UsageError

    if not cursor.startswith("k:"):
        raise UsageError(f"not a cursor of this backend: {cursor!r}")
    try:
        return bytes.fromhex(cursor[2:])
    except ValueError:
        raise UsageError(f"malformed scan cursor: {cursor!r}") from None


@runtime_checkable
class Store(Protocol):
    """The synchronous form of the protocol."""

    name: ClassVar[str]
    description: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    @classmethod
    def from_url(cls, url: StoreURL) -> Self: ...

    def get(self, key: bytes) -> Record | None: ...
    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]: ...
    def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None: ...
    def set_many(self, records: Iterable[Record]) -> None: ...
    def delete(self, key: bytes) -> bool: ...
    def delete_many(self, keys: Sequence[bytes]) -> int: ...
    def scan(
        self,
        prefix: bytes = b"",
        *,
        start_after: bytes | None = None,
        cursor: str | None = None,
        batch_size: int = 1000,
        keys_only: bool = False,
    ) -> Iterator[Page]: ...
    def count(self, prefix: bytes = b"") -> int: ...
    def stats(self) -> dict[str, Any]: ...
    def clear(self) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class AsyncStore(Protocol):
    """The asynchronous form: the same names, awaited; ``scan`` is an async iterator."""

    name: ClassVar[str]
    description: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    @classmethod
    def from_url(cls, url: StoreURL) -> Self: ...

    async def get(self, key: bytes) -> Record | None: ...
    async def get_many(self, keys: Sequence[bytes]) -> list[Record | None]: ...
    async def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None: ...
    async def set_many(self, records: Iterable[Record]) -> None: ...
    async def delete(self, key: bytes) -> bool: ...
    async def delete_many(self, keys: Sequence[bytes]) -> int: ...
    def scan(
        self,
        prefix: bytes = b"",
        *,
        start_after: bytes | None = None,
        cursor: str | None = None,
        batch_size: int = 1000,
        keys_only: bool = False,
    ) -> AsyncIterator[Page]: ...
    async def count(self, prefix: bytes = b"") -> int: ...
    async def stats(self) -> dict[str, Any]: ...
    async def clear(self) -> int: ...
    async def close(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc: object) -> None: ...


class _Common:
    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    url: StoreURL | None = None

    def _check(self, key: bytes, value: bytes) -> None:
        check_limits(self.capabilities, self.name, key, value)

    def _start_key(self, prefix: bytes, start_after: bytes | None, cursor: str | None) -> bytes | None:
        """For ordered scans: the key to resume after, from ``start_after`` or a key cursor."""
        if cursor is not None:
            start_after = parse_key_cursor(cursor)
        if start_after is not None and start_after < prefix:
            return None
        return start_after

    def __repr__(self) -> str:
        where = self.url.redacted() if self.url is not None else self.name
        return f"<{type(self).__name__} {where}>"


class StoreBase(_Common):
    """Defaults for a sync store: single-key calls via batch calls, count/clear via scan."""

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        raise NotImplementedError

    def get(self, key: bytes) -> Record | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        raise NotImplementedError

    def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        self.set_many([Record(key, value, deadline_ms(ttl_ms))])

    def set_many(self, records: Iterable[Record]) -> None:
        raise NotImplementedError

    def delete(self, key: bytes) -> bool:
        return self.delete_many([key]) == 1

    def delete_many(self, keys: Sequence[bytes]) -> int:
        raise NotImplementedError

    def scan(
        self,
        prefix: bytes = b"",
        *,
        start_after: bytes | None = None,
        cursor: str | None = None,
        batch_size: int = 1000,
        keys_only: bool = False,
    ) -> Iterator[Page]:
        raise NotImplementedError

    def count(self, prefix: bytes = b"") -> int:
        return sum(len(p.records) for p in self.scan(prefix, keys_only=True))

    def stats(self) -> dict[str, Any]:
        return {"keys": self.count()}

    def clear(self) -> int:
        removed = 0
        while True:
            keys = [r.key for p in self.scan(keys_only=True) for r in p.records]
            if not keys:
                return removed
            removed += self.delete_many(keys)

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        with closing_after(exc[1]):
            self.close()


@contextlib.contextmanager
def closing_after(failure: object) -> Iterator[None]:
    """Around a store's ``close`` when a ``with`` block ends.  When the block failed, a failure
    to close is dropped: it is usually the same fault again (a WAL flush after the disk filled
    up: "Writer has previous error") and would replace the error that says what went wrong."""
    try:
        yield
    except Exception:
        if failure is None:
            raise


class AsyncStoreBase(_Common):
    """Defaults for an async store, mirroring :class:`StoreBase`."""

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        raise NotImplementedError

    async def get(self, key: bytes) -> Record | None:
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        raise NotImplementedError

    async def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        await self.set_many([Record(key, value, deadline_ms(ttl_ms))])

    async def set_many(self, records: Iterable[Record]) -> None:
        raise NotImplementedError

    async def delete(self, key: bytes) -> bool:
        return await self.delete_many([key]) == 1

    async def delete_many(self, keys: Sequence[bytes]) -> int:
        raise NotImplementedError

    def scan(
        self,
        prefix: bytes = b"",
        *,
        start_after: bytes | None = None,
        cursor: str | None = None,
        batch_size: int = 1000,
        keys_only: bool = False,
    ) -> AsyncIterator[Page]:
        raise NotImplementedError

    async def count(self, prefix: bytes = b"") -> int:
        total = 0
        async for page in self.scan(prefix, keys_only=True):
            total += len(page.records)
        return total

    async def stats(self) -> dict[str, Any]:
        return {"keys": await self.count()}

    async def clear(self) -> int:
        removed = 0
        while True:
            keys = [r.key async for p in self.scan(keys_only=True) for r in p.records]
            if not keys:
                return removed
            removed += await self.delete_many(keys)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with closing_after(exc[1]):
            await self.close()


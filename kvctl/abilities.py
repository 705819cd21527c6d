"""The optional abilities of a store: protocols a backend implements beside :class:`~kvctl.store.Store`
(or :class:`~kvctl.store.AsyncStore`) when it can, and declares in its
:class:`~kvctl.store.Capabilities` where there is a flag.

:class:`ChangeFeed`, :class:`Replicable` (``apply_many``), :class:`NewerWrites`
(``set_newer_many``), :class:`TypedValues` (and :class:`TypedJSON`), :class:`Partitioned` (and
:class:`SplitPartitioned`), :class:`Rebalancing`, :class:`Expiry`, :class:`ConditionalWrites` and
:class:`PreparedWrites`, each with an ``Async`` form; and :class:`AsyncAtomicLoad` (``atomic_load``),
in its async form only.  Engines and the CLI
test them with ``isinstance`` (:mod:`kvctl.adapt` forwards exactly the ones the wrapped store
has); a store without an ability is refused with :class:`~kvctl.errors.UnsupportedError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from kvctl.store import Page, Record

__all__ = [
    "AsyncAtomicLoad",
    "AsyncChangeFeed",
    "AsyncConditionalWrites",
    "AsyncExpiry",
    "AsyncNewerWrites",
    "AsyncPartitioned",
    "AsyncPreparedWrites",
    "AsyncRebalancing",
    "AsyncReplicable",
    "AsyncSplitPartitioned",
    "AsyncTypedJSON",
    "AsyncTypedValues",
    "ChangeFeed",
    "ConditionalWrites",
    "Expiry",
    "NewerWrites",
    "Partitioned",
    "PreparedWrites",
    "Rebalancing",
    "Replicable",
    "SplitPartitioned",
    "TypedJSON",
    "TypedValues",
]


# -- optional abilities -------------------------------------------------------------------------
# ``isinstance`` on a runtime-checkable protocol checks that the methods exist, not whether they
# are awaited: the Async forms are for typing; a store offers the form of its own protocol.


@runtime_checkable
class ChangeFeed(Protocol):
    """``Capabilities.change_feed``: every change, in the order it was made."""

    def feed_cursor(self) -> str:
        """The position just after the newest change."""

    def changes(self, cursor: str | None, *, batch_size: int = 1000) -> Iterator[Page]:
        """Every change after ``cursor``, in order: upserts as records, deletions as tombstones
        (``kind == TOMBSTONE``), each with its version; ``Page.cursor`` resumes after the page.
        Raises :class:`~kvctl.errors.FeedGapError` when the feed no longer covers ``cursor``."""


@runtime_checkable
class AsyncChangeFeed(Protocol):
    """:class:`ChangeFeed`, awaited."""

    async def feed_cursor(self) -> str:
        """As :meth:`ChangeFeed.feed_cursor`."""

    def changes(self, cursor: str | None, *, batch_size: int = 1000) -> AsyncIterator[Page]:
        """As :meth:`ChangeFeed.changes`."""


@runtime_checkable
class Replicable(Protocol):
    """``Capabilities.versions``: last-writer-wins apply for replication."""

    def apply_many(self, records: Iterable[Record]) -> int:
        """Apply each record or tombstone only if it is :func:`newer` than what the store holds
        for its key, counting a retained tombstone (so a stale upsert after a newer delete is a
        no-op); returns how many took effect.  Without it the engines compare versions read
        with ``get_many`` and write the winners."""


@runtime_checkable
class AsyncReplicable(Protocol):
    """:class:`Replicable`, awaited."""

    async def apply_many(self, records: Iterable[Record]) -> int:
        """As :meth:`Replicable.apply_many`."""


@runtime_checkable
class NewerWrites(Protocol):
    """Beside :class:`Replicable`: ``--on-conflict newer`` decided by the store in the write."""

    def set_newer_many(self, records: Iterable[Record]) -> tuple[int, int]:
        """Write each record unless the store holds its key live at an equal or higher version
        (a record without a version is always written); returns how many were written and their
        key and value bytes.  Without it the engines read the keys and compare."""


@runtime_checkable
class AsyncNewerWrites(Protocol):
    """:class:`NewerWrites`, awaited."""

    async def set_newer_many(self, records: Iterable[Record]) -> tuple[int, int]:
        """As :meth:`NewerWrites.set_newer_many`."""


@runtime_checkable
class TypedValues(Protocol):
    """``Capabilities.typed_values``: copying values that are not bytes (see :class:`Record`)."""

    def dump_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        """One entry per key, in order: the value as an opaque payload with its ``kind`` kept,
        or None for a key that is missing or expired."""

    def restore_many(self, records: Iterable[Record]) -> None:
        """Write records produced by ``dump_many`` (of a store of the same backend family)."""


@runtime_checkable
class AsyncTypedValues(Protocol):
    """:class:`TypedValues`, awaited."""

    async def dump_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        """As :meth:`TypedValues.dump_many`."""

    async def restore_many(self, records: Iterable[Record]) -> None:
        """As :meth:`TypedValues.restore_many`."""


@runtime_checkable
class TypedJSON(Protocol):
    """Beside :class:`TypedValues`: typed values rendered as JSON documents (``--types json``)."""

    def json_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        """One entry per key, in order: a typed value as its JSON document (the shapes of
        :mod:`kvctl.plugin_kit.typedjson`) in a plain record (``kind`` None) with its expiry; a
        plain value as ``get_many`` reads it; a value of a type without a JSON shape with its
        ``kind`` kept and an empty value; None for a key that is missing or expired."""


@runtime_checkable
class AsyncTypedJSON(Protocol):
    """:class:`TypedJSON`, awaited."""

    async def json_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        """As :meth:`TypedJSON.json_many`."""


@runtime_checkable
class Partitioned(Protocol):
    """``Capabilities.partitioned``: disjoint parts (Redis Cluster: its masters), so executors
    read each part once, not the whole store per slice; :class:`SplitPartitioned` when the parts
    can be cut finer."""

    def partitions(self, prefix: bytes = b"") -> list[str]:
        """Names of disjoint parts that together hold every key starting with ``prefix``."""

    def scan_partition(self, partition: str, prefix: bytes = b"", *, cursor: str | None = None,
                       batch_size: int = 1000, keys_only: bool = False) -> Iterator[Page]:
        """``scan`` of one part; its cursors resume within it.  A part that no longer exists
        raises :class:`~kvctl.errors.UnavailableError` (re-plan)."""


@runtime_checkable
class AsyncPartitioned(Protocol):
    """:class:`Partitioned`, awaited."""

    async def partitions(self, prefix: bytes = b"") -> list[str]:
        """As :meth:`Partitioned.partitions`."""

    def scan_partition(self, partition: str, prefix: bytes = b"", *, cursor: str | None = None,
                       batch_size: int = 1000, keys_only: bool = False) -> AsyncIterator[Page]:
        """As :meth:`Partitioned.scan_partition`."""


@runtime_checkable
class SplitPartitioned(Protocol):
    """Beside :class:`Partitioned`: parts cut as finely as an executor asks (Redis Cluster: slot
    ranges within one master), so a run has many more slices than workers and a slow or dead
    worker does not hold it.  A separate ability, so a plugin offering only :class:`Partitioned`
    keeps working: the engines call :meth:`Partitioned.partitions` for it."""

    def partitions_for(self, prefix: bytes = b"", *, slices: int) -> list[str]:
        """About ``slices`` disjoint parts (more when the store has more parts it cannot join,
        fewer when it cannot cut that finely) that together hold every key starting with
        ``prefix``, each read by :meth:`Partitioned.scan_partition`."""


@runtime_checkable
class AsyncSplitPartitioned(Protocol):
    """:class:`SplitPartitioned`, awaited."""

    async def partitions_for(self, prefix: bytes = b"", *, slices: int) -> list[str]:
        """As :meth:`SplitPartitioned.partitions_for`."""


@runtime_checkable
class Rebalancing(Protocol):
    """Composite stores: move keys after a placement change (``kvctl rebalance``)."""

    def rebalance(self, *, dry_run: bool = False) -> Any:
        """Move every key to the child that owns it (``dry_run``: only count); returns a report
        with ``as_dict()``."""


@runtime_checkable
class AsyncRebalancing(Protocol):
    """:class:`Rebalancing`, awaited."""

    async def rebalance(self, *, dry_run: bool = False) -> Any:
        """As :meth:`Rebalancing.rebalance`."""


@runtime_checkable
class Expiry(Protocol):
    """Changing a key's expiry without touching its value (``kvctl expire``/``persist``).

    Atomic: the existence check and the change are one step of the backend (a native command,
    one statement, or one write transaction under the store's writer lock), so no other write
    lands in between and the value is never read and written back."""

    def expire(self, key: bytes, expires_at_ms: int | None) -> bool:
        """Set the live ``key``'s absolute expiry (None: never expires); False, and nothing
        written, when the key is missing or expired.  An expiry at or before now deletes the key
        as ``delete`` does (tombstone and feed entry included) and returns True.  Otherwise it is
        a write like ``set``: a new version and a change-feed entry."""


@runtime_checkable
class AsyncExpiry(Protocol):
    """:class:`Expiry`, awaited."""

    async def expire(self, key: bytes, expires_at_ms: int | None) -> bool:
        """As :meth:`Expiry.expire`."""


@runtime_checkable
class ConditionalWrites(Protocol):
    """Writes decided by the store on the key's current state (``set --nx/--xx/--keep-ttl``).

    Atomic as :class:`Expiry`: the check and the write are one step of the backend."""

    def set_if(self, record: Record, *, exists: bool | None = None, keep_ttl: bool = False) -> bool:
        """Write ``record`` (key, value, absolute expiry; its version is ignored) when the key's
        liveness matches ``exists`` (True: only if live, False: only if missing or expired, None:
        always); returns whether it was written.  With ``keep_ttl`` the key keeps its current
        expiry (none when it was missing) and ``record.expires_at_ms`` must be None.  A write is
        a write like ``set``: a new version and a change-feed entry."""


@runtime_checkable
class AsyncConditionalWrites(Protocol):
    """:class:`ConditionalWrites`, awaited."""

    async def set_if(self, record: Record, *, exists: bool | None = None, keep_ttl: bool = False) -> bool:
        """As :meth:`ConditionalWrites.set_if`."""


@runtime_checkable
class PreparedWrites(Protocol):
    """``set_many`` split in two, so that an engine can make the next batch ready (client CPU,
    no I/O) while the store is still writing this one: ``write_prepared(prepare_many(records))``
    is ``set_many(records)``, with the same effects, atomicity and errors."""

    def prepare_many(self, records: list[Record]) -> object:
        """``records`` made ready to write, in the caller's thread, touching no connection (it
        may run while another call of the store is under way): nothing is written.  Raises what
        ``set_many`` raises before writing anything (a :class:`~kvctl.errors.LimitError`)."""

    def write_prepared(self, prepared: object) -> None:
        """Write one result of :meth:`prepare_many`, once, as ``set_many`` would have."""


@runtime_checkable
class AsyncPreparedWrites(Protocol):
    """:class:`PreparedWrites`; ``prepare_many`` is not awaited (it does no I/O)."""

    def prepare_many(self, records: list[Record]) -> object:
        """As :meth:`PreparedWrites.prepare_many`."""

    async def write_prepared(self, prepared: object) -> None:
        """As :meth:`PreparedWrites.write_prepared`."""


@runtime_checkable
class AsyncAtomicLoad(Protocol):
    """Many batch writes as one: what a bulk load into an empty store uses so that a failure
    part-way (a source found corrupt at its end, an interruption) leaves the store as it was."""

    def atomic_load(self) -> AbstractAsyncContextManager[None]:
        """A block inside which every write of this store (``set_many``, ``set_newer_many``,
        ``delete_many``, ``clear``, ...) takes effect at the block's end, all together, or not at
        all when the block raises; the structures the store creates on first use (a table, its
        feed) are part of it.  Reads inside the block see its writes.  Not nested."""

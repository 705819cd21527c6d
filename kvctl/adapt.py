"""Convert between the sync and async forms of the Store protocol, once per command.

``to_async`` wraps a sync store for the async engines: cheap in-memory stores are called
inline; stores that block on I/O run each batch call on one dedicated worker thread (one thread
keeps driver connections single-threaded, while still letting I/O on the other store of a
migrate overlap).  ``to_sync`` wraps an async store for the simple CLI commands with one event
loop (``asyncio.Runner``) for the life of the wrapper: never a loop per operation.

Each optional ability of :mod:`kvctl.abilities` (:class:`~kvctl.abilities.ChangeFeed`, ...) has a mixin
here that forwards its methods; an adapter's class is composed of the mixins of the abilities the
wrapped store offers, so ``isinstance(adapted, AsyncChangeFeed)`` tells the truth.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from functools import cache
from typing import Any, TypeVar

from kvctl.abilities import (
    ChangeFeed,
    ConditionalWrites,
    Expiry,
    NewerWrites,
    Partitioned,
    PreparedWrites,
    Rebalancing,
    Replicable,
    SplitPartitioned,
    TypedJSON,
    TypedValues,
)
from kvctl.plugin_kit import closing_after
from kvctl.store import AsyncStore, Page, Record, Store

T = TypeVar("T")


def is_async(store: object) -> bool:
    return inspect.iscoroutinefunction(getattr(store, "get_many", None))


def _drop_late_thread_results(loop: Any, context: dict[str, Any]) -> None:
    """The loop's exception handler while a sync store's calls run on a worker thread.

    When Ctrl-C cancels a call whose thread is just finishing, CPython's future chaining may
    still try to hand the thread's result to the cancelled asyncio future and log
    ``InvalidStateError`` with a traceback.  Nothing is lost (the command is stopping and says
    what it wrote), so that one report is dropped; every other goes to the default handler."""
    import asyncio

    if isinstance(context.get("exception"), asyncio.InvalidStateError) and "_chain_future" in repr(
            context.get("handle")):
        return
    loop.default_exception_handler(context)


class AsyncAdapter:
    """An :class:`AsyncStore` view of a sync store, with the optional abilities it offers."""

    def __new__(cls, store: Store) -> AsyncAdapter:
        if cls is AsyncAdapter:
            cls = _composed(AsyncAdapter, _offered(store))
        return super().__new__(cls)

    def __init__(self, store: Store) -> None:
        from concurrent.futures import ThreadPoolExecutor  # not on the path of simple commands

        self.inner = store
        self.name = store.name
        self.description = store.description
        self.capabilities = store.capabilities
        self.url = getattr(store, "url", None)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"kvctl-{store.name}") \
            if store.capabilities.blocking_io else None

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._pool is None:
            return fn(*args, **kwargs)
        import asyncio

        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() is None:
            loop.set_exception_handler(_drop_late_thread_results)
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def _iterate(self, items: Iterator[T]) -> AsyncIterator[T]:
        done = object()
        while True:
            item = await self._call(next, items, done)
            if item is done:
                return
            yield item

    async def get(self, key: bytes) -> Record | None:
        return await self._call(self.inner.get, key)

    async def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        return await self._call(self.inner.get_many, keys)

    async def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        await self._call(self.inner.set, key, value, ttl_ms=ttl_ms)

    async def set_many(self, records: Iterable[Record]) -> None:
        await self._call(self.inner.set_many, list(records))

    async def delete(self, key: bytes) -> bool:
        return await self._call(self.inner.delete, key)

    async def delete_many(self, keys: Sequence[bytes]) -> int:
        return await self._call(self.inner.delete_many, keys)

    def scan(self, prefix: bytes = b"", **kwargs: Any) -> AsyncIterator[Page]:
        return self._iterate(self.inner.scan(prefix, **kwargs))

    async def count(self, prefix: bytes = b"") -> int:
        return await self._call(self.inner.count, prefix)

    async def stats(self) -> dict[str, Any]:
        return await self._call(self.inner.stats)

    async def clear(self) -> int:
        return await self._call(self.inner.clear)

    async def close(self) -> None:
        try:
            await self._call(self.inner.close)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False)

    async def __aenter__(self) -> AsyncAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with closing_after(exc[1]):
            await self.close()


class SyncAdapter:
    """A :class:`Store` view of an async store, driving it on one private event loop, with the
    optional abilities it offers."""

    def __new__(cls, store: AsyncStore) -> SyncAdapter:
        if cls is SyncAdapter:
            cls = _composed(SyncAdapter, _offered(store))
        return super().__new__(cls)

    def __init__(self, store: AsyncStore) -> None:
        import asyncio  # costs ~30 ms: only commands on async stores pay it

        self.inner = store
        self.name = store.name
        self.description = store.description
        self.capabilities = store.capabilities
        self.url = getattr(store, "url", None)
        self._runner = asyncio.Runner()
        self._closed = False

    def _run(self, coro: Any) -> Any:
        return self._runner.run(coro)

    def _iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        it = items.__aiter__()
        while True:
            try:
                yield self._run(it.__anext__())
            except StopAsyncIteration:
                return

    def get(self, key: bytes) -> Record | None:
        return self._run(self.inner.get(key))

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        return self._run(self.inner.get_many(keys))

    def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        self._run(self.inner.set(key, value, ttl_ms=ttl_ms))

    def set_many(self, records: Iterable[Record]) -> None:
        self._run(self.inner.set_many(list(records)))

    def delete(self, key: bytes) -> bool:
        return self._run(self.inner.delete(key))

    def delete_many(self, keys: Sequence[bytes]) -> int:
        return self._run(self.inner.delete_many(keys))

    def scan(self, prefix: bytes = b"", **kwargs: Any) -> Iterator[Page]:
        return self._iterate(self.inner.scan(prefix, **kwargs))

    def count(self, prefix: bytes = b"") -> int:
        return self._run(self.inner.count(prefix))

    def stats(self) -> dict[str, Any]:
        return self._run(self.inner.stats())

    def clear(self) -> int:
        return self._run(self.inner.clear())

    def close(self) -> None:
        if self._closed:  # closing twice is harmless, as for a file
            return
        self._closed = True
        try:
            self._run(self.inner.close())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        with closing_after(exc[1]):
            self.close()


# -- the optional abilities, one mixin each ------------------------------------------------------


class _AsyncFeed(AsyncAdapter):
    inner: Any

    async def feed_cursor(self) -> str:
        return await self._call(self.inner.feed_cursor)

    def changes(self, cursor: str | None, *, batch_size: int = 1000) -> AsyncIterator[Page]:
        return self._iterate(self.inner.changes(cursor, batch_size=batch_size))


class _AsyncReplicable(AsyncAdapter):
    inner: Any

    async def apply_many(self, records: Iterable[Record]) -> int:
        return await self._call(self.inner.apply_many, records)


class _AsyncNewerWrites(AsyncAdapter):
    inner: Any

    async def set_newer_many(self, records: Iterable[Record]) -> tuple[int, int]:
        return await self._call(self.inner.set_newer_many, records)


class _AsyncTypedValues(AsyncAdapter):
    inner: Any

    async def dump_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        return await self._call(self.inner.dump_many, keys)

    async def restore_many(self, records: Iterable[Record]) -> None:
        await self._call(self.inner.restore_many, records)


class _AsyncTypedJSON(AsyncAdapter):
    inner: Any

    async def json_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        return await self._call(self.inner.json_many, keys)


class _AsyncPartitioned(AsyncAdapter):
    inner: Any

    async def partitions(self, prefix: bytes = b"") -> list[str]:
        return await self._call(self.inner.partitions, prefix)

    def scan_partition(self, partition: str, prefix: bytes = b"", **kwargs: Any) -> AsyncIterator[Page]:
        return self._iterate(self.inner.scan_partition(partition, prefix, **kwargs))


class _AsyncSplitPartitioned(AsyncAdapter):
    inner: Any

    async def partitions_for(self, prefix: bytes = b"", *, slices: int) -> list[str]:
        return await self._call(self.inner.partitions_for, prefix, slices=slices)


class _AsyncRebalancing(AsyncAdapter):
    inner: Any

    async def rebalance(self, **kwargs: Any) -> Any:
        return await self._call(self.inner.rebalance, **kwargs)


class _AsyncExpiry(AsyncAdapter):
    inner: Any

    async def expire(self, key: bytes, expires_at_ms: int | None) -> bool:
        return await self._call(self.inner.expire, key, expires_at_ms)


class _AsyncConditionalWrites(AsyncAdapter):
    inner: Any

    async def set_if(self, record: Record, *, exists: bool | None = None, keep_ttl: bool = False) -> bool:
        return await self._call(self.inner.set_if, record, exists=exists, keep_ttl=keep_ttl)


class _AsyncPreparedWrites(AsyncAdapter):
    inner: Any

    def prepare_many(self, records: list[Record]) -> object:
        return self.inner.prepare_many(records)  # CPU only: in the caller's thread

    async def write_prepared(self, prepared: object) -> None:
        await self._call(self.inner.write_prepared, prepared)


class _SyncFeed(SyncAdapter):
    inner: Any

    def feed_cursor(self) -> str:
        return self._run(self.inner.feed_cursor())

    def changes(self, cursor: str | None, *, batch_size: int = 1000) -> Iterator[Page]:
        return self._iterate(self.inner.changes(cursor, batch_size=batch_size))


class _SyncReplicable(SyncAdapter):
    inner: Any

    def apply_many(self, records: Iterable[Record]) -> int:
        return self._run(self.inner.apply_many(records))


class _SyncNewerWrites(SyncAdapter):
    inner: Any

    def set_newer_many(self, records: Iterable[Record]) -> tuple[int, int]:
        return self._run(self.inner.set_newer_many(records))


class _SyncTypedValues(SyncAdapter):
    inner: Any

    def dump_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        return self._run(self.inner.dump_many(keys))

    def restore_many(self, records: Iterable[Record]) -> None:
        self._run(self.inner.restore_many(records))


class _SyncTypedJSON(SyncAdapter):
    inner: Any

    def json_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        return self._run(self.inner.json_many(keys))


class _SyncPartitioned(SyncAdapter):
    inner: Any

    def partitions(self, prefix: bytes = b"") -> list[str]:
        return self._run(self.inner.partitions(prefix))

    def scan_partition(self, partition: str, prefix: bytes = b"", **kwargs: Any) -> Iterator[Page]:
        return self._iterate(self.inner.scan_partition(partition, prefix, **kwargs))


class _SyncSplitPartitioned(SyncAdapter):
    inner: Any

    def partitions_for(self, prefix: bytes = b"", *, slices: int) -> list[str]:
        return self._run(self.inner.partitions_for(prefix, slices=slices))


class _SyncRebalancing(SyncAdapter):
    inner: Any

    def rebalance(self, **kwargs: Any) -> Any:
        return self._run(self.inner.rebalance(**kwargs))


class _SyncExpiry(SyncAdapter):
    inner: Any

    def expire(self, key: bytes, expires_at_ms: int | None) -> bool:
        return self._run(self.inner.expire(key, expires_at_ms))


class _SyncConditionalWrites(SyncAdapter):
    inner: Any

    def set_if(self, record: Record, *, exists: bool | None = None, keep_ttl: bool = False) -> bool:
        return self._run(self.inner.set_if(record, exists=exists, keep_ttl=keep_ttl))


class _SyncPreparedWrites(SyncAdapter):
    inner: Any

    def prepare_many(self, records: list[Record]) -> object:
        return self.inner.prepare_many(records)

    def write_prepared(self, prepared: object) -> None:
        self._run(self.inner.write_prepared(prepared))


# (ability, async-adapter mixin, sync-adapter mixin); the sync and async forms of an ability have
# the same method names, so either protocol recognises a store of either form.
_ABILITIES: tuple[tuple[type, type[AsyncAdapter], type[SyncAdapter]], ...] = (
    (ChangeFeed, _AsyncFeed, _SyncFeed),
    (Replicable, _AsyncReplicable, _SyncReplicable),
    (NewerWrites, _AsyncNewerWrites, _SyncNewerWrites),
    (TypedValues, _AsyncTypedValues, _SyncTypedValues),
    (TypedJSON, _AsyncTypedJSON, _SyncTypedJSON),
    (Partitioned, _AsyncPartitioned, _SyncPartitioned),
    (SplitPartitioned, _AsyncSplitPartitioned, _SyncSplitPartitioned),
    (Rebalancing, _AsyncRebalancing, _SyncRebalancing),
    (Expiry, _AsyncExpiry, _SyncExpiry),
    (ConditionalWrites, _AsyncConditionalWrites, _SyncConditionalWrites),
    (PreparedWrites, _AsyncPreparedWrites, _SyncPreparedWrites),
)


def _offered(store: object) -> tuple[int, ...]:
    return tuple(i for i, (ability, _, _) in enumerate(_ABILITIES) if isinstance(store, ability))


@cache
def _composed(base: type, offered: tuple[int, ...]) -> type:
    """``base`` with the mixins of the abilities ``offered`` (indexes into ``_ABILITIES``)."""
    if not offered:
        return base
    column = 1 if base is AsyncAdapter else 2
    mixins = tuple(_ABILITIES[i][column] for i in offered)
    return type(base.__name__, mixins, {"__module__": __name__, "__qualname__": base.__qualname__})


def to_async(store: Store | AsyncStore) -> AsyncStore:
    if is_async(store):
        return store  # type: ignore[return-value]
    return AsyncAdapter(store)  # type: ignore[arg-type,return-value]


def to_sync(store: Store | AsyncStore) -> Store:
    if not is_async(store):
        return store  # type: ignore[return-value]
    return SyncAdapter(store)  # type: ignore[arg-type,return-value]

"""Convert between the sync and async forms of the Store protocol, once per command.

``to_async`` wraps a sync store for the async engines: cheap in-memory stores are called
inline; stores that block on I/O run each batch call on one dedicated worker thread (one thread
keeps driver connections single-threaded, while still letting I/O on the other store of a
migrate overlap).  ``to_sync`` wraps an async store for the simple CLI commands with one event
loop (``asyncio.Runner``) for the life of the wrapper: never a loop per operation.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from kvctl.store import AsyncStore, Page, Record, Store, closing_after

T = TypeVar("T")

# Optional protocol methods (see kvctl.store), forwarded only when the wrapped store has them,
# so ``hasattr(adapted, "apply_many")`` tells the truth.
OPTIONAL_CALLS = ("feed_cursor", "apply_many", "set_newer_many", "dump_many", "restore_many", "rebalance",
                  "partitions")
OPTIONAL_ITERATORS = ("changes", "scan_partition")


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
    """An :class:`AsyncStore` view of a sync store."""

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

    def __getattr__(self, name: str) -> Any:
        if name in OPTIONAL_CALLS or name in OPTIONAL_ITERATORS:
            fn = getattr(self.inner, name)  # AttributeError when the store lacks it

            if name in OPTIONAL_ITERATORS:
                def iterate(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                    return self._iterate(fn(*args, **kwargs))
                return iterate

            async def call(*args: Any, **kwargs: Any) -> Any:
                return await self._call(fn, *args, **kwargs)
            return call
        raise AttributeError(name)

    async def _iterate(self, items: Iterator[T]) -> AsyncIterator[T]:
        done = object()
        while True:
            item = await self._call(next, items, done)
            if item is done:
                return
            yield item  # type: ignore[misc]

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
    """A :class:`Store` view of an async store, driving it on one private event loop."""

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

    def __getattr__(self, name: str) -> Any:
        if name in OPTIONAL_CALLS or name in OPTIONAL_ITERATORS:
            fn = getattr(self.inner, name)
            if name in OPTIONAL_ITERATORS:
                return lambda *args, **kwargs: self._iterate(fn(*args, **kwargs))
            return lambda *args, **kwargs: self._run(fn(*args, **kwargs))
        raise AttributeError(name)

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


def to_async(store: Store | AsyncStore) -> AsyncStore:
    if is_async(store):
        return store  # type: ignore[return-value]
    return AsyncAdapter(store)  # type: ignore[arg-type,return-value]


def to_sync(store: Store | AsyncStore) -> Store:
    if not is_async(store):
        return store  # type: ignore[return-value]
    return SyncAdapter(store)  # type: ignore[arg-type,return-value]

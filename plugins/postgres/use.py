"""``async with Use(store, action) as con``: the lock, the connection and translated errors
around every call of a PostgreSQL store, and :class:`Hot`, the single-key statements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from .core import PostgresCore


class Hot:
    """The open connection and the prepared statements of the single-key paths (the writes are
    None on a store opened to read)."""

    __slots__ = ("con", "delete_one", "get_one", "upsert_one")

    def __init__(self, con: asyncpg.Connection, get_one: Any, upsert_one: Any = None, delete_one: Any = None) -> None:
        self.con = con
        self.get_one = get_one
        self.upsert_one = upsert_one
        self.delete_one = delete_one


class Use:
    """the lock, the connection, translated errors.

    A class rather than @asynccontextmanager: this wraps every call, and the hot paths are one
    loopback round trip (~30 µs), so its own cost matters.
    """

    __slots__ = ("action", "store", "streaming", "writing")

    def __init__(self, store: PostgresCore, action: str, *, writing: bool = False, streaming: bool = False) -> None:
        self.store = store
        self.action = action
        self.writing = writing
        self.streaming = streaming  # a batch write, which may go down the load's open COPY

    async def __aenter__(self) -> asyncpg.Connection:
        store = self.store
        if self.writing:
            store._check_writable()
        await store._lock.acquire()
        try:
            con = await store._connection()
            if store._stream is not None and not self.streaming:
                await store._end_stream(con)  # anything else needs the connection to itself
        except BaseException as exc:
            store._lock.release()
            failure = store._failed(exc, self.action, self.writing)
            if failure is not exc:
                raise failure from exc
            raise
        return con

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        store = self.store
        try:
            if exc is not None:
                failure = store._failed(exc, self.action, self.writing)
                if failure is not exc:
                    raise failure from exc
        finally:
            store._lock.release()

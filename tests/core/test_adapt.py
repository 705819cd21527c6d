"""Sync<->async adaptation: one loop per command, never one per operation."""

from __future__ import annotations

import asyncio

import pytest

from kvctl.adapt import AsyncAdapter, SyncAdapter, is_async, to_async, to_sync
from kvctl.plugin_kit import AsyncStoreBase
from kvctl.registry import open_url
from kvctl.store import Page, Record


def test_sync_store_in_async_engine() -> None:
    store = open_url("memory://")
    astore = to_async(store)
    assert isinstance(astore, AsyncAdapter) and is_async(astore)

    async def work() -> list[bytes]:
        await astore.set_many([Record(b"a", b"1"), Record(b"b", b"2")])
        return [r.key async for p in astore.scan() for r in p.records]

    assert asyncio.run(work()) == [b"a", b"b"]
    assert to_async(astore) is astore


class LoopCheckingStore(AsyncStoreBase):
    """An async store that records which event loop each call ran on."""

    name = "loopcheck"

    def __init__(self) -> None:
        self.loops: set[int] = set()
        self.data: dict[bytes, Record] = {}

    async def get_many(self, keys):
        self.loops.add(id(asyncio.get_running_loop()))
        return [self.data.get(k) for k in keys]

    async def set_many(self, records):
        self.loops.add(id(asyncio.get_running_loop()))
        for r in records:
            self.data[r.key] = r

    async def delete_many(self, keys):
        return sum(self.data.pop(k, None) is not None for k in keys)

    async def scan(self, prefix=b"", **kw):
        self.loops.add(id(asyncio.get_running_loop()))
        yield Page(sorted((r for k, r in self.data.items() if k.startswith(prefix)), key=lambda r: r.key), None)


def test_async_store_in_sync_command_uses_one_loop() -> None:
    inner = LoopCheckingStore()
    store = to_sync(inner)
    assert isinstance(store, SyncAdapter)
    for i in range(20):
        store.set(b"k%d" % i, b"v")
        store.get(b"k%d" % i)
    assert [r.key for p in store.scan(b"k1") for r in p.records][:2] == [b"k1", b"k10"]
    assert store.count() == 20
    store.close()
    assert len(inner.loops) == 1


def test_optional_methods_are_forwarded_only_when_present() -> None:
    mem = open_url("memory://")
    astore = to_async(mem)
    assert hasattr(astore, "apply_many") and hasattr(astore, "changes")
    assert not hasattr(astore, "dump_many")

    async def work() -> list[bytes]:
        start = await astore.feed_cursor()  # type: ignore[attr-defined]
        await astore.set_many([Record(b"x", b"1")])
        return [r.key async for p in astore.changes(start) for r in p.records]

    assert asyncio.run(work()) == [b"x"]
    back = to_sync(LoopCheckingStore())
    assert not hasattr(back, "changes")


def test_a_late_thread_result_for_a_cancelled_call_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    """Ctrl-C can cancel a call whose worker thread is just finishing; CPython then logs an
    InvalidStateError from its future chaining.  The adapter's handler drops exactly that."""
    import concurrent.futures

    from kvctl.adapt import _drop_late_thread_results

    loop = asyncio.new_event_loop()
    try:
        outer: asyncio.Future[int] = loop.create_future()
        outer.set_result(1)  # already done, as the cancelled future is when the thread's result arrives
        inner: concurrent.futures.Future[int] = concurrent.futures.Future()
        inner.set_result(2)
        chained = asyncio.futures._chain_future  # type: ignore[attr-defined]
        handle = asyncio.Handle(chained, (outer, inner), loop)
        with caplog.at_level("ERROR", logger="asyncio"):
            _drop_late_thread_results(loop, {"message": "Exception in callback", "handle": handle,
                                             "exception": asyncio.InvalidStateError("invalid state")})
            assert caplog.records == []
            _drop_late_thread_results(loop, {"message": "something else", "exception": ValueError("real")})
        assert [r.getMessage() for r in caplog.records] == ["something else"]
    finally:
        loop.close()

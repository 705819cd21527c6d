"""The one-load rule that restore and import share: a bulk load into a store that holds no key is
one atomic load when the store offers it; a store that holds keys has its writes committed as they
go, none of them inside the load that probed it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from kvctl.abilities import AsyncAtomicLoad
from kvctl.engines import snapshot
from kvctl.engines._stores import first_key, holds_nothing, one_load_if_empty
from kvctl.registry import open_url
from kvctl.store import Record
from tests.engines.support import DictStore


class LoadingStore(DictStore):
    """A DictStore whose atomic_load undoes the block's writes when the block raises; it counts
    the loads opened and the writes made inside one."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.loading = False
        self.writes_in_load = 0

    async def set_many(self, records: Iterable[Record]) -> None:
        self.writes_in_load += self.loading
        await super().set_many(records)

    @contextlib.asynccontextmanager
    async def atomic_load(self) -> AsyncIterator[None]:
        self.loads += 1
        before = dict(self.data)
        self.loading = True
        try:
            yield
        except BaseException:
            self.data = before
            raise
        finally:
            self.loading = False


def test_the_probe_and_the_decision() -> None:
    async def run() -> None:
        store = LoadingStore()
        assert isinstance(store, AsyncAtomicLoad)
        assert await holds_nothing(store) and await first_key(store) is None
        async with one_load_if_empty(store, wanted=False) as one:
            assert one is False
        assert store.loads == 0
        async with one_load_if_empty(store) as one:
            assert one is True
            await store.set_many([Record(b"a:1", b"x"), Record(b"a:3", b"y"), Record(b"b", b"z")])
        assert (store.loads, store.writes_in_load) == (1, 1)
        assert await first_key(store, b"a:") == b"a:1" and await first_key(store, b"a:", b"a:1") == b"a:3"
        assert await first_key(store, b"a:", b"a:3") is None and not await holds_nothing(store)
        async with one_load_if_empty(store) as one:  # holds keys: written outside any load
            assert one is False and not store.loading
            await store.set_many([Record(b"c", b"w")])
        assert store.writes_in_load == 1
        plain = DictStore()
        async with one_load_if_empty(plain) as one:  # no ability: no load
            assert one is False

    asyncio.run(run())


def test_restore_is_one_load_only_into_an_empty_store(tmp_path: Path) -> None:
    url = "memory://one-load-src"
    open_url(url).clear()
    open_url(url).set_many([Record(b"k%03d" % i, b"v%d" % i) for i in range(50)])
    path = tmp_path / "s.kvs"
    snapshot.create(url, path).check()
    empty, used = LoadingStore(), LoadingStore()
    used.data[b"zzz"] = Record(b"zzz", b"kept")
    asyncio.run(snapshot.restore_into(path, empty))
    asyncio.run(snapshot.restore_into(path, used))
    assert empty.writes_in_load == empty.set_calls > 0 and used.set_calls > 0 and used.writes_in_load == 0
    assert len(empty.data) == 50 and len(used.data) == 51 and used.data[b"zzz"].value == b"kept"

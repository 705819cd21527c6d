"""Op plans and the loops that execute them: the only code inside a timed region.

A :class:`Plan` is built *before* the clock starts (keys formatted, op codes drawn, batches made)
so that the timed loop does nothing but call the store.  Each plan runs through one of four
executors: sync or async, with or without a per-op clock.  A plan whose ops are all the same
runs in a tight loop with no dispatch; mixed plans dispatch on a one-byte op code.

The harness's own cost is measured by running the very same plans on :class:`NullStore` /
:class:`AsyncNullStore` (methods that do nothing), and the machine-speed reference for the gate
on :class:`DictStore` (a bare dict: what a store costs without kvctl).
"""

from __future__ import annotations

from array import array
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any

from kvctl.store import Capabilities, Page, Record

# Op codes (one byte each in Plan.codes).
GET, SET, DELETE, SCAN, RMW, SET_MANY, SET_TTL = range(7)


@dataclass(slots=True)
class Plan:
    """``n`` operations: ``codes[i]`` applied to ``keys[i]`` (``args[i]`` for batches and scans).

    ``only`` is set when every op has the same code (then ``codes`` is empty).  ``undo`` is what
    the bench's ``after`` step needs to put the store back once the plan has run (YCSB D and E:
    where the generator's inserts stood before this plan), carried by the plan so it cannot be lost.
    """

    keys: Sequence[bytes]
    only: int | None = None
    codes: bytes = b""
    args: Sequence[Any] | None = None
    ttl_ms: int | None = None
    undo: Any = None

    def __len__(self) -> int:
        return len(self.keys)

    def code(self, i: int) -> int:
        return self.only if self.only is not None else self.codes[i]


def uniform(code: int, keys: Sequence[bytes], args: Sequence[Any] | None = None,
            ttl_ms: int | None = None) -> Plan:
    return Plan(keys, only=code, args=args, ttl_ms=ttl_ms)


def _first_page(pages: Iterator[Page]) -> None:
    for _ in pages:
        break


def run_sync(store: Any, plan: Plan, value: bytes) -> None:
    """Execute ``plan`` on a sync store (the timed loop: keep it minimal)."""
    keys, only = plan.keys, plan.only
    if only == GET:
        get = store.get
        for k in keys:
            get(k)
    elif only == SET:
        set_ = store.set
        for k in keys:
            set_(k, value)
    elif only == DELETE:
        delete = store.delete
        for k in keys:
            delete(k)
    elif only == SET_MANY:
        set_many = store.set_many
        for batch in plan.args or ():
            set_many(batch)
    else:
        _dispatch_sync(store, plan, value, None)


def run_sync_timed(store: Any, plan: Plan, value: bytes, lat: array) -> None:
    """Execute ``plan`` recording each op's nanoseconds into the preallocated ``lat``."""
    _dispatch_sync(store, plan, value, lat)


def _dispatch_sync(store: Any, plan: Plan, value: bytes, lat: array | None) -> None:
    get, set_, delete, set_many, scan = store.get, store.set, store.delete, store.set_many, store.scan
    keys, ttl = plan.keys, plan.ttl_ms
    args: Sequence[Any] = plan.args if plan.args is not None else ()
    codes = plan.codes or bytes([plan.only or 0]) * len(keys)
    clock = perf_counter_ns
    t0 = 0
    for i, code in enumerate(codes):
        k = keys[i]
        if lat is not None:
            t0 = clock()
        if code == GET:
            get(k)
        elif code == SET:
            set_(k, value)
        elif code == RMW:
            get(k)
            set_(k, value)
        elif code == SET_TTL:
            set_(k, value, ttl_ms=ttl)
        elif code == DELETE:
            delete(k)
        elif code == SCAN:
            prefix, count = args[i]
            _first_page(scan(prefix, start_after=k, batch_size=count))
        elif code == SET_MANY:
            set_many(args[i])
        if lat is not None:
            lat[i] = clock() - t0


async def run_async(store: Any, plan: Plan, value: bytes) -> None:
    """Execute ``plan`` on an async store, on the caller's (persistent) event loop."""
    keys, only = plan.keys, plan.only
    if only == GET:
        get = store.get
        for k in keys:
            await get(k)
    elif only == SET:
        set_ = store.set
        for k in keys:
            await set_(k, value)
    elif only == DELETE:
        delete = store.delete
        for k in keys:
            await delete(k)
    elif only == SET_MANY:
        set_many = store.set_many
        for batch in plan.args or ():
            await set_many(batch)
    else:
        await _dispatch_async(store, plan, value, None)


async def run_async_timed(store: Any, plan: Plan, value: bytes, lat: array) -> None:
    await _dispatch_async(store, plan, value, lat)


async def _first_page_async(pages: AsyncIterator[Page]) -> None:
    try:
        await pages.__anext__()
    except StopAsyncIteration:
        pass
    finally:
        aclose = getattr(pages, "aclose", None)
        if aclose is not None:
            await aclose()


async def _dispatch_async(store: Any, plan: Plan, value: bytes, lat: array | None) -> None:
    get, set_, delete, set_many, scan = store.get, store.set, store.delete, store.set_many, store.scan
    keys, ttl = plan.keys, plan.ttl_ms
    args: Sequence[Any] = plan.args if plan.args is not None else ()
    codes = plan.codes or bytes([plan.only or 0]) * len(keys)
    clock = perf_counter_ns
    t0 = 0
    for i, code in enumerate(codes):
        k = keys[i]
        if lat is not None:
            t0 = clock()
        if code == GET:
            await get(k)
        elif code == SET:
            await set_(k, value)
        elif code == RMW:
            await get(k)
            await set_(k, value)
        elif code == SET_TTL:
            await set_(k, value, ttl_ms=ttl)
        elif code == DELETE:
            await delete(k)
        elif code == SCAN:
            prefix, count = args[i]
            await _first_page_async(scan(prefix, start_after=k, batch_size=count))
        elif code == SET_MANY:
            await set_many(args[i])
        if lat is not None:
            lat[i] = clock() - t0


# -- stores of the harness itself ---------------------------------------------------------------

class NullStore:
    """Does nothing: timing a plan on it measures the harness's own cost per op."""

    name = "null"
    description = "the harness's empty operation"
    capabilities = Capabilities(ttl=True, ordered_scan=True, atomic_batch=True, blocking_io=False,
                                durability="none")

    def get(self, key: bytes) -> Record | None:
        return None

    def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        return None

    def delete(self, key: bytes) -> bool:
        return False

    def set_many(self, records: Any) -> None:
        return None

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        return []

    def delete_many(self, keys: Sequence[bytes]) -> int:
        return 0

    def scan(self, prefix: bytes = b"", **kwargs: Any) -> Iterator[Page]:
        return iter(())

    def close(self) -> None:
        pass


class AsyncNullStore:
    """The async form of :class:`NullStore`: the cost of an await through the harness."""

    name = "null-async"
    description = NullStore.description
    capabilities = NullStore.capabilities

    async def get(self, key: bytes) -> Record | None:
        return None

    async def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        return None

    async def delete(self, key: bytes) -> bool:
        return False

    async def set_many(self, records: Any) -> None:
        return None

    async def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        return []

    async def delete_many(self, keys: Sequence[bytes]) -> int:
        return 0

    async def scan(self, prefix: bytes = b"", **kwargs: Any) -> AsyncIterator[Page]:
        pages: tuple[Page, ...] = ()
        for page in pages:
            yield page

    async def close(self) -> None:
        pass


class DictStore(NullStore):
    """A bare dict behind the Store method names: the machine-speed reference for the gate.

    It contains no kvctl code, so a regression in kvctl cannot move it; a slower machine moves it
    in step with the backends, so benchmark/reference ratios compare across runs.
    """

    name = "dict"

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> Record | None:
        value = self._data.get(key)
        return None if value is None else Record(key, value)

    def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        self._data[key] = value

    def delete(self, key: bytes) -> bool:
        return self._data.pop(key, None) is not None

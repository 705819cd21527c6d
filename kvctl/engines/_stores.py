"""What engines do with a store beyond the protocol: naming it, refusing one store named twice,
and the optional typed-value calls (:class:`~kvctl.abilities.AsyncTypedValues`).

Engines work on the async form of the protocol inside one event loop per command; they open
stores with :func:`kvctl.registry.open_async` (re-exported here for the engines that import it
from this module).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from kvctl.abilities import AsyncAtomicLoad, AsyncTypedValues
from kvctl.errors import UnsupportedError, UsageError
from kvctl.registry import open_async, store_identity
from kvctl.store import AsyncStore, Record

from .keyfilter import KeyFilter

__all__ = ["describe", "dump_many", "first_key", "has_typed_values", "holds_nothing", "one_load_if_empty",
           "open_async", "refuse_same_store", "restore_many", "start_count", "with_dumps"]


def refuse_same_store(src_url: str, dst_url: str) -> None:
    """Every command that copies from one store into another refuses one store named twice
    (two spellings of a path, a symlink, two profiles of one URL): it would read what it writes."""
    if store_identity(src_url) == store_identity(dst_url):
        raise UsageError("source and destination are the same store"
                         + ("" if src_url == dst_url else " (two names of one store)"))


def describe(store: Any) -> str:
    """The store's redacted URL (or its backend name), for messages and summaries."""
    url = getattr(store, "url", None)
    return url.redacted() if url is not None else str(getattr(store, "name", "store"))


async def first_key(store: AsyncStore, prefix: bytes = b"", after: bytes | None = None) -> bytes | None:
    """The first live key under ``prefix`` greater than ``after`` (one page of one key)."""
    pages = store.scan(prefix, start_after=after, batch_size=1, keys_only=True)
    try:
        async for page in pages:
            if page.records:
                return page.records[0].key
        return None
    finally:
        aclose = getattr(pages, "aclose", None)
        if aclose is not None:
            await aclose()


async def holds_nothing(store: AsyncStore) -> bool:
    """True when a scan of the whole store finds no live key."""
    return await first_key(store) is None


@contextlib.asynccontextmanager
async def one_load_if_empty(store: AsyncStore, wanted: bool = True) -> AsyncIterator[bool]:
    """A block whose writes are one load (:class:`~kvctl.abilities.AsyncAtomicLoad`: all of them
    or, when the block raises, none) when ``wanted``, the store offers it and holds no key: it
    yields True then.  Otherwise it yields False and the writes commit as they go: a store in use
    gets no long transaction.

    The probe runs inside the load, so that what a store creates on first use (a table) is part
    of the load too and a failed load leaves no trace; a store found holding keys leaves the load
    at once, having written nothing in it."""
    if not (wanted and isinstance(store, AsyncAtomicLoad)):
        yield False
        return
    async with store.atomic_load():
        empty = await holds_nothing(store)
        if empty:
            yield True
    if not empty:
        yield False


def has_typed_values(store: Any) -> bool:
    """True when the store declares typed values and offers both dump_many and restore_many."""
    return bool(store.capabilities.typed_values) and isinstance(store, AsyncTypedValues)


def _typed(store: Any, name: str) -> AsyncTypedValues:
    if not isinstance(store, AsyncTypedValues):
        raise UnsupportedError(f"the {store.name} backend offers no {name}")
    return store


async def dump_many(store: Any, keys: Sequence[bytes]) -> list[Record | None]:
    return list(await _typed(store, "dump_many").dump_many(list(keys)))


async def restore_many(store: Any, records: Sequence[Record]) -> None:
    await _typed(store, "restore_many").restore_many(list(records))


async def with_dumps(store: Any, records: list[Record], typed_ok: bool, problems: Any) -> list[Record]:
    """``records`` with each typed value replaced by its dump, in the same order.

    Without ``typed_ok`` (or when a key vanished since the scan) typed records are dropped, and
    the dropped ones reported through ``problems.note_incomplete(key, kind)``.
    """
    typed = [r for r in records if r.kind is not None]
    dumps: dict[bytes, Record] = {}
    if typed_ok:
        dumps = {r.key: r for r in await dump_many(store, [r.key for r in typed]) if r is not None}
    else:
        for r in typed:
            problems.note_incomplete(r.key, r.kind or "?")
    out = []
    for r in records:
        if r.kind is None:
            out.append(r)
        elif r.key in dumps:
            out.append(dumps[r.key])
    return out


def start_count(store: AsyncStore, kf: KeyFilter, total: list[int | None]) -> asyncio.Task[None] | None:
    """Count the keys under ``kf`` in the background into ``total[0]``, for a progress bar's
    total, %, and ETA; nothing when a glob would make counting a scan of its own."""
    prefix = kf.scan_prefix
    if prefix is None or kf.needs_match:
        return None

    async def count() -> None:
        with contextlib.suppress(Exception):  # an estimate is optional
            total[0] = await store.count(prefix)

    return asyncio.get_running_loop().create_task(count())

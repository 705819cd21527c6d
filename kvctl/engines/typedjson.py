"""``--types json`` in the engines: a view of a store in which every typed value (a Redis hash,
list, set, sorted set, stream) reads as its JSON document, a plain string value.

Migrate and export read their source through the view, so everything after the read (the batch
writer, conflict policies, ``--resume``, ``--verify``, ``--delete-extra``) sees plain records and
a destination without typed values stores the documents as it stores any value.  The rendering is
the store's own (:meth:`~kvctl.abilities.TypedJSON.json_many`); a store without typed values is
read as it is.  A value of a type without a JSON shape stays typed, and is reported as
incomplete where it cannot be carried.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Literal, cast, get_args

from kvctl.abilities import AsyncPartitioned, AsyncTypedJSON
from kvctl.store import AsyncStore, Page, Record

Types = Literal["dump", "json"]
TYPES: tuple[str, ...] = get_args(Types)

__all__ = ["TYPES", "Types", "json_view", "render", "replaced", "typed_keys"]


def typed_keys(records: Sequence[Record | None]) -> list[bytes]:
    return [r.key for r in records if r is not None and r.kind is not None]


def replaced(records: Sequence[Record | None], keys: list[bytes], again: list[Record | None]) -> list[Record | None]:
    """``records`` with the typed ones (``keys``) replaced by ``again``, read again for them in
    that order (None: the key vanished since)."""
    found = dict(zip(keys, again, strict=True))
    return [r if r is None or r.kind is None else found[r.key] for r in records]


async def render(store: AsyncTypedJSON, records: Sequence[Record | None]) -> list[Record | None]:
    """``records`` with each typed one replaced by its JSON rendering (None: the key vanished)."""
    keys = typed_keys(records)
    return replaced(records, keys, await store.json_many(keys)) if keys else list(records)


def json_view(store: AsyncStore, types: str = "json") -> AsyncStore:
    """``store`` read with its typed values as JSON documents (``types`` "json"), else itself."""
    if types != "json" or not (store.capabilities.typed_values and isinstance(store, AsyncTypedJSON)):
        return store
    view = _PartitionedView(store) if isinstance(store, AsyncPartitioned) else _View(store)
    return cast(AsyncStore, view)


class _View:
    """Reads render typed values; everything else goes to the store as it is."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.description = inner.description
        self.url = getattr(inner, "url", None)
        self.capabilities = dataclasses.replace(inner.capabilities, typed_values=False)

    async def _pages(self, pages: AsyncIterator[Page]) -> AsyncIterator[Page]:
        async for page in pages:
            rendered = await render(self.inner, page.records)
            yield Page([r for r in rendered if r is not None], page.cursor)

    async def get(self, key: bytes) -> Record | None:
        return (await render(self.inner, [await self.inner.get(key)]))[0]

    async def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        return await render(self.inner, await self.inner.get_many(keys))

    def scan(self, prefix: bytes = b"", **kwargs: Any) -> AsyncIterator[Page]:
        return self._pages(self.inner.scan(prefix, **kwargs))

    async def count(self, prefix: bytes = b"") -> int:
        return int(await self.inner.count(prefix))

    async def stats(self) -> dict[str, Any]:
        return dict(await self.inner.stats())

    async def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        await self.inner.set(key, value, ttl_ms=ttl_ms)

    async def set_many(self, records: Iterable[Record]) -> None:
        await self.inner.set_many(records)

    async def delete(self, key: bytes) -> bool:
        return bool(await self.inner.delete(key))

    async def delete_many(self, keys: Sequence[bytes]) -> int:
        return int(await self.inner.delete_many(keys))

    async def clear(self) -> int:
        return int(await self.inner.clear())

    async def close(self) -> None:
        """The view owns nothing: whoever opened the store closes it."""

    async def __aenter__(self) -> _View:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _PartitionedView(_View):
    async def partitions(self, prefix: bytes = b"") -> list[str]:
        return list(await self.inner.partitions(prefix))

    def scan_partition(self, partition: str, prefix: bytes = b"", **kwargs: Any) -> AsyncIterator[Page]:
        return self._pages(self.inner.scan_partition(partition, prefix, **kwargs))

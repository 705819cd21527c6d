"""Default implementations a plugin's store may subclass: :class:`StoreBase` and
:class:`AsyncStoreBase`.

A subclass supplies ``from_url`` and the batch calls; single-key calls, ``count``, ``clear`` and
``stats`` default to them.  An ordered backend implements ``scan_range(span, keys_only)`` and
inherits ``scan``, which turns its arguments into a :class:`~kvctl.plugin_kit.ScanRange`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, ClassVar, Self

from kvctl.store import Capabilities, Page, Record
from kvctl.url import StoreURL

from .records import check_limits, deadline_ms
from .scan import ScanRange

__all__ = ["AsyncStoreBase", "StoreBase", "closing_after"]


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


class _Common:
    """What both bases share: the class attributes of the protocol, limits, ``repr``."""

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    url: StoreURL | None = None

    def _check(self, key: bytes, value: bytes) -> None:
        check_limits(self.capabilities, self.name, key, value)

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
        yield from self.scan_range(ScanRange.of(prefix, start_after, cursor, batch_size), keys_only)

    def scan_range(self, span: ScanRange, keys_only: bool) -> Iterator[Page]:
        """An ordered scan of ``span``: the pages ``scan`` yields."""
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

    async def scan(
        self,
        prefix: bytes = b"",
        *,
        start_after: bytes | None = None,
        cursor: str | None = None,
        batch_size: int = 1000,
        keys_only: bool = False,
    ) -> AsyncIterator[Page]:
        async for page in self.scan_range(ScanRange.of(prefix, start_after, cursor, batch_size), keys_only):
            yield page

    def scan_range(self, span: ScanRange, keys_only: bool) -> AsyncIterator[Page]:
        """An ordered scan of ``span``: the pages ``scan`` yields."""
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

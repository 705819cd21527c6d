"""Ordered scans: the key range one ``scan`` call reads, and the key cursors that resume it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

from kvctl.errors import UsageError
from kvctl.store import Page, Record

__all__ = ["ScanRange", "key_cursor", "page_size", "parse_key_cursor", "prefix_end"]


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no upper bound).

    Ordered backends scan the range ``[prefix, prefix_end(prefix))``; this is how a prefix scan
    avoids LIKE/glob patterns, which over-match on ``%``, ``_``, ``*`` and friends.
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def page_size(batch_size: int) -> int:
    """The records per page a scan or change feed serves: ``batch_size``, and 1 for anything
    below 1 (one rule for every backend; a page of 0 would never make progress)."""
    return batch_size if batch_size > 0 else 1


def key_cursor(key: bytes) -> str:
    """The cursor of an ordered scan: the last key returned, hex-encoded."""
    return "k:" + key.hex()


def parse_key_cursor(cursor: str) -> bytes:
    """The key a :func:`key_cursor` names; :class:`~kvctl.errors.UsageError` for anything else."""
    if not cursor.startswith("k:"):
        raise UsageError(f"not a cursor of this backend: {cursor!r}")
    try:
        return bytes.fromhex(cursor[2:])
    except ValueError:
        raise UsageError(f"malformed scan cursor: {cursor!r}") from None


@dataclass(frozen=True, slots=True)
class ScanRange:
    """The keys an ordered ``scan`` reads: after ``after`` (or from ``prefix``) up to ``end``
    (exclusive; None: no bound), ``page`` records at a time."""

    prefix: bytes
    after: bytes | None
    end: bytes | None
    page: int

    @classmethod
    def of(cls, prefix: bytes, start_after: bytes | None, cursor: str | None, batch_size: int) -> ScanRange:
        """The range of ``scan(prefix, start_after=..., cursor=..., batch_size=...)``; a key
        cursor wins over ``start_after``, and a resume point before the prefix is ignored."""
        after = parse_key_cursor(cursor) if cursor is not None else start_after
        if after is not None and after < prefix:
            after = None
        return cls(prefix, after, prefix_end(prefix), page_size(batch_size))

    @property
    def lower(self) -> bytes:
        """The first key bound: ``after`` when resuming, else ``prefix``."""
        return self.prefix if self.after is None else self.after

    @property
    def inclusive(self) -> bool:
        """Whether :attr:`lower` itself may be returned (not when resuming after it)."""
        return self.after is None

    @staticmethod
    def page_of(records: list[Record]) -> Page:
        """A non-empty page whose cursor resumes after its last key."""
        return Page(records, key_cursor(records[-1].key))

    def pages(self, fetch: Callable[[bytes, bool], list[Record]]) -> Iterator[Page]:
        """The scan's pages: ``fetch(lower, inclusive)`` returns up to :attr:`page` live records
        in key order from ``lower``; each next page starts right after the last key returned.
        A short page ends the scan (what another writer adds behind it is not waited for)."""
        lower, inclusive = self.lower, self.inclusive
        while True:
            records = fetch(lower, inclusive)
            if not records:
                return
            yield self.page_of(records)
            if len(records) < self.page:
                return
            lower, inclusive = records[-1].key, False

    async def apages(self, fetch: Callable[[bytes, bool], Awaitable[list[Record]]]) -> AsyncIterator[Page]:
        """:meth:`pages` for an async ``fetch``."""
        lower, inclusive = self.lower, self.inclusive
        while True:
            records = await fetch(lower, inclusive)
            if not records:
                return
            yield self.page_of(records)
            if len(records) < self.page:
                return
            lower, inclusive = records[-1].key, False

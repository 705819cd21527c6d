"""What a dry run would do, key by key: the keys a write would create, overwrite and delete.

Dry runs (``migrate --dry-run``, ``snapshot restore --dry-run``, ``sync --dry-run``) count
exactly, and name the keys in bounded lists: the first :data:`MAX_LISTED` of each kind, with a
``truncated`` flag when there were more, so the JSON of a dry run over a huge store stays small.
Nothing here writes: every decision is made by reading the destination.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from kvctl.codec import json_key
from kvctl.errors import NoSuchStoreError
from kvctl.store import TOMBSTONE, AsyncStore, Record, newer

from ._stores import open_async

MAX_LISTED = 1000  # keys named per kind; the counts stay exact


@dataclass
class KeyList:
    """A count, and the first :data:`MAX_LISTED` keys counted."""

    count: int = 0
    keys: list[bytes] = field(default_factory=list)

    def add(self, keys: Iterable[bytes]) -> None:
        for key in keys:
            self.count += 1
            if len(self.keys) < MAX_LISTED:
                self.keys.append(key)

    @property
    def truncated(self) -> bool:
        return self.count > len(self.keys)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "keys": [json_key(k) for k in self.keys], "truncated": self.truncated}


@dataclass
class Preview:
    """The keys a dry run would create, overwrite and delete in one store."""

    create: KeyList = field(default_factory=KeyList)
    overwrite: KeyList = field(default_factory=KeyList)
    delete: KeyList = field(default_factory=KeyList)

    async def writes(self, store: AsyncStore, keys: list[bytes]) -> None:
        """Sort the keys a write would store into new ones and overwritten ones."""
        if not keys:
            return
        held = await store.get_many(keys)
        self.create.add(k for k, old in zip(keys, held, strict=True) if old is None)
        self.overwrite.add(k for k, old in zip(keys, held, strict=True) if old is not None)

    def to_dict(self) -> dict[str, Any]:
        return {"would_create": self.create.to_dict(), "would_overwrite": self.overwrite.to_dict(),
                "would_delete": self.delete.to_dict()}


async def preview_lww(store: AsyncStore, changes: list[Record], preview: Preview) -> tuple[int, int, int]:
    """What applying ``changes`` last-writer-wins would do, without writing: (upserts, deletions,
    stale) that would take effect, as :func:`kvctl.engines.replicate.apply_lww` counts them."""
    latest: dict[bytes, Record] = {}
    for change in changes:
        if newer(change, latest.get(change.key)):
            latest[change.key] = change
    if not latest:
        return 0, 0, 0
    held = await store.get_many(list(latest))
    upserts = deletes = stale = 0
    for change, cur in zip(latest.values(), held, strict=True):
        unversioned = change.version is None  # the source's current state, written as it is
        if not unversioned and not newer(change, cur):
            stale += 1
        elif change.kind == TOMBSTONE:
            if cur is not None:  # a delete of an absent key is no change
                deletes += 1
                preview.delete.add((change.key,))
        else:
            upserts += 1
            (preview.create if cur is None else preview.overwrite).add((change.key,))
    return upserts, deletes, stale


@contextlib.asynccontextmanager
async def open_read_only(url: str, missing: list[str]) -> AsyncIterator[AsyncStore]:
    """The store a dry run compares with, opened to read: a store that does not exist yet is an
    empty in-memory stand-in (a real run would create it), and its URL goes into ``missing``."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            store = await stack.enter_async_context(open_async(url, access="read"))
        except NoSuchStoreError:
            missing.append(url)
            store = await stack.enter_async_context(open_async("memory://", access="read"))
        yield store

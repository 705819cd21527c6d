"""One slice of a store's keyspace as pages: the scan that every executor's slice runs.

A slice is one of a partitioned store's parts (``partitions()`` or ``partitions_for()``, e.g. a
Redis Cluster master or a run of its slots: read once, by one reader), a key range
``(after, upto]`` (ordered stores: each page is cut at ``upto`` and the scan stops there) or a
hash slice ``crc32(key) % n == i`` (other stores: a keys-only scan of the whole filter, keeping
this slice's keys and reading their records with ``get_many``, so keys cross the wire n times
and values once).  Migrate and diff share it.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from kvctl.store import AsyncStore, Page

from .keyfilter import KeyFilter

_key = attrgetter("key")


@dataclass(frozen=True)
class Slice:
    key_range: tuple[bytes | None, bytes | None] | None = None
    hash_slice: tuple[int, int] | None = None
    partition: str | None = None


def slice_of(spec: dict[str, Any]) -> Slice:
    """A slice from its JSON form in a split: ``{"range": [after_hex, upto_hex]}``, ``{"hash": [i, n]}``
    or ``{"partition": name}``."""
    if "partition" in spec:
        return Slice(partition=str(spec["partition"]))
    if "range" in spec:
        a, b = spec["range"]
        return Slice(key_range=(None if a is None else bytes.fromhex(a), None if b is None else bytes.fromhex(b)))
    return Slice(hash_slice=(int(spec["hash"][0]), int(spec["hash"][1])))


async def slice_pages(store: AsyncStore, kf: KeyFilter, part: Slice, batch_size: int, cursor: str | None = None,
                      keys_only: bool = False) -> AsyncIterator[Page]:
    """The store's pages under ``kf`` restricted to ``part`` (the whole filter when empty)."""
    prefix = kf.scan_prefix
    if prefix is None:
        return
    if part.partition is not None:
        partitioned: Any = store  # scan_partition is an optional method of the protocol
        async for page in partitioned.scan_partition(part.partition, prefix, cursor=cursor, batch_size=batch_size,
                                               keys_only=keys_only):
            yield page
        return
    if part.hash_slice is not None:
        index, n = part.hash_slice
        async for page in store.scan(prefix, cursor=cursor, batch_size=batch_size, keys_only=True):
            mine = [r for r in kf.keep(page.records) if zlib.crc32(r.key) % n == index]
            if keys_only or not mine:
                yield Page(mine, page.cursor)
                continue
            found = await store.get_many([r.key for r in mine])
            yield Page([r for r in found if r is not None], page.cursor)
        return
    if part.key_range is not None:
        after, upto = part.key_range
        start_after = after if cursor is None else None
        async for page in store.scan(prefix, start_after=start_after, cursor=cursor, batch_size=batch_size,
                                     keys_only=keys_only):
            recs = page.records
            if upto is not None and recs and recs[-1].key > upto:
                yield Page(recs[: bisect.bisect_right(recs, upto, key=_key)], page.cursor)
                return
            yield page
        return
    async for page in store.scan(prefix, cursor=cursor, batch_size=batch_size, keys_only=keys_only):
        yield page

"""Bulk puts: keys that arrive in order past the end of the B-tree are appended (MDB_APPEND).

A restore or a migrate from an ordered source writes batches of ascending keys into an empty
database, or past its last key.  LMDB then need not search for each key's place, and it splits
full pages where they are instead of in the middle, so the tree is written once, packed.  Any
other batch is put the ordinary way; the result is the same either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from operator import attrgetter, lt
from struct import error as StructError
from typing import Any

from kvctl.plugin_kit import RecordHeader
from kvctl.store import Record

unpack_header = RecordHeader.unpack

_key = attrgetter("key")


def ascending(keys: list[bytes]) -> bool:
    """Whether ``keys`` ascend strictly (no key twice), by a C-level pass."""
    return all(map(lt, keys, islice(keys, 1, None)))


def put_all(txn: Any, keys: list[bytes], items: Iterable[tuple[bytes, bytes]]) -> None:
    """Put ``items`` (whose keys are ``keys``, in that order) in ``txn``'s database."""
    cursor = txn.cursor()
    append = past_the_end(txn, keys)
    _, added = cursor.putmulti(items, append=append)
    if append and added != len(keys):  # cannot happen for keys checked above; never lose one silently
        raise AssertionError(f"LMDB appended {added} of {len(keys)} keys")


def past_the_end(txn: Any, keys: list[bytes]) -> bool:
    """Whether ``keys`` ascend strictly from beyond the last key of ``txn``'s database."""
    if not keys or not ascending(keys):
        return False
    cursor = txn.cursor()
    return not cursor.last() or cursor.key() < keys[0]


def newer_only(txn: Any, batch: list[Record], now: int) -> list[Record]:
    """The records of ``batch`` (distinct keys) that win over what ``txn``'s database holds:
    the key has no live record there, the record has no version (always written), or its
    version is higher.  A batch past the last key is taken whole, without a read."""
    if past_the_end(txn, list(map(_key, batch))):
        return batch
    get = txn.get
    out = []
    for rec in batch:
        raw = get(rec.key)
        if raw is None or rec.version is None:
            out.append(rec)
            continue
        try:
            expires, version = unpack_header(raw)
        except StructError:
            out.append(rec)  # a damaged row: the write replaces it, as set_many would
            continue
        if (expires and expires <= now) or rec.version > version:
            out.append(rec)
    return out

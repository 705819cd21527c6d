"""Which cluster node each key of a batch goes to, computed in C-level passes.

redis-py's ``key_slot`` runs Python per key (a hash-tag search, then CRC16); on a bulk copy into
a cluster that was the client's largest cost.  A batch in which no key holds ``{``
has no hash tag, so its slots are CRC16 of the keys themselves: one ``map`` over
``binascii.crc_hqx``.  Only a batch holding a ``{`` takes ``key_slot`` per key.
"""

from __future__ import annotations

from binascii import crc_hqx
from itertools import compress, repeat
from typing import TypeVar

from redis.crc import key_slot

T = TypeVar("T")

SLOTS = 16384


def key_slots(keys: list[bytes]) -> list[int]:
    """The hash slot of each key, as ``redis.crc.key_slot`` computes it."""
    if any(b"{" in k for k in _chunks(keys)):
        return list(map(key_slot, keys))
    return list(map((SLOTS - 1).__and__, map(crc_hqx, keys, repeat(0))))


def _chunks(keys: list[bytes], size: int = 4096) -> list[bytes]:
    # one search over a joined chunk is far cheaper than one per key
    return [b"".join(keys[a:a + size]) for a in range(0, len(keys), size)]


def by_owner(keys: list[bytes], owners: list[str]) -> dict[str, list[int]]:
    """The indices of ``keys`` grouped by the owner of their slot (``owners``: one name per slot,
    ``""`` for a slot nobody serves), each group in key order.  A key of an unserved slot is
    grouped under ``""``."""
    names = list(map(owners.__getitem__, key_slots(keys)))
    distinct = set(names)
    if len(distinct) == 1:
        return {names[0]: list(range(len(keys)))} if keys else {}
    indices = range(len(keys))
    return {name: list(compress(indices, map(name.__eq__, names))) for name in sorted(distinct)}


def take(items: list[T], idx: list[int]) -> list[T]:
    """``[items[i] for i in idx]`` without a Python loop."""
    return list(map(items.__getitem__, idx))

"""Which cluster node each key of a batch goes to, computed in C-level passes.

redis-py's ``key_slot`` runs Python per key (a hash-tag search, then CRC16); on a bulk copy into
a cluster that was the client's largest cost.  A batch in which no key holds ``{``
has no hash tag, so its slots are CRC16 of the keys themselves: one ``map`` over
``binascii.crc_hqx``.  Only a batch holding a ``{`` takes ``key_slot`` per key.

A :class:`SlotMap` turns the CRC of each key straight into a one-byte code of its node (a table
of 65,536 codes: the slot is the CRC's low 14 bits), so a batch's codes are one ``bytes``; each
node's keys are then picked by ``itertools.compress`` over a mask that ``bytes.translate`` makes
from the codes.  No step runs Python per key.
"""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Sequence
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


class SlotMap:
    """The owner of each slot (one name per slot, ``""`` for a slot nobody serves), compiled for
    grouping keys by owner."""

    def __init__(self, owners: list[str]) -> None:
        self.owners = owners
        self.names = sorted(set(owners))
        code = {name: i for i, name in enumerate(self.names)}
        self._by_slot: Sequence[int] = list(map(code.__getitem__, owners))
        self._by_crc: bytes | None = None
        if len(self.names) <= 256:  # one byte per code
            self._by_slot = bytes(self._by_slot)
            self._by_crc = self._by_slot * (65536 // SLOTS)  # crc & (SLOTS - 1) == crc % SLOTS
            self._select = [bytes(int(i == c) for i in range(256)) for c in range(len(self.names))]

    def masks(self, keys: list[bytes], prefix: bytes = b"") -> dict[str, bytes | None]:
        """For each owner of some of ``prefix + key`` for ``keys``, in name order: which keys it
        owns, one byte per key (1: owned); None when it owns them all.  Keys of an unserved slot
        go under ``""``.  The namespaced keys are never built: CRC16 continues over each key
        from the prefix's."""
        codes: Sequence[int]
        if self._by_crc is not None and b"{" not in prefix and not any(b"{" in k for k in _chunks(keys)):
            codes = bytes(map(self._by_crc.__getitem__, map(crc_hqx, keys, repeat(crc_hqx(prefix, 0)))))
            present = [c for c in range(len(self.names)) if bytes((c,)) in codes]  # a memchr each
        else:
            full = list(map(prefix.__add__, keys)) if prefix else keys
            codes = list(map(self._by_slot.__getitem__, key_slots(full)))
            present = sorted(set(codes))
        if len(present) == 1:
            return {self.names[present[0]]: None}
        if isinstance(codes, bytes):
            return {self.names[c]: codes.translate(self._select[c]) for c in present}
        return {self.names[c]: bytes(map(c.__eq__, codes)) for c in present}


def by_owner(keys: list[bytes], slot_map: SlotMap) -> dict[str, list[int]]:
    """The indices of ``keys`` grouped by the owner of their slot, each group in key order.  A key
    of an unserved slot is grouped under ``""``."""
    n = len(keys)
    return {name: indices(n, mask) for name, mask in slot_map.masks(keys).items()} if keys else {}


def indices(n: int, mask: bytes | None) -> list[int]:
    """The positions ``mask`` selects among ``n`` (None: all)."""
    return list(range(n)) if mask is None else list(compress(range(n), mask))


def pick(items: list[T], mask: bytes | None) -> list[T]:
    """The items ``mask`` selects (None: all of them, the same list)."""
    return items if mask is None else list(compress(items, mask))


def take(items: list[T], idx: list[int]) -> list[T]:
    """``[items[i] for i in idx]`` without a Python loop."""
    return list(map(items.__getitem__, idx))

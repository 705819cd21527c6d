"""Weighted rendezvous (highest-random-weight) hashing: which child owns a key.

Every child gets a score for every key, ``-weight / ln(u)`` with ``u`` a uniform number in (0, 1)
drawn from a hash of (child id, key); the highest score owns the key.  A child then owns a share
of the keys proportional to its weight, with no rounding and so no remainder to drop (unlike a
``floor(weight / total x n)`` split, which places 1 partition over weights 3:7 nowhere).  Changing
one weight moves only keys between that child and the others, and a key moves only if its owner
changed: the minimum movement.  Scores depend on the child's *id*, never its position, so
reordering children moves nothing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

_SCALE = 1.0 / 18446744073709551616.0  # 2**-64


class Placement:
    """Owners of keys among children with the given ids and weights (weights >= 0, one > 0)."""

    def __init__(self, ids: Sequence[str], weights: Sequence[float]) -> None:
        if len(ids) != len(weights) or not ids:
            raise ValueError("one weight per child, at least one child")
        if any(w < 0 or not math.isfinite(w) for w in weights) or not any(w > 0 for w in weights):
            raise ValueError("weights must be finite, >= 0, and at least one > 0")
        self.ids = list(ids)
        self.weights = list(weights)
        # A keyed BLAKE2b per child: the child's id is the key, so ids never collide in the hash.
        self._seeds = [hashlib.blake2b(i.encode("utf-8"), digest_size=32).digest() for i in ids]

    def uniform(self, index: int, key: bytes) -> float:
        """The child's uniform draw for ``key``, in the open interval (0, 1)."""
        digest = hashlib.blake2b(key, digest_size=8, key=self._seeds[index]).digest()
        return (int.from_bytes(digest, "big") + 0.5) * _SCALE

    def owner(self, key: bytes) -> int:
        if len(self.ids) == 1:
            return 0
        best, best_score = 0, -1.0
        for i, weight in enumerate(self.weights):
            if weight <= 0:
                continue
            score = -weight / math.log(self.uniform(i, key))
            if score > best_score:
                best, best_score = i, score
        return best

"""``probe://[name]?spin_get=K&spin_set=K&tuple=1``: the memory store plus injected CPU work.

A stand-in for a regression in a store's hot path, used to measure what the bench gate detects.
``spin_get`` / ``spin_set``: extra loop iterations per 100 gets / sets, spread evenly over a
fixed 100-op schedule (gets and sets each step through their own, so a mix of both gets exactly
its share of each), so the added work per op can be set far finer than one iteration; every
int involved stays in CPython's small-int cache, so nothing is allocated.  ``tuple=1``: one extra
2-tuple per get and set, which CPython serves from its free list (invisible to allocation
counting).  With no options the same code runs with nothing injected: the baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Self

from kvctl.errors import UsageError
from kvctl.plugin_kit import StoreBase
from kvctl.registry import open_url
from kvctl.store import Capabilities, Page, Record, StoreURL


class ProbeStore(StoreBase):
    name = "probe"
    description = "The memory store with injected CPU work per op (kvctl's gate measurements)."
    capabilities = Capabilities(ttl=True, ordered_scan=True, versions=True, atomic_batch=True,
                                durability="none (process memory)", blocking_io=False)

    def __init__(self, inner: Any, url: StoreURL, spin_get: int, spin_set: int, tuples: bool) -> None:
        self._inner = inner
        self.url = url
        self._get_plan, self._set_plan = _schedule(spin_get), _schedule(spin_set)
        self._tuple = tuples
        self._ops = [0, 0]  # where gets [0] and sets [1] are in their schedules
        self._pair: tuple[bytes, int] | None = None

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        url.check_options({"spin_get", "spin_set", "tuple"})
        inner = open_url(f"memory://{url.host or ''}{url.path}", access=url.access)
        return cls(inner, url, url.int_option("spin_get", 0), url.int_option("spin_set", 0),
                   url.int_option("tuple", 0) == 1)

    def _work(self, key: bytes, plan: bytes, which: int) -> None:
        ops = self._ops
        op = ops[which] + 1
        if op == 100:
            op = 0
        ops[which] = op
        n = plan[op]
        while n:
            n -= 1
        if self._tuple:
            self._pair = (key, op)

    def get(self, key: bytes) -> Record | None:
        self._work(key, self._get_plan, 0)
        return self._inner.get(key)

    def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        self._work(key, self._set_plan, 1)
        self._inner.set(key, value, ttl_ms=ttl_ms)

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        return self._inner.get_many(keys)

    def set_many(self, records: Iterable[Record]) -> None:
        self._inner.set_many(records)

    def delete_many(self, keys: Sequence[bytes]) -> int:
        return self._inner.delete_many(keys)

    def scan(self, prefix: bytes = b"", *, start_after: bytes | None = None, cursor: str | None = None,
             batch_size: int = 1000, keys_only: bool = False) -> Iterator[Page]:
        return self._inner.scan(prefix, start_after=start_after, cursor=cursor,
                                batch_size=batch_size, keys_only=keys_only)

    def close(self) -> None:
        self._inner.close()


def _schedule(per_100: int) -> bytes:
    """Loop iterations for each of 100 ops adding up to ``per_100``, as evenly as they go."""
    if not 0 <= per_100 <= 25_500:
        raise UsageError(f"probe: {per_100} iterations per 100 ops is out of range (0-25500)")
    return bytes((k + 1) * per_100 // 100 - k * per_100 // 100 for k in range(100))

"""A byte-bounded in-process cache: TinyLFU admission, sampled-LFU eviction by cost (Ristretto's
policy, the one GridKV's Ristretto row describes).

Why not ``theine``: its policy (W-TinyLFU in Rust) bounds the number of entries, not their size
(``TlfuCore(size)`` takes an entry count and ``set`` takes no cost), and its ``Cache.get`` costs
~1.1 µs against ~0.12 µs for kvctl's memory backend, far outside the 2x the cache must stay
within.  bench/seedbackends_bench.py measures both policies, and a plain LRU, on the same zipfian
workload at the same byte budget (see bench/seedbackends_RESULTS.md).

* **Frequency.** Every access adds the key's hash to a counter table; the table ages (every count
  halves, ones drop out) after ``10 x`` as many accesses as the cache holds entries, so old
  popularity fades, and also when it grows past ``8 x`` the entry count, which bounds its memory.
* **Reads are buffered.** A hit only appends the key's hash to a list; the list is folded into the
  table (``Counter.update``, in C) every 64 hits and before every admission decision.  The hit
  path is a dict lookup, an expiry test and a list append.
* **Admission and eviction.** A new entry that does not fit is admitted only if, for each victim
  needed to make room, it is more frequent than the least frequent of 5 entries sampled at random
  (expired entries are taken first).  Victims are evicted only when the whole admission
  succeeds, so a rejected write costs nothing.  Updates of resident keys are always accepted.
* **Cost** of an entry: key + value bytes + :data:`ENTRY_OVERHEAD` (measured CPython bookkeeping
  per entry), so ``max_bytes`` bounds the memory the cache really holds.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

from kvctl.store import Record, now_ms

ENTRY_OVERHEAD = 384  # bytes: Record + entry + dict slot + sample slot + two bytes headers (CPython 3.11)
READ_BUFFER = 64
SAMPLES = 5
AGE_FACTOR = 10
MAX_FREQ_FACTOR = 8
MIN_TABLE = 1024


class _Entry:
    __slots__ = ("cost", "deadline", "hash", "record", "slot")

    def __init__(self, record: Record, key_hash: int, cost: int, slot: int, deadline: int | None) -> None:
        self.record = record
        self.hash = key_hash
        self.cost = cost
        self.slot = slot
        self.deadline = deadline


class BoundedCache:
    """Records by key, at most ``max_bytes`` of them by cost.  Not thread-safe (one store, one thread)."""

    def __init__(self, max_bytes: int, *, max_age_ms: int | None = None, samples: int = SAMPLES) -> None:
        self.max_bytes = max_bytes
        self.max_age_ms = max_age_ms
        self.samples = samples
        self._map: dict[bytes, _Entry] = {}
        self._slots: list[bytes] = []  # resident keys, for O(1) random sampling
        self._sorted: list[bytes] | None = None  # lazily rebuilt key order, for scans
        self._freq: Counter[int] = Counter()
        self._reads: list[int] = []
        self._accesses = 0  # folded into the table since it last aged
        self.used = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.rejections = 0
        self.expirations = 0

    # -- the hit path ----------------------------------------------------------------------
    def get(self, key: bytes) -> Record | None:
        entry = self._map.get(key)
        if entry is not None:
            deadline = entry.deadline
            if deadline is None or deadline > now_ms():
                reads = self._reads
                reads.append(entry.hash)
                if len(reads) >= READ_BUFFER:
                    self._drain()
                return entry.record
            self._expire(key)
        self.misses += 1
        self._count(hash(key))
        return None

    def _drain(self) -> None:
        reads = self._reads
        if reads:
            self._freq.update(reads)
            self.hits += len(reads)
            self._accesses += len(reads)
            reads.clear()
            self._maybe_age()

    def _count(self, key_hash: int) -> None:
        self._freq[key_hash] += 1
        self._accesses += 1
        self._maybe_age()

    def _maybe_age(self) -> None:
        size = max(len(self._map), MIN_TABLE)
        if self._accesses >= AGE_FACTOR * size or len(self._freq) > MAX_FREQ_FACTOR * size:
            self._freq = Counter({h: c >> 1 for h, c in self._freq.items() if c > 1})
            self._accesses = 0

    # -- writes ----------------------------------------------------------------------------
    def put(self, record: Record) -> bool:
        """Insert or replace; False when the admission policy turned a new key away."""
        key = record.key
        cost = len(key) + len(record.value) + ENTRY_OVERHEAD
        deadline = record.expires_at_ms
        if self.max_age_ms is not None:
            fresh_until = now_ms() + self.max_age_ms
            deadline = fresh_until if deadline is None else min(deadline, fresh_until)
        entry = self._map.get(key)
        key_hash = entry.hash if entry is not None else hash(key)
        self._count(key_hash)
        if cost > self.max_bytes:
            if entry is not None:
                self.remove(key)
            self.rejections += 1
            return False
        if entry is not None:  # an update: accepted, others make room if it grew
            need = self.used - entry.cost + cost - self.max_bytes
            if need > 0:
                victims = self._choose_victims(need, None, exclude=key)
                for victim in victims or ():
                    self._evict(victim)
            self.used += cost - entry.cost
            entry.record, entry.cost, entry.deadline = record, cost, deadline
            return True
        need = self.used + cost - self.max_bytes
        if need > 0:
            self._drain()
            victims = self._choose_victims(need, self._freq.get(key_hash, 0), exclude=None)
            if victims is None:
                self.rejections += 1
                return False
            for victim in victims:
                self._evict(victim)
        self._map[key] = _Entry(record, key_hash, cost, len(self._slots), deadline)
        self._slots.append(key)
        self._sorted = None
        self.used += cost
        return True

    def _choose_victims(self, need: int, incoming: int | None, exclude: bytes | None) -> list[bytes] | None:
        """Keys whose eviction frees ``need`` bytes, each the least frequent of a random sample
        and no more frequent than ``incoming`` (None: no admission test); None to reject."""
        chosen: dict[bytes, None] = {}
        freed = 0
        slots, entries, freq = self._slots, self._map, self._freq
        now = now_ms()
        while freed < need:
            if len(slots) - len(chosen) - (exclude is not None) <= 0:
                return None
            best: bytes | None = None
            best_score = 0
            taken = tries = 0
            while taken < self.samples and tries < 4 * self.samples:
                tries += 1
                key = slots[random.randrange(len(slots))]
                if key in chosen or key == exclude:
                    continue
                taken += 1
                entry = entries[key]
                if entry.deadline is not None and entry.deadline <= now:
                    best, best_score = key, -1  # expired: the best victim there is
                    break
                score = freq.get(entry.hash, 0)
                if best is None or score < best_score:
                    best, best_score = key, score
            if best is None:  # the sample kept hitting chosen keys: take any other
                best = next(k for k in slots if k not in chosen and k != exclude)
                best_score = freq.get(entries[best].hash, 0)
            if incoming is not None and best_score >= incoming:  # ties keep the resident (as Caffeine)
                return None
            chosen[best] = None
            freed += entries[best].cost
        return list(chosen)

    def _evict(self, key: bytes) -> None:
        entry = self._map[key]
        if entry.deadline is not None and entry.deadline <= now_ms():
            self.expirations += 1
        else:
            self.evictions += 1
        self.remove(key)

    def _expire(self, key: bytes) -> None:
        self.expirations += 1
        self.remove(key)

    def remove(self, key: bytes) -> bool:
        entry = self._map.pop(key, None)
        if entry is None:
            return False
        last = self._slots.pop()
        if last != key:  # move the last key into the freed sample slot
            self._slots[entry.slot] = last
            self._map[last].slot = entry.slot
        self.used -= entry.cost
        self._sorted = None
        return True

    def clear(self) -> None:
        self._map.clear()
        self._slots.clear()
        self._sorted = None
        self.used = 0

    # -- reads for scans and counts ----------------------------------------------------------
    def peek(self, key: bytes) -> Record | None:
        """The live record without counting an access (scans must not skew the policy)."""
        entry = self._map.get(key)
        if entry is None or (entry.deadline is not None and entry.deadline <= now_ms()):
            return None
        return entry.record

    def keys_from(self, start: bytes, after: bool) -> Iterator[bytes]:
        """Resident keys in order from ``start`` (excluded when ``after``)."""
        if self._sorted is None:
            self._sorted = sorted(self._map)
        keys = self._sorted
        i = bisect.bisect_right(keys, start) if after else bisect.bisect_left(keys, start)
        while i < len(keys):
            yield keys[i]
            i += 1

    def __len__(self) -> int:
        return len(self._map)

    def live_count(self) -> int:
        now = now_ms()
        return sum(1 for e in self._map.values() if e.deadline is None or e.deadline > now)

    def stats(self) -> dict[str, Any]:
        self._drain()
        lookups = self.hits + self.misses
        return {
            "entries": len(self._map),
            "bytes": self.used,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hits / lookups, 4) if lookups else None,
            "evictions": self.evictions,
            "rejected": self.rejections,
            "expired": self.expirations,
            "frequency_table": len(self._freq),
        }

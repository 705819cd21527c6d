"""A byte-bounded in-process cache: TinyLFU admission, sampled-LFU eviction by cost (Ristretto's
policy, the one GridKV's Ristretto row describes).

Why not ``theine``: its policy (W-TinyLFU in Rust) bounds the number of entries, not their size
(``TlfuCore(size)`` takes an entry count and ``set`` takes no cost), and its ``Cache.get`` costs
~0.9-1.1 µs, about 15x a get of kvctl's memory backend, where this cache must stay within 2x.
bench/seedbackends_bench.py measures both policies and a plain LRU on the same zipfian workloads
at the same byte budget: this one is 4-9 points above the LRU and within 2 points of theine
(bench/results/seedbackends_RESULTS.md).

* **Frequency.** A resident entry counts its own accesses (one integer in the entry, so a hit is
  a dict lookup, an expiry test and ``entry.freq += 1``: nothing else).  Keys not in the cache are
  counted in a table by key hash, bumped on every miss and write.  When a key is admitted its
  count moves from the table into the entry, and back when it leaves, so popularity survives
  eviction.  Counts age (every count halves) after ``10 x`` as many misses and writes as the cache
  holds entries, so old popularity fades, and the table also ages when it grows past ``8 x`` the
  entry count, which bounds its memory.
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
from collections.abc import Iterator
from typing import Any

from kvctl.store import Record, now_ms

ENTRY_OVERHEAD = 384  # bytes: Record + entry + dict slot + sample slot + two bytes headers (CPython 3.11)
SAMPLES = 5
AGE_FACTOR = 10
MAX_FREQ_FACTOR = 8
MIN_TABLE = 1024


class _Entry:
    __slots__ = ("base", "cost", "deadline", "freq", "hash", "record", "slot")

    def __init__(self, record: Record, key_hash: int, cost: int, slot: int, deadline: int | None,
                 freq: int) -> None:
        self.record = record
        self.hash = key_hash
        self.cost = cost
        self.slot = slot
        self.deadline = deadline
        self.freq = freq  # accesses (aged), the policy's measure of this entry
        self.base = freq  # freq when hits were last banked: freq - base = hits since


class BoundedCache:
    """Records by key, at most ``max_bytes`` of them by cost.  Not thread-safe (one store, one thread)."""

    def __init__(self, max_bytes: int, *, max_age_ms: int | None = None, samples: int = SAMPLES) -> None:
        self.max_bytes = max_bytes
        self.max_age_ms = max_age_ms
        self.samples = samples
        self._map: dict[bytes, _Entry] = {}
        self._slots: list[bytes] = []  # resident keys, for O(1) random sampling
        self._sorted: list[bytes] | None = None  # lazily rebuilt key order, for scans
        self._freq: dict[int, int] = {}  # counts of keys not in the cache, by key hash
        self._events = 0  # misses and writes since counts last aged
        self._banked_hits = 0  # hits of entries gone, or counted before an ageing
        self.used = 0
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
                entry.freq += 1
                return entry.record
            self._expire(key)
        self.misses += 1
        self._note(hash(key))
        return None

    # -- frequency -------------------------------------------------------------------------
    def _note(self, key_hash: int) -> None:
        """Count an access to a key that is not in the cache."""
        freq = self._freq
        freq[key_hash] = freq.get(key_hash, 0) + 1
        self._events += 1
        size = max(len(self._map), MIN_TABLE)
        if self._events >= AGE_FACTOR * size or len(freq) > MAX_FREQ_FACTOR * size:
            self._age()

    def _age(self) -> None:
        self._freq = {h: c >> 1 for h, c in self._freq.items() if c > 1}
        for entry in self._map.values():
            self._banked_hits += entry.freq - entry.base
            entry.freq >>= 1
            entry.base = entry.freq
        self._events = 0

    @property
    def hits(self) -> int:
        return self._banked_hits + sum(e.freq - e.base for e in self._map.values())

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
        if cost > self.max_bytes:
            if entry is not None:
                self.remove(key)
            self.rejections += 1
            return False
        if entry is not None:  # an update: accepted, others make room if it grew
            entry.freq += 1  # an access, not a hit
            entry.base += 1
            need = self.used - entry.cost + cost - self.max_bytes
            if need > 0:
                for victim in self._choose_victims(need, None, exclude=key) or ():
                    self._evict(victim)
            self.used += cost - entry.cost
            entry.record, entry.cost, entry.deadline = record, cost, deadline
            return True
        key_hash = hash(key)
        self._note(key_hash)
        incoming = self._freq.get(key_hash, 0)
        need = self.used + cost - self.max_bytes
        if need > 0:
            victims = self._choose_victims(need, incoming, exclude=None)
            if victims is None:
                self.rejections += 1
                return False
            for victim in victims:
                self._evict(victim)
        self._freq.pop(key_hash, None)  # the count lives in the entry while it is resident
        self._map[key] = _Entry(record, key_hash, cost, len(self._slots), deadline, incoming)
        self._slots.append(key)
        self._sorted = None
        self.used += cost
        return True

    def _choose_victims(self, need: int, incoming: int | None, exclude: bytes | None) -> list[bytes] | None:
        """Keys whose eviction frees ``need`` bytes, each the least frequent of a random sample
        and less frequent than ``incoming`` (None: no admission test); None to reject."""
        chosen: dict[bytes, None] = {}
        freed = 0
        slots, entries = self._slots, self._map
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
                if best is None or entry.freq < best_score:
                    best, best_score = key, entry.freq
            if best is None:  # the sample kept hitting chosen keys: take any other
                best = next(k for k in slots if k not in chosen and k != exclude)
                best_score = entries[best].freq
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
        self._banked_hits += entry.freq - entry.base
        if entry.freq:
            self._freq[entry.hash] = entry.freq  # popularity outlives the entry
        return True

    def clear(self) -> None:
        for key in list(self._map):
            self.remove(key)
        self._sorted = None

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
        hits = self.hits
        lookups = hits + self.misses
        return {
            "entries": len(self._map),
            "bytes": self.used,
            "max_bytes": self.max_bytes,
            "hits": hits,
            "misses": self.misses,
            "hit_rate": round(hits / lookups, 4) if lookups else None,
            "evictions": self.evictions,
            "rejected": self.rejections,
            "expired": self.expirations,
            "frequency_table": len(self._freq),
        }

"""YCSB core workloads A-F: the request mixes and key distributions of the YCSB family of tools.

Workloads (YCSB's ``workloads/workload[a-f]`` core properties):

====  ===========================================  ===================
A     50% read, 50% update                         zipfian
B     95% read, 5% update                          zipfian
C     100% read                                    zipfian
D     95% read, 5% insert                          latest
E     95% scan (1-100 records), 5% insert          zipfian (scan start)
F     50% read, 50% read-modify-write              zipfian
====  ===========================================  ===================

Keys are YCSB's hashed insert order (``user`` + FNV-1a-64 of the record number); the zipfian
constant is 0.99 and "zipfian" is YCSB's *scrambled* zipfian (popular keys spread over the key
space), "latest" its skewed-latest generator, so figures compare with YCSB-family tools.  Every
draw comes from one ``random.Random(seed)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kvctl.bench.kernels import GET, RMW, SCAN, SET, Plan

ZIPFIAN_CONSTANT = 0.99
# YCSB's ScrambledZipfianGenerator draws from 10^10 items with this precomputed zeta(10^10, 0.99).
_SCRAMBLED_ITEMS = 10_000_000_000
_SCRAMBLED_ZETAN = 26.46902820178302
MAX_SCAN_LENGTH = 100

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def fnv64(value: int) -> int:
    """YCSB's ``Utils.fnvhash64``: FNV-1a over the 8 bytes of a long, as a non-negative long."""
    h = _FNV_OFFSET
    for _ in range(8):
        octet = value & 0xFF
        value >>= 8
        h ^= octet
        h = (h * _FNV_PRIME) & _MASK64
    h &= (1 << 63) - 1  # Java's Math.abs of a long, without the MIN_VALUE corner
    return h


def key_name(keynum: int) -> bytes:
    """YCSB's ``buildKeyName`` with hashed insert order: ``user<fnv64(keynum)>``."""
    return b"user%d" % fnv64(keynum)


@dataclass(frozen=True)
class Mix:
    read: float = 0.0
    update: float = 0.0
    insert: float = 0.0
    scan: float = 0.0
    rmw: float = 0.0


@dataclass(frozen=True)
class CoreWorkload:
    letter: str
    title: str
    mix: Mix
    distribution: str  # zipfian | uniform | latest


WORKLOADS: dict[str, CoreWorkload] = {
    "a": CoreWorkload("a", "A: update heavy (50/50 read/update)", Mix(read=0.5, update=0.5), "zipfian"),
    "b": CoreWorkload("b", "B: read mostly (95/5 read/update)", Mix(read=0.95, update=0.05), "zipfian"),
    "c": CoreWorkload("c", "C: read only", Mix(read=1.0), "zipfian"),
    "d": CoreWorkload("d", "D: read latest (95/5 read/insert)", Mix(read=0.95, insert=0.05), "latest"),
    "e": CoreWorkload("e", "E: short ranges (95/5 scan/insert)", Mix(scan=0.95, insert=0.05), "zipfian"),
    "f": CoreWorkload("f", "F: read-modify-write (50/50)", Mix(read=0.5, rmw=0.5), "zipfian"),
}
DISTRIBUTIONS = ("zipfian", "uniform", "latest")


class Zipfian:
    """YCSB's ZipfianGenerator (Gray et al., "Quickly generating billion-record synthetic
    databases"), with the incremental zeta YCSB uses when the item count grows."""

    def __init__(self, items: int, rng: random.Random, theta: float = ZIPFIAN_CONSTANT,
                 zetan: float | None = None) -> None:
        self.rng = rng
        self.theta = theta
        self.alpha = 1.0 / (1.0 - theta)
        self.zeta2 = self._zeta(0, 2, 0.0)
        self.items = items
        self.zetan = zetan if zetan is not None else self._zeta(0, items, 0.0)
        self._eta()

    def _zeta(self, start: int, n: int, initial: float) -> float:
        total = initial
        theta = self.theta
        for i in range(start, n):
            total += 1.0 / (i + 1) ** theta
        return total

    def _eta(self) -> None:
        self.eta = (1 - (2.0 / self.items) ** (1 - self.theta)) / (1 - self.zeta2 / self.zetan)

    def next(self, items: int | None = None) -> int:
        if items is not None and items != self.items:
            if items > self.items:  # grow incrementally, as YCSB does for inserts
                self.zetan = self._zeta(self.items, items, self.zetan)
            else:
                self.zetan = self._zeta(0, items, 0.0)
            self.items = items
            self._eta()
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < 1.0 + 0.5 ** self.theta:
            return 1
        return int(self.items * (self.eta * u - self.eta + 1) ** self.alpha)


class KeyChooser:
    """Chooses record numbers for requests over a key space that grows with inserts."""

    def __init__(self, distribution: str, records: int, rng: random.Random) -> None:
        if distribution not in DISTRIBUTIONS:
            from kvctl.errors import UsageError

            raise UsageError(f"unknown request distribution {distribution!r} "
                             f"(known: {', '.join(DISTRIBUTIONS)})")
        self.distribution = distribution
        self.rng = rng
        self.records = records
        if distribution == "zipfian":
            self._zipf = Zipfian(_SCRAMBLED_ITEMS, rng, zetan=_SCRAMBLED_ZETAN)
        elif distribution == "latest":
            self._zipf = Zipfian(records, rng)

    def next(self, count: int) -> int:
        """An index in ``[0, count)``: ``count`` is the number of records inserted so far."""
        if self.distribution == "uniform":
            return self.rng.randrange(count)
        if self.distribution == "latest":
            return count - 1 - min(self._zipf.next(count), count - 1)
        return fnv64(self._zipf.next()) % count  # scrambled zipfian


class Generator:
    """Builds request plans for one core workload in one worker: its own inserts, its own RNG."""

    def __init__(self, letter: str, records: int, seed: int, prefix: bytes, insert_base: int,
                 distribution: str | None = None) -> None:
        self.workload = WORKLOADS[letter]
        self.records = records
        self.prefix = prefix
        self.rng = random.Random(seed)
        self.chooser = KeyChooser(distribution or self.workload.distribution, records, self.rng)
        self.scan_lengths = random.Random(seed + 1)
        # record numbers beyond the loaded ones: this worker's inserts (unique per worker)
        self.inserted: list[int] = []
        self.insert_base = insert_base
        self._loaded: list[bytes] | None = None  # the loaded records' keys, named once

    def _keynum(self, index: int) -> int:
        return index if index < self.records else self.inserted[index - self.records]

    def load_keys(self) -> list[bytes]:
        if self._loaded is None:
            self._loaded = [self.prefix + key_name(i) for i in range(self.records)]
        return self._loaded

    def mark(self) -> int:
        """Where the inserts stand now (for :meth:`rewind`)."""
        return len(self.inserted)

    def rewind(self, mark: int) -> list[bytes]:
        """Forget the inserts made since ``mark`` (the key space shrinks back) and return their keys,
        so the caller can delete them: the next plan then starts from the same store."""
        keys = [self.prefix + key_name(k) for k in self.inserted[mark:]]
        del self.inserted[mark:]
        return keys

    def plan(self, n: int) -> Plan:
        """``n`` requests; the plan's ``undo`` is the :meth:`mark` before them (for :meth:`rewind`)."""
        mark = self.mark()
        mix = self.workload.mix
        bounds = [(mix.read, GET), (mix.update, SET), (mix.insert, -1), (mix.scan, SCAN), (mix.rmw, RMW)]
        cumulative: list[tuple[float, int]] = []
        acc = 0.0
        for share, code in bounds:
            if share:
                acc += share
                cumulative.append((acc, code))
        rnd, prefix = self.rng.random, self.prefix
        loaded, records = self.load_keys(), self.records
        codes = bytearray(n)
        keys: list[bytes] = []
        args: list[tuple[bytes, int]] | None = [] if mix.scan else None
        scan_prefix = prefix + b"user"
        for i in range(n):
            u = rnd() * acc
            code = cumulative[-1][1]
            for bound, c in cumulative:
                if u < bound:
                    code = c
                    break
            if code == -1:  # insert: a brand-new record number
                keynum = self.insert_base + len(self.inserted)
                self.inserted.append(keynum)
                codes[i] = SET
                keys.append(prefix + key_name(keynum))
            else:
                index = self.chooser.next(self.records + len(self.inserted))
                codes[i] = code
                keys.append(loaded[index] if index < records else prefix + key_name(self._keynum(index)))
            if args is not None:
                args.append((scan_prefix, self.scan_lengths.randint(1, MAX_SCAN_LENGTH)))
        return Plan(keys, codes=bytes(codes), args=args, undo=mark)

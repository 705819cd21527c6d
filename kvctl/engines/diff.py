"""Compare two stores: keys missing from B, extra in B, and keys whose value, type or expiry differ.

Two methods, chosen by capability, never by backend:

* **merge**: when both stores declare ``ordered_scan``, both are scanned in key order at once
  (each read ahead on its own task) and merge-joined, so every value crosses the wire once from
  each side and memory holds a few pages.
* **lookup**: otherwise, A is scanned and each batch looked up in B with ``get_many``; then B is
  scanned keys-only and each batch looked up in A to find B's extra keys.

Expiries are absolute; two are equal within ``expiry_tolerance_ms`` (backends that keep TTLs as
relative durations round them).  A key present on one side only whose expiry falls within the
tolerance is treated as expiring, not as a difference.  Typed values (``Record.kind``) are
compared by type only: their payloads are backend-specific.  Versions are not compared: each
store may stamp its own.  Values are compared byte for byte, or by meaning when either store
declares JSON values (:mod:`kvctl.engines._compare`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvctl.codec import json_key, show_key
from kvctl.errors import DifferenceError, KvctlError
from kvctl.store import AsyncStore, Page, Record, now_ms

from ._compare import json_sides, same_value
from ._pipeline import Prefetch
from ._slices import Slice, slice_pages
from ._stores import describe, open_async, start_count
from .keyfilter import KeyFilter
from .reporting import Counts, Progress, Reporter, plural

if TYPE_CHECKING:
    from .distributed.executor import Placement


KINDS = ("missing", "extra", "differing")


@dataclass(frozen=True)
class DiffOptions:
    filter: KeyFilter = field(default_factory=KeyFilter)
    batch_size: int = 5000
    expiry_tolerance_ms: int = 2000
    ignore_expiry: bool = False
    sample: int = 10  # keys named per kind of difference
    depth: int = 2  # pages read ahead per side
    part: Slice = field(default_factory=Slice)  # an executor's slice of the keyspace, on both sides


@dataclass
class DiffResult:
    a: str
    b: str
    method: str = ""
    compared: int = 0  # keys of A looked at
    same: int = 0
    missing: int = 0  # in A, not in B
    extra: int = 0  # in B, not in A
    differing: int = 0
    reasons: dict[str, int] = field(default_factory=lambda: {"value": 0, "expiry": 0, "kind": 0})
    samples: dict[str, list[bytes]] = field(default_factory=lambda: {k: [] for k in KINDS})
    seconds: float = 0.0

    @property
    def equal(self) -> bool:
        return self.missing == 0 and self.extra == 0 and self.differing == 0

    def to_dict(self) -> dict[str, Any]:
        def named(keys: list[bytes]) -> list[dict[str, Any]]:
            return [json_key(key) for key in keys]

        return {
            "a": self.a, "b": self.b, "equal": self.equal, "method": self.method,
            "compared": self.compared, "same": self.same, "missing": self.missing,
            "extra": self.extra, "differing": self.differing, "reasons": self.reasons,
            "samples": {k: named(v) for k, v in self.samples.items()},
            "seconds": round(self.seconds, 3),
        }

    def summary_line(self) -> str:
        if self.equal:
            return f"{self.a} and {self.b} are equal ({plural(self.same, 'key')})"
        return f"{self.a} and {self.b} differ: {self.counts_line()}"

    def absorb(self, other: DiffResult, sample: int) -> None:
        """Add another slice's result to this one (samples: the first ``sample`` of each kind)."""
        self.method = self.method or other.method
        for name in ("compared", "same", "missing", "extra", "differing"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n
        for kind, keys in other.samples.items():
            self.samples[kind] = (self.samples[kind] + keys)[:sample]

    def counts_line(self) -> str:
        """The differences without the URLs (error messages end up scrubbed of URL options)."""
        return (f"{self.missing:,} missing from B, {self.extra:,} extra in B, {self.differing:,} differing "
                f"({self.same:,} equal)")

    def check(self) -> None:
        """Raise :class:`DifferenceError` (exit 1) unless the stores are equal."""
        if not self.equal:
            first = next((v[0] for v in self.samples.values() if v), None)
            hint = f"first: {show_key(first)}" if first is not None else None
            raise DifferenceError(f"the stores differ: {self.counts_line()}", hint=hint)


class _Tally:
    """Counts and samples differences as they are found."""

    def __init__(self, result: DiffResult, opts: DiffOptions, tick: Callable[[int], None] | None = None,
                 json_values: bool = False) -> None:
        self.r = result
        self.json_values = json_values  # a side holds JSON documents: values compare by meaning
        self.sample = opts.sample
        self.tol = opts.expiry_tolerance_ms
        self.ignore_expiry = opts.ignore_expiry
        self.tick = tick  # told the count of keys compared, every 1,000 (a progress bar)

    def _note(self, kind: str, key: bytes) -> None:
        samples = self.r.samples[kind]
        if len(samples) < self.sample:
            samples.append(key)

    def expiring(self, rec: Record) -> bool:
        exp = rec.expires_at_ms
        return exp is not None and exp <= now_ms() + self.tol

    def only_a(self, rec: Record) -> None:
        self.r.compared += 1
        if self.tick is not None and self.r.compared % 1000 == 0:
            self.tick(self.r.compared)
        if not self.expiring(rec):
            self.r.missing += 1
            self._note("missing", rec.key)

    def only_b(self, rec: Record) -> None:
        if not self.expiring(rec):
            self.r.extra += 1
            self._note("extra", rec.key)

    def both(self, ra: Record, rb: Record) -> None:
        self.r.compared += 1
        if self.tick is not None and self.r.compared % 1000 == 0:
            self.tick(self.r.compared)
        reason = self.reason(ra, rb)
        if reason is None:
            self.r.same += 1
        else:
            self.r.differing += 1
            self.r.reasons[reason] += 1
            self._note("differing", ra.key)

    def reason(self, ra: Record, rb: Record) -> str | None:
        if ra.kind != rb.kind:
            return "kind"
        if ra.kind is None and not same_value(ra.value, rb.value, self.json_values):
            return "value"
        if not self.ignore_expiry and not same_expiry(ra.expires_at_ms, rb.expires_at_ms, self.tol):
            return "expiry"
        return None


def same_expiry(a: int | None, b: int | None, tolerance_ms: int) -> bool:
    """Two absolute expiries are the same: both none, or both set within ``tolerance_ms``."""
    return a == b or (a is not None and b is not None and abs(a - b) <= tolerance_ms)


async def _pages(store: AsyncStore, opts: DiffOptions, keys_only: bool) -> AsyncIterator[Page]:
    async for page in slice_pages(store, opts.filter, opts.part, opts.batch_size, keys_only=keys_only):
        yield page


class _Records:
    """Records of one ordered scan, one at a time, read ahead by a :class:`Prefetch`."""

    def __init__(self, store: AsyncStore, opts: DiffOptions, keys_only: bool) -> None:
        self.name = describe(store)
        self.kf = opts.filter
        self.ahead: Prefetch[Page] = Prefetch(_pages(store, opts, keys_only),
                                              opts.depth)
        self.buf: list[Record] = []
        self.i = 0
        self.last: bytes | None = None

    async def peek(self) -> Record | None:
        while self.i >= len(self.buf):
            page = await self.ahead.next()
            if page is None:
                return None
            self.buf, self.i = self.kf.keep(page.records), 0
        rec = self.buf[self.i]
        if self.last is not None and rec.key <= self.last:
            raise KvctlError(f"{self.name} declares ordered scans but returned {show_key(rec.key)} "
                             f"after {show_key(self.last)}")
        return rec

    def advance(self) -> None:
        self.last = self.buf[self.i].key
        self.i += 1


async def merge_join(a: _Records, b: _Records, tally: Any) -> None:
    """Walk two key-ordered streams together, calling tally.only_a / only_b / both."""
    async with a.ahead, b.ahead:
        ra, rb = await a.peek(), await b.peek()
        while ra is not None or rb is not None:
            if rb is None or (ra is not None and ra.key < rb.key):
                tally.only_a(ra)
                a.advance()
                ra = await a.peek()
            elif ra is None or rb.key < ra.key:
                tally.only_b(rb)
                b.advance()
                rb = await b.peek()
            else:
                tally.both(ra, rb)
                a.advance()
                b.advance()
                ra, rb = await a.peek(), await b.peek()


def both_ordered(a: AsyncStore, b: AsyncStore) -> bool:
    return bool(a.capabilities.ordered_scan and b.capabilities.ordered_scan)


def run(a_url: str, b_url: str, opts: DiffOptions, reporter: Reporter | None = None,
        placement: Placement | None = None) -> DiffResult:
    """Compare the stores at ``a_url`` and ``b_url`` (both only read), here or on the Dask cluster
    of ``placement``.  Owns the command's only event loop."""
    if placement is not None and placement.spec.kind == "dask":
        from .distributed.diff import run as on_dask

        a_ref, b_ref = placement.refs or (a_url, b_url)
        return on_dask(a_ref, b_ref, a_url, b_url, opts, placement.spec, workers=placement.workers,
                       slices=placement.slices, shared_fs=placement.shared_fs, reporter=reporter)
    return asyncio.run(compare_urls(a_url, b_url, opts, reporter))


async def compare_urls(a_url: str, b_url: str, opts: DiffOptions, reporter: Reporter | None = None) -> DiffResult:
    """Open both stores read-only, compare them, close them."""
    async with open_async(a_url, access="read") as a, open_async(b_url, access="read") as b:
        return await compare(a, b, opts, reporter)


async def compare(a: AsyncStore, b: AsyncStore, opts: DiffOptions | None = None,
                  reporter: Reporter | None = None) -> DiffResult:
    """Compare the (filtered) contents of ``a`` and ``b``.  ``reporter``: progress events (phase
    "diff": keys of A compared, out of A's key count once it is known)."""
    opts = opts or DiffOptions()
    result = DiffResult(describe(a), describe(b))
    t0 = time.perf_counter()
    total: list[int | None] = [None]
    counter = start_count(a, opts.filter, total) if reporter is not None else None

    def tick(compared: int) -> None:
        if reporter is not None:
            reporter.progress(Progress("diff", Counts(read=compared), total[0], time.perf_counter() - t0))

    tally = _Tally(result, opts, tick if reporter is not None else None, json_sides(a, b))
    try:
        if both_ordered(a, b):
            result.method = "merge"
            await merge_join(_Records(a, opts, False), _Records(b, opts, False), tally)
        else:
            result.method = "lookup"
            await _lookup(a, b, opts, tally)
    finally:
        if counter is not None:
            counter.cancel()
    result.seconds = time.perf_counter() - t0
    return result


async def _lookup(a: AsyncStore, b: AsyncStore, opts: DiffOptions, tally: _Tally) -> None:
    kf = opts.filter
    async with Prefetch(_pages(a, opts, False), opts.depth) as pages:
        while (page := await pages.next()) is not None:
            recs = kf.keep(page.records)
            if not recs:
                continue
            found = await b.get_many([r.key for r in recs])
            for ra, rb in zip(recs, found, strict=True):
                if rb is None:
                    tally.only_a(ra)
                else:
                    tally.both(ra, rb)
    async for batch in _extras_lookup(a, b, opts, records=True):
        for rb in batch:
            tally.only_b(rb)


async def _extras_lookup(a: AsyncStore, b: AsyncStore, opts: DiffOptions,
                         records: bool = False) -> AsyncIterator[list[Record]]:
    kf = opts.filter
    async with Prefetch(_pages(b, opts, True), opts.depth) as pages:
        while (page := await pages.next()) is not None:
            recs = kf.keep(page.records)
            if not recs:
                continue
            found = await a.get_many([r.key for r in recs])
            extra = [rb for rb, ra in zip(recs, found, strict=True) if ra is None]
            if extra:
                yield extra


class _Extras:
    def __init__(self) -> None:
        self.keys: list[bytes] = []

    def only_a(self, rec: Record) -> None:
        pass

    def both(self, ra: Record, rb: Record) -> None:
        pass

    def only_b(self, rec: Record) -> None:
        self.keys.append(rec.key)


async def extra_keys(a: AsyncStore, b: AsyncStore, opts: DiffOptions) -> AsyncIterator[list[bytes]]:
    """Batches of keys B holds (under the filter) that A does not, keys-only where possible."""
    if both_ordered(a, b):
        # a merge join over keys-only scans, handing out extras a batch at a time (bounded memory)
        tally = _Extras()
        ra_src, rb_src = _Records(a, opts, True), _Records(b, opts, True)
        async with ra_src.ahead, rb_src.ahead:
            ra, rb = await ra_src.peek(), await rb_src.peek()
            while ra is not None or rb is not None:
                if rb is None or (ra is not None and ra.key < rb.key):
                    ra_src.advance()
                    ra = await ra_src.peek()
                elif ra is None or rb.key < ra.key:
                    tally.only_b(rb)
                    rb_src.advance()
                    rb = await rb_src.peek()
                else:
                    ra_src.advance()
                    rb_src.advance()
                    ra, rb = await ra_src.peek(), await rb_src.peek()
                if len(tally.keys) >= opts.batch_size:
                    yield tally.keys
                    tally.keys = []
        if tally.keys:
            yield tally.keys
    else:
        async for batch in _extras_lookup(a, b, opts):
            yield [r.key for r in batch]

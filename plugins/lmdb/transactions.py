"""An LMDB store's transactions: reads and writes on the shared environment (growing the map
and retrying when it is full), the version high-water mark, limits, and the housekeeping that
deletes expired records.  :class:`LMDBBase` is what :class:`~.store.LMDBStore` builds on.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar

import lmdb

from kvctl.errors import AuthError, CorruptError, LimitError, StoreIOError
from kvctl.hlc import COUNTER_BITS, HLC, NODE_BITS
from kvctl.plugin_kit import RecordHeader, StoreBase, show_key
from kvctl.store import Record, StoreURL, now_ms

from .env import MAX_GROWTHS, META_DB, Options, SharedEnv
from .errors import translate

T = TypeVar("T")
MAX_KEY = 511  # LMDB's compiled-in MDB_MAXKEYSIZE (env.max_key_size()); checked on open
# LMDB itself takes values up to 4 GiB - 1 (MAXDATASIZE); kvctl caps them at 1 GiB: a write
# copies the value once to put the header in front, and a single record should not force the
# map (and the reader's address space) to grow by several GiB.
HEADER_SIZE = RecordHeader.SIZE
# bound once: these run per record
pack_header, unpack_header, stored_expiry = RecordHeader.pack, RecordHeader.unpack, RecordHeader.expiry
MAX_VALUE = (1 << 30) - HEADER_SIZE
SWEEP_EVERY = 10_000  # records written between sweeps for expired records
SWEEP_BATCH = 1_000  # records a sweep examines
NOTED_MAX = 1_024  # expired keys remembered from reads, deleted by the next write
_VERSION_STEP = 1 << NODE_BITS  # one HLC counter tick
_LOW_BITS = NODE_BITS + COUNTER_BITS  # version >> _LOW_BITS = its physical ms (kvctl.hlc)
_keys = attrgetter("key")
_values = attrgetter("value")
_versions = attrgetter("version")
_expiries = attrgetter("expires_at_ms")


class LMDBBase(StoreBase):
    """The state of an LMDB store and its transaction plumbing (see the module docstring)."""

    def __init__(self, shared: SharedEnv, opts: Options, url: StoreURL) -> None:
        self._shared = shared
        self._opts = opts
        self.rebind()
        shared.stores.add(self)
        self.url = url
        self._where = url.redacted()
        self._hwm_key = b"hwm:" + opts.db
        self._ttl_key = b"ttl:" + opts.db  # present once any record with an expiry was written
        self._clock = HLC()
        self._noted: list[bytes] = []
        self._countdown = SWEEP_EVERY
        self._sweep_from: bytes | None = None
        self._closed = False
        self._hwm_seen = self._read(self._stored_hwm)
        self._ttl_seen = self._read(lambda txn: txn.get(self._ttl_key, db=self._meta) is not None)
        self._clock.observe(self._hwm_seen)
        self._maybe_ahead = True  # until a write finds the clock is not ahead of the wall
        self._readonly = opts.readonly

    # -- plumbing ----------------------------------------------------------------------------
    def rebind(self) -> None:
        """Take the shared handle's environment and databases (again, after it was reopened)."""
        self._env = self._shared.env
        self._db = self._shared.dbs[self._opts.db]
        self._meta = self._shared.dbs[META_DB]

    def _fail(self, exc: BaseException) -> Exception:
        return translate(exc, self._where, self._opts.path)

    def _corrupt(self, key: bytes) -> Exception:
        return CorruptError(
            f"{self._where}: the record of key {show_key(key)} is shorter than kvctl's {HEADER_SIZE}-byte "
            "header: not a kvctl LMDB database"
        )

    def _read(self, work: Callable[[Any], T], buffers: bool = False) -> T:
        """Run ``work`` in a read transaction; adopt a map another process grew, then retry.

        The transaction is registered with the map's guard while it runs (see .mapping);
        ``work`` must not read through another call of this store.
        """
        guard = self._shared.map
        for _ in range(2):
            guard.enter()
            try:
                with self._env.begin(db=self._db, buffers=buffers) as txn:
                    return work(txn)
            except lmdb.MapResizedError:
                pass
            except lmdb.Error as exc:
                raise self._fail(exc) from None
            finally:
                guard.leave()
            with self._shared.write_lock:  # a new map needs no write transaction in progress
                try:
                    self._shared.adopt_size()
                except lmdb.Error as exc:
                    raise self._fail(exc) from None
        raise StoreIOError(f"{self._where}: the LMDB map keeps changing size under this reader")

    def _write(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(txn, *args)`` in one write transaction, growing the map and retrying it when full.

        The first attempt is kept free of loops and extra calls: a small commit without fsync
        costs ~4 µs, and this wrapper runs on every write.
        """
        if self._readonly:
            # Reached only with ?readonly=true: commands that only read never write.
            raise AuthError(f"{self._where}: the store is open read-only (readonly=true)")
        with self._shared.write_lock:
            # What this store believes is on disk; an aborted attempt must not change it.
            hwm_seen = self._hwm_seen
            ttl_seen = self._ttl_seen
            try:
                return self._attempt(work, args)
            except (lmdb.MapFullError, lmdb.MapResizedError) as exc:
                self._hwm_seen, self._ttl_seen = hwm_seen, ttl_seen
                return self._write_again(exc, work, args)
            except BaseException as exc:
                self._hwm_seen, self._ttl_seen = hwm_seen, ttl_seen
                if isinstance(exc, lmdb.Error):
                    raise self._fail(exc) from None
                raise

    def _attempt(self, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        """One write transaction running ``work`` (and the housekeeping it is due), committed."""
        with self._env.begin(write=True, db=self._db) as txn:
            result = work(txn, *args)
            if self._noted or self._countdown <= 0:
                self._housekeeping(txn)
        return result

    def _write_again(self, first: BaseException, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        """After a full (or resized) map: adjust the map and retry, with the write lock held."""
        shared = self._shared
        exc = first
        for _ in range(MAX_GROWTHS):
            try:
                if isinstance(exc, lmdb.MapFullError):
                    shared.grow()
                else:
                    shared.adopt_size()
            except lmdb.Error as failed:
                raise self._fail(failed) from None
            hwm_seen, ttl_seen = self._hwm_seen, self._ttl_seen
            try:
                return self._attempt(work, args)
            except (lmdb.MapFullError, lmdb.MapResizedError) as again:
                self._hwm_seen, self._ttl_seen = hwm_seen, ttl_seen
                exc = again
            except BaseException as other:
                self._hwm_seen, self._ttl_seen = hwm_seen, ttl_seen
                if isinstance(other, lmdb.Error):
                    raise self._fail(other) from None
                raise
        raise StoreIOError(f"{self._where}: the LMDB map could not grow enough for this write")

    def _stored_hwm(self, txn: Any) -> int:
        raw = txn.get(self._hwm_key, db=self._meta)
        return 0 if raw is None else int.from_bytes(raw, "big")

    def _take_versions(self, txn: Any, n: int, given_max: int | None) -> int:
        """The first of ``n`` consecutive HLC versions (the clock moves past the last one).

        The clock was seeded on open with the high-water mark on disk.  The mark is written
        only while versions may run ahead of the wall clock (after a version from elsewhere,
        or a batch that can overflow the HLC counter): any other version is below what the
        clock gives after a restart anyway, and skipping that write keeps small commits small.
        """
        clock = self._clock
        first = last = clock.now()
        if n > 1:
            last = first + (n - 1) * _VERSION_STEP
            clock.observe(last)
            self._maybe_ahead = True
        if given_max is not None and given_max > last:
            clock.observe(given_max)
            last = given_max
            self._maybe_ahead = True
        if self._maybe_ahead:
            self._mark_high_water(txn, last)
        return first

    def _mark_high_water(self, txn: Any, last: int) -> None:
        if last >> _LOW_BITS <= now_ms():
            # ``last`` is the clock's state, and it is not ahead of the wall clock: nothing the
            # clock gives from here on is, until it observes something again.
            self._maybe_ahead = False
        elif last > self._hwm_seen:
            stored = self._stored_hwm(txn)  # another process may have put a higher mark
            if last > stored:
                txn.put(self._hwm_key, last.to_bytes(8, "big"), db=self._meta)
            self._hwm_seen = max(last, stored)

    def _check_values(self, batch: list[Record]) -> None:
        """Values over the limit are refused before the transaction starts.

        Keys are checked by LMDB itself as they are put (an empty or over-long key fails the
        put, which aborts the whole transaction); :meth:`_check_keys` then names the culprit.
        """
        if max(map(len, map(_values, batch))) > MAX_VALUE:
            for rec in batch:
                self._check_record(rec.key, rec.value)

    def _check_keys(self, batch: list[Record]) -> None:
        for rec in batch:
            if not rec.key or len(rec.key) > MAX_KEY:
                self._check_record(rec.key, rec.value)

    def _check_record(self, key: bytes, value: bytes) -> None:
        if not key:
            raise LimitError(f"{self._where}: LMDB cannot store an empty key")
        self._check(key, value)

    def _note(self, key: bytes) -> None:
        """Remember an expired key so the next write transaction deletes it."""
        if len(self._noted) < NOTED_MAX:
            self._noted.append(key)

    def _housekeeping(self, txn: Any) -> None:
        """Delete expired records noted by reads, and every SWEEP_EVERY writes sweep a slice."""
        now = now_ms()
        noted, self._noted = self._noted, []
        for key in noted:
            raw = txn.get(key)
            if raw is not None and len(raw) >= HEADER_SIZE and 0 < unpack_header(raw)[0] <= now:
                txn.delete(key)
        if self._countdown > 0:
            return
        self._countdown = SWEEP_EVERY
        if not self._ttl_seen:
            return
        cursor = txn.cursor()
        found = cursor.set_range(self._sweep_from) if self._sweep_from else cursor.first()
        expired: list[bytes] = []
        last = None
        for seen, (key, raw) in enumerate(cursor.iternext()):
            if seen >= SWEEP_BATCH:
                break
            last = key
            if len(raw) >= HEADER_SIZE and 0 < unpack_header(raw)[0] <= now:
                expired.append(key)
        self._sweep_from = last if found and last is not None else None
        for key in expired:
            txn.delete(key)

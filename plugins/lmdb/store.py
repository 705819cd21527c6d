"""The LMDB store: records (header + value, see :class:`kvctl.plugin_kit.RecordHeader`) in one named database.

Reads take a read transaction each (a batch takes one for the whole batch); writes take one
write transaction per call, so ``set_many``/``delete_many`` are all or nothing.  Versions come
from an HLC seeded on open with the high-water mark on disk, so they grow across restarts even
when a version from elsewhere was ahead of the local clock.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from operator import add
from struct import error as StructError
from typing import Any, Self

import lmdb

from kvctl.errors import LimitError, UsageError
from kvctl.plugin_kit import ScanRange, check_conditional, conditional_record, deadline_ms, prefix_end, record_of
from kvctl.store import MAX_VERSION, Capabilities, Page, Record, StoreURL, now_ms

from .bulk import newer_only, put_all
from .env import acquire, parse_options, release
from .transactions import (
    _VERSION_STEP,
    HEADER_SIZE,
    MAX_KEY,
    MAX_VALUE,
    LMDBBase,
    _expiries,
    _keys,
    _values,
    _versions,
    pack_header,
    stored_expiry,
    unpack_header,
)


class LMDBStore(LMDBBase):
    name = "lmdb"
    description = "LMDB directory (py-lmdb): memory-mapped B+tree, ordered scans, TTLs, versions, multi-process."
    capabilities = Capabilities(
        persistent=True, ttl=True, ordered_scan=True, versions=True, atomic_batch=True, host_local=True,
        conditional_writes=True, max_key_size=MAX_KEY, max_value_size=MAX_VALUE,
        durability=(
            "fsync on every commit (sync=true, the default): a commit survives power loss; "
            "?sync=false skips it: a process crash loses nothing, a system crash may lose the last "
            "commits (or, on a filesystem that reorders writes, damage the file: LMDB's MDB_NOSYNC)"
        ),
    )

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        opts = parse_options(url)
        shared = acquire(opts, url.redacted())
        try:
            if shared.env.max_key_size() < MAX_KEY:
                raise UsageError(
                    f"{url.redacted()}: this LMDB build allows keys of {shared.env.max_key_size()} "
                    f"bytes, fewer than the {MAX_KEY} kvctl declares"
                )
            return cls(shared, opts, url)
        except BaseException:
            release(shared)
            raise

    # -- reads -------------------------------------------------------------------------------
    def get(self, key: bytes) -> Record | None:
        # The read is registered with the map's guard (see .mapping) by hand: MapGuard.enter
        # and leave, inlined, as this runs once per key.
        guard = self._shared.map
        reading = guard.reading
        try:
            reading.append(None)
            try:
                if guard.replacing:
                    reading.pop()
                    guard.enter()  # waits for the new map
                raw = self._env.begin(db=self._db).get(key)  # the transaction ends with its last reference
            finally:
                reading.pop()  # before the fallback below, which registers its own read
        except lmdb.Error:
            raw = self._read(lambda txn: txn.get(key)) if 0 < len(key) <= MAX_KEY else None
        return None if raw is None else self._decoded(key, raw)

    def _decoded(self, key: bytes, raw: bytes) -> Record | None:
        """The record stored as ``raw``; None when it has expired (noted: the next write deletes it)."""
        try:
            expires, version = unpack_header(raw)
        except StructError:
            raise self._corrupt(key) from None
        if expires and expires <= now_ms():
            self._note(key)
            return None
        return record_of(key, raw[HEADER_SIZE:], expires or None, version)

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        if not keys:
            return []

        def fetch(txn: Any) -> list[bytes | None]:
            get = txn.get
            try:
                return list(map(get, keys))
            except lmdb.BadValsizeError:  # an empty or over-long key: it cannot be stored
                return [get(k) if 0 < len(k) <= MAX_KEY else None for k in keys]

        raws = self._read(fetch)
        now = now_ms()
        out: list[Record | None] = []
        append = out.append
        try:
            for key, raw in zip(keys, raws, strict=True):
                if raw is None:
                    append(None)
                    continue
                expires, version = unpack_header(raw)
                if expires and expires <= now:
                    self._note(key)
                    append(None)
                else:
                    append(record_of(key, raw[HEADER_SIZE:], expires or None, version))
        except StructError:
            raise self._corrupt(key) from None
        return out

    # -- writes ------------------------------------------------------------------------------
    def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        if not key or len(key) > MAX_KEY or len(value) > MAX_VALUE:
            self._check_record(key, value)
        self._countdown -= 1
        if ttl_ms is not None or self._maybe_ahead or self._noted or self._countdown <= 0 or self._readonly:
            self._write(self._put_one, key, value, 0 if ttl_ms is None else stored_expiry(deadline_ms(ttl_ms)))
            return
        # The common case, without _write's bookkeeping (nothing here changes what this store
        # believes is on disk): a commit without fsync is ~4 µs, so every call on it shows.
        with self._shared.write_lock:
            try:
                with self._env.begin(write=True, db=self._db) as txn:
                    txn.put(key, pack_header(0, self._clock.now()) + value)
            except (lmdb.MapFullError, lmdb.MapResizedError) as exc:
                self._write_again(exc, self._put_one, (key, value, 0))
            except lmdb.Error as exc:
                raise self._fail(exc) from None

    def _put_one(self, txn: Any, key: bytes, value: bytes, expiry: int) -> None:
        version = self._clock.now()
        if self._maybe_ahead:
            self._mark_high_water(txn, version)
        if expiry and not self._ttl_seen:
            self._mark_ttl(txn)
        txn.put(key, pack_header(expiry, version) + value)

    def _mark_ttl(self, txn: Any) -> None:
        """Record that this database holds expiring records, which turns the sweeps on."""
        txn.put(self._ttl_key, b"1", db=self._meta)
        self._ttl_seen = True

    def set_many(self, records: Iterable[Record]) -> None:
        batch = records if isinstance(records, list) else list(records)
        if batch:
            self._set_batch(batch, newer=False)

    def set_newer_many(self, records: Iterable[Record]) -> tuple[int, int]:
        """``set_many`` of the records whose key this database does not hold live at an equal or
        higher version (a record without a version is always written), decided in the write
        transaction (see .bulk.newer_only).  The last record of a key in the batch stands for
        the key.  Returns how many records were written and their key and value bytes."""
        batch = records if isinstance(records, list) else list(records)
        if not batch:
            return 0, 0
        written = self._set_batch(list(dict(zip(map(_keys, batch), batch, strict=True)).values()), newer=True)
        return len(written), sum(map(len, map(_keys, written))) + sum(map(len, map(_values, written)))

    def _set_batch(self, batch: list[Record], *, newer: bool) -> list[Record]:
        """Write ``batch`` (with ``newer``: its records newer than the stored ones); what was written."""
        n = len(batch)
        self._check_values(batch)
        versions = list(map(_versions, batch))
        plain = versions.count(None) == n and list(map(_expiries, batch)).count(None) == n
        given_max = None
        if not plain:
            given = [v for v in versions if v is not None]
            if given:
                given_max = max(given)
                if min(given) < 0 or given_max > MAX_VERSION:
                    raise LimitError(f"{self._where}: a record version is outside 0..2**63-1")
        self._countdown -= n
        try:
            written = self._write(self._put_batch, batch, plain, given_max, newer)
        except LimitError:
            self._check_keys(batch)  # the transaction was aborted: say which key
            raise
        if written and self._shared.map.due(self._moved(written)):
            self._drop_pages()
        return written

    def _moved(self, written: list[Record]) -> int:
        """About the bytes of the file a bulk write read through the map: what the file grew by
        (one call, not a pass over the records), or, when it did not grow (records rewritten in
        place, freed pages reused), the bytes of the values written."""
        grown = self._shared.map.grown(self._shared.info()["last_pgno"]) * self._shared.psize
        return grown if grown > 0 else sum(map(len, map(_values, written)))

    def _drop_pages(self) -> None:
        """Unmap the pages of the file that writes and scans touched (see .mapping)."""
        try:
            self._shared.drop_pages()
        except lmdb.Error as exc:
            raise self._fail(exc) from None

    def _put_batch(self, txn: Any, batch: list[Record], plain: bool, given_max: int | None,
                   newer: bool = False) -> list[Record]:
        if newer:
            batch = newer_only(txn, batch, now_ms())
            if not batch:
                return batch
        n = len(batch)
        first = self._take_versions(txn, n, given_max)
        versions: Iterable[int] = range(first, first + n * _VERSION_STEP, _VERSION_STEP)
        if plain:
            # No expiries, no versions given (the common bulk load): the items are built by
            # C-level map/zip, no Python bytecode per record.  pack(0, v) is v's 16-byte form.
            headers: Iterable[bytes] = map(int.to_bytes, versions, repeat(HEADER_SIZE))
        else:
            exps = list(map(_expiries, batch))
            if not self._ttl_seen and exps.count(None) != n:
                self._mark_ttl(txn)
            headers = map(pack_header, _stored_expiries(exps), _stored_versions(list(map(_versions, batch)), versions))
        keys = list(map(_keys, batch))
        put_all(txn, keys, zip(keys, map(add, headers, map(_values, batch)), strict=True))
        return batch

    def delete(self, key: bytes) -> bool:
        return self.delete_many((key,)) == 1

    def delete_many(self, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0

        def work(txn: Any) -> int:
            pop = txn.pop
            now = now_ms()
            live = 0
            for key in keys:
                if not key or len(key) > MAX_KEY:
                    continue  # cannot be stored, so cannot be deleted
                raw = pop(key)
                if raw is not None:
                    expires = unpack_header(raw)[0] if len(raw) >= HEADER_SIZE else 0
                    live += not expires or expires > now
            return live

        return self._write(work)

    # -- expire and set_if: a read and a write in one write transaction -----------------------
    def expire(self, key: bytes, expires_at_ms: int | None) -> bool:
        if not key or len(key) > MAX_KEY:
            return False  # cannot be stored, so does not exist

        def work(txn: Any) -> bool:
            current = self._live(txn, key)
            if current is None:
                return False
            if expires_at_ms is not None and expires_at_ms <= now_ms():
                txn.pop(key)  # as delete does
            else:
                self._put_one(txn, key, current.value, stored_expiry(expires_at_ms))
            return True

        return self._write(work)

    def set_if(self, record: Record, *, exists: bool | None = None, keep_ttl: bool = False) -> bool:
        check_conditional(record, keep_ttl)
        self._check_record(record.key, record.value)

        def work(txn: Any) -> bool:
            write = conditional_record(self._live(txn, record.key), record, exists, keep_ttl)
            if write is None:
                return False
            self._put_one(txn, write.key, write.value, stored_expiry(write.expires_at_ms))
            return True

        return self._write(work)

    def _live(self, txn: Any, key: bytes) -> Record | None:
        raw = txn.get(key)
        return None if raw is None else self._decoded(key, raw)

    # -- scans -------------------------------------------------------------------------------
    def _position(self, cursor: Any, start: bytes, exclusive: bool) -> bool:
        """Put ``cursor`` on the first key >= start (> start when exclusive)."""
        found = cursor.set_range(start[:MAX_KEY]) if start else cursor.first()
        while found:
            key = bytes(cursor.key())  # a memoryview in buffers=True transactions
            if key > start or (key == start and not exclusive):
                break
            found = cursor.next()
        return bool(found)

    def _page(self, txn: Any, start: bytes, exclusive: bool, end: bytes | None, limit: int,
              keys_only: bool) -> tuple[list[Record], int]:
        """Up to ``limit`` live records from ``start``, and the bytes of the values read."""
        cursor = txn.cursor()
        records: list[Record] = []
        if not self._position(cursor, start, exclusive):
            return records, 0
        append = records.append
        now = now_ms()
        read = 0
        for kview, vview in cursor.iternext():
            key = bytes(kview)
            if end is not None and key >= end:
                break
            read += len(vview)
            try:
                expires, version = unpack_header(vview)
            except StructError:
                raise self._corrupt(key) from None
            if expires and expires <= now:
                self._note(key)
                continue
            append(record_of(key, b"" if keys_only else vview[HEADER_SIZE:].tobytes(), expires or None, version))
            if len(records) >= limit:
                break
        return records, read

    def scan_range(self, span: ScanRange, keys_only: bool) -> Iterator[Page]:
        # One read transaction per page: a paused scan pins no snapshot (LMDB could not reuse
        # pages while it is open) and may resume on another thread.
        def fetch(lower: bytes, inclusive: bool) -> list[Record]:
            records, read = self._read(
                lambda txn: self._page(txn, lower, not inclusive, span.end, span.page, keys_only), buffers=True)
            if records and self._shared.map.due(read):
                self._drop_pages()  # between two pages no transaction of this scan is open
            return records

        return span.pages(fetch)

    def count(self, prefix: bytes = b"") -> int:
        end = prefix_end(prefix)

        def tally(txn: Any) -> int:
            cursor = txn.cursor()
            if not self._position(cursor, prefix, False):
                return 0
            now = now_ms()
            live = 0
            for kview, vview in cursor.iternext():
                if end is not None and bytes(kview) >= end:
                    break
                expires = unpack_header(vview)[0] if len(vview) >= HEADER_SIZE else 0
                live += not expires or expires > now
            return live

        return self._read(tally, buffers=True)

    # -- admin -------------------------------------------------------------------------------
    def clear(self) -> int:
        def work(txn: Any) -> int:
            now = now_ms()
            live = 0
            for _, vview in txn.cursor().iternext():
                expires = unpack_header(vview)[0] if len(vview) >= HEADER_SIZE else 0
                live += not expires or expires > now
            txn.drop(self._db, delete=False)
            return live

        self._noted.clear()
        return self._write(work)

    def stats(self) -> dict[str, Any]:
        def facts(txn: Any) -> dict[str, Any]:
            return dict(txn.stat(self._db))

        db_stat = self._read(facts)
        info = self._shared.info()
        path = self._opts.path
        return {
            "keys": self.count(),
            "records": db_stat["entries"],  # including expired records not yet deleted
            "path": os.path.abspath(path),
            "db": self._opts.db.decode(errors="replace"),
            "file_bytes": _size(os.path.join(path, "data.mdb")),
            "map_size": info["map_size"],
            "page_size": db_stat["psize"],
            "depth": db_stat["depth"],
            "leaf_pages": db_stat["leaf_pages"],
            "overflow_pages": db_stat["overflow_pages"],
            "readers": info["num_readers"],
            "last_txnid": info["last_txnid"],
            "sync": self._opts.sync,
            "max_key_size": self._env.max_key_size(),
        }

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._shared.stores.discard(self)
            release(self._shared)


def _stored_expiries(exps: list[int | None]) -> Iterable[int]:
    """The header's expiry field of each record (RecordHeader.expiry), by a C-level pass when
    the batch is all alike."""
    absent = exps.count(None)
    if absent == len(exps):
        return repeat(0, absent)
    if not absent:
        return map(max, exps, repeat(1))  # type: ignore[arg-type]  # none is None here
    return map(stored_expiry, exps)


def _stored_versions(given: list[int | None], taken: Iterable[int]) -> Iterable[int]:
    """Each record's own version, else the one taken from the clock for it."""
    absent = given.count(None)
    if not absent:
        return given  # type: ignore[return-value]  # none is None here
    if absent == len(given):
        return taken
    return [t if g is None else g for g, t in zip(given, taken, strict=True)]


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0

"""The RocksDBStore: kvctl records in a RocksDB LSM tree through rocksdict (raw bytes mode)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Self, TypeVar

from rocksdict import (
    AccessType,
    DBCompressionType,
    Env,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from kvctl.errors import BadURLError, CorruptError, ForeignStoreError, KvctlError, NoSuchStoreError, StoreIOError
from kvctl.hlc import HLC
from kvctl.plugin_kit import RecordHeader, ScanRange, StoreBase, new_clock, random_node
from kvctl.store import Capabilities, Page, Record, StoreURL, now_ms

from .errors import translate
from .meta import CLOCK_KEY, FORMAT, FORMAT_KEY, META_CF, NODE_KEY

decode, encode = RecordHeader.decode, RecordHeader.encode

T = TypeVar("T")

COMPRESSION: dict[str, Callable[[], DBCompressionType]] = {
    "none": DBCompressionType.none, "snappy": DBCompressionType.snappy, "lz4": DBCompressionType.lz4,
    "lz4hc": DBCompressionType.lz4hc, "zstd": DBCompressionType.zstd, "zlib": DBCompressionType.zlib,
    "bz2": DBCompressionType.bz2,
}
_OPTIONS = {"compression", "sync", "memory", "readonly", "write_buffer_size"}
CONFIG_FILE = "rocksdict-config.json"  # rocksdict's own, written by every open


class RocksDBStore(StoreBase):
    name = "rocksdb"
    description = "RocksDB LSM tree (rocksdict): ordered scans, TTL and versions in a record header, compression."
    capabilities = Capabilities(
        persistent=True, ttl=True, ordered_scan=True, versions=True, atomic_batch=True, host_local=True,
        durability="WAL per batch, fsync at close (sync=true: fsync every batch)", blocking_io=True,
    )

    def __init__(self, url: StoreURL, path: str, db: Rdict, *, memory_dir: str | None, readonly: bool,
                 sync: bool, compression: str, view_dir: str | None = None) -> None:
        self.url = url
        self.where = url.redacted()
        self.path = path
        # rocksdict's stubs type keys and values as str | int | float | bytes | bool; in raw mode
        # they are always bytes, so the handle is typed loosely here and precisely at our API.
        self._db: Any = db
        self._memory_dir = memory_dir  # in-memory mode: the scratch dir rocksdict insists on
        self._view_dir = view_dir  # read-only: the directory of links RocksDB opened (_read_view)
        self._write_failure: KvctlError | None = None  # the first write that failed (see _write)
        self.readonly = readonly
        self.sync = sync
        self.compression = compression
        if memory_dir is not None:
            self.capabilities = replace(  # type: ignore[misc]
                type(self).capabilities, persistent=False, durability="none (in-memory RocksDB env)")
        self._meta = self._guard(lambda: db.get_column_family_handle(META_CF))
        self._clock = self._init_clock()

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        url.check_options(_OPTIONS)
        where = url.redacted()
        memory = url.bool_option("memory", False)
        # A command that only reads opens the database read-only in RocksDB itself, like
        # ?readonly=true: nothing is created, flushed, compacted or purged.
        readonly = url.bool_option("readonly", False) or (url.reads_only and not memory)
        sync = url.bool_option("sync", False)
        compression = url.choice_option("compression", tuple(COMPRESSION), "lz4")
        options = Options(raw_mode=True)
        options.create_if_missing(not readonly)
        options.create_missing_column_families(not readonly)
        options.set_compression_type(COMPRESSION[compression]())
        options.set_write_buffer_size(url.size_option("write_buffer_size", 64 * 1024 * 1024))
        memory_dir: str | None = None
        if memory:
            if url.path.strip("/") or url.host:
                raise BadURLError(f"{where}: memory=true takes no path (use rocksdb://?memory=true)")
            if readonly:
                raise BadURLError(f"{where}: an in-memory store cannot be read-only")
            options.set_env(Env.mem_env())
            # rocksdict writes a small config file into the real directory even with a memory env.
            memory_dir = tempfile.mkdtemp(prefix="kvctl-rocksdb-mem-")
            path = memory_dir
        else:
            path = url.local_path()
            exists = os.path.isfile(os.path.join(path, "CURRENT"))
            if readonly and not exists:
                raise NoSuchStoreError(f"{where}: no RocksDB store at {path} (nothing created)")
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise StoreIOError(f"{where}: the parent directory {parent} does not exist")
            if exists:
                _check_ours(path, where)
        view_dir = _read_view(path, where) if readonly else None
        try:
            access = AccessType.read_only(False) if readonly else AccessType.read_write()
            families = {META_CF: Options(raw_mode=True)}
            db = Rdict(view_dir or path, options, column_families=families, access_type=access)
        except Exception as exc:
            for scratch in (memory_dir, view_dir):
                if scratch is not None:
                    shutil.rmtree(scratch, ignore_errors=True)
            raise translate(exc, where, path) from None
        write = WriteOptions()
        write.sync = sync
        if memory:
            # Nothing to recover after the process is gone.  (A property at run time; the stubs
            # declare a method.)
            setattr(write, "disable_wal", True)  # noqa: B010
        db.set_write_options(write)
        try:
            return cls(url, path, db, memory_dir=memory_dir, view_dir=view_dir, readonly=readonly,
                       sync=sync, compression=compression)
        except BaseException:
            _close_quietly(db)
            if view_dir is not None:
                shutil.rmtree(view_dir, ignore_errors=True)
            raise

    def _init_clock(self) -> HLC:
        """Check the store is kvctl's (or new), and restore its HLC node id and newest version."""
        db, meta = self._live_db(), self._meta

        def read() -> tuple[bytes | None, bytes | None, bytes | None, bool]:
            fmt = self._meta_get(FORMAT_KEY)
            node = self._meta_get(NODE_KEY)
            clock = self._meta_get(CLOCK_KEY)
            it = db.iter(ReadOptions())
            it.seek_to_first()
            has_records = it.valid()
            del it
            return fmt, node, clock, has_records

        fmt, node, clock, has_records = self._guard(read)
        if fmt is None and has_records:
            raise ForeignStoreError(
                f"{self.where}: {self.path} is a RocksDB database but not a kvctl store "
                "(no kvctl format marker); kvctl will not reinterpret its values"
            )
        if fmt is not None and fmt != FORMAT:
            raise CorruptError(f"{self.where}: {self.path} has an unknown kvctl RocksDB format {fmt[:40]!r}")
        if node is None:
            node = bytes([random_node()])
            if not self.readonly:
                batch = WriteBatch(raw_mode=True)
                batch.put(FORMAT_KEY, FORMAT, meta)
                batch.put(NODE_KEY, node, meta)
                self._write(batch)
        return new_clock(node[0], None if clock is None else int.from_bytes(clock, "big"))

    def _meta_get(self, key: bytes) -> bytes | None:
        db = self._live_db()
        family = db.get_column_family(META_CF)
        try:
            value = family.get(key)
        finally:
            del family  # a column family object keeps the database open: drop it now
        return value

    # -- plumbing --------------------------------------------------------------------------
    def _live_db(self) -> Any:
        if self._db is None:
            raise StoreIOError(f"{self.where}: the store is closed")
        return self._db

    def _failed(self, exc: Exception) -> KvctlError:
        if self._db is None:
            return StoreIOError(f"{self.where}: the store is closed")
        return translate(exc, self.where, self.path)

    def _guard(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            raise translate(exc, self.where, self.path) from None

    def _write(self, batch: WriteBatch) -> None:
        db = self._live_db()
        try:
            db.write(batch)
        except Exception as exc:
            failure = self._failed(exc)
            # RocksDB stops writing after an I/O error and answers every later write (and the log
            # flush at close) with "Writer has previous error": remember what it was.
            self._write_failure = self._write_failure or failure
            raise failure from None

    # -- reads -----------------------------------------------------------------------------
    def get(self, key: bytes) -> Record | None:
        try:
            raw = self._db.get(key)
        except Exception as exc:  # the hot path calls rocksdict directly, no closure
            raise self._failed(exc) from None
        return None if raw is None else decode(key, raw, now_ms())

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        if not keys:
            return []
        keys = keys if isinstance(keys, list) else list(keys)
        try:
            raws = self._db.get(keys)  # one multi-get
        except Exception as exc:  # the hot path calls rocksdict directly, no closure
            raise self._failed(exc) from None
        now = now_ms()
        return [None if raw is None else decode(key, raw, now) for key, raw in zip(keys, raws, strict=True)]

    def scan_range(self, span: ScanRange, keys_only: bool) -> Iterator[Page]:
        # the smallest key after ``after``
        start = span.prefix if span.after is None else span.after + b"\x00"
        while True:
            batch, exhausted = self._guard(partial(self._page, start, span.end, span.page, keys_only))
            if not batch:
                return
            yield span.page_of(batch)
            if exhausted:
                return
            start = batch[-1].key + b"\x00"

    def _page(self, start: bytes, end: bytes | None, size: int, keys_only: bool) -> tuple[list[Record], bool]:
        """Up to ``size`` live records from ``start``; a fresh iterator per page sees every write
        made between pages.  Expired records met on the way are deleted (they are garbage)."""
        db = self._live_db()
        read = ReadOptions()
        if end is not None:
            read.set_iterate_upper_bound(end)
        now = now_ms()
        batch: list[Record] = []
        expired: list[bytes] = []
        exhausted = True
        items = db.items(from_key=start, read_opt=read)
        for key, raw in items:
            rec = decode(key, raw, now, keys_only)
            if rec is None:
                expired.append(key)
                continue
            batch.append(rec)
            if len(batch) >= size:
                exhausted = False
                break
        del items
        if expired and not self.readonly:
            purge = WriteBatch(raw_mode=True)
            for key in expired:
                purge.delete(key)
            db.write(purge)
        return batch, exhausted

    def count(self, prefix: bytes = b"") -> int:
        return sum(len(p.records) for p in self.scan(prefix, keys_only=True, batch_size=10_000))

    # -- writes ----------------------------------------------------------------------------
    def set_many(self, records: Iterable[Record]) -> None:
        records = records if isinstance(records, list) else list(records)
        if not records:
            return
        check, clock = self._check, self._clock
        newest = 0
        for rec in records:  # everything is checked before anything is encoded or written
            check(rec.key, rec.value)
            if rec.version is not None:
                clock.observe(rec.version)
                newest = max(newest, rec.version)
        # One version for the whole batch: it is one atomic write, like a transaction's commit
        # timestamp (and one clock reading instead of one per record).
        stamp = clock.now() if any(rec.version is None for rec in records) else 0
        batch = WriteBatch(raw_mode=True)
        put = batch.put
        for rec in records:
            put(rec.key, encode(rec, stamp if rec.version is None else rec.version))
        batch.put(CLOCK_KEY, max(newest, stamp).to_bytes(8, "big"), self._meta)
        self._write(batch)  # one atomic WriteBatch

    def delete_many(self, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0
        unique = list(dict.fromkeys(keys))
        db = self._live_db()
        raws = self._guard(lambda: db.get(unique))
        now = now_ms()
        batch = WriteBatch(raw_mode=True)
        live = 0
        for key, raw in zip(unique, raws, strict=True):
            if raw is not None:  # expired ones are deleted too (garbage) but not counted
                batch.delete(key)
                live += decode(key, raw, now, keys_only=True) is not None
        if len(batch):
            self._write(batch)
        return live

    def clear(self) -> int:
        db = self._live_db()
        removed = self.count()

        def wipe() -> None:
            it = db.iter(ReadOptions())
            it.seek_to_first()
            first = it.key() if it.valid() else None
            it.seek_to_last()
            last = it.key() if it.valid() else None
            del it
            if first is not None and last is not None:
                batch = WriteBatch(raw_mode=True)
                batch.delete_range(first, last + b"\x00")  # one range tombstone for everything
                db.write(batch)
        self._guard(wipe)
        return removed

    # -- admin -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        db = self._live_db()

        def prop(name: str) -> int | None:
            return self._guard(lambda: db.property_int_value(name))
        return {
            "keys": self.count(),
            "estimated_keys": prop("rocksdb.estimate-num-keys"),
            "live_data_bytes": prop("rocksdb.estimate-live-data-size"),
            "sst_bytes": prop("rocksdb.total-sst-files-size"),
            "memtable_bytes": prop("rocksdb.cur-size-all-mem-tables"),
            "compression": self.compression,
            "path": None if self._memory_dir else self.path,
            "in_memory": self._memory_dir is not None,
        }

    def compact(self) -> None:
        """Compact the whole key range (drops deleted and overwritten versions from disk)."""
        db = self._live_db()
        self._guard(lambda: db.compact_range(None, None))

    def close(self) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        del self._meta  # column family handles keep the database (and its lock) alive
        try:
            if self._memory_dir is None:
                try:
                    if not self.readonly:
                        self._guard(lambda: db.flush_wal(True))
                except KvctlError as failed:
                    _close_quietly(db)
                    first = self._write_failure  # the flush only repeats it: report that one
                    raise (type(first)(first.message, hint="its write-ahead log could not be flushed at close")
                           if first is not None else failed) from None
                self._guard(db.close)
            else:
                _close_quietly(db)
        finally:
            for scratch in (self._memory_dir, self._view_dir):
                if scratch is not None:
                    shutil.rmtree(scratch, ignore_errors=True)


def _read_view(path: str, where: str) -> str:
    """A private directory of symbolic links to the database's files, for a read-only open.

    rocksdict writes its ``rocksdict-config.json`` into the directory it opens, read-only or
    not, which would change the store on a read and fails on a read-only medium.  RocksDB opened
    read-only only reads (CURRENT, the MANIFEST, OPTIONS, tables, WALs replayed into memory), so
    it can open the links; rocksdict's file lands in the private directory, removed on close.
    The lock and the info logs are not linked: nothing a read does may reach them."""
    view = tempfile.mkdtemp(prefix="kvctl-rocksdb-ro-")
    try:
        for name in os.listdir(path):
            if name not in (CONFIG_FILE, "LOCK") and not name.startswith("LOG"):
                os.symlink(os.path.join(os.path.abspath(path), name), os.path.join(view, name))
    except OSError as exc:
        shutil.rmtree(view, ignore_errors=True)
        raise translate(exc, where, path) from None
    return view


def _check_ours(path: str, where: str) -> None:
    """Refuse a RocksDB database kvctl did not create before opening it: opening it for writing
    would add kvctl's column family to it."""
    try:
        families = Rdict.list_cf(path, Options(raw_mode=True))
    except Exception as exc:
        raise translate(exc, where, path) from None
    if META_CF not in families:
        raise ForeignStoreError(
            f"{where}: {path} is a RocksDB database but not a kvctl store (no {META_CF} column "
            "family); nothing was changed"
        )


def _close_quietly(db: Rdict) -> None:
    # An in-memory env cannot sync a WAL, and rocksdict's close tries to: the data goes anyway.
    with contextlib.suppress(Exception):
        db.close()


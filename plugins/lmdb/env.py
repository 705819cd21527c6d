"""Opening LMDB environments: URL options, pre-flight checks, one shared handle per directory.

LMDB allows one open handle per environment per process (a second one would release the first
one's locks when closed), so stores of one directory in one process share a :class:`SharedEnv`,
reference-counted.  Records live in a named database (``?db=``, default ``kvctl``); the named
database ``kvctl.meta`` holds the format version and, per data database, a high-water mark of
the versions written ahead of the wall clock (the HLC seed; see ``LMDBStore._take_versions``).

The map grows instead of failing: a write transaction that meets ``MapFullError`` is aborted,
the map size doubled and the whole transaction retried, so a batch is never half-applied.

A command that only reads (``url.reads_only``) opens the environment read-only at the driver
level (``MDB_RDONLY``), like ``?readonly=true``: a missing directory, ``data.mdb`` or kvctl
database is :class:`~kvctl.errors.NoSuchStoreError` and nothing is created.  (``lock.mdb`` is
LMDB's reader table, shared memory that every read transaction writes its slot into by design;
it is not part of the store.  On a read-only medium LMDB reads without it, and a directory
that has none is read without one rather than given one.)  When a store of the same directory
is then opened for writing in the same process (``migrate`` between two databases of one
environment), the shared handle is reopened writable and its stores rebound.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

import lmdb

from kvctl.errors import (
    AuthError,
    BadURLError,
    ForeignStoreError,
    NoSuchStoreError,
    StoreIOError,
    UsageError,
    filesystem_error,
)
from kvctl.url import StoreURL

from .datafile import check_not_truncated
from .errors import READONLY_HINT, translate
from .mapping import MapGuard

FORMAT_VERSION = 1
META_DB = b"kvctl.meta"
FORMAT_KEY = b"format"
OPTIONS = {"map_size", "sync", "readonly", "db", "max_dbs", "max_readers"}
DEFAULT_MAP_SIZE = 1 << 30  # virtual address space, not disk: the file grows with the data
MAX_GROWTHS = 24  # doublings of the map per transaction before giving up


@dataclass(frozen=True)
class Options:
    path: str
    map_size: int
    sync: bool
    readonly: bool
    db: bytes
    max_dbs: int
    max_readers: int
    # readonly because the user asked (?readonly=true), not only because the command reads: a
    # handle opened for a reading command may be reopened writable, one asked for never is.
    asked_readonly: bool = False


def parse_options(url: StoreURL) -> Options:
    url.check_options(OPTIONS)
    db = url.option("db", "kvctl") or "kvctl"
    if db.encode() == META_DB:
        raise BadURLError(f"db={db} in {url.redacted()} is reserved for kvctl's metadata")
    max_dbs = url.int_option("max_dbs", 8)
    if max_dbs < 2:
        raise BadURLError(f"max_dbs={max_dbs} in {url.redacted()} must be at least 2 (data + metadata)")
    asked = url.bool_option("readonly", False)
    return Options(
        path=url.local_path().rstrip("/") or "/",
        map_size=url.size_option("map_size", DEFAULT_MAP_SIZE),
        sync=url.bool_option("sync", True),
        readonly=asked or url.reads_only,
        db=db.encode(),
        max_dbs=max_dbs,
        max_readers=url.int_option("max_readers", 126),
        asked_readonly=asked,
    )


@dataclass
class SharedEnv:
    """One open environment and the per-process state every store on it shares."""

    env: Any  # lmdb.Environment
    key: str
    readonly: bool
    asked_readonly: bool = False
    users: int = 0
    dbs: dict[bytes, Any] = field(default_factory=dict)
    # Write transactions (and map growth, which needs none active) are serialized in-process.
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    # The stores using this handle: after it is reopened writable each one's ``rebind()`` takes
    # the new environment and databases.
    stores: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)
    # The read transactions in progress, which a new map would invalidate (see .mapping).
    map: MapGuard = field(default_factory=MapGuard)
    psize: int = 0  # the environment's page size, read once when it is opened

    def __post_init__(self) -> None:
        # Nobody else uses a handle being made: its facts are read before any map can be replaced.
        self.psize = self.env.stat()["psize"]
        self.map.last_pgno = self.env.info()["last_pgno"]  # what the file holds already is not "grown"

    def info(self) -> dict[str, Any]:
        """``env.info()``, which reads the map's meta pages: under ``write_lock``, which every
        replacement of the map holds, so none can invalidate it half-way."""
        with self.write_lock:
            return dict(self.env.info())

    def grow(self) -> None:
        """Double the map; the caller holds ``write_lock`` and no transaction of its own."""
        with self.map.exclusive(wait=True):
            size = self.env.info()["map_size"]
            self.env.set_mapsize(size * 2)

    def adopt_size(self) -> None:
        """Another process grew the map: take its size (LMDB's MDB_MAP_RESIZED remedy); the
        caller holds ``write_lock`` and no transaction of its own."""
        with self.map.exclusive(wait=True):
            self.env.set_mapsize(0)

    def drop_pages(self) -> bool:
        """Replace the map by one of the same size, unless a read is in progress; whether it was.

        Drops the pages of ``data.mdb`` the process has mapped (see .mapping); the caller holds
        no transaction of its own.
        """
        with self.write_lock, self.map.exclusive(wait=False) as free:
            if free:
                self.env.set_mapsize(self.env.info()["map_size"])
                self.map.moved = 0
                self.map.replaced += 1
            return free


_OPEN: dict[str, SharedEnv] = {}
_OPEN_LOCK = threading.Lock()


def preflight(opts: Options, where: str) -> None:
    """Check the directory before LMDB opens (and, for a write, creates) anything in it."""
    path = opts.path
    if os.path.exists(path) and not os.path.isdir(path):
        hint = "give the directory that holds data.mdb" if os.path.basename(path) == "data.mdb" else None
        raise StoreIOError(f"{where}: {path} is a file, not an LMDB directory", hint=hint)
    data = os.path.join(path, "data.mdb")
    if opts.readonly and not os.path.isfile(data):
        raise NoSuchStoreError(f"{where}: no LMDB store at {path} (nothing created)")
    if not os.path.exists(path):
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StoreIOError(f"{where}: directory {parent} does not exist", hint="create it first")
        _check_writable_fs(parent, where, hint=None)
        return
    if not opts.readonly:
        _check_writable_fs(path, where, hint=READONLY_HINT if os.path.exists(data) else None)
    wanted = os.R_OK | os.X_OK | (0 if opts.readonly else os.W_OK)
    if not os.access(path, wanted):
        raise AuthError(f"{where}: permission denied on {path}")
    if os.path.exists(data):
        if not os.access(data, os.R_OK | (0 if opts.readonly else os.W_OK)):
            raise AuthError(f"{where}: permission denied on {data}")
        check_not_truncated(data, where)


def _check_writable_fs(path: str, where: str, hint: str | None) -> None:
    """A write on a read-only mount is refused by name before LMDB tries (its own error would
    be "Read-only file system" from mkdir or open, or "permission denied" from the checks)."""
    try:
        readonly = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return
    if readonly:
        failure = filesystem_error(where, errno.EROFS, path, hint=hint)
        assert failure is not None  # EROFS is one of the codes it words
        raise failure


def acquire(opts: Options, where: str) -> SharedEnv:
    """The shared environment for ``opts.path``, opened and checked on first use."""
    key = os.path.realpath(opts.path)
    with _OPEN_LOCK:
        shared = _OPEN.get(key)
        if shared is None:
            preflight(opts, where)
            shared = SharedEnv(_open_env(opts, where), key, opts.readonly, opts.asked_readonly)
            _OPEN[shared.key] = shared
        elif shared.readonly and not opts.readonly:
            if shared.asked_readonly:
                raise UsageError(f"{where}: {opts.path} is already open read-only in this process")
            _reopen_writable(shared, opts, where)
        try:
            _open_db(shared, opts, where)
        except BaseException:
            if shared.users == 0:
                _drop(shared)
            raise
        shared.users += 1
        return shared


def _reopen_writable(shared: SharedEnv, opts: Options, where: str) -> None:
    """Replace a handle opened for reading commands with a writable one (one handle per
    environment per process), and rebind the stores already using it."""
    preflight(opts, where)
    with shared.write_lock, shared.map.exclusive(wait=True):  # no read of another thread in the old handle
        shared.env.close()
        try:
            shared.env, shared.readonly = _open_env(opts, where), False
        except BaseException:
            # Leave a usable read-only handle behind for the stores already using this one.
            shared.env = _open_env(replace(opts, readonly=True), where)
            raise
        finally:
            names = list(shared.dbs)
            shared.dbs.clear()
            try:
                for name in names:
                    shared.dbs[name] = shared.env.open_db(name, create=False)
            except lmdb.Error as exc:
                raise translate(exc, where, opts.path) from None
            for store in list(shared.stores):
                store.rebind()


def release(shared: SharedEnv) -> None:
    with _OPEN_LOCK:
        shared.users -= 1
        if shared.users <= 0:
            _drop(shared)


def _drop(shared: SharedEnv) -> None:
    if _OPEN.get(shared.key) is shared:
        del _OPEN[shared.key]
    shared.env.close()


def _open_env(opts: Options, where: str) -> Any:
    # A read-only open of a directory without lock.mdb (a bare copy of data.mdb) would create
    # one; no LMDB process is using such a directory (each creates the file), so it is read
    # without the reader table instead of adding a file to the store.
    lock = not opts.readonly or os.path.exists(os.path.join(opts.path, "lock.mdb"))
    try:
        env = lmdb.open(
            opts.path, map_size=opts.map_size, subdir=True, readonly=opts.readonly,
            create=not opts.readonly, max_dbs=opts.max_dbs, max_readers=opts.max_readers,
            sync=opts.sync, metasync=opts.sync, lock=lock,
        )
    except (lmdb.Error, OSError) as exc:  # py-lmdb creates the directory with os.mkdir
        raise translate(exc, where, opts.path) from None
    if lock:
        with contextlib.suppress(lmdb.Error):
            env.reader_check()  # free reader slots left by crashed processes
    return env


def _open_db(shared: SharedEnv, opts: Options, where: str) -> None:
    """Open (creating on first use) the data and metadata databases, checking the format."""
    if opts.db in shared.dbs and META_DB in shared.dbs:
        return
    env = shared.env
    try:
        if META_DB not in shared.dbs:
            shared.dbs[META_DB] = _open_meta(env, opts, where)
        if opts.db not in shared.dbs:
            with shared.write_lock:
                shared.dbs[opts.db] = env.open_db(opts.db, create=not opts.readonly)
    except lmdb.NotFoundError:
        raise NoSuchStoreError(
            f"{where}: {opts.path} has no kvctl database {opts.db.decode(errors='replace')} "
            "(nothing created)"
        ) from None
    except lmdb.Error as exc:
        raise translate(exc, where, opts.path) from None


def _open_meta(env: Any, opts: Options, where: str) -> Any:
    with env.begin() as txn:  # the main database lists the named databases
        cursor = txn.cursor()
        ours, empty = cursor.set_key(META_DB), not cursor.first()
    if not ours:
        # An environment another program filled: creating our databases would add entries to
        # its main database, so leave it alone.
        if not empty:
            raise ForeignStoreError(
                f"{where}: {opts.path} is an LMDB environment kvctl did not create (its main "
                "database holds other keys); refusing to modify it"
            )
        if opts.readonly:
            raise lmdb.NotFoundError("no kvctl metadata")
    meta = env.open_db(META_DB, create=not opts.readonly)
    with env.begin(db=meta) as txn:
        found = txn.get(FORMAT_KEY)
    if found is None and not opts.readonly:
        with env.begin(db=meta, write=True) as txn:
            found = txn.get(FORMAT_KEY) or str(FORMAT_VERSION).encode()
            txn.put(FORMAT_KEY, found)
    if found is not None and int(found) > FORMAT_VERSION:
        raise UsageError(
            f"{where}: {opts.path} has format {int(found)}, newer than this kvctl's {FORMAT_VERSION}",
            hint="upgrade kvctl",
        )
    return meta


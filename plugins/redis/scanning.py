"""SCAN of Redis nodes, each page's values read in the same round trip as the next SCAN.

A page's keys are read by pipelined commands sent in one write with the SCAN of the next page,
on a connection held for the scan; the page is then made into records while the server already
works on that request.  So the client's work on one page overlaps the server's on the next, and
a page costs one round trip instead of two.  A cluster's masters are read at once
(:func:`all_nodes`): every master has its next request in hand while the client reads another's.

How a page's values are read:

* On a standalone server, while the database holds no key with an expiry:
  ``MULTI, MGET .., INFO keyspace, EXEC``.  The transaction makes the values and the database's
  count of keys with an expiry one moment's state, so a count of 0 proves that none of the
  values has an expiry.  The server spends about half the CPU it spends on a GET plus a
  PEXPIRETIME per key.  A key MGET answers nil for (gone, or of another type) is read again
  through the store's general path; a count above 0, or any error (INFO or MULTI refused),
  sends the page through that path and the rest of the scan reads per key.
* Otherwise (and on a cluster, where one MGET may not span slots): GET + expiry per key
  (bulk.reads).  Any error among a page's replies (a key of another Redis type, a redirection,
  a server without PEXPIRETIME) sends that page through the store's general read path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from itertools import chain, compress, repeat
from operator import is_not
from typing import TYPE_CHECKING, Any

from kvctl.errors import UsageError
from kvctl.store import Page, Record

from . import bulk, scripts
from .commands import errors_in, escape_glob, raise_first_error, ranges
from .errors import translating

if TYPE_CHECKING:
    from .base import RedisStoreBase

MULTI = scripts.pack([(b"MULTI",)])
INFO_EXEC = scripts.pack([(b"INFO", b"keyspace"), (b"EXEC",)])


class NodeScan:
    """One node's SCAN under ``prefix`` (a full key prefix) from SCAN cursor ``redis_cursor``,
    a request always in flight until the end: :meth:`start`, then :meth:`step` until ``done``,
    then :meth:`close`.  ``resume(c)`` is the page cursor once SCAN answered ``c``."""

    def __init__(self, store: RedisStoreBase, pool: Any, prefix: bytes, redis_cursor: int, batch_size: int,
                 keys_only: bool, resume: Callable[[int], Any]) -> None:
        self.store, self.pool, self.prefix = store, pool, prefix
        self.batch_size, self.keys_only, self.resume = batch_size, keys_only, resume
        # SCAN walks buckets until it holds COUNT keys (or has walked 10 * COUNT buckets), then
        # MATCH filters them: a page holds about COUNT keys whatever the table's size and load.
        self.scan = (b"SCAN", b"MATCH", escape_glob(prefix), b"COUNT", max(batch_size, 100))
        self.redis_cursor = redis_cursor
        self.conn: Any = None
        self.in_flight = False  # a request whose replies are not read yet: the connection is not reusable
        self.done = False
        self.scanning = True
        self.pending: list[bytes] = []  # keys found, not fetched yet
        self.fetching: list[bytes] = []  # the keys whose values the request in flight asks
        self.fetching_resume: Any = None
        self.fetch_replies = 0  # replies to the request in flight before its SCAN's
        self.fetch_mget = False  # the request in flight reads by MGET (see the module's docstring)
        self.mget = not store.cluster and not keys_only
        self.db = b"db%d:" % store.settings.db

    def start(self) -> None:
        with translating(self.store.where):
            self.conn = self.pool.get_connection()
            self._send((self.scan[0], self.redis_cursor, *self.scan[1:]))

    def step(self) -> tuple[list[Record], Any] | None:
        """Read the replies in flight, send the next request, and return the page read as its
        records and its ``resume`` (None: no record in it)."""
        with translating(self.store.where):
            replies = bulk.read_replies(self.conn, self.fetch_replies + self.scanning)
            self.in_flight = False
            fetched, fetched_resume, fetched_mget = self.fetching, self.fetching_resume, self.fetch_mget
            fetched_replies = replies[: self.fetch_replies]
            self.fetching = []
            command: tuple[Any, ...] | None = None
            if self.scanning:
                raise_first_error(replies[-1:])
                self.redis_cursor, found = int(replies[-1][0]), replies[-1][1]
                # The pattern already restricts the keys; checking again costs little and
                # guards against any server that reads a pattern differently.
                self.pending.extend(k for k in found if k.startswith(self.prefix))
                self.scanning = self.redis_cursor != 0
                if self.pending and (len(self.pending) >= self.batch_size or not self.scanning):
                    self.fetching, self.fetching_resume = self.pending, self.resume(self.redis_cursor)
                    self.pending = []
                if self.scanning:
                    command = (self.scan[0], self.redis_cursor, *self.scan[1:])
            if self.fetching and self.keys_only:  # nothing to fetch: the page is ready now
                fetched, fetched_resume, self.fetching = self.fetching, self.fetching_resume, []
                fetched_replies = []
            if self.fetching or command is not None:
                self._send(command)
            else:
                self.done = True
            if not fetched:
                return None
            if fetched_mget:
                records = self._mget_records(fetched, fetched_replies)
            else:
                records = self._records(fetched, fetched_replies)
        return (records, fetched_resume) if records else None

    def close(self, failed: bool = False) -> None:
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        if failed or self.in_flight:  # what the connection holds is unknown
            conn.disconnect()
        self.pool.release(conn)

    def _send(self, command: tuple[Any, ...] | None) -> None:
        keys = [] if self.keys_only else self.fetching
        chunks: list[bytes] = []
        self.fetch_mget = bool(keys) and self.mget
        if self.fetch_mget:
            slices = ranges(keys)
            chunks = [MULTI, *(_mget(keys[a:b]) for a, b in slices), INFO_EXEC]
            self.fetch_replies = len(slices) + 3  # OK, QUEUED per command, the EXEC's array
        elif keys:
            chunks = bulk.reads(keys, b"PTTL" if self.store.relative_ttl else b"PEXPIRETIME").chunks
            self.fetch_replies = 2 * len(keys)
        else:
            self.fetch_replies = 0
        if command is not None:
            chunks.append(scripts.pack([command]))
        self.conn.send_packed_command(chunks, check_health=False)
        self.in_flight = True

    def _records(self, full_keys: list[bytes], replies: list[Any]) -> list[Record]:
        store = self.store
        if self.keys_only or errors_in(replies):
            return store._page(full_keys, self.keys_only)
        keys = _cut(full_keys, len(store.ns))
        return [r for r in store._made(keys, replies[0::2], replies[1::2]) if r is not None]

    def _mget_records(self, full_keys: list[bytes], replies: list[Any]) -> list[Record]:
        store = self.store
        answer = replies[-1]
        with_ttl, values = None, []
        if isinstance(answer, list) and answer and isinstance(answer[-1], bytes) and not errors_in(replies):
            with_ttl = volatile(answer[-1], self.db)
            values = list(chain.from_iterable(answer[:-1]))
        if with_ttl != 0 or len(values) != len(full_keys):
            # a key with an expiry somewhere in the database (or INFO, MULTI refused): per key
            # from now on, this page too
            self.mget = False
            return store._page(full_keys, False)
        missing = values.count(None)
        if missing:  # gone since SCAN, or of another type: the general path tells
            present = list(map(is_not, values, repeat(None)))
            again = store._page([k for k, v in zip(full_keys, values, strict=True) if v is None], False)
            full_keys, values = list(compress(full_keys, present)), list(compress(values, present))
        keys = _cut(full_keys, len(store.ns))
        records = [r for r in store._made(keys, values, [-1] * len(keys)) if r is not None]
        return records + again if missing else records


def _cut(full_keys: list[bytes], cut: int) -> list[bytes]:
    return [k[cut:] for k in full_keys] if cut else full_keys


def _mget(keys: list[bytes]) -> bytes:
    """``MGET keys..`` in RESP, built without a Python loop."""
    lens = list(map(len, keys))
    heads = {n: b"$%d\r\n" % n for n in set(lens)}
    pieces: list[bytes] = [b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1)] + [b""] * (3 * len(keys))
    pieces[1::3] = map(heads.__getitem__, lens)
    pieces[2::3] = keys
    pieces[3::3] = repeat(b"\r\n", len(keys))
    return b"".join(pieces)


_EXPIRES = re.compile(rb"expires=(\d+)")


def volatile(info: bytes, db: bytes) -> int | None:
    """How many keys of database ``db`` (``b"db0:"``) have an expiry, from ``INFO keyspace``
    (0 when the database is not listed: it is empty); None when the reply is not understood."""
    if not info.startswith(b"# Keyspace"):
        return None
    for line in info.splitlines():
        if line.startswith(db):
            found = _EXPIRES.search(line)
            return int(found[1]) if found else None
    return 0


def node_pages(store: RedisStoreBase, pool: Any, prefix: bytes, redis_cursor: int, batch_size: int,
               keys_only: bool, resume: Callable[[int], str | None]) -> Iterator[Page]:
    """The pages of one node's keys under ``prefix`` (a full key prefix) from SCAN cursor
    ``redis_cursor`` to the end; ``resume(c)`` is the page cursor once SCAN answered ``c``."""
    node = NodeScan(store, pool, prefix, redis_cursor, batch_size, keys_only, resume)
    failed = False
    try:
        node.start()
        while not node.done:
            page = node.step()
            if page is not None:
                yield Page(*page)
    except BaseException:
        failed = True
        raise
    finally:
        node.close(failed)


# -- every master of a cluster at once -----------------------------------------------------------
# A cursor of such a scan: "m:" then, per master, "<name>=<SCAN cursor>" or "<name>=-" (read to
# its end), joined by ";".  Each master's position is where its pages yielded so far end, so a
# resumed scan reads what a master had fetched but not yet yielded again (a scan may repeat keys).
MULTI_CURSOR = "m:"


def cursor_of(positions: dict[str, int | None]) -> str | None:
    if all(at is None for at in positions.values()):
        return None
    return MULTI_CURSOR + ";".join(f"{name}={'-' if at is None else at}" for name, at in sorted(positions.items()))


def parse_cursor(cursor: str, names: list[str], where: str) -> dict[str, int | None]:
    """The position of each of ``names`` from a cursor of :func:`cursor_of`."""
    positions: dict[str, int | None] = {}
    for part in cursor[len(MULTI_CURSOR):].split(";"):
        name, _, at = part.rpartition("=")
        if not name or not (at == "-" or at.isdigit()):
            raise UsageError(f"not a scan cursor of {where}: {cursor!r}")
        positions[name] = None if at == "-" else int(at)
    if sorted(positions) != sorted(names):
        raise UsageError(f"scan cursor {cursor!r} names other masters than {where} has now: start the scan again")
    return positions


def all_nodes(store: RedisStoreBase, targets: list[tuple[str, Any]], prefix: bytes,
              positions: dict[str, int | None], batch_size: int, keys_only: bool) -> Iterator[Page]:
    """The pages of every node of ``targets`` under ``prefix``, read at once: each node from its
    SCAN cursor in ``positions`` (None: already read to its end), pages taken from the nodes in
    turn; page cursors are :func:`cursor_of` of every node's position."""
    positions = dict(positions)
    scans = {name: NodeScan(store, pool, prefix, positions[name] or 0, batch_size, keys_only, lambda at: at)
             for name, pool in targets if positions[name] is not None}
    failed = False
    try:
        for node in scans.values():
            node.start()  # every node has its first request before any reply is read
        active = list(scans.items())
        while active:
            for name, node in list(active):
                page = node.step()
                if node.done:
                    active.remove((name, node))
                if page is not None:
                    positions[name] = page[1] or None  # SCAN's 0: this node is read
                    yield Page(page[0], cursor_of(positions))
                elif node.done:
                    positions[name] = None
    except BaseException:
        failed = True
        raise
    finally:
        for node in scans.values():
            node.close(failed)

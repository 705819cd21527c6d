"""SCAN of one Redis node, each page's values read in the same round trip as the next SCAN.

A page's keys are read by pipelined GET + expiry commands (bulk.reads), sent in one write with
the SCAN of the next page on a connection held for the scan; the page is then made into records
while the server already works on that request.  So the client's work on one page overlaps the
server's on the next, and a page costs one round trip instead of two.

Any error among a page's replies (a key of another Redis type, a redirection on a cluster, a
server without PEXPIRETIME) sends that page through the store's general read path instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from kvctl.store import Page, Record

from . import bulk, scripts
from .commands import errors_in, escape_glob, raise_first_error
from .errors import translating

if TYPE_CHECKING:
    from .base import RedisStoreBase


def node_pages(store: RedisStoreBase, pool: Any, prefix: bytes, redis_cursor: int, batch_size: int,
               keys_only: bool, resume: Callable[[int], str | None]) -> Iterator[Page]:
    """The pages of one node's keys under ``prefix`` (a full key prefix) from SCAN cursor
    ``redis_cursor`` to the end; ``resume(c)`` is the page cursor once SCAN answered ``c``."""
    scan = (b"SCAN", b"MATCH", escape_glob(prefix), b"COUNT", max(batch_size, 100))
    per_key = 0 if keys_only else 2  # replies to a fetched key's commands
    with translating(store.where):
        conn = pool.get_connection()
    in_flight = False  # a request whose replies are not read yet: the connection is not reusable
    try:
        fetching: list[bytes] = []  # the keys whose values the request in flight asks
        fetching_resume: str | None = None
        scanning = True
        pending: list[bytes] = []  # keys found, not fetched yet
        with translating(store.where):
            _send(conn, [], b"", (scan[0], redis_cursor, *scan[1:]))
        in_flight = True
        while in_flight:
            with translating(store.where):
                replies = bulk.read_replies(conn, per_key * len(fetching) + scanning)
                in_flight = False
                fetched, fetched_resume = fetching, fetching_resume
                fetching = []
                command: tuple[Any, ...] | None = None
                if scanning:
                    raise_first_error(replies[-1:])
                    redis_cursor, found = int(replies[-1][0]), replies[-1][1]
                    # The pattern already restricts the keys; checking again costs little and
                    # guards against any server that reads a pattern differently.
                    pending.extend(k for k in found if k.startswith(prefix))
                    scanning = redis_cursor != 0
                    if pending and (len(pending) >= batch_size or not scanning):
                        fetching, fetching_resume, pending = pending, resume(redis_cursor), []
                    if scanning:
                        command = (scan[0], redis_cursor, *scan[1:])
                if fetching and keys_only:  # nothing to fetch: the page is ready now
                    fetched, fetched_resume, fetching = fetching, fetching_resume, []
                if fetching or command is not None:
                    _send(conn, [] if keys_only else fetching, _expiry(store), command)
                    in_flight = True
                records = _records(store, fetched, replies[: per_key * len(fetched)], keys_only) if fetched else []
            if records:
                yield Page(records, fetched_resume)
    except BaseException:
        in_flight = True  # a failure mid-way: what the connection holds is unknown
        raise
    finally:
        if in_flight:
            conn.disconnect()
        pool.release(conn)


def _expiry(store: RedisStoreBase) -> bytes:
    return b"PTTL" if store.relative_ttl else b"PEXPIRETIME"


def _send(conn: Any, keys: list[bytes], expiry: bytes, command: tuple[Any, ...] | None) -> None:
    chunks = bulk.reads(keys, expiry).chunks if keys else []
    if command is not None:
        chunks.append(scripts.pack([command]))
    conn.send_packed_command(chunks, check_health=False)


def _records(store: RedisStoreBase, full_keys: list[bytes], replies: list[Any], keys_only: bool) -> list[Record]:
    if keys_only or errors_in(replies):
        return store._page(full_keys, keys_only)
    cut = len(store.ns)
    keys = [k[cut:] for k in full_keys] if cut else full_keys
    return [r for r in store._made(keys, replies[0::2], replies[1::2]) if r is not None]

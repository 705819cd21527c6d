"""One COPY for a whole load into a table made inside it: :class:`CopyStream`.

Inside an atomic load into a table the load itself created (no other session can see it, it
holds no row and no tombstone), batches whose keys keep rising above every key sent before
cannot collide with anything.  They go as binary COPY data down one COPY statement that stays
open across batches: no round trip per batch, and the server applies one batch while the client
prepares the next (a batch is handed to the background COPY task and the caller moves on; the
COPY is awaited, and any error it met raised, before the connection does anything else).

The rows are built here in C-level passes (struct packing of whole columns, one ``bytes.join``)
in PostgreSQL's binary COPY format: columns ``key``, ``value``, ``expires_at``, ``version``.
"""

from __future__ import annotations

import asyncio
import struct
from itertools import chain, repeat
from typing import Any

import asyncpg

COLUMNS = ["key", "value", "expires_at", "version"]
_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, no extension
_TRAILER = struct.pack(">h", -1)
_head = struct.Struct(">hi").pack  # field count, key length
_length = struct.Struct(">i").pack  # value length
_no_expiry = struct.Struct(">iiq").pack  # NULL expires_at, then the version (8 bytes)
_expiry = struct.Struct(">iqiq").pack  # expires_at (8 bytes), then the version
# A chunk waiting for the COPY task while the next batch is prepared: enough to keep the server
# busy, few enough that memory stays flat (the caller waits when they are all taken).
QUEUED = 2
# The stream lasts the whole load, not one statement: the per-statement timeout is not its bound.
STREAM_TIMEOUT_S = 7 * 24 * 3600.0


def copy_rows(keys: list[bytes], values: list[bytes], expiries: list[int | None], versions: list[int]) -> bytes:
    """The rows as binary COPY tuples (no header or trailer).  Raises struct.error for a number
    outside bigint."""
    n = len(keys)
    no_expiry = expiries.count(None) == n
    key_lengths, value_lengths = list(map(len, keys)), list(map(len, values))
    kl, vl = key_lengths[0], value_lengths[0]
    if key_lengths.count(kl) == n and value_lengths.count(vl) == n and (no_expiry or None not in expiries):
        # every row the same shape (the usual bulk load): one struct call per row
        if no_expiry:
            row = struct.Struct(f">hi{kl}si{vl}siiq").pack
            return b"".join(map(row, repeat(4), repeat(kl), keys, repeat(vl), values, repeat(-1), repeat(8),
                                versions))
        row = struct.Struct(f">hi{kl}si{vl}siqiq").pack
        return b"".join(map(row, repeat(4), repeat(kl), keys, repeat(vl), values, repeat(8), expiries, repeat(8),
                            versions))
    heads = map(_head, repeat(4), key_lengths)
    lengths = map(_length, value_lengths)
    if no_expiry:
        tails: Any = map(_no_expiry, repeat(-1), repeat(8), versions)
    else:
        tails = [_no_expiry(-1, 8, v) if e is None else _expiry(8, e, 8, v) for e, v in zip(expiries, versions,
                                                                                         strict=True)]
    return b"".join(chain.from_iterable(zip(heads, keys, lengths, values, tails, strict=False)))  # maps: no length


class CopyStream:
    """A binary COPY into ``schema.table`` fed chunk by chunk (see the module docstring)."""

    def __init__(self, con: asyncpg.Connection, table: str, schema: str | None) -> None:
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUED)
        self._task = asyncio.ensure_future(con.copy_to_table(
            table, schema_name=schema, columns=COLUMNS, source=self._source(), format="binary",
            timeout=STREAM_TIMEOUT_S))
        # its error is raised by send or finish; one that comes after the load was abandoned
        # (the connection terminated under it) is nobody's to raise
        self._task.add_done_callback(_retrieved)

    async def _source(self) -> Any:
        yield _HEADER
        while (chunk := await self._chunks.get()) is not None:
            yield chunk
        yield _TRAILER

    async def send(self, chunk: bytes | None) -> None:
        """Queue ``chunk`` (None: the end), waiting while the queue is full; raises what ended
        the COPY if it has ended already."""
        task = self._task
        if self._chunks.full():
            put = asyncio.ensure_future(self._chunks.put(chunk))
            await asyncio.wait((put, task), return_when=asyncio.FIRST_COMPLETED)
            if not put.done():
                put.cancel()
        elif not task.done():
            self._chunks.put_nowait(chunk)
        if task.done():
            task.result()  # its failure; a COPY that ended without one is ended early:
            raise asyncpg.InterfaceError("the bulk COPY ended before its data did")
        await asyncio.sleep(0)  # let the COPY task write the chunk before the caller's next batch

    async def finish(self) -> None:
        """Send the end and wait for the server to take the COPY; raises its error."""
        if not self._task.done():
            await self.send(None)
        await self._task

    def cancel(self) -> None:
        """Abandon the COPY (its transaction is being rolled back)."""
        self._task.cancel()


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()

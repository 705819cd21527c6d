"""``atomic_load``: the writes of a block as one transaction (see
:class:`kvctl.abilities.AsyncAtomicLoad`).

The store's single connection carries the transaction; the batch writes inside it run as they
always do, their own transactions becoming savepoints.  A store not connected yet begins it
while opening its table, before any set-up, so a table created for the load goes away with it
when the block fails; such a table gets its secondary indexes at the end of the load, each
built once over the loaded rows, as pg_restore builds them.  A connection lost part-way ends
the transaction on the server; the next call then fails instead of reconnecting and writing
outside it (see PostgresCore._connection).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from kvctl.errors import UsageError

from .core import PostgresCore
from .use import Use


class AtomicLoads(PostgresCore):
    """``atomic_load`` (see the module docstring)."""

    @contextlib.asynccontextmanager
    async def atomic_load(self) -> AsyncIterator[None]:
        self._check_writable()
        if self._atomic_wanted:
            raise UsageError(f"{self._where}: a load is already open on this store")
        self._atomic_wanted = True
        try:
            async with Use(self, "begin a load", writing=True) as con:
                await self._begin_atomic(con)  # a connection already open: no table set-up to include
            yield
            async with Use(self, "commit a load", writing=True) as con:
                while self._indexes_later:
                    await con.execute(self._indexes_later.pop(0))
                await self._atomic_tx.commit()
        except BaseException:
            await self._abandon_atomic()
            raise
        finally:
            self._atomic_wanted, self._atomic_tx, self._indexes_later = False, None, []
            self._streamable = False

    async def _abandon_atomic(self) -> None:
        """Roll the load back, then drop the connection: its statements and staging table may
        name a table that the rollback removed."""
        tx, con = self._atomic_tx, self._con
        self._atomic_tx = None
        self._cancel_stream()
        if tx is not None and con is not None and not con.is_closed():
            async with self._lock:
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await tx.rollback()
        self._drop_connection()

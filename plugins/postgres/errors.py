"""asyncpg exceptions -> kvctl's error tree, at the plugin boundary.

Every message is one line, names the store by its redacted URL and never echoes a password
(asyncpg's own messages carry host, port, user and database names, never the password).
"""

from __future__ import annotations

import asyncio
import ssl
from contextlib import AbstractContextManager

import asyncpg
import asyncpg.exceptions as pgerr

from kvctl.errors import (
    AuthError,
    ConflictError,
    KvctlError,
    LimitError,
    StoreIOError,
    TimedOutError,
    UnavailableError,
    one_line,
    translating,
)

# Errors after which the connection cannot be used again: the store drops it and reconnects on
# the next call.
CONNECTION_LOST = (
    pgerr.PostgresConnectionError,
    pgerr.AdminShutdownError,
    pgerr.CrashShutdownError,
    pgerr.CannotConnectNowError,
    ConnectionError,
    OSError,
    TimeoutError,
    asyncio.IncompleteReadError,
    # the protocol's state machine broke (e.g. the server vanished mid-COPY): the connection is unusable
    asyncpg.InternalClientError,
)

# Everything the driver (and the transport under it) raises; translated at the boundary.
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
                 TimeoutError, asyncio.IncompleteReadError, ValueError)


def translate(exc: BaseException, where: str, action: str, *, writing: bool = False) -> KvctlError:
    """The kvctl error for a driver exception raised while doing ``action`` on ``where``.

    ``writing``: the call was a write, so a lost connection says what became of the batch: every
    write here is one statement or one transaction, so it was applied entirely or not at all.
    """
    detail = one_line(exc, first_line=True)
    outcome = " (the write is atomic: applied entirely or not at all)" if writing else ""
    if isinstance(exc, KvctlError):
        return exc
    if isinstance(exc, pgerr.InvalidPasswordError):
        return AuthError(f"{where}: authentication failed: {detail}")
    if isinstance(exc, pgerr.InvalidAuthorizationSpecificationError):
        return AuthError(f"{where}: not authorized: {detail}")
    if isinstance(exc, pgerr.InsufficientPrivilegeError):
        return AuthError(f"{where}: permission denied while trying to {action}: {detail}")
    if isinstance(exc, pgerr.InvalidCatalogNameError):
        return UnavailableError(f"{where}: {detail}", hint="create it with createdb, or fix the URL")
    if isinstance(exc, pgerr.InvalidSchemaNameError):
        return UnavailableError(f"{where}: {detail}", hint="create the schema, or fix ?schema=")
    if isinstance(exc, pgerr.QueryCanceledError | TimeoutError):
        return TimedOutError(f"{where}: timed out while trying to {action}{outcome}")
    if isinstance(exc, pgerr.TooManyConnectionsError):
        return UnavailableError(f"{where}: server refuses connections: {detail}")
    if isinstance(exc, CONNECTION_LOST):
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            return UnavailableError(f"{where}: TLS failure: {detail}")
        if action == "connect":
            return UnavailableError(f"{where}: cannot connect: {detail}")
        return UnavailableError(f"{where}: connection lost during {action}: {detail}{outcome}")
    if isinstance(exc, pgerr.ProgramLimitExceededError):
        return LimitError(f"{where}: the server refused the {action} as over a limit: {detail}")
    if isinstance(exc, pgerr.DeadlockDetectedError | pgerr.SerializationError):
        return ConflictError(f"{where}: {detail} during {action}; nothing was written", hint="retry")
    if isinstance(exc, pgerr.ReadOnlySQLTransactionError):
        return StoreIOError(f"{where}: the server is read-only (a standby?): {detail}")
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "?")
        return StoreIOError(f"{where}: {action} failed: {detail} (SQLSTATE {state}){outcome}")
    if isinstance(exc, asyncpg.InterfaceError):
        if "closed" in detail or "not connected" in detail:
            return UnavailableError(f"{where}: connection lost while trying to {action}: {detail}{outcome}")
        return StoreIOError(f"{where}: {action} failed: {detail}")
    return StoreIOError(f"{where}: {action} failed: {type(exc).__name__}: {detail}{outcome}")


def translated(where: str, action: str, *, writing: bool = False) -> AbstractContextManager[None]:
    """Re-raise any driver exception inside the block as a kvctl error (the driver's as cause)."""
    return translating(DRIVER_ERRORS, lambda exc: translate(exc, where, action, writing=writing))

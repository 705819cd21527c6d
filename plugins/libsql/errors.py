"""libsql-client (and aiohttp, sqlite3 underneath it) exceptions -> kvctl's error tree.

libsql-client reports SQLite failures as ``LibsqlError`` with the SQLite error name as its code
(``SQLITE_BUSY``, ``SQLITE_NOTADB`` ...) for local files and the server's codes for remote ones.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from contextlib import AbstractContextManager

import aiohttp
from libsql_client import LibsqlError

from kvctl.errors import (
    AuthError,
    BadURLError,
    ConflictError,
    CorruptError,
    KvctlError,
    LimitError,
    LockedError,
    StoreIOError,
    TimedOutError,
    UnavailableError,
    filesystem_error,
    one_line,
    translating,
)
from kvctl.plugin_kit import hot_journal_error

DRIVER_ERRORS = (LibsqlError, sqlite3.Error, aiohttp.ClientError, OSError, asyncio.TimeoutError)

_TRIGGER = "SQLITE_CONSTRAINT_TRIGGER"  # a trigger's RAISE(ABORT): the program's own refusal, not a conflict
_BY_CODE: dict[str, type[KvctlError]] = {
    "SQLITE_NOTADB": CorruptError,
    "SQLITE_CORRUPT": CorruptError,
    "SQLITE_TOOBIG": LimitError,
    "SQLITE_AUTH": AuthError,
    "SQLITE_PERM": AuthError,
    "CLIENT_CLOSED": StoreIOError,
    "HRANA_WEBSOCKET_ERROR": UnavailableError,
    "HRANA_PROTO_ERROR": UnavailableError,
}


def is_busy(exc: LibsqlError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED, any extended form (``SQLITE_BUSY_RECOVERY``, ``_SNAPSHOT`` ...)."""
    return (exc.code or "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def translate(exc: BaseException, where: str, action: str, *, writing: bool = False,
              path: str | None = None) -> KvctlError:
    """The kvctl error for a driver exception; ``path``: the local file, when there is one."""
    detail = one_line(exc, first_line=True)
    outcome = " (the batch is one transaction: applied entirely or not at all)" if writing else ""
    if isinstance(exc, KvctlError):
        return exc
    if isinstance(exc, aiohttp.WSServerHandshakeError | aiohttp.ClientResponseError):
        if exc.status in (401, 403):
            return AuthError(f"{where}: the server refused the auth token (HTTP {exc.status})")
        return UnavailableError(f"{where}: the server answered HTTP {exc.status} while trying to {action}")
    if isinstance(exc, asyncio.TimeoutError):
        return TimedOutError(f"{where}: timed out while trying to {action}{outcome}")
    if isinstance(exc, aiohttp.ClientSSLError):
        # the usual cause: a server without TLS (sqld's default) reached through a TLS URL
        return UnavailableError(f"{where}: TLS handshake failed while trying to {action}: {detail}",
                                hint="for a server without TLS use libsql://HOST:PORT?tls=0")
    if isinstance(exc, aiohttp.ClientError):
        return UnavailableError(f"{where}: cannot reach the server while trying to {action}: {detail}{outcome}")
    if isinstance(exc, LibsqlError):
        code = exc.code or ""
        explanation = exc.explanation
        if code == "SQLITE_READONLY_ROLLBACK":  # only local files are read read-only (see localread)
            return hot_journal_error(where, path)
        if code.startswith("URL_"):
            return BadURLError(f"{where}: {explanation}")
        if code == "SERVER_ERROR" and ("401" in explanation or "403" in explanation):
            return AuthError(f"{where}: the server refused the auth token ({explanation})")
        if "AUTH" in code:
            return AuthError(f"{where}: {explanation} ({code})")
        if code.startswith("SQLITE_FULL"):  # the shared wording of a full disk (the server's, when remote)
            full = filesystem_error(where, errno.ENOSPC, hint=f"{action} failed{outcome}")
            if full is not None:
                return full
        kind = LockedError if is_busy(exc) else _BY_CODE.get(code)
        if code.startswith("SQLITE_CONSTRAINT") and code != _TRIGGER:  # a foreign key, unique, check... refused it
            kind = ConflictError
        if code == "ARGS_INVALID" and "too big" in explanation:
            kind = LimitError  # sqld refuses an argument over its length limit before running anything
        if kind is CorruptError:
            return CorruptError(f"{where}: not a usable database: {explanation} ({code})")
        if kind is LockedError:
            return LockedError(f"{where}: the database is locked by another writer ({code}){outcome}",
                               hint="raise ?timeout= or retry")
        if kind is not None:
            return kind(f"{where}: {action} failed: {explanation} ({code}){outcome}")
        if code == "SQLITE_CANTOPEN":
            return StoreIOError(f"{where}: cannot open the database file: {explanation}")
        if code == "SERVER_ERROR":
            return UnavailableError(f"{where}: {explanation}{outcome}")
        return StoreIOError(f"{where}: {action} failed: {explanation} ({code}){outcome}")
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "")
        if name == "SQLITE_NOTADB":
            return CorruptError(f"{where}: not a database: {detail}")
        if isinstance(exc, sqlite3.IntegrityError) and name != _TRIGGER:
            return ConflictError(f"{where}: {action} failed: {detail}{outcome}")
        return StoreIOError(f"{where}: {action} failed: {detail}")
    if isinstance(exc, OSError):
        return UnavailableError(f"{where}: cannot reach the server while trying to {action}: {detail}{outcome}")
    return StoreIOError(f"{where}: {action} failed: {type(exc).__name__}: {detail}{outcome}")


def translated(where: str, action: str, *, writing: bool = False,
               path: str | None = None) -> AbstractContextManager[None]:
    """Re-raise any driver exception inside the block as a kvctl error (the driver's as cause)."""
    return translating(DRIVER_ERRORS, lambda exc: translate(exc, where, action, writing=writing, path=path))

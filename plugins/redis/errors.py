"""redis-py exceptions -> kvctl's error tree, at the plugin boundary.

Every message is one line and names the store by its redacted URL; redis-py's own messages name
host and port at most, never a password, so they are safe to append.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import redis.exceptions as rx

from kvctl.errors import (
    AuthError,
    KvctlError,
    StoreIOError,
    TimedOutError,
    UnavailableError,
    UsageError,
    one_line,
)
from kvctl.errors import translating as _translating

# What a server requiring a password answers a client that gave none: NOAUTH to a command (RESP2),
# or its long HELLO refusal (RESP3); a cluster wraps either in its own exception.
_NO_PASSWORD = ("noauth", "authentication required", "hello must be called with the client already authenticated")


def translate(exc: BaseException, where: str) -> KvctlError:
    """The kvctl error for a redis-py (or socket) exception; ``where`` is the redacted URL."""
    if isinstance(exc, KvctlError):
        return exc
    reason = one_line(exc)
    lowered = reason.lower()
    if any(text in lowered for text in _NO_PASSWORD):
        return AuthError(f"authentication failed for {where}: the server requires a password (NOAUTH)",
                         hint="give it in the URL: redis://[USER]:PASSWORD@HOST:PORT/DB, or ?password= "
                              "for unix://")
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError | rx.NoPermissionError
                  | rx.AuthenticationWrongNumberOfArgsError) or lowered.startswith(("wrongpass", "noauth")) \
            or "invalid username-password pair" in lowered:  # a cluster wraps WRONGPASS in its own exception
        return AuthError(f"authentication failed for {where}: {reason}",
                         hint="check the username and password in the URL")
    if isinstance(exc, rx.TimeoutError | TimeoutError):
        return TimedOutError(f"timed out talking to {where}: {reason}",
                             hint="raise ?timeout= in the URL if the server is just slow")
    if isinstance(exc, rx.BusyLoadingError):
        return UnavailableError(f"{where} is still loading its dataset: {reason}")
    if isinstance(exc, rx.ClusterDownError | rx.SlotNotCoveredError | rx.MaxConnectionsError):
        return UnavailableError(f"the cluster at {where} is unavailable: {reason}")
    if isinstance(exc, rx.ConnectionError | ConnectionError | OSError):
        return UnavailableError(f"cannot reach {where}: {reason}")
    if isinstance(exc, rx.RedisClusterException):
        return UnavailableError(f"the cluster at {where} failed: {reason}")
    if isinstance(exc, rx.OutOfMemoryError):
        # the server is full, as a disk is: no record is to blame, so none may be set aside as
        # over a limit (the batch writer's rule for a LimitError) while the rest goes on
        return StoreIOError(f"{where} is out of memory (maxmemory): {reason}")
    if isinstance(exc, rx.ReadOnlyError):
        return StoreIOError(f"{where} is a read-only replica: {reason}")
    if isinstance(exc, rx.ResponseError) and "db index is out of range" in lowered:
        return UsageError(f"no such database in {where}: {reason}")
    if isinstance(exc, rx.ResponseError) and lowered.startswith("err max number of clients"):
        return UnavailableError(f"{where} refused the connection: {reason}")
    if isinstance(exc, rx.DataError):
        return UsageError(f"bad request for {where}: {reason}")
    return StoreIOError(f"{where} failed: {reason}")


# What the driver raises; hot paths catch this tuple directly (a @contextmanager costs ~1 µs).
DRIVER_ERRORS = (rx.RedisError, rx.RedisClusterException, OSError)


def translating(where: str) -> AbstractContextManager[None]:
    """Re-raise any driver exception as the matching kvctl error (one line, no traceback)."""
    return _translating(DRIVER_ERRORS, lambda exc: translate(exc, where))

"""kvctl's one error tree.

Every failure a user can cause or meet is one of these; plugins translate their driver's
exceptions into them at the plugin boundary, so the CLI can print one line and exit with the
code below.  Messages never contain secrets: URLs are redacted before they are put in one.

    KvctlError                      exit 70  (anything not more specific)
    ├── UsageError                  exit 2   bad arguments or options
    │   ├── BadURLError             exit 2   malformed store URL, unknown profile
    │   ├── NoSuchStoreError        exit 2   a read on a store that does not exist (nothing created)
    │   ├── ForeignStoreError       exit 2   a database kvctl did not create (nothing altered)
    │   └── UnknownSchemeError      exit 2   no installed plugin for the URL's scheme
    ├── PluginLoadError             exit 3   a plugin is registered but cannot be imported
    ├── NotFoundError               exit 1   a key does not exist (``get``, ``ttl``)
    ├── DifferenceError             exit 1   stores differ (``diff``, ``migrate --verify``)
    ├── UnsupportedError            exit 4   the backend lacks a capability the call needs
    ├── LimitError                  exit 5   key or value over the backend's limit
    ├── ConflictError               exit 6   a write refused by a conflict policy
    ├── LockedError                 exit 7   the store is locked by another process
    ├── IncompleteError             exit 8   a copy finished but left keys behind (reported)
    ├── FeedGapError                exit 9   a change feed no longer covers a sync cursor
    ├── CorruptError                exit 65  a file is not what it claims (bad checksum, not a db)
    ├── StoreIOError                exit 74  reading or writing the store failed
    ├── UnavailableError            exit 69  a server is unreachable or went away
    │   └── TimedOutError           exit 69  an operation timed out
    └── AuthError                   exit 77  wrong password, token or permission
    (Ctrl-C)                        exit 130
    (SIGTERM, handled as Ctrl-C)    exit 143
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "AuthError",
    "BadURLError",
    "ConflictError",
    "CorruptError",
    "DifferenceError",
    "FeedGapError",
    "ForeignStoreError",
    "IncompleteError",
    "KvctlError",
    "LimitError",
    "LockedError",
    "NoSuchStoreError",
    "NotFoundError",
    "PluginLoadError",
    "SettingChangedWarning",
    "StoreIOError",
    "TimedOutError",
    "UnavailableError",
    "UnknownSchemeError",
    "UnsupportedError",
    "UsageError",
    "errno_in",
    "filesystem",
    "filesystem_error",
    "one_line",
    "translating",
]


class SettingChangedWarning(UserWarning):
    """A plugin changed a server setting for the user (e.g. Redis ``notify-keyspace-events`` for a
    change feed): one notice saying from what to what, and how to revert it.  Plugins never
    print; the cli shows it as a warning line, and not under ``--quiet``."""


class KvctlError(Exception):
    """Base of every error kvctl raises on purpose."""

    exit_code: int = 70

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(KvctlError):
    exit_code = 2


class BadURLError(UsageError):
    pass


class UnknownSchemeError(UsageError):
    pass


class NoSuchStoreError(UsageError):
    """A command that only reads named a store that does not exist; nothing was created."""


class ForeignStoreError(UsageError):
    """The URL names a database that holds other programs' tables and none of kvctl's.

    kvctl never alters such a database on a read, nor on a write without ``?create=true``."""


class PluginLoadError(KvctlError):
    exit_code = 3


class NotFoundError(KvctlError):
    exit_code = 1


class DifferenceError(KvctlError):
    exit_code = 1


class UnsupportedError(KvctlError):
    exit_code = 4


class LimitError(KvctlError):
    exit_code = 5


class ConflictError(KvctlError):
    exit_code = 6


class LockedError(KvctlError):
    exit_code = 7


class IncompleteError(KvctlError):
    exit_code = 8


class FeedGapError(KvctlError):
    """The change feed cannot serve changes since the cursor (retention passed, events lost).

    The sync engine catches it and falls back to a key-ordered diff, announcing it.
    """

    exit_code = 9


class CorruptError(KvctlError):
    exit_code = 65


class StoreIOError(KvctlError):
    exit_code = 74


class UnavailableError(KvctlError):
    exit_code = 69


class TimedOutError(UnavailableError):
    pass


TimeoutError_ = TimedOutError  # the former name, for outside plugins; will be removed


class AuthError(KvctlError):
    exit_code = 77


EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM: what a caller expects of a process it sent SIGTERM


def one_line(what: BaseException | str, *, limit: int = 300, first_line: bool = False) -> str:
    """``what`` as one line for an error message: runs of whitespace (newlines included) become
    one space, an exception without text is named by its type, and the text is cut at ``limit``
    characters.  ``first_line``: keep only the first line (drivers that append multi-line
    details, such as an SQL statement, to their message)."""
    text = str(what).strip()
    if first_line:
        text = text.split("\n", 1)[0]
    text = " ".join(text.split())
    if not text and isinstance(what, BaseException):
        text = type(what).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


@contextlib.contextmanager
def translating(driver_errors: tuple[type[BaseException], ...],
                translate: Callable[[BaseException], KvctlError]) -> Iterator[None]:
    """Re-raise a driver exception raised inside the block as the kvctl error ``translate``
    makes of it (the driver's exception kept as its cause); kvctl errors pass through.  Plugins
    wrap this at their boundary; hot paths may catch ``driver_errors`` directly instead (a
    context manager costs about a microsecond)."""
    try:
        yield
    except KvctlError:
        raise
    except driver_errors as exc:
        raise translate(exc) from exc


# The filesystem failures every backend words the same way: (what happened, error class).
_FILESYSTEM: dict[int, tuple[str, type[KvctlError]]] = {
    errno.ENOSPC: ("disk full", StoreIOError),
    errno.EDQUOT: ("disk quota exceeded", StoreIOError),
    errno.EROFS: ("read-only filesystem", StoreIOError),
    errno.EACCES: ("permission denied", AuthError),
    errno.EPERM: ("permission denied", AuthError),
}


def filesystem_error(where: str, code: int | None, path: str | os.PathLike[str] | None = None, *,
                     hint: str | None = None) -> KvctlError | None:
    """The one message for a full disk, a read-only filesystem or a denied permission, or None
    when ``code`` (an errno) is none of those and the caller keeps its own wording.

    ``where`` names the store (its redacted URL) or the file kvctl was writing; ``path`` the
    file or directory that failed, when it says more than ``where``.  A full disk or read-only
    filesystem is :class:`StoreIOError` (exit 74), a permission :class:`AuthError` (exit 77),
    on every backend: ``f"{where}: disk full ({path})"``.  Plugins whose driver reports only
    text (no errno) map the text to the errno first (:func:`errno_in`).
    """
    if code is None or (known := _FILESYSTEM.get(code)) is None:
        return None
    what, cls = known
    detail = f" ({os.fspath(path)}: {os.strerror(code)})" if path else f" ({os.strerror(code)})"
    return cls(f"{where}: {what}{detail}", hint=hint)


def errno_in(text: str) -> int | None:
    """The errno of a filesystem failure named in a driver's message text (drivers such as
    LMDB's and RocksDB's report ``strerror`` text, not the number), or None."""
    lowered = text.lower()
    for code in (*_FILESYSTEM, errno.ENOTDIR, errno.ENOENT):
        if os.strerror(code).lower() in lowered:
            return code
    return None


@contextlib.contextmanager
def filesystem(where: str, path: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Re-raise an ``OSError`` from the block as one line: :func:`filesystem_error`'s wording for
    a full disk, read-only filesystem or permission, else :class:`StoreIOError` with the OS's
    reason.  For kvctl's own files and directories (state, default store, checkpoints)."""
    try:
        yield
    except KvctlError:
        raise
    except OSError as exc:
        failed = exc.filename or path
        raise (filesystem_error(where, exc.errno, failed)
               or StoreIOError(f"{where}: {one_line(exc.strerror or exc)}"
                               + (f" ({os.fspath(failed)})" if failed else ""))) from exc

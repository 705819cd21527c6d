"""py-lmdb exceptions -> kvctl errors.  Messages name the store by its redacted URL, one line."""

from __future__ import annotations

import errno

import lmdb

from kvctl.errors import AuthError, CorruptError, KvctlError, LimitError, LockedError, StoreIOError

_CORRUPT = (
    lmdb.InvalidError, lmdb.CorruptedError, lmdb.VersionMismatchError, lmdb.PageNotFoundError,
    lmdb.BadChecksumError, lmdb.IncompatibleError, lmdb.PanicError,
)


def _errno(exc: BaseException) -> int | None:
    # py-lmdb raises plain lmdb.Error for OS errors, with the C error text ("Permission denied").
    if isinstance(exc, OSError):
        return exc.errno
    text = str(exc)
    for code, name in ((errno.EACCES, "Permission denied"), (errno.EPERM, "Operation not permitted"),
                       (errno.ENOSPC, "No space left"), (errno.ENOTDIR, "Not a directory"),
                       (errno.EROFS, "Read-only file system"), (errno.ENOENT, "No such file")):
        if name in text:
            return code
    return None


def translate(exc: BaseException, where: str, path: str) -> KvctlError:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, _CORRUPT):
        return CorruptError(f"{where}: {path} is not a usable LMDB environment ({detail})")
    if isinstance(exc, lmdb.LockError):
        return LockedError(f"{where}: cannot take the LMDB lock ({detail})")
    if isinstance(exc, lmdb.ReadersFullError):
        return LockedError(f"{where}: every LMDB reader slot is taken ({detail})", hint="raise ?max_readers=")
    if isinstance(exc, lmdb.BadValsizeError):
        return LimitError(f"{where}: a key is empty or over LMDB's key size limit ({detail})")
    if isinstance(exc, lmdb.MapFullError):
        return StoreIOError(f"{where}: the LMDB map is full and could not grow ({detail})")
    code = _errno(exc)
    if code in (errno.EACCES, errno.EPERM):
        return AuthError(f"{where}: permission denied on {path} ({detail})")
    if isinstance(exc, lmdb.ReadonlyError) or code == errno.EROFS:
        return AuthError(f"{where}: {path} is read-only ({detail})")
    if code == errno.ENOSPC:
        return StoreIOError(f"{where}: no space left for {path} ({detail})")
    return StoreIOError(f"{where}: {detail}")

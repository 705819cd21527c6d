"""py-lmdb exceptions -> kvctl errors.  Messages name the store by its redacted URL, one line."""

from __future__ import annotations

import errno
import os

import lmdb

from kvctl.errors import CorruptError, KvctlError, LimitError, LockedError, StoreIOError, errno_in, filesystem_error

_CORRUPT = (
    lmdb.InvalidError, lmdb.CorruptedError, lmdb.VersionMismatchError, lmdb.PageNotFoundError,
    lmdb.BadChecksumError, lmdb.IncompatibleError, lmdb.PanicError,
)
# A write refused because the environment is on a read-only medium: reads still work there.
READONLY_HINT = "commands that only read can use it; add ?readonly=true to open it read-only"


# Free space under which an EIO from a write is taken for a full disk (see _errno).
NEARLY_FULL = 1 << 20


def _errno(exc: BaseException, path: str) -> int | None:
    # py-lmdb raises plain lmdb.Error for OS errors, with the C error text ("Permission denied");
    # creating the directory raises OSError.
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    code = errno_in(str(exc))
    if code is None and "Input/output error" in str(exc) and _free_bytes(path) < NEARLY_FULL:
        # LMDB reports a short write as EIO, not ENOSPC (mdb_page_flush: "TODO: Use which
        # error code?"), and a write that fills the disk is a short write.
        code = errno.ENOSPC
    return code


def _free_bytes(path: str) -> int:
    try:
        fs = os.statvfs(path)
    except OSError:
        return NEARLY_FULL
    return fs.f_bavail * fs.f_frsize


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
    code = _errno(exc, path)
    failed = getattr(exc, "filename", None) or path
    found = filesystem_error(where, code, failed, hint=READONLY_HINT if code == errno.EROFS else None)
    if found is not None:
        return found
    if isinstance(exc, lmdb.ReadonlyError):
        return StoreIOError(f"{where}: {path} is open read-only ({detail})")
    return StoreIOError(f"{where}: {detail}")

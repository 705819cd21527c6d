"""rocksdict exceptions -> kvctl errors.

rocksdict raises plain ``Exception`` carrying RocksDB's status text ("IO error: ...",
"Corruption: ...", "Invalid argument: ..."), so the translation reads that text; a full disk,
read-only filesystem or denied permission gets kvctl's one wording for them
(:func:`kvctl.errors.filesystem_error`).
"""

from __future__ import annotations

from kvctl.errors import CorruptError, KvctlError, LockedError, StoreIOError, errno_in, filesystem_error


def translate(exc: BaseException, where: str, path: str) -> KvctlError:
    if isinstance(exc, KvctlError):
        return exc
    detail = " ".join(str(exc).split()) or type(exc).__name__
    lowered = detail.lower()
    if "lock" in lowered and ("resource temporarily unavailable" in lowered or "lock hold" in lowered
                              or "no locks available" in lowered):
        return LockedError(f"{where}: the RocksDB directory {path} is open in another process or store ({detail})")
    if lowered.startswith("corruption") or "file exists" in lowered or "not a directory" in lowered:
        return CorruptError(f"{where}: {path} is not a usable RocksDB directory ({detail})")
    found = filesystem_error(where, errno_in(detail), path)
    if found is not None:
        return found
    if "not supported in read only" in lowered:
        return StoreIOError(f"{where}: {path} is open read-only ({detail})")
    return StoreIOError(f"{where}: {detail}")

"""rocksdict exceptions -> kvctl errors.

rocksdict raises plain ``Exception`` carrying RocksDB's status text ("IO error: ...",
"Corruption: ...", "Invalid argument: ..."), so the translation reads that text.
"""

from __future__ import annotations

from kvctl.errors import AuthError, CorruptError, KvctlError, LockedError, StoreIOError


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
    if "permission denied" in lowered or "operation not permitted" in lowered:
        return AuthError(f"{where}: permission denied on {path} ({detail})")
    if "read only" in lowered or "read-only" in lowered or "not supported in read only" in lowered:
        return AuthError(f"{where}: {path} is opened read-only ({detail})")
    if "no space left" in lowered:
        return StoreIOError(f"{where}: no space left for {path} ({detail})")
    return StoreIOError(f"{where}: {detail}")

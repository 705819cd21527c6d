"""One writer per store directory: an exclusive ``flock`` on ``LOCK``, which holds the owner's PID.

flock locks belong to the open file description, so the kernel drops them when the owner dies
(even by SIGKILL): a crashed writer never leaves a stale lock.  A second writer (another process,
or a second open in the same process) is refused with the owner's PID.  Read-only opens take no
lock at all: they load a snapshot and never modify the directory.
"""

from __future__ import annotations

import fcntl
import os

from kvctl.errors import LockedError, StoreIOError

LOCK_NAME = "LOCK"


class DirLock:
    """Held from construction until :meth:`release`."""

    def __init__(self, directory: str, where: str) -> None:
        self.path = os.path.join(directory, LOCK_NAME)
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreIOError(f"{where}: cannot open lock file: {exc.strerror}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = self._read_owner()
            os.close(self._fd)
            self._fd = None
            mine = " (this process)" if owner == str(os.getpid()) else ""
            raise LockedError(
                f"{where}: store is locked by PID {owner or 'unknown'}{mine}",
                hint="one writer at a time; open with ?readonly=true to read alongside it",
            ) from None
        except OSError as exc:
            os.close(self._fd)
            self._fd = None
            raise StoreIOError(f"{where}: cannot lock the store: {exc.strerror}") from None
        # Overwrite then shrink: a concurrent reader of the PID never sees an empty file.
        pid = str(os.getpid()).encode()
        os.pwrite(self._fd, pid, 0)
        os.ftruncate(self._fd, len(pid))

    def _read_owner(self) -> str:
        assert self._fd is not None
        try:
            return os.pread(self._fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock

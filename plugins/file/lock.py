"""One writer per store directory: an exclusive ``flock`` on ``LOCK``, which holds the owner's PID.

flock locks belong to the open file description, so the kernel drops them when the owner dies
(even by SIGKILL): a crashed writer never leaves a stale lock.  A writer that finds the lock
taken by another process waits its turn, polling, for up to ``timeout_s`` (so concurrent
``kvctl set`` commands all land), then is refused with the owner's PID and how long it waited.
A second open in the same process is refused at once: waiting for itself could only time out.
Read-only opens take no lock at all: they load a snapshot and never modify the directory.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time

from kvctl.errors import LockedError, StoreIOError, filesystem_error

LOCK_NAME = "LOCK"
_FIRST_WAIT_S = 0.001
_MAX_WAIT_S = 0.05  # the longest pause between two attempts: a released lock is taken within this

# (device, inode) of every LOCK file this process holds, to tell "this process" from another.
_held: set[tuple[int, int]] = set()
_held_guard = threading.Lock()


class DirLock:
    """Held from construction until :meth:`release`."""

    def __init__(self, directory: str, where: str, timeout_s: float = 0.0) -> None:
        self.path = os.path.join(directory, LOCK_NAME)
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            st = os.fstat(self._fd)
        except OSError as exc:
            raise filesystem_error(where, exc.errno, self.path) \
                or StoreIOError(f"{where}: cannot open lock file: {exc.strerror}") from None
        self._id = (st.st_dev, st.st_ino)
        try:
            waited = self._acquire(timeout_s)
        except OSError as exc:
            self._close()
            raise StoreIOError(f"{where}: cannot lock the store: {exc.strerror}") from None
        except BaseException:  # Ctrl-C while waiting: no descriptor left behind
            self._close()
            raise
        if waited is not None:
            owner = self._read_owner()
            self._close()
            if waited < 0:
                raise LockedError(f"{where}: store is locked by PID {owner or 'unknown'} (this process)",
                                  hint="close the store before opening it again") from None
            raise LockedError(
                f"{where}: store is locked by PID {owner or 'unknown'}; waited {waited:.1f} s for it",
                hint="one writer at a time: raise ?timeout= to wait longer, or open with ?readonly=true "
                     "to read alongside it",
            ) from None
        # Overwrite then shrink: a concurrent reader of the PID never sees an empty file.
        pid = str(os.getpid()).encode()
        assert self._fd is not None
        os.pwrite(self._fd, pid, 0)
        os.ftruncate(self._fd, len(pid))

    def _acquire(self, timeout_s: float) -> float | None:
        """Take the lock: None when taken, else how long was waited (-1: this process holds it)."""
        assert self._fd is not None
        start = time.monotonic()
        pause = _FIRST_WAIT_S
        while True:
            with _held_guard:
                if self._id in _held:
                    return -1.0
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass
                else:
                    _held.add(self._id)
                    return None
            waited = time.monotonic() - start
            if waited >= timeout_s:
                return waited
            time.sleep(min(pause, timeout_s - waited))
            pause = min(pause * 2, _MAX_WAIT_S)

    def _read_owner(self) -> str:
        assert self._fd is not None
        try:
            return os.pread(self._fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return ""

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock

    def release(self) -> None:
        if self._fd is not None:
            with _held_guard:
                self._close()
                _held.discard(self._id)

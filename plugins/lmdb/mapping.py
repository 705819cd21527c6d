"""The memory map of an LMDB environment: dropping the pages bulk writes and scans touched, safely.

LMDB reads ``data.mdb`` through a read-only shared mapping.  A bulk write reads pages through
it (the right edge of the B-tree it appends to, each leaf while it is the last one), a scan
reads every page it passes, and every page read stays mapped into the process: clean,
reclaimable by the kernel, but counted in the process's resident set, which so grows with the
file (about a fifth of it on an ordered load, all of it on a full scan).  So after every
:data:`REMAP_EVERY` bytes written by bulk writes (``set_many``; counted as what the file grew
by) or of values read by scans, the map is replaced by an identical one: py-lmdb's
``set_mapsize`` with the current size makes LMDB unmap the file and map it again.  Nothing is
written; what the next transactions need faults back in, from the kernel's page cache while
the file is there.

Replacing the map invalidates every transaction, cursor and iterator open on the environment,
in every thread of the process (py-lmdb marks them invalid; a buffer into the old map would
point at nothing).  So every read transaction of a store is registered here while it runs
(:meth:`MapGuard.enter` / :meth:`MapGuard.leave`), and the map is replaced only when none is:
the drop after a batch or a page is skipped while another read is in progress (it is tried
again after the next one), and growing the map, which cannot be skipped, waits for the reads
in progress; a read that starts meanwhile waits for the new map.  A store keeps no
transaction open between calls (a scan takes one per page), so a scan paused between pages is
never in the way.

Why not ``madvise(MADV_DONTNEED)`` on the map, which would leave transactions valid: py-lmdb
gives the map's address only with LMDB 1.0 (``Environment.info()["map_addr"]`` is 0 with the
LMDB 0.9 it bundles), it would have to be called through ctypes, and dropping a shared file
mapping's pages so that they re-fault from the file is Linux's meaning of it: elsewhere
(macOS, the BSDs) it is advice the kernel may ignore, and Windows has no madvise.  Replacing
the map works wherever LMDB runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

REMAP_EVERY = 32 << 20  # bytes of keys and values put by bulk writes or read by scans between two drops
_POLL_S = 0.0005  # how often a map growth looks whether the reads in progress have ended


class MapGuard:
    """Who is reading an environment's map, and the lock that replaces it."""

    __slots__ = ("last_pgno", "lock", "moved", "reading", "replaced", "replacing")

    def __init__(self) -> None:
        # One item per read transaction in progress: list.append and list.pop are atomic, so
        # registering a read costs no lock.
        self.reading: list[None] = []
        self.replacing = False
        self.lock = threading.Lock()
        self.moved = 0  # bytes put by bulk writes or read by scans since the map was last replaced
        self.replaced = 0  # drops made (for tests and stats)
        self.last_pgno = 0  # the file's last page when a bulk write last looked

    def enter(self) -> None:
        """Register a read transaction about to begin; wait while the map is being replaced.

        A read registers first and looks at ``replacing`` second, the replacer sets it first and
        looks at ``reading`` second: one of the two always sees the other.
        """
        reading = self.reading
        reading.append(None)
        while self.replacing:
            reading.pop()
            with self.lock:  # held by the replacer until the new map is in place
                pass
            reading.append(None)

    def leave(self) -> None:
        self.reading.pop()

    @contextmanager
    def exclusive(self, *, wait: bool) -> Iterator[bool]:
        """Hold off new reads; yield whether none is in progress (with ``wait``, once none is).

        The caller must not have a read registered itself.
        """
        with self.lock:
            self.replacing = True
            try:
                while wait and self.reading:
                    time.sleep(_POLL_S)
                yield not self.reading
            finally:
                self.replacing = False

    def grown(self, last_pgno: int) -> int:
        """The pages the file grew by since the last call, given its last page now."""
        grown, self.last_pgno = last_pgno - self.last_pgno, last_pgno
        return max(grown, 0)

    def due(self, moved: int) -> bool:
        """Count ``moved`` bytes of a bulk write or a scan; whether the map's pages should be
        dropped.  (Two threads may count at once and lose one count: it only delays a drop.)"""
        self.moved += moved
        return self.moved >= REMAP_EVERY

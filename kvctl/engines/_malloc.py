"""Keeping freed memory in the process for the next block, where the C library allows it.

A bulk command allocates and frees buffers of a megabyte or so per block (a block's encoded
records, its compressed form, the columns it is built from).  glibc serves such sizes with a
fresh ``mmap`` and gives them back on ``free``, and trims the heap's free top back to the
system: each block's pages are then faulted in again, which costs as much kernel time as a
good part of the encoding itself.  Raising both thresholds keeps those pages for the next
block; the peak of memory in use is what it was, it is only not handed back between blocks.

The thresholds are the process's, for the rest of its life: call this from a bulk command,
not from code a long-lived program imports for other work.  Only ``snapshot create`` does so
far (import and restore allocate alike and may gain too; not measured).
"""

from __future__ import annotations

import functools
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
KEPT = 16 << 20  # bytes: well above a block, well below the memory a bulk command may use


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds to :data:`KEPT` (once per process); returns
    whether they are raised (False on another C library or system)."""
    return _raise_thresholds()


def _raise_thresholds() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here, not at import: every snapshot command imports this module

    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):  # musl's mallopt does nothing
            return False
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEPT)) and bool(mallopt(M_TRIM_THRESHOLD, KEPT))

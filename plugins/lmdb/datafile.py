"""A check of ``data.mdb`` against its own meta pages, made before LMDB maps the file.

LMDB maps the data file and follows page numbers into the map.  When the file is shorter than
the pages its meta page says are in use (a copy cut short by a full disk, a truncated
download), touching a page past the end of the file raises SIGBUS, which kills the process with
"Bus error" and no message; no exception can be caught.  LMDB itself never compares the file
size with the meta page, and py-lmdb exposes neither the meta pages before ``lmdb.open`` nor
any such check, so this module reads the two meta pages with :mod:`struct` and refuses a short
file as :class:`~kvctl.errors.CorruptError`.

The layout read (lmdb ``mdb.c``, 64-bit builds, native byte order); each of the first two pages
of the file is a meta page: a 16-byte page header, then ``MDB_meta``::

    offset 16   uint32  mm_magic, 0xBEEFC0DE
    offset 20   uint32  mm_version (1 for data files of LMDB 0.9)
    offset 40   uint32  the page size (mm_dbs[FREE_DBI].md_pad, LMDB's mm_psize)
    offset 136  uint64  mm_last_pg, the last page in use
    offset 144  uint64  mm_txnid, the transaction that wrote this meta page

The meta page with the higher transaction id is the current one (LMDB writes them in turn), so
the file must hold ``(mm_last_pg + 1) * page size`` bytes.  A file that is not an LMDB file at
all (wrong magic) is left to LMDB, which reports it as MDB_INVALID.  The check cannot see a file
truncated after it ran (by another process, while kvctl has it mapped): nothing can, short of
not mapping the file.
"""

from __future__ import annotations

import os
import struct

from kvctl.errors import CorruptError

MAGIC = 0xBEEFC0DE
_PAGE_HEADER = 16
_META = struct.Struct("=II16xI92xQQ")  # magic, version, page size, last page, txnid
_META_SIZE = _PAGE_HEADER + _META.size
_SUPPORTED = struct.calcsize("P") == 8  # pgno_t and size_t are 64-bit, as laid out above


def _meta_at(fd: int, offset: int) -> tuple[int, int, int, int] | None:
    """(version, page size, last page, txnid) of the meta page at ``offset``, or None when the
    bytes there are not a meta page."""
    data = os.pread(fd, _META_SIZE, offset)
    if len(data) < _META_SIZE:
        return None
    magic, version, psize, last_pg, txnid = _META.unpack_from(data, _PAGE_HEADER)
    if magic != MAGIC or psize < _META_SIZE or psize & (psize - 1):
        return None
    return version, psize, last_pg, txnid


def check_not_truncated(path: str, where: str) -> None:
    """Refuse a ``data.mdb`` shorter than its current meta page says it is."""
    if not _SUPPORTED:
        return
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return  # a new environment: LMDB writes the meta pages on its first open
            first = _meta_at(fh.fileno(), 0)
            if first is None:
                if size < _META_SIZE:
                    raise CorruptError(f"{where}: truncated LMDB file {path}: {size} bytes, "
                                       "shorter than one meta page")
                return  # not an LMDB file: LMDB says so (MDB_INVALID)
            psize = first[1]
            second = _meta_at(fh.fileno(), psize)
    except OSError:
        return  # unreadable: opening it reports why, in the plugin's wording
    if second is None:
        raise CorruptError(f"{where}: truncated LMDB file {path}: {size} bytes, shorter than its "
                           f"two meta pages ({2 * psize} bytes)")
    current = max(first, second, key=lambda meta: meta[3])
    needed = (current[2] + 1) * psize
    if size < needed:
        raise CorruptError(
            f"{where}: truncated LMDB file {path}: {size} bytes, but its last page in use "
            f"({current[2]}) needs {needed} bytes",
            hint="restore it from a complete copy",
        )

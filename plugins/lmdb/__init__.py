"""``lmdb:///abs/dir`` / ``lmdb://relative/dir``: records in an LMDB environment (a directory).

Options (query string): ``map_size`` (initial map, default ``1GiB``; it doubles whenever a write
finds it full), ``sync`` (``true`` default: fsync every commit; ``false`` trades the last commits
on a system crash for speed), ``readonly``, ``db`` (named database for the records, default
``kvctl``), ``max_dbs`` (default 8), ``max_readers`` (default 126).

Each stored value is a 16-byte header (8-byte big-endian expiry in ms, 0 = none; 8-byte
big-endian version) followed by the value: see :class:`kvctl.plugin_kit.RecordHeader`.  The directory
is created when missing by a command that writes, its parent is not; a command that only reads
opens it read-only and creates nothing.  A ``data.mdb`` shorter than its meta pages say is
refused (:mod:`kvctl_plugins.lmdb.datafile`).  Environment handling: :mod:`kvctl_plugins.lmdb.env`;
behaviour: :mod:`kvctl_plugins.lmdb.store`.
"""

from .store import LMDBStore

__all__ = ["LMDBStore"]

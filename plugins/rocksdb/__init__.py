"""``rocksdb:///abs/dir`` / ``rocksdb://relative/dir``: records in a RocksDB database (an LSM tree).

GridKV's Badger and BadgerMemory rows and Querator's BadgerDB, through rocksdict in raw bytes
mode.  Each value carries a 16-byte header (expiry ms, HLC version) before the value bytes:
see :class:`kvctl.plugin_kit.RecordHeader`.  Scans are ordered (an iterator seeks to the prefix or
the cursor and stops at ``prefix_end``); batches are one atomic ``WriteBatch``.  Expired records
are never returned, and the scans that meet them delete them.

Options: ``compression`` (``lz4`` default; ``none``, ``snappy``, ``zstd``, ``zlib``, ``bz2``,
``lz4hc``), ``sync`` (``false`` default: every batch goes to the write-ahead log and the log is
fsynced at close, so a clean exit is durable and a crash loses at most the batches since the
last sync; ``true``: fsync every batch), ``readonly``, ``write_buffer_size`` (memtable, default
``64MiB``), ``memory=true`` (``rocksdb://?memory=true``: RocksDB's in-memory environment,
private to the store and gone when it closes; not persistent).

The directory is created when missing by a command that writes (its parent must exist); a
command that only reads opens the database read-only and creates nothing.  A RocksDB database
that kvctl did not create is refused, never altered or misread (kvctl marks its own with a
``kvctl`` column family).
"""

from .store import RocksDBStore

__all__ = ["RocksDBStore"]

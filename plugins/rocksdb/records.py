"""The stored record layout: a 16-byte header before the value.

    offset 0   8 bytes  expiry, ms since the epoch, big-endian unsigned; 0 = never expires
    offset 8   8 bytes  version (kvctl.hlc), big-endian unsigned
    offset 16  ...      the value

The same layout as kvctl's LMDB backend, so a record's bytes mean the same thing in both.  Keys
are stored as given, so RocksDB's bytewise comparator orders them as kvctl's scans require.
"""

from __future__ import annotations

from struct import Struct

from kvctl.errors import CorruptError
from kvctl.plugin_kit import record_of
from kvctl.store import Record

HEADER = Struct(">QQ")
HEADER_SIZE = HEADER.size
pack_header = HEADER.pack
unpack_header = HEADER.unpack_from

# Metadata lives in its own column family, invisible to scans of the records.
META_CF = "kvctl"
FORMAT_KEY = b"format"
FORMAT = b"kvctl-rocksdb-1"
CLOCK_KEY = b"hlc"  # the newest version written, so versions keep growing across restarts
NODE_KEY = b"node"  # this store's HLC node id, chosen at random when the store is created


def stored_expiry(expires_at_ms: int | None) -> int:
    """The header's expiry field: 0 for none; a deadline at or before the epoch is 1 (expired)."""
    if expires_at_ms is None:
        return 0
    return expires_at_ms if expires_at_ms > 0 else 1


def encode(rec: Record, version: int) -> bytes:
    return pack_header(stored_expiry(rec.expires_at_ms), version) + rec.value


# Building a frozen dataclass goes through object.__setattr__ once per field (~0.5 µs), as much
# as a RocksDB point read.  An instance of a class with the same slots, filled with plain stores
# and then given Record as its class (allowed between identical layouts), is a genuine Record for
# a third of that.  The shortcut is checked against the real constructor once, at import.
make_record = record_of


def decode(key: bytes, raw: bytes, now: int, keys_only: bool = False) -> Record | None:
    """The record stored as ``raw``, or None when it has expired."""
    if len(raw) < HEADER_SIZE:
        raise CorruptError(f"record {key[:40]!r} is {len(raw)} bytes, shorter than its header")
    expires, version = unpack_header(raw)
    if expires and expires <= now:
        return None
    return make_record(key, b"" if keys_only else raw[HEADER_SIZE:], expires or None, version)

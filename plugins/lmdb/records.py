"""The stored record layout, and cheap :class:`kvctl.store.Record` construction.

Every LMDB value kvctl writes is a 16-byte header followed by the value bytes::

    offset 0   8 bytes  expiry, ms since the epoch, big-endian unsigned; 0 = never expires
    offset 8   8 bytes  version (kvctl.hlc), big-endian unsigned; versions fit 63 bits, so the
                        top bit stays 0 and is reserved for a future format flag
    offset 16  ...      the value

Records are built with the core's :func:`kvctl.store.record_of` (``make_record`` here).
"""

from __future__ import annotations

from struct import Struct

from kvctl.plugin_kit import record_of

HEADER = Struct(">QQ")
HEADER_SIZE = HEADER.size
pack_header = HEADER.pack
unpack_header = HEADER.unpack_from


def stored_expiry(expires_at_ms: int | None) -> int:
    """The header's expiry field: 0 for none; a deadline at or before the epoch is 1 (expired)."""
    if expires_at_ms is None:
        return 0
    return expires_at_ms if expires_at_ms > 0 else 1


make_record = record_of

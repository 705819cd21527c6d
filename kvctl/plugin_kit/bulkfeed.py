"""A bulk load as one change-feed entry: the marker a store writes in place of one entry per key.

A store whose feed is a table (postgres, sqlite) can load a batch into a key range that held no
row and no tombstone with one feed entry for the whole batch.  The entry's key is the load's
lowest key; its value is this header, the load's lowest and highest versions, then its highest
key.  A feed reader serves, in its place, the rows in that key range whose versions lie in that
range: the rows the load wrote that nothing has replaced since (whatever replaced them is in the
feed after the marker).  A row served that the load did not write is a current row anyway, which
last-writer-wins makes harmless.

The entry is stored as a deletion *with a value*, which no other change has, at version 0: a
reader that does not know the form applies it as a tombstone that loses to every write.
"""

from __future__ import annotations

import struct

from kvctl.errors import CorruptError
from kvctl.plugin_kit.display import show_key

_BULK_MAGIC = b"kvctl-bulk\x01"
_VERSIONS = struct.Struct(">qq")


def bulk_marker(first_key: bytes, last_key: bytes, low_version: int, high_version: int) -> tuple[bytes, bytes]:
    """The (key, value) of the feed entry of a bulk load."""
    return first_key, _BULK_MAGIC + _VERSIONS.pack(low_version, high_version) + last_key


def is_bulk_marker(value: bytes | None) -> bool:
    """Whether a deletion's value is a bulk load's marker."""
    return value is not None and value.startswith(_BULK_MAGIC)


def parse_bulk_marker(key: bytes, value: bytes) -> tuple[bytes, bytes, int, int]:
    """(first key, last key, lowest version, highest version) of a bulk load's feed entry."""
    if not value.startswith(_BULK_MAGIC):
        raise CorruptError(f"a change-feed row of key {show_key(key)} is neither a change nor a bulk load")
    low, high = _VERSIONS.unpack_from(value, len(_BULK_MAGIC))
    return key, value[len(_BULK_MAGIC) + _VERSIONS.size:], low, high

"""Change-feed cursors of the postgres backend: ``pg:<feed id>:<seq>``.

``<feed id>`` names one incarnation of one table's feed (random, in kvctl_meta): a cursor of
another table, or of this table before its feed was turned off and on again, is a feed gap, not
a position.  ``<seq>`` is the last change delivered (see :mod:`.feedsql` for the order).
"""

from __future__ import annotations

import struct

from kvctl.errors import CorruptError, UsageError
from kvctl.plugin_kit import show_key

PREFIX = "pg:"
NO_FEED = "none"  # the feed id in a cursor taken while the table had no feed


def make_cursor(feed_id: str | None, seq: int) -> str:
    return f"{PREFIX}{feed_id or NO_FEED}:{seq}"


def parse_cursor(cursor: object, where: str) -> tuple[str, int]:
    """(feed id, seq) of a cursor of this backend; UsageError for anything else."""
    parts = cursor.split(":") if isinstance(cursor, str) else []
    if len(parts) != 3 or parts[0] + ":" != PREFIX or not parts[1]:
        raise UsageError(f"{where}: not a postgres change-feed cursor: {cursor!r}")
    try:
        seq = int(parts[2])
    except ValueError:
        raise UsageError(f"{where}: malformed change-feed cursor: {cursor!r}") from None
    if not 0 <= seq < 1 << 63:
        raise UsageError(f"{where}: malformed change-feed cursor: {cursor!r}")
    return parts[1], seq


# A bulk load is one feed row, not one per key (see sql.Statements.record_bulk): its key is the
# load's lowest key, its value this header, the load's lowest and highest versions and then its
# highest key.  A reader serves, in its place, the rows in that key range whose versions lie in
# that range: the rows the load wrote that nothing has replaced since (what replaced them is in
# the feed after it).  A row served that the load did not write is a current row anyway, which
# last-writer-wins makes harmless.
_BULK_MAGIC = b"kvctl-bulk\x01"
_VERSIONS = struct.Struct(">qq")


def bulk_marker(first_key: bytes, last_key: bytes, low_version: int, high_version: int) -> tuple[bytes, bytes]:
    """The (key, value) of the feed row of a bulk load."""
    return first_key, _BULK_MAGIC + _VERSIONS.pack(low_version, high_version) + last_key


def parse_bulk_marker(key: bytes, value: bytes) -> tuple[bytes, bytes, int, int]:
    """(first key, last key, lowest version, highest version) of a bulk load's feed row."""
    if not value.startswith(_BULK_MAGIC):
        raise CorruptError(f"a change-feed row of key {show_key(key)} is neither a change nor a bulk load")
    low, high = _VERSIONS.unpack_from(value, len(_BULK_MAGIC))
    return key, value[len(_BULK_MAGIC) + _VERSIONS.size:], low, high

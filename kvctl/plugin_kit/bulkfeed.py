"""A bulk load as one change-feed entry: the marker a store writes in place of one entry per key.

A store whose feed is a table (postgres, sqlite) can load a batch of keys that had no row, in a
key range that held no tombstone, with one feed entry for the whole batch (the range may hold
other rows: a source read in no key order spreads every batch over it).  The entry's key is the load's
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
from collections.abc import Sequence
from itertools import starmap
from typing import Any

from kvctl.errors import CorruptError
from kvctl.plugin_kit.display import show_key
from kvctl.plugin_kit.records import record_of
from kvctl.plugin_kit.scan import page_size
from kvctl.store import Record

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


class BulkRows:
    """The rows a feed reader serves in a bulk load's place, a page at a time.

    The store runs its query for the rows with keys from :attr:`params`'s lower key (inclusive
    while :attr:`first`, then after it) up to its highest key, versions between its two versions,
    in key order, at most its last number of them (a page and one more, which tells whether the
    page is the last), and hands them to :meth:`page`, until :attr:`done`.
    """

    def __init__(self, key: bytes, marker: bytes, batch_size: int) -> None:
        self._lower, self._upper, self._low, self._high = parse_bulk_marker(key, marker)
        self._size = page_size(batch_size)  # at least one row, or a page would end nowhere
        self.first = True
        self.done = False

    @property
    def params(self) -> tuple[bytes, bytes, int, int, int]:
        """(lower key, highest key, lowest version, highest version, rows to fetch)."""
        return self._lower, self._upper, self._low, self._high, self._size + 1

    def page(self, rows: Sequence[Sequence[Any]]) -> tuple[list[Record], bool]:
        """The records of fetched (key, value, expires_at, version) rows and whether they are the
        load's last; the next fetch starts after them.  Empty when every row of the load was
        replaced since."""
        more = len(rows) > self._size
        records = list(starmap(record_of, rows[:self._size]))
        if more:
            self._lower, self.first = records[-1].key, False
        else:
            self.done = True
        return records, not more

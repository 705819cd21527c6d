"""The plugin kit: what backend plugins share beyond the contract in :mod:`kvctl.store`.

Plugins may import this package, :mod:`kvctl.store`, :mod:`kvctl.errors`, :mod:`kvctl.url`,
:mod:`kvctl.hlc` and :mod:`kvctl.registry` (composite stores open their children), nothing
else of kvctl's; they never import each other.  Everything here is optional: the minimal plugin
subclasses :class:`StoreBase` and implements four batch calls.
"""

from kvctl.plugin_kit.bases import AsyncStoreBase, StoreBase, closing_after
from kvctl.plugin_kit.bulkfeed import BulkRows, bulk_marker, is_bulk_marker, parse_bulk_marker
from kvctl.plugin_kit.display import show_key
from kvctl.plugin_kit.foreign import foreign_store_error
from kvctl.plugin_kit.hotjournal import hot_journal_error
from kvctl.plugin_kit.keyadmin import LockedKeyAdmin, check_conditional, conditional_record
from kvctl.plugin_kit.records import RecordHeader, check_limits, deadline_ms, new_record, new_records, record_of
from kvctl.plugin_kit.replication import (
    DEFAULT_FEED_RETENTION_CHANGES,
    TOMBSTONE_RETENTION_MS,
    ReplicationOptions,
    new_clock,
    random_node,
    tombstone_retention_ms,
)
from kvctl.plugin_kit.scan import ScanRange, key_cursor, page_size, parse_key_cursor, prefix_end

__all__ = [
    "DEFAULT_FEED_RETENTION_CHANGES",
    "TOMBSTONE_RETENTION_MS",
    "AsyncStoreBase",
    "BulkRows",
    "LockedKeyAdmin",
    "RecordHeader",
    "ReplicationOptions",
    "ScanRange",
    "StoreBase",
    "bulk_marker",
    "check_conditional",
    "check_limits",
    "closing_after",
    "conditional_record",
    "deadline_ms",
    "foreign_store_error",
    "hot_journal_error",
    "is_bulk_marker",
    "key_cursor",
    "new_clock",
    "new_record",
    "new_records",
    "page_size",
    "parse_bulk_marker",
    "parse_key_cursor",
    "prefix_end",
    "random_node",
    "record_of",
    "show_key",
    "tombstone_retention_ms",
]

"""`kvctl snapshot`: point-in-time files of a store (the format: FORMAT.md beside this file)."""

from .restoration import (
    SnapshotSummary,
    create,
    create_from,
    inspect,
    meta_filter,
    read_meta,
    restore,
    restore_into,
    verify,
)

__all__ = ["SnapshotSummary", "create", "create_from", "inspect", "meta_filter", "read_meta", "restore",
           "restore_into", "verify"]

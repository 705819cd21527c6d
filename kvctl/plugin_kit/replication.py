"""What stores that take part in replication share: their URL options and their clock."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from kvctl.errors import BadURLError
from kvctl.hlc import HLC, MAX_NODE
from kvctl.url import StoreURL

__all__ = [
    "DEFAULT_FEED_RETENTION_CHANGES",
    "TOMBSTONE_RETENTION_MS",
    "ReplicationOptions",
    "new_clock",
    "random_node",
    "tombstone_retention_ms",
]

# How long a deleted key's tombstone is kept by default, so last-writer-wins replication does not
# resurrect a key deleted less than that long ago.
TOMBSTONE_RETENTION_MS = 7 * 86_400_000
# The feed keeps a number of changes by default, so its size stays bounded whatever the write
# rate: 100,000 changes of 100-byte values are ~15 MB beside the data.  A sync that falls further
# behind than that pays for one key-ordered comparison instead (announced), never for a wrong result.
DEFAULT_FEED_RETENTION_CHANGES = 100_000


def tombstone_retention_ms(url: StoreURL) -> int:
    """``?tombstone_retention=DURATION`` (default 7 days)."""
    return url.duration_option_ms("tombstone_retention", TOMBSTONE_RETENTION_MS) or 0


@dataclass(frozen=True)
class ReplicationOptions:
    """``?feed=``, ``?feed_retention=`` and ``?tombstone_retention=`` of a store whose change feed
    is a table: ``feed`` None keeps the table's mode; a bare-integer retention is a number of
    changes, anything with a time unit an age (exactly one of the two is set)."""

    feed: bool | None = None
    feed_retention_changes: int | None = DEFAULT_FEED_RETENTION_CHANGES
    feed_retention_ms: int | None = None
    tombstone_retention_ms: int = TOMBSTONE_RETENTION_MS

    OPTIONS = frozenset({"feed", "feed_retention", "tombstone_retention"})

    @classmethod
    def from_url(cls, url: StoreURL, *, default_changes: int = DEFAULT_FEED_RETENTION_CHANGES) -> ReplicationOptions:
        """The options in ``url``; a feed keeps ``default_changes`` changes unless told otherwise."""
        feed = url.bool_option("feed", True) if url.option("feed") else None
        retention = (url.option("feed_retention") or "").strip()
        changes: int | None = default_changes
        age_ms: int | None = None
        if retention.isdigit():
            changes = int(retention)
            if changes < 1:
                raise BadURLError(f"option feed_retention=0 in {url.redacted()} would keep no feed (use feed=false)")
        elif retention:
            changes, age_ms = None, url.duration_option_ms("feed_retention", None)
        return cls(feed, changes, age_ms, tombstone_retention_ms(url))


def random_node() -> int:
    """A random HLC node id, so two stores writing in the same millisecond differ."""
    return secrets.randbelow(MAX_NODE + 1)


def new_clock(node: int | None = None, newest: int | None = None) -> HLC:
    """A store's clock: its node id (random when None), past ``newest``, the newest version the
    store already holds, so versions keep growing across restarts."""
    clock = HLC(random_node() if node is None else node)
    clock.observe(newest)
    return clock

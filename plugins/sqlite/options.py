"""The ``sqlite://`` URL's options, parsed and checked before anything touches the file.

``table`` (default ``kv``), ``timeout`` (busy timeout, ``30s``), ``synchronous`` (``normal``),
``journal_mode`` (``wal``), ``readonly`` (``false``), and:

``create=true``
    Lets a write add kvctl's table to a database that holds other programs' tables and none of
    kvctl's (without it such a database is refused, and a read never changes it).
``key=``, ``value=``, ``expires=``, ``version=``, ``json=``, ``sep=``, ``write=``, ``table=*``
    Mapped mode: another program's table read (and with ``write=true`` written) as a store, see
    :mod:`.mapped` and :mod:`kvctl.plugin_kit.mapped`.
``embedded=true``
    Marks kvctl's embedded default store (``config.default_store_url``): its directory is created
    by the first write, and a read before any write reads an empty store without creating anything.

The replication options:

``feed=true|false``
    The table's change feed: a change table filled by triggers (see :mod:`.triggers`).  Left out,
    an existing table keeps the mode it has and a new table gets a feed.  ``false`` drops the change
    table and its triggers (tombstones are still kept, so the store stays a correct replication
    destination); ``true`` creates them again with a new feed id, so every older cursor is a gap.
``feed_retention=100000`` or ``feed_retention=7d``
    How much of the feed to keep: a bare integer is a number of changes, anything with a time unit
    an age.  Older changes are purged by kvctl's writes (lazily, a bounded amount at a time); a
    cursor older than what is kept is a feed gap.
``tombstone_retention=7d``
    How long a deleted key's tombstone is kept, so that last-writer-wins replication does not
    resurrect a key deleted less than that long ago.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvctl.errors import BadURLError
from kvctl.plugin_kit import DEFAULT_FEED_RETENTION_CHANGES, TOMBSTONE_RETENTION_MS, ReplicationOptions
from kvctl.plugin_kit.mapped import MAPPED_OPTIONS, is_mapped
from kvctl.url import StoreURL

OPTIONS = {"table", "timeout", "synchronous", "journal_mode", "readonly", "create", "embedded",
           *ReplicationOptions.OPTIONS, *MAPPED_OPTIONS}
# An application's table (key=) or the listing (table=*): kvctl's own layout options do not apply.
MAPPED_MODE_OPTIONS = {"table", "timeout", "readonly", *MAPPED_OPTIONS}
DEFAULT_TIMEOUT_MS = 30_000  # ruv-swarm's busy_timeout
# Suffixes of the objects kept beside a table; a store table may not end with one of them.
RESERVED_SUFFIXES = ("__changes", "__tombs", "__kvctl_rebuild")
META_TABLE = "kvctl_meta"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Options:
    path: str
    table: str
    timeout_ms: int
    synchronous: str
    journal_mode: str
    readonly: bool  # ?readonly=true
    feed: bool | None = None  # None: keep the table's mode (a new table gets a feed)
    feed_retention_changes: int | None = DEFAULT_FEED_RETENTION_CHANGES  # exactly one of these two
    feed_retention_ms: int | None = None
    tombstone_retention_ms: int = TOMBSTONE_RETENTION_MS
    reads_only: bool = False  # the command only reads (StoreURL.reads_only)
    create: bool = False  # ?create=true: a write may add kvctl's table beside other programs' tables
    embedded: bool = False  # ?embedded=true: kvctl's embedded default store

    @property
    def writes(self) -> bool:
        """False when nothing may be created, altered or written: ?readonly=true or a read."""
        return not (self.readonly or self.reads_only)


def parse_options(url: StoreURL) -> Options:
    mapped = is_mapped(url)
    url.check_options(MAPPED_MODE_OPTIONS if mapped else OPTIONS)
    path = url.local_path()
    if path == ":memory:" or path.startswith("file:"):
        raise BadURLError(f"{url.redacted()} must name a database file (use memory:// for a scratch store)")
    table = url.name_option("table", "kv")
    lowered = table.lower()
    if not mapped and (not _IDENTIFIER.match(table) or lowered.startswith("sqlite_") or lowered == META_TABLE
            or lowered.endswith(RESERVED_SUFFIXES)):
        raise BadURLError(f"option table={table!r} in {url.redacted()} is not a plain table name "
                          f"(nor may it be {META_TABLE} or end with {', '.join(RESERVED_SUFFIXES)})")
    timeout_ms = url.duration_option_ms("timeout", DEFAULT_TIMEOUT_MS)
    replication = ReplicationOptions.from_url(url)
    return Options(
        path=path,
        table=table,
        timeout_ms=DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms,
        synchronous=url.choice_option("synchronous", ("off", "normal", "full", "extra"), "normal"),
        journal_mode=url.choice_option("journal_mode", ("wal", "delete", "truncate", "persist"), "wal"),
        readonly=url.bool_option("readonly", False),
        feed=replication.feed,
        feed_retention_changes=replication.feed_retention_changes,
        feed_retention_ms=replication.feed_retention_ms,
        tombstone_retention_ms=replication.tombstone_retention_ms,
        reads_only=url.reads_only,
        create=url.bool_option("create", False),
        embedded=url.bool_option("embedded", False),
    )

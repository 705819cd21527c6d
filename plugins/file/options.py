"""The URL options of ``file://`` stores."""

from __future__ import annotations

from dataclasses import dataclass

from kvctl.errors import BadURLError
from kvctl.plugin_kit import TOMBSTONE_RETENTION_MS, tombstone_retention_ms
from kvctl.url import StoreURL

FSYNC_MODES = ("always", "batch", "never")
DEFAULT_FSYNC = "batch"
DEFAULT_BATCH_MS = 10

KNOWN = {"fsync", "batch_ms", "segment_size", "compact_ratio", "compact_min", "inline_max", "readonly", "repair",
         "feed_retention", "tombstone_retention", "timeout", "create"}
# How long a writer waits for another process's lock: the sqlite and libsql backends' busy timeout.
DEFAULT_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class FileOptions:
    """``?fsync=always|batch|never`` is the durability policy:

    - ``always``: every write call is fdatasync'ed before it returns.
    - ``batch`` (default): every batch call (set_many, delete_many: what kvctl's engines use) is
      fdatasync'ed before it returns, one fsync for the whole batch; single-key set/delete are
      group-committed, fsynced together within ``batch_ms`` (default 10 ms), and ``close()`` syncs.
    - ``never``: written to the OS before returning (survives a process crash, not a power loss).

    ``?feed_retention=SIZE`` (default: the segment size) is how much of the newest log automatic
    compaction leaves alone, so the change feed still covers it: sealed segments are kept while
    the log after them is smaller than this.  ``?tombstone_retention=7d`` is how long a deletion
    is remembered (in memory and through compactions) for last-writer-wins replication.

    ``readonly``: open a consistent snapshot without the writer's lock and change nothing; also
    set for every command that only reads (:attr:`StoreURL.reads_only`).  ``?timeout=30s`` is how
    long a writer waits for the lock another writer holds.  ``?create=true`` lets a writer make a
    store in a directory that already holds other files (refused by default: a mistyped path
    must not turn somebody's directory into a store).
    """

    fsync: str = DEFAULT_FSYNC
    batch_ms: int = DEFAULT_BATCH_MS
    segment_size: int = 64 * 1024 * 1024  # the active segment is sealed past this size
    compact_ratio: float = 0.5  # compact automatically when garbage/file bytes reaches this (0: never)
    compact_min: int = 16 * 1024 * 1024  # ... and there are at least this many garbage bytes
    inline_max: int = 4096  # values up to this size are kept in memory; larger ones are read from disk
    readonly: bool = False
    repair: bool = False
    feed_retention: int | None = None  # None: segment_size
    tombstone_retention_ms: int = TOMBSTONE_RETENTION_MS
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    create: bool = False

    @property
    def feed_retention_bytes(self) -> int:
        return self.segment_size if self.feed_retention is None else self.feed_retention

    @classmethod
    def from_url(cls, url: StoreURL) -> FileOptions:
        url.check_options(KNOWN)
        ratio_text = url.option("compact_ratio")
        ratio = cls.compact_ratio
        if ratio_text:
            try:
                ratio = float(ratio_text)
            except ValueError:
                ratio = -1.0
            if not 0.0 <= ratio < 1.0:
                raise BadURLError(f"option compact_ratio={ratio_text!r} in {url.redacted()} must be in [0, 1)")
        batch_text = url.option("batch_ms") or ""
        # A bare number is milliseconds here (the option says so); "50ms" or "1s" work too.
        batch_ms = int(batch_text) if batch_text.isdigit() else url.duration_option_ms("batch_ms", DEFAULT_BATCH_MS)
        return cls(
            fsync=url.choice_option("fsync", FSYNC_MODES, DEFAULT_FSYNC),
            batch_ms=DEFAULT_BATCH_MS if batch_ms is None else max(1, batch_ms),
            segment_size=max(4096, url.size_option("segment_size", cls.segment_size)),
            compact_ratio=ratio,
            compact_min=url.size_option("compact_min", cls.compact_min),
            inline_max=url.size_option("inline_max", cls.inline_max),
            readonly=url.bool_option("readonly", False) or url.reads_only,
            repair=url.bool_option("repair", False),
            feed_retention=url.size_option("feed_retention", -1) if url.option("feed_retention") else None,
            tombstone_retention_ms=tombstone_retention_ms(url),
            timeout_ms=url.duration_option_ms("timeout", DEFAULT_TIMEOUT_MS) or 0,
            create=url.bool_option("create", False),
        )

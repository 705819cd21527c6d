"""Change-feed cursors of the postgres backend: ``pg:<feed id>:<seq>``.

``<feed id>`` names one incarnation of one table's feed (random, in kvctl_meta): a cursor of
another table, or of this table before its feed was turned off and on again, is a feed gap, not
a position.  ``<seq>`` is the last change delivered (see :mod:`.feedsql` for the order).
"""

from __future__ import annotations

from kvctl.errors import UsageError

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

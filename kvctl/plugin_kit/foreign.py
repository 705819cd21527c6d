"""Refusing a database that holds other programs' tables and none of kvctl's."""

from __future__ import annotations

from collections.abc import Sequence

from kvctl.errors import ForeignStoreError
from kvctl.url import StoreURL, redact

__all__ = ["foreign_store_error"]

FOREIGN_TABLES_SHOWN = 8


def foreign_store_error(url: StoreURL, tables: Sequence[str], *, option: str = "table") -> ForeignStoreError:
    """The refusal of a database that holds other programs' tables and none of kvctl's: a plain
    URL never changes a database kvctl did not create.  Each table is named with the URL that
    addresses it (``?table=NAME``), so the listing stays useful once kvctl can map other tables."""
    base = url.without_options(option, "create")
    glue = "&" if "?" in base else "?"
    listed = ", ".join(f"{name} ({redact(f'{base}{glue}{option}={name}')})" for name in tables[:FOREIGN_TABLES_SHOWN])
    if len(tables) > FOREIGN_TABLES_SHOWN:
        listed += f" and {len(tables) - FOREIGN_TABLES_SHOWN} more"
    hint = "kvctl cannot map other programs' tables yet"
    if not url.reads_only:
        hint += "; add create=true to the URL to keep a kvctl table beside them"
    return ForeignStoreError(
        f"{url.redacted()} holds other programs' tables and none of kvctl's: {listed}; nothing was changed",
        hint=hint,
    )

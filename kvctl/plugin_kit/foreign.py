"""Refusing a database that holds other programs' tables and none of kvctl's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kvctl.errors import ForeignStoreError
from kvctl.url import StoreURL, redact

__all__ = ["foreign_store_error"]

FOREIGN_TABLES_SHOWN = 8


def foreign_store_error(url: StoreURL, tables: Sequence[str], *, option: str = "table",
                        mapped: Mapping[str, str | None] | None = None) -> ForeignStoreError:
    """The refusal of a database that holds other programs' tables and none of kvctl's: a plain
    URL never changes a database kvctl did not create.  Each table is named with the URL that
    addresses it: with ``mapped`` (table name -> the query options of a read-only mapping, see
    :func:`kvctl.plugin_kit.mapped.suggested_options`; None: not mappable), the URL that reads its
    rows; otherwise ``?table=NAME``."""
    base = url.without_options(option, "create")
    glue = "&" if "?" in base else "?"

    def where(name: str) -> str:
        if mapped is None:
            return redact(f"{base}{glue}{option}={name}")
        options = mapped.get(name)
        return redact(f"{base}{glue}{options}") if options else "no key to map it by"

    listed = ", ".join(f"{name} ({where(name)})" for name in tables[:FOREIGN_TABLES_SHOWN])
    if len(tables) > FOREIGN_TABLES_SHOWN:
        listed += f" and {len(tables) - FOREIGN_TABLES_SHOWN} more"
    hint = ("each URL reads that table's rows; add write=true to change them, or use table=* to describe every table"
            if mapped is not None else "kvctl cannot map other programs' tables yet")
    if not url.reads_only:
        hint += "; add create=true to the URL to keep a kvctl table beside them"
    return ForeignStoreError(
        f"{url.redacted()} holds other programs' tables and none of kvctl's: {listed}; nothing was changed",
        hint=hint,
    )

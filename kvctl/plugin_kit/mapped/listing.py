"""Per-instance capabilities of a mapped store, and discovery: ``table=*`` lists the database's
tables, each with what a mapping of it would be and a ready-to-paste read-only URL."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Self
from urllib.parse import quote

from kvctl.errors import UnsupportedError
from kvctl.store import Capabilities, Page, Record, StoreURL

from ..bases import StoreBase
from ..scan import ScanRange
from .columns import KEY_KINDS, Kind, Mapping, TableInfo
from .spec import MAPPED_OPTIONS

__all__ = ["ListingStore", "describe_table", "mapped_capabilities", "suggested_options", "table_listing"]


def mapped_capabilities(base: Capabilities, mapping: Mapping) -> Capabilities:
    """A mapped store's capabilities: a TTL only with ``expires=``, versions only with
    ``version=``, byte-ordered scans only for one text or blob key column, never a change feed
    (kvctl installs nothing in an application's database), JSON values when the value is an
    object of several columns or a JSON column."""
    return dataclasses.replace(
        base, ttl=mapping.expires is not None, versions=mapping.version is not None,
        ordered_scan=mapping.ordered, change_feed=False, conditional_writes=False, typed_values=False,
        json_values=mapping.json_values,
    )


def suggested_options(info: TableInfo) -> str | None:
    """The query options of a read-only mapping of ``info`` (``table=…&key=…&value=…``), or None
    when it has no usable key."""
    key = info.key_candidates()
    if info.is_view or key is None:
        return None
    cols = {c.name: c for c in info.columns}
    if any(cols[k].kind not in KEY_KINDS or not cols[k].binary_equality for k in key):
        return None
    left = [c.name for c in info.columns if c.name not in key]
    if not left:
        return None
    value = left[0] if len(left) == 1 else "*"
    parts = [("table", info.name), ("key", ",".join(key)), ("value", value)]
    return "&".join(f"{k}={quote(v, safe=',*')}" for k, v in parts)


def _why_not(info: TableInfo) -> str:
    if info.is_view:
        return "a view (no key)"
    key = info.key_candidates()
    if key is None:
        return "no primary key or NOT NULL unique index"
    cols = {c.name: c for c in info.columns}
    bad = [k for k in key if cols[k].kind not in KEY_KINDS or not cols[k].binary_equality]
    if bad:
        return f"key column {bad[0]} is {cols[bad[0]].declared or cols[bad[0]].kind.value}"
    return "no column beside the key"


def describe_table(info: TableInfo, url: StoreURL) -> dict[str, Any]:
    """One table of a discovery listing."""
    options = suggested_options(info)
    base = url.without_options("table", "create", *MAPPED_OPTIONS)
    glue = "&" if "?" in base else "?"
    facts: dict[str, Any] = {
        "table": info.name,
        "columns": {c.name: c.declared or c.kind.value for c in info.columns},
        "primary_key": list(info.primary_key),
    }
    if info.rows is not None:
        facts["rows"] = info.rows
    times = [c.name for c in info.columns if c.kind in (Kind.TIME_TEXT, Kind.TIMESTAMP)]
    if times:
        facts["time_columns"] = times
    if info.referenced_by:
        facts["referenced_by"] = [f"{r.table}({', '.join(r.columns)}) ON DELETE {r.on_delete.upper()}"
                                  for r in info.referenced_by]
    if options is None:
        facts["mappable"] = False
        facts["why_not"] = _why_not(info)
    else:
        facts["mappable"] = True
        facts["url"] = f"{base}{glue}{options}"
    return facts


def table_listing(tables: Iterable[TableInfo], url: StoreURL) -> list[Record]:
    """The records of a discovery listing: key = table name, value = its description (JSON)."""
    out = [Record(t.name.encode(), json.dumps(describe_table(t, url), ensure_ascii=False,
                                              separators=(",", ":")).encode())
           for t in tables]
    return sorted(out, key=lambda r: r.key)


class ListingStore(StoreBase):
    """A read-only store of a discovery listing (``table=*``): one record per table.  Plugins
    build it from their catalog; sync, the adapter serves async callers."""

    name = "listing"
    description = "tables of a database (table=*), with a mapping URL for each"
    capabilities = Capabilities(persistent=True, ordered_scan=True, json_values=True, blocking_io=False)

    def __init__(self, url: StoreURL, records: Sequence[Record], backend: str) -> None:
        self.url = url
        self._records = list(records)
        self._backend = backend

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        raise UnsupportedError("a table listing is opened by its plugin")

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        by_key = {r.key: r for r in self._records}
        return [by_key.get(k) for k in keys]

    def scan_range(self, span: ScanRange, keys_only: bool) -> Iterator[Page]:
        def fetch(lower: bytes, inclusive: bool) -> list[Record]:
            hits = [r for r in self._records
                    if (r.key >= lower if inclusive else r.key > lower)
                    and r.key.startswith(span.prefix) and (span.end is None or r.key < span.end)]
            return [Record(r.key) if keys_only else r for r in hits[:span.page]]

        yield from span.pages(fetch)

    def set_many(self, records: Iterable[Record]) -> None:
        raise self._read_only()

    def delete_many(self, keys: Sequence[bytes]) -> int:
        raise self._read_only()

    def clear(self) -> int:
        raise self._read_only()

    def stats(self) -> dict[str, Any]:
        return {"keys": len(self._records), "listing": f"tables of a {self._backend} database (table=*)"}

    def _read_only(self) -> UnsupportedError:
        where = self.url.redacted() if self.url is not None else self.name
        return UnsupportedError(f"{where}: table=* lists the tables; it cannot be written",
                                hint="open one table with its url from the listing")

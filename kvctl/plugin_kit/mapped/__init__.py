"""Mapped tables: an application's own SQL table read (and, when allowed, written) as a store.

Backend-independent parts only; a dialect (the sqlite, libsql and postgres plugins) supplies the
catalog (a :class:`TableInfo`) and the SQL, and builds on these:

* :class:`MappingSpec` (:mod:`.spec`): the URL's (or profile's) ``table``, ``key``, ``value``,
  ``expires``, ``version``, ``json``, ``sep``, ``write`` options, parsed; :func:`is_mapped`.
* :func:`resolve` (:mod:`.columns`): the spec checked against the table, a :class:`Mapping`;
  every refusal is one line (exit 2 for a mapping that cannot work, exit 4 for writes it forbids).
* :class:`KeyCodec` (:mod:`.keys`): key columns <-> key bytes (composite keys joined by ``sep``
  with reversible escaping), and a prefix as equality + range conditions (:class:`PrefixPlan`).
* :class:`ValueCodec` (:mod:`.values`): value columns <-> value bytes (one column's bytes, or a
  JSON object), :func:`read_time_ms`/:func:`time_param` for the expires/version columns.
* :func:`mapped_capabilities`, :func:`table_listing` (:mod:`.listing`): per-instance
  capabilities, and the discovery listing (``table=*``) with a URL for each table.
"""

from .columns import KEY_KINDS, Column, ForeignRef, Kind, Mapping, TableInfo, TimeMapping, resolve
from .keys import KeyCodec, PrefixPlan, text_successor
from .listing import ListingStore, describe_table, mapped_capabilities, suggested_options, table_listing
from .spec import ALL_COLUMNS, DISCOVERY, MAPPED_OPTIONS, MappingSpec, TimeColumn, is_mapped
from .times import format_text, parse_time_us, rfc3339
from .values import ValueCodec, read_time_ms, time_param

__all__ = [
    "ALL_COLUMNS",
    "DISCOVERY",
    "KEY_KINDS",
    "MAPPED_OPTIONS",
    "Column",
    "ForeignRef",
    "KeyCodec",
    "Kind",
    "ListingStore",
    "Mapping",
    "MappingSpec",
    "PrefixPlan",
    "TableInfo",
    "TimeColumn",
    "TimeMapping",
    "ValueCodec",
    "describe_table",
    "format_text",
    "is_mapped",
    "mapped_capabilities",
    "parse_time_us",
    "read_time_ms",
    "resolve",
    "rfc3339",
    "suggested_options",
    "table_listing",
    "text_successor",
    "time_param",
]

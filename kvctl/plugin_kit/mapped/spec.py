"""The mapping a URL asks for: ``key=`` switches a SQL store URL to mapped mode.

Options (the same names in a TOML profile, lists as arrays):

``table=NAME``          the application's table (``table=*``: discovery, a listing of tables)
``key=C1[,C2…]``        key column(s), in order: the primary key or a NOT NULL unique index
``value=C | C1,C2 | *`` one column as the value's bytes; several, or ``*`` (every column not used
                        as key, expires or version), as one JSON object; default: the only such column
``expires=C[:unit]``    the expiry column; ``unit`` is ``s``/``ms``/``us``/``ns`` for integers, or
                        ``sql``/``rfc3339`` for how a write spells it in a text column
``version=C[:unit]``    the last-modified column, read as the record's version (same units)
``json=C1[,C2…]``       text columns that hold JSON documents
``sep=/``               joins the components of a composite key
``write=true|cascade``  allows writes; ``cascade`` also deletes rows that others reference with
                        ON DELETE CASCADE / SET NULL / SET DEFAULT
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvctl.errors import BadURLError
from kvctl.url import StoreURL

from .times import INTEGER_UNITS, TEXT_FORMATS

__all__ = ["ALL_COLUMNS", "DISCOVERY", "MAPPED_OPTIONS", "MappingSpec", "TimeColumn", "is_mapped"]

MAPPED_OPTIONS = frozenset({"key", "value", "expires", "version", "json", "sep", "write"})
DISCOVERY = "*"
ALL_COLUMNS = ("*",)  # value=*
_UNITS = (*INTEGER_UNITS, "ns", *TEXT_FORMATS)
_NAME = re.compile(r"^[^\x00\"]{1,128}$")  # quoted as an identifier: anything but NUL and '"'


@dataclass(frozen=True)
class TimeColumn:
    """An ``expires=``/``version=`` column and its unit (None: the column's type decides)."""

    column: str
    unit: str | None = None


@dataclass(frozen=True)
class MappingSpec:
    """A parsed mapping, before it is checked against the table (see :func:`.columns.resolve`)."""

    table: str
    key: tuple[str, ...]
    value: tuple[str, ...] | None = None  # None: the only column left; ALL_COLUMNS: value=*
    expires: TimeColumn | None = None
    version: TimeColumn | None = None
    json: tuple[str, ...] = ()
    sep: bytes = b"/"
    write: bool = False
    cascade: bool = False

    @classmethod
    def from_url(cls, url: StoreURL) -> MappingSpec:
        """The mapping of a URL with ``key=`` (see :func:`is_mapped`); :class:`BadURLError` for
        a malformed option.  The plugin checks its own options; these are all this reads."""
        where = url.redacted()
        table = url.option("table") or ""
        if not table or table == DISCOVERY:
            raise BadURLError(f"{where}: key= needs table=NAME (table=* lists the tables)")
        _check_name(table, "table", where)
        key = _columns(url, "key", where)
        if not key:
            raise BadURLError(f"{where}: key= names no column")
        value_text = url.option("value")
        value: tuple[str, ...] | None
        if value_text is None or value_text == "":
            value = None
        elif value_text.strip() == "*":
            value = ALL_COLUMNS
        else:
            value = _columns(url, "value", where)
        json = _columns(url, "json", where)
        sep_text = url.option("sep", "/") or "/"
        if "%" in sep_text:
            raise BadURLError(f"{where}: sep={sep_text!r} may not contain % (the escape character of key components)")
        write_text = (url.option("write") or "false").lower()
        if write_text not in ("true", "false", "cascade"):
            raise BadURLError(f"{where}: write={write_text!r} must be true, false or cascade")
        spec = cls(
            table=table, key=key, value=value,
            expires=_time_column(url, "expires", where), version=_time_column(url, "version", where),
            json=json, sep=sep_text.encode(), write=write_text != "false", cascade=write_text == "cascade",
        )
        named = [*spec.key, *(c for c in (spec.value or ()) if c != "*"),
                 *(t.column for t in (spec.expires, spec.version) if t is not None)]
        twice = sorted({c for c in named if named.count(c) > 1})
        if twice:
            raise BadURLError(f"{where}: column {twice[0]} is mapped twice (key, value, expires and version "
                              "name different columns)")
        return spec


def is_mapped(url: StoreURL) -> bool:
    """Does the URL ask for mapped mode (``key=``) or discovery (``table=*``)?"""
    return "key" in url.options or url.option("table") == DISCOVERY


def _check_name(name: str, option: str, where: str) -> None:
    if not _NAME.match(name):
        raise BadURLError(f"{where}: {option}={name!r} is not a column or table name")


def _columns(url: StoreURL, option: str, where: str) -> tuple[str, ...]:
    text = url.option(option) or ""
    names = tuple(part.strip() for part in text.split(",")) if text.strip() else ()
    for name in names:
        _check_name(name, option, where)
    if len(set(names)) != len(names):
        raise BadURLError(f"{where}: {option}= names a column twice")
    return names


def _time_column(url: StoreURL, option: str, where: str) -> TimeColumn | None:
    text = url.option(option)
    if not text:
        return None
    column, _, unit = text.rpartition(":") if ":" in text else (text, "", "")
    unit = unit.lower()
    if unit and unit not in _UNITS:
        raise BadURLError(f"{where}: {option}={text!r}: unit {unit!r} is not one of {', '.join(_UNITS)}")
    _check_name(column, option, where)
    return TimeColumn(column, unit or None)

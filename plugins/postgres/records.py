"""Rows to :class:`kvctl.store.Record`: the core builds them (``kvctl.store.record_of``)."""

from kvctl.plugin_kit import record_of as make_record
from kvctl.store import Record

__all__ = ["Record", "make_record"]

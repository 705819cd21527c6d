"""Rows to :class:`kvctl.store.Record`: the core builds them (``kvctl.store.record_of``)."""

from kvctl.store import Record
from kvctl.store import record_of as make_record

__all__ = ["Record", "make_record"]

"""Expiry and conditional writes for stores that can hold a write lock around a read and a write.

A store with a write transaction (SQLite's ``BEGIN IMMEDIATE``, an LMDB write txn, a file
store's writer lock, one process's memory) gets :class:`~kvctl.abilities.Expiry` and
:class:`~kvctl.abilities.ConditionalWrites` from :class:`LockedKeyAdmin` by supplying the lock and
three primitives that run inside it; the decisions themselves (:func:`conditional_record`,
:func:`check_conditional`) are shared with stores that have native commands.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from kvctl.errors import UsageError
from kvctl.store import Record, now_ms

__all__ = ["LockedKeyAdmin", "check_conditional", "conditional_record"]


def check_conditional(record: Record, keep_ttl: bool) -> None:
    """Refuse a ``set_if`` that asks both to keep the expiry and to set one."""
    if keep_ttl and record.expires_at_ms is not None:
        raise UsageError("keep the current expiry or set a new one, not both")


def conditional_record(current: Record | None, record: Record, exists: bool | None,
                       keep_ttl: bool) -> Record | None:
    """What ``set_if`` writes when the key's live record is ``current``: the record (without a
    version) or None when the condition is not met."""
    if exists is not None and (current is not None) != exists:
        return None
    expires = (current.expires_at_ms if current is not None else None) if keep_ttl else record.expires_at_ms
    return Record(record.key, record.value, expires)


class LockedKeyAdmin:
    """``expire`` and ``set_if`` as a read and a write under the store's write lock."""

    def _admin_lock(self) -> AbstractContextManager[object]:
        """The write lock or transaction: commits on success, undoes everything on an error."""
        raise NotImplementedError

    def _admin_get(self, key: bytes) -> Record | None:
        """The live record of ``key``, read inside the lock."""
        raise NotImplementedError

    def _admin_put(self, record: Record) -> None:
        """Write ``record`` inside the lock, with a new version and a feed entry as ``set``."""
        raise NotImplementedError

    def _admin_delete(self, key: bytes) -> None:
        """Delete the live ``key`` inside the lock, as ``delete`` does."""
        raise NotImplementedError

    def expire(self, key: bytes, expires_at_ms: int | None) -> bool:
        with self._admin_lock():
            current = self._admin_get(key)
            if current is None:
                return False
            if expires_at_ms is not None and expires_at_ms <= now_ms():
                self._admin_delete(key)
            else:
                self._admin_put(Record(key, current.value, expires_at_ms))
            return True

    def set_if(self, record: Record, *, exists: bool | None = None, keep_ttl: bool = False) -> bool:
        check_conditional(record, keep_ttl)
        with self._admin_lock():
            write = conditional_record(self._admin_get(record.key), record, exists, keep_ttl)
            if write is None:
                return False
            self._admin_put(write)
            return True

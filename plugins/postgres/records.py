"""Records for rows read from PostgreSQL, built without the frozen dataclass's slow ``__init__``.

``Record`` is a frozen, slotted dataclass; its generated ``__init__`` goes through
``object.__setattr__`` once per field, which costs about as much as asyncpg's decoding of a whole
row in a 1,000-key ``get_many``.  ``make_record`` fills a plain class with the same slots and then
re-classes the object as ``Record`` (Python allows ``__class__`` assignment between classes of
identical slot layout): the result is a genuine ``Record``.  The shortcut is verified once, at
import, against the real constructor, and is not used if ``Record`` ever changes shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

from kvctl.store import Record

_FIELDS = ("key", "value", "expires_at_ms", "version", "kind")

MakeRecord = Callable[[bytes, bytes, "int | None", "int | None"], Record]


class _SameSlots:
    __slots__ = _FIELDS


def _fast(key: bytes, value: bytes, expires_at_ms: int | None, version: int | None) -> Record:
    rec = _SameSlots()
    rec.key = key  # type: ignore[attr-defined]
    rec.value = value  # type: ignore[attr-defined]
    rec.expires_at_ms = expires_at_ms  # type: ignore[attr-defined]
    rec.version = version  # type: ignore[attr-defined]
    rec.kind = None  # type: ignore[attr-defined]
    rec.__class__ = Record  # type: ignore[assignment]
    return rec  # type: ignore[return-value]


def _choose() -> MakeRecord:
    if tuple(f.name for f in fields(Record)) != _FIELDS or hasattr(Record, "__post_init__"):
        return Record
    try:
        probe = _fast(b"k", b"v", 1, 2)
    except TypeError:  # layouts differ after all
        return Record
    if type(probe) is not Record or probe != Record(b"k", b"v", 1, 2) or hash(probe) != hash(Record(b"k", b"v", 1, 2)):
        return Record
    return _fast


make_record: MakeRecord = _choose()

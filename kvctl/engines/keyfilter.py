"""Which keys an engine works on: a byte prefix and an optional shell-style glob.

The prefix is handed to the store's ``scan`` (every backend filters a prefix natively); the glob
is matched in Python on bytes.  The glob's literal head (the bytes before its first ``*``, ``?``
or ``[``) narrows the scan prefix too, so ``--glob 'user:*:name'`` only scans ``user:``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from kvctl.store import Record

_GLOB_META = re.compile(rb"[*?\[]")


def _compile(glob: bytes) -> re.Pattern[bytes]:
    # fnmatch works on str; latin-1 maps every byte to one code point and back, exactly.
    return re.compile(fnmatch.translate(glob.decode("latin-1")).encode("latin-1"))


@dataclass(frozen=True)
class KeyFilter:
    prefix: bytes = b""
    glob: bytes | None = None
    _pattern: re.Pattern[bytes] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.glob is not None:
            object.__setattr__(self, "_pattern", _compile(self.glob))

    @property
    def scan_prefix(self) -> bytes | None:
        """The prefix to scan, or None when prefix and glob exclude each other (nothing matches)."""
        if self.glob is None:
            return self.prefix
        meta = _GLOB_META.search(self.glob)
        head = self.glob if meta is None else self.glob[: meta.start()]
        if head.startswith(self.prefix):
            return head
        if self.prefix.startswith(head):
            return self.prefix
        return None

    @property
    def needs_match(self) -> bool:
        """True when keys from a ``scan(scan_prefix)`` still have to be matched one by one."""
        return self._pattern is not None

    def matches(self, key: bytes) -> bool:
        if not key.startswith(self.prefix):
            return False
        return self._pattern is None or self._pattern.match(key) is not None

    def keep(self, records: list[Record]) -> list[Record]:
        """The records whose keys match (the scan already applied the prefix)."""
        pattern = self._pattern
        if pattern is None:
            return records
        match = pattern.match
        return [r for r in records if match(r.key) is not None]

    def describe(self) -> dict[str, str | None]:
        return {
            "prefix": self.prefix.decode("utf-8", "backslashreplace"),
            "glob": None if self.glob is None else self.glob.decode("utf-8", "backslashreplace"),
        }

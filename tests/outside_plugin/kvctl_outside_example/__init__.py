"""An outside plugin: a dict-backed store with a reversed-key twist, registered as ``outside://``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Self

from kvctl.plugin_kit import StoreBase, page_size
from kvctl.store import Capabilities, Page, Record, StoreURL, is_live

_DATA: dict[str, dict[bytes, Record]] = {}


class OutsideStore(StoreBase):
    name = "outside"
    description = "Example third-party plugin used by kvctl's tests."
    capabilities = Capabilities(ttl=True, blocking_io=False, durability="none")

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        self._data = _DATA.setdefault(url.host or "", {})

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        url.check_options(set())
        return cls(url)

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        out = []
        for key in keys:
            rec = self._data.get(key)
            out.append(rec if rec is not None and is_live(rec) else None)
        return out

    def set_many(self, records: Iterable[Record]) -> None:
        for rec in records:
            self._data[rec.key] = rec

    def delete_many(self, keys: Sequence[bytes]) -> int:
        return sum(
            1 for k in keys if (rec := self._data.pop(k, None)) is not None and is_live(rec)
        )

    def scan(self, prefix: bytes = b"", *, start_after: bytes | None = None, cursor: str | None = None,
             batch_size: int = 1000, keys_only: bool = False) -> Iterator[Page]:
        live = [r for k, r in self._data.items() if k.startswith(prefix) and is_live(r)]
        start = int(cursor) if cursor else 0
        batch_size = page_size(batch_size)
        for i in range(start, len(live), batch_size):
            batch = live[i:i + batch_size]
            yield Page([Record(r.key, b"", r.expires_at_ms) if keys_only else r for r in batch],
                       str(i + len(batch)))

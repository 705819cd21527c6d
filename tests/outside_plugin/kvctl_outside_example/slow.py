"""``slow://?of=URL&delay_ms=N[&fail_at=HEX][&json_values=true]``: another store whose every batch
call first waits ``delay_ms``, the cost of a far server, for executor tests and the scale-out benchmark.

``fail_at``: scanning a page that holds this key (hex) raises :class:`StoreIOError`, every time, so the
slice that holds it always fails.  ``json_values=true``: the store declares its values JSON documents,
as a mapped json/jsonb column does, so diff, ``--verify`` and sync compare them by meaning.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Self

from kvctl.adapt import to_sync
from kvctl.errors import StoreIOError
from kvctl.plugin_kit import StoreBase
from kvctl.registry import open_url
from kvctl.store import Capabilities, Page, Record, StoreURL


class SlowStore(StoreBase):
    name = "slow"
    description = "Test wrapper: another store, each batch call delayed (a latency-bound server)."
    capabilities = Capabilities()

    def __init__(self, url: StoreURL, inner: Any, delay_s: float, fail_at: bytes | None) -> None:
        self.url = url
        self.inner = inner
        self.delay_s = delay_s
        self.fail_at = fail_at
        self.capabilities = inner.capabilities  # type: ignore[misc]  # the wrapped store's, per instance

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        url.check_options({"of", "delay_ms", "fail_at", "json_values"})
        of = url.option("of")
        if not of:
            raise StoreIOError("slow:// needs ?of=URL")
        fail = url.option("fail_at")
        store = cls(url, to_sync(open_url(of, access=url.access)), url.int_option("delay_ms", 10) / 1000,
                    None if fail is None else bytes.fromhex(fail))
        if url.bool_option("json_values", False):
            store.capabilities = replace(store.capabilities, json_values=True)  # type: ignore[misc]
        return store

    def _wait(self) -> None:
        time.sleep(self.delay_s)

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        self._wait()
        return list(self.inner.get_many(keys))

    def set_many(self, records: Iterable[Record]) -> None:
        self._wait()
        self.inner.set_many(records)

    def delete_many(self, keys: Sequence[bytes]) -> int:
        self._wait()
        return int(self.inner.delete_many(keys))

    def scan(self, prefix: bytes = b"", *, start_after: bytes | None = None, cursor: str | None = None,
             batch_size: int = 1000, keys_only: bool = False) -> Iterator[Page]:
        for page in self.inner.scan(prefix, start_after=start_after, cursor=cursor, batch_size=batch_size,
                                    keys_only=keys_only):
            self._wait()
            if self.fail_at is not None and any(r.key == self.fail_at for r in page.records):
                raise StoreIOError(f"slow: failing on purpose at key {self.fail_at.hex()}")
            yield page

    def count(self, prefix: bytes = b"") -> int:
        return int(self.inner.count(prefix))

    def close(self) -> None:
        self.inner.close()

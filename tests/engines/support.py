"""Shared helpers for the migrate, diff, export and snapshot tests (this module holds no tests).

* ``fresh_url(family, tmp)``: an empty store of a backend family (tests/families.py, plus a few
  families that file has no factory for yet, and a private namespace on shared servers so that
  clearing a store never touches another test's keys);
* ``dataset(...)``: binary keys, empty and large values, TTLs, sized to what both sides hold;
* small protocol implementations the registry does not know, for what no real backend shows
  deterministically: typed values, records expiring in flight, a destination that fails.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from kvctl.adapt import to_sync
from kvctl.engines._stores import open_async
from kvctl.engines.diff import DiffOptions, DiffResult, compare
from kvctl.errors import LimitError, UnavailableError
from kvctl.plugin_kit import AsyncStoreBase, ScanRange, check_limits, key_cursor
from kvctl.registry import load, open_url
from kvctl.store import Capabilities, Page, Record, Store, now_ms
from tests.families import FACTORIES, families, url_for


def _unique() -> str:
    return uuid.uuid4().hex[:10]


def fresh_url(family: str, tmp: Path) -> str:
    """A URL of an empty store of ``family`` (a family without a factory fails the test)."""
    return url_for(family, tmp)


def all_families() -> list[str]:
    return families()


def caps_of(family: str) -> Capabilities:
    for scheme in [family, *FACTORIES]:
        try:
            cls = load(scheme)
        except Exception:
            continue
        if getattr(cls, "name", scheme) == family:
            return cls.capabilities
    return load(family).capabilities


def open_clean(url: str) -> Store:
    store = to_sync(open_url(url))
    store.clear()
    return store


def write(url: str, records: Iterable[Record]) -> None:
    store = open_clean(url)
    try:
        store.set_many(list(records))
    finally:
        store.close()


def read_all(url: str) -> dict[bytes, Record]:
    store = to_sync(open_url(url))
    try:
        return {r.key: r for p in store.scan(batch_size=1000) for r in p.records}
    finally:
        store.close()


def diff_urls(a: str, b: str, ignore_expiry: bool) -> DiffResult:
    async def work() -> DiffResult:
        sa, sb = open_async(a), open_async(b)
        try:
            return await compare(sa, sb, DiffOptions(ignore_expiry=ignore_expiry))
        finally:
            await sa.close()
            await sb.close()

    return asyncio.run(work())


# -- data --------------------------------------------------------------------------------------
BINARY_KEY = b"\x00\xff\x80bin\x01"
LARGE = 256 * 1024


def _full(ttl: bool, large: int) -> list[Record]:
    now = now_ms()
    recs = [
        Record(b"plain", b"value"),
        Record(b"empty", b""),
        Record(BINARY_KEY, bytes(range(256))),
        Record(b"a%b_c*?[x]\\", b"glob and LIKE metacharacters"),
        Record("ключ".encode(), "значение".encode()),
        Record(b"large", bytes(range(256)) * (large // 256)),
    ]
    recs += [Record(b"n:%03d" % i, b"v%d" % i) for i in range(12)]
    if ttl:
        recs += [Record(b"ttl:1", b"expiring", now + 3_600_000), Record(b"ttl:2", b"", now + 7_200_000)]
    return recs


def _small(ttl: bool) -> list[Record]:
    """For stores that hold only a couple of KiB in all (a session cookie)."""
    now = now_ms()
    recs = [Record(b"plain", b"value"), Record(b"empty", b""), Record(BINARY_KEY, bytes(range(32))),
            Record(b"large", b"L" * 300)]
    if ttl:
        recs.append(Record(b"ttl:1", b"x", now + 3_600_000))
    return recs


_CAPACITY: dict[str, bool] = {}


def holds_full_dataset(family: str, tmp: Path) -> bool:
    """Whether a store of this family accepts the full dataset (probed once per family)."""
    if family not in _CAPACITY:
        caps = caps_of(family)
        url = fresh_url(family, tmp / f"probe-{family.replace('+', '_')}")
        (tmp / f"probe-{family.replace('+', '_')}").mkdir(exist_ok=True)
        store = open_clean(url)
        try:
            store.set_many(_full(caps.ttl, _large_for(caps)))
            _CAPACITY[family] = True
        except LimitError:
            _CAPACITY[family] = False
        finally:
            store.clear()
            store.close()
    return _CAPACITY[family]


def _large_for(*caps: Capabilities) -> int:
    size = LARGE
    for c in caps:
        if c.max_value_size is not None:
            size = min(size, c.max_value_size // 256 * 256)
    return size


def dataset(src: str, dst: str, tmp: Path) -> list[Record]:
    """Records both families can hold: TTLs only when the source keeps them."""
    sc = caps_of(src)
    if holds_full_dataset(src, tmp) and holds_full_dataset(dst, tmp):
        return _full(sc.ttl, _large_for(sc, caps_of(dst)))
    return _small(sc.ttl)


# -- protocol implementations for engine tests -------------------------------------------------
class DictStore(AsyncStoreBase):
    """An ordered in-memory async store with switchable capabilities and typed values.

    ``leak_expired`` makes scans return records whose expiry has passed, which is what a
    source shows when a key expires between being read and being written.
    """

    name = "dicttest"

    def __init__(self, caps: Capabilities | None = None, *, leak_expired: bool = False) -> None:
        self.capabilities = caps or Capabilities(ttl=True, ordered_scan=True, versions=True)  # type: ignore[misc]
        self.data: dict[bytes, Record] = {}
        self.leak_expired = leak_expired
        self.set_calls = 0

    def _live(self, rec: Record | None) -> Record | None:
        if rec is None or (rec.expires_at_ms is not None and rec.expires_at_ms <= now_ms()
                           and not self.leak_expired):
            return None
        return rec

    @staticmethod
    def _view(rec: Record | None) -> Record | None:
        # typed values show their kind and no value, as the protocol says
        return rec if rec is None or rec.kind is None else Record(rec.key, b"", rec.expires_at_ms,
                                                                  rec.version, rec.kind)

    async def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        return [self._view(self._live(self.data.get(k))) for k in keys]

    async def set_many(self, records: Iterable[Record]) -> None:
        batch = list(records)
        for rec in batch:  # limits first, as every backend must: nothing written on a LimitError
            check_limits(self.capabilities, self.name, rec.key, rec.value)
        self.set_calls += 1
        for rec in batch:
            self.data[rec.key] = rec

    async def delete_many(self, keys: Sequence[bytes]) -> int:
        return sum(self.data.pop(k, None) is not None for k in keys)

    async def scan(self, prefix: bytes = b"", *, start_after: bytes | None = None, cursor: str | None = None,
                   batch_size: int = 1000, keys_only: bool = False) -> Any:
        after = ScanRange.of(prefix, start_after, cursor, batch_size).after
        keys = sorted(k for k in self.data if k.startswith(prefix) and (after is None or k > after))
        for i in range(0, len(keys), batch_size):
            recs = [self._view(self._live(self.data[k])) for k in keys[i:i + batch_size]]
            live = [r for r in recs if r is not None]
            if keys_only:
                live = [Record(r.key, b"", r.expires_at_ms, r.version, r.kind) for r in live]
            yield Page(live, key_cursor(keys[min(i + batch_size, len(keys)) - 1]))

    async def dump_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        return [self._live(self.data.get(k)) for k in keys]

    async def restore_many(self, records: Sequence[Record]) -> None:
        for rec in records:
            self.data[rec.key] = rec


class FailingStore(DictStore):
    """Fails with UnavailableError on the ``fail_at``-th set_many (a server that went away)."""

    def __init__(self, fail_at: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.fail_at = fail_at

    async def set_many(self, records: Iterable[Record]) -> None:
        if self.set_calls + 1 >= self.fail_at:
            raise UnavailableError("dicttest went away")
        await super().set_many(records)


def typed_caps(**kw: Any) -> Capabilities:
    return Capabilities(ttl=True, ordered_scan=True, versions=True, typed_values=True, **kw)


def subprocess_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVCTL_URL")}
    env.update(XDG_DATA_HOME=str(tmp / "data"), XDG_CONFIG_HOME=str(tmp / "config"),
               XDG_STATE_HOME=str(tmp / "state"), HOME=str(tmp))
    return env


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Checkpoints under tmp, never in the user's state directory."""
    path = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(path))
    return path


@pytest.fixture(scope="module")
def dask_cluster() -> Any:
    """A Dask client of two single-threaded worker processes on loopback (a killed one is
    restarted by its nanny), for the executor tests."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as c, distributed.Client(c) as client:
        yield client

"""Conformance for mapped tables (an application's own table opened with ``key=``).

:class:`MappedStoreConformance` runs the whole :class:`~kvctl.testing.StoreConformance` suite on a
writable mapping of a byte-keyed table (every key and value a store must hold fits it).  A mapped
version column keeps milliseconds, so its two version tests are restated at that precision.

:class:`MappedReadChecks` is the read part for any mapping of real application rows: a subclass
provides the read-only URL, the file it lives in, and the records the application's rows must
read as (computed by the test from what it inserted, not by kvctl); every read call is checked
against them, and the file must not change by a single byte.  :class:`MappedWriteChecks` adds
the write part where the mapping allows writes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from kvctl.errors import UnsupportedError
from kvctl.hlc import make_version
from kvctl.store import Record, Store, now_ms
from kvctl.testing.conformance import StoreConformance, open_sync

__all__ = ["MappedReadChecks", "MappedStoreConformance", "MappedWriteChecks", "digest"]


def digest(path: Path) -> tuple[str | None, list[str]]:
    """A file's content digest (None: absent) and which of it and its -wal/-shm siblings exist."""
    data = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return data, sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))


class MappedStoreConformance(StoreConformance):
    """The conformance suite on a writable mapped table whose key and value columns hold bytes."""

    def test_versions_grow(self, store: Store) -> None:
        self.needs(store, "versions")
        store.set(b"k", b"1")
        v1 = store.get(b"k").version  # type: ignore[union-attr]
        time.sleep(0.005)  # the column keeps milliseconds: a later millisecond is a later version
        store.set(b"k", b"2")
        v2 = store.get(b"k").version  # type: ignore[union-attr]
        assert v1 is not None and v2 is not None and v2 > v1

    def test_given_versions_are_kept(self, store: Store) -> None:
        self.needs(store, "versions")
        version = make_version(now_ms() - 60_000)  # whole milliseconds: what the column keeps
        store.set_many([Record(b"k", b"v", None, version)])
        assert store.get(b"k").version == version  # type: ignore[union-attr]


class MappedReadChecks:
    """The read part over a mapping of real rows; override the three fixtures."""

    #: prefixes checked per key: every cut of the key at a separator, plus these many bytes more
    partial_lengths: ClassVar[tuple[int, ...]] = (1, 3)

    @pytest.fixture
    def mapped_url(self) -> str:
        raise NotImplementedError("override: the read-only URL of the mapping")

    @pytest.fixture
    def database(self) -> Path:
        raise NotImplementedError("override: the database file the mapping reads")

    @pytest.fixture
    def expected(self) -> dict[bytes, bytes]:
        raise NotImplementedError("override: key -> value bytes, as the application's rows must read")

    @pytest.fixture
    def reader(self, mapped_url: str, database: Path) -> Iterator[Store]:
        before = digest(database)
        store = open_sync(mapped_url)
        try:
            yield store
        finally:
            store.close()
        assert digest(database) == before, "reading a mapped table changed the database"

    @staticmethod
    def scanned(store: Store, prefix: bytes = b"", batch_size: int = 1000,
                keys_only: bool = False) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for page in store.scan(prefix, batch_size=batch_size, keys_only=keys_only):
            for rec in page.records:
                assert rec.key not in out, f"key {rec.key!r} scanned twice"
                out[rec.key] = rec.value
        return out

    def test_get_reads_every_row(self, reader: Store, expected: dict[bytes, bytes]) -> None:
        for key, value in expected.items():
            rec = reader.get(key)
            assert rec is not None and rec.value == value, key
        keys = [*expected, b"no such key", b"no/such/key"]
        assert [r.value if r else None for r in reader.get_many(keys)] == [*expected.values(), None, None]

    def test_scan_and_count(self, reader: Store, expected: dict[bytes, bytes]) -> None:
        assert self.scanned(reader) == expected
        assert self.scanned(reader, batch_size=2) == expected
        assert self.scanned(reader, keys_only=True) == dict.fromkeys(expected, b"")
        assert reader.count() == len(expected) == reader.stats()["keys"]
        if reader.capabilities.ordered_scan:
            keys = [r.key for p in reader.scan() for r in p.records]
            assert keys == sorted(keys)

    def test_scan_resumes_from_its_cursor(self, reader: Store, expected: dict[bytes, bytes]) -> None:
        first = next(iter(reader.scan(batch_size=2)), None)
        if first is None:
            return
        rest = self.scanned_after(reader, first.cursor)
        assert {r.key for r in first.records}.isdisjoint(rest)
        assert {r.key: r.value for r in first.records} | rest == expected

    @staticmethod
    def scanned_after(store: Store, cursor: str | None) -> dict[bytes, bytes]:
        return {r.key: r.value for p in store.scan(cursor=cursor) for r in p.records}

    def test_prefix_scans_are_exact(self, reader: Store, expected: dict[bytes, bytes], mapped_url: str) -> None:
        sep = b"/"
        if "sep=" in mapped_url:
            sep = mapped_url.split("sep=", 1)[1].split("&", 1)[0].encode()
        prefixes = {b""}
        for key in expected:
            cut = 0
            while (cut := key.find(sep, cut)) >= 0:
                cut += len(sep)
                prefixes.add(key[:cut])
                prefixes.update(key[:cut + n] for n in self.partial_lengths)
            prefixes.update(key[:n] for n in self.partial_lengths)
        for prefix in sorted(prefixes):
            wanted = {k: v for k, v in expected.items() if k.startswith(prefix)}
            assert self.scanned(reader, prefix) == wanted, prefix
            assert reader.count(prefix) == len(wanted), prefix

    def test_writes_are_refused_without_write_true(self, reader: Store, expected: dict[bytes, bytes]) -> None:
        key = next(iter(expected), b"k")
        with pytest.raises(UnsupportedError, match="read-only"):
            reader.set(key, expected.get(key, b"v"))
        with pytest.raises(UnsupportedError, match="read-only"):
            reader.delete(key)

    def test_values_of_json_mappings_are_json(self, reader: Store, expected: dict[bytes, bytes]) -> None:
        if not reader.capabilities.json_values:
            return
        for value in expected.values():
            if value:
                json.loads(value)


class MappedWriteChecks:
    """The write part: ``writer`` is the mapping opened with ``write=true``; ``sample`` a
    (key, value) the mapping can store that is not in the table yet."""

    @pytest.fixture
    def writer(self) -> Store:
        raise NotImplementedError("override: the mapping opened with write=true")

    @pytest.fixture
    def sample(self) -> tuple[bytes, bytes]:
        raise NotImplementedError("override: a new (key, value) that fits the mapping")

    def test_set_get_overwrite(self, writer: Store, sample: tuple[bytes, bytes]) -> None:
        key, value = sample
        before = writer.count()
        writer.set(key, value)
        assert writer.get(key).value == value  # type: ignore[union-attr]
        writer.set_many([Record(key, value)])
        assert writer.count() == before + 1
        assert key in {r.key for p in writer.scan(key[:1]) for r in p.records}

    def test_ttl_without_expires_column_is_refused(self, writer: Store, sample: tuple[bytes, bytes]) -> None:
        if writer.capabilities.ttl:
            return
        with pytest.raises(UnsupportedError):
            writer.set(sample[0], sample[1], ttl_ms=60_000)
        assert writer.get(sample[0]) is None

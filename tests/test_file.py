"""The file backend: conformance, plus what the suite does not cover (durability modes, TTLs
across reopen, compaction, options)."""

from __future__ import annotations

import pytest

from kvctl.testing import StoreConformance


class TestFileConformance(StoreConformance):
    @pytest.fixture
    def store_url(self, tmp_path) -> str:
        return f"file://{tmp_path}/db"


class TestFileConformanceAlways(StoreConformance):
    @pytest.fixture
    def store_url(self, tmp_path) -> str:
        return f"file://{tmp_path}/db?fsync=always&inline_max=16&segment_size=4096"

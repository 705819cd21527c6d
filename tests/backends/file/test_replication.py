"""The file backend under the shared replication suites; its own feed rules are in test_feed.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kvctl.testing.replication import ReplicationConformance, SyncConformance


class TestFileReplication(ReplicationConformance):
    @pytest.fixture
    def new_url(self, tmp_path: Path) -> Callable[[str], str]:
        return lambda name: f"file://{tmp_path}/{name}"


class TestFileSync(SyncConformance):
    @pytest.fixture
    def new_url(self, tmp_path: Path) -> Callable[[str], str]:
        return lambda name: f"file://{tmp_path}/{name}"

"""The memory backend under the shared replication suite (in one process: nothing outlives it)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from kvctl.testing.replication import ReplicationConformance


class TestMemoryReplication(ReplicationConformance):
    cursors_name_their_store = False  # positions in this process's log: no store outlives it

    @pytest.fixture
    def new_url(self) -> Callable[[str], str]:
        run = uuid.uuid4().hex[:8]
        return lambda name: f"memory://{name}{run}"

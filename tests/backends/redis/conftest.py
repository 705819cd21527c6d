"""Fixtures of the Redis test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backends.redis.support import Server


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts of its own: append them, they are killed when it ends."""
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()

"""The PostgreSQL modules' server: the shared one from tests/services.sh, cleaned after each module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import drop_postgres_objects, service_url


@pytest.fixture(scope="module")
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The server's URL; once the module is done, every table and function it made goes (their names
    start with the module's ``PREFIX``: the shared server outlives the tests)."""
    url = service_url("KVCTL_TEST_POSTGRES_URL")
    yield url
    drop_postgres_objects(url, request.module.PREFIX)

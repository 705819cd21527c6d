"""The PostgreSQL modules' server: the shared one from tests/services.sh, cleaned after each module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backends.postgres.apps import database, fill_gorkflow, fill_querator
from tests.conftest import drop_postgres_objects, service_url


@pytest.fixture(scope="module")
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The server's URL; once the module is done, every table and function it made goes (their names
    start with the module's ``PREFIX``: the shared server outlives the tests)."""
    url = service_url("KVCTL_TEST_POSTGRES_URL")
    yield url
    drop_postgres_objects(url, request.module.PREFIX)


@pytest.fixture(scope="module")
def gorkflow_app() -> Iterator[str]:
    """A database of Gorkflow's tables, filled as Gorkflow fills them (read only: shared by a module)."""
    with database(service_url("KVCTL_TEST_POSTGRES_URL"), "gork") as url:
        fill_gorkflow(url)
        yield url


@pytest.fixture(scope="module")
def querator_app() -> Iterator[tuple[str, list[str]]]:
    """A database of Querator's queues and items tables, and the items' ids in order."""
    with database(service_url("KVCTL_TEST_POSTGRES_URL"), "quer") as url:
        yield url, fill_querator(url)

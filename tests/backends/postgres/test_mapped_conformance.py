"""The conformance suite on mapped PostgreSQL tables, and its read and write parts on the seed
applications' own tables (Gorkflow's state, Querator's items).

The whole suite runs on a writable mapping of a bytea-keyed table of another program's shape
(its own unmapped column with a default, an expiry and a version column).  The read part runs on
the applications' rows, computed here from what the fixtures inserted, not read back by kvctl;
the catalog and every row must be the same after it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from kvctl.store import Store
from kvctl.testing.conformance import open_sync
from kvctl.testing.mapped import MappedReadChecks, MappedStoreConformance, MappedWriteChecks
from tests.backends.postgres.apps import QUERATOR_ITEMS, RUNS, database, fill_gorkflow
from tests.backends.postgres.support import catalog, sql
from tests.conftest import service_url

pytestmark = pytest.mark.server

GORKFLOW_STATE = "table=workflow_state&key=run_id,key&value=value&version=updated_at"


@pytest.fixture(scope="module")
def app_db() -> Iterator[str]:
    with database(service_url("KVCTL_TEST_POSTGRES_URL"), "mconf") as url:
        yield url


class TestMappedPostgresConformance(MappedStoreConformance):
    @pytest.fixture
    def store_url(self, app_db: str) -> str:
        table = f"app_cache_{uuid.uuid4().hex[:8]}"
        sql(app_db, f'CREATE TABLE "{table}" (k bytea PRIMARY KEY, v bytea NOT NULL, exp bigint, ver bigint, '
                    "note text NOT NULL DEFAULT 'kept')")
        return f"{app_db}?table={table}&key=k&value=v&expires=exp:ms&version=ver:ms&write=true"


def _dump(url: str, tables: tuple[str, ...]) -> list[Any]:
    return [sql(url, f'SELECT to_jsonb(t)::text FROM "{t}" t ORDER BY 1') for t in tables]


class _Unchanged:
    """The read part's reader, checked against the catalog and the rows instead of a file."""

    tables: tuple[str, ...]
    source: ClassVar[str] = "gorkflow_app"  # the module fixture of the application's database

    @pytest.fixture
    def app(self, request: pytest.FixtureRequest) -> str:
        found = request.getfixturevalue(self.source)
        return found[0] if isinstance(found, tuple) else found

    @pytest.fixture
    def database(self) -> None:  # the checks below replace the file digest
        return None

    @pytest.fixture
    def reader(self, mapped_url: str, app: str) -> Iterator[Store]:
        before = catalog(app), _dump(app, self.tables)
        store = open_sync(mapped_url)
        try:
            yield store
        finally:
            store.close()
        assert (catalog(app), _dump(app, self.tables)) == before, "reading a mapped table changed the database"


class TestGorkflowStateReads(_Unchanged, MappedReadChecks):
    tables = ("workflow_runs", "step_executions", "step_outputs", "workflow_state")

    @pytest.fixture
    def mapped_url(self, app: str) -> str:
        return f"{app}?{GORKFLOW_STATE}"

    @pytest.fixture
    def expected(self, app: str) -> dict[bytes, bytes]:
        rows = sql(app, "SELECT run_id, key, value FROM workflow_state")
        return {f"{r}/{k}".encode(): bytes(v) for r, k, v in rows}


class TestGorkflowRunsReads(_Unchanged, MappedReadChecks):
    tables = ("workflow_runs",)

    @pytest.fixture
    def mapped_url(self, app: str) -> str:
        return f"{app}?table=workflow_runs&key=run_id&value=data&version=updated_at"

    @pytest.fixture
    def expected(self, app: str) -> dict[bytes, bytes]:
        return {r.encode(): d.encode() for r, d in sql(app, "SELECT run_id, data::text FROM workflow_runs")}


class TestQueratorItemsReads(_Unchanged, MappedReadChecks):
    tables = (QUERATOR_ITEMS, "queues")
    source = "querator_app"

    @pytest.fixture
    def mapped_url(self, app: str) -> str:
        return f"{app}?table={QUERATOR_ITEMS}&key=id&value=payload"

    @pytest.fixture
    def expected(self, app: str) -> dict[bytes, bytes]:
        return {i.encode(): bytes(p) for i, p in sql(app, f'SELECT id, payload FROM "{QUERATOR_ITEMS}"')}


class TestGorkflowStateWrites(MappedWriteChecks):
    @pytest.fixture
    def writer(self) -> Iterator[Store]:
        with database(service_url("KVCTL_TEST_POSTGRES_URL"), "gwrite") as url:
            fill_gorkflow(url)
            store = open_sync(f"{url}?{GORKFLOW_STATE}&write=true")
            try:
                yield store
            finally:
                store.close()

    @pytest.fixture
    def sample(self) -> tuple[bytes, bytes]:
        return f"{RUNS[0]}/new/state".encode(), json.dumps({"a": [1, 2]}).encode()

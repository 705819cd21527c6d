"""Gorkflow's SQLite file moved to PostgreSQL with kvctl: the four tables in foreign-key order,
each verified, with the URLs of the README ("Your application's data").

SQLite keeps ``data`` as JSON text, times as Go's ``time.Time.String()``, RFC 3339 or
``CURRENT_TIMESTAMP`` text; PostgreSQL as JSONB and TIMESTAMPTZ.  ``value=*`` carries every
column (the NOT NULL ones included), ``json=data`` embeds the JSON text as a document, and
``--verify`` compares the values by meaning (JSONB reorders keys and respaces them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kvctl.testing.cli import run_kvctl
from tests.apps.schemas import GO_TIME_UTC, fill_gorkflow
from tests.backends.postgres.apps import GORKFLOW_SCHEMA, GORKFLOW_TABLES, database
from tests.backends.postgres.support import catalog, sql
from tests.conftest import service_url

pytestmark = pytest.mark.server

KEYS = {"workflow_runs": "run_id", "step_executions": "run_id,step_id", "step_outputs": "run_id,step_id",
        "workflow_state": "run_id,key"}
JSON_TEXT = {"workflow_runs": "&json=data", "step_executions": "&json=data"}


@pytest.fixture
def target() -> Iterator[str]:
    """An empty Gorkflow database on PostgreSQL: its schema, as the application creates it."""
    with database(service_url("KVCTL_TEST_POSTGRES_URL"), "gmig") as url:
        sql(url, GORKFLOW_SCHEMA)
        yield url


def test_gorkflow_sqlite_to_postgresql_in_foreign_key_order_verifies(target: str, env: dict[str, str],
                                                                      tmp_path: Path) -> None:
    app = tmp_path / "workflows.db"
    expected = fill_gorkflow(app)
    for table in GORKFLOW_TABLES:
        src = f"sqlite://{app}?table={table}&key={KEYS[table]}&value=*{JSON_TEXT.get(table, '')}"
        dst = f"{target}?table={table}&key={KEYS[table]}&value=*&write=true"
        proc = run_kvctl(env, "migrate", src, dst, "--verify", "--no-progress")
        assert proc.returncode == 0, (table, proc.stdout, proc.stderr)
        diff = run_kvctl(env, "diff", src, dst)
        assert diff.returncode == 0, (table, diff.stdout, diff.stderr)
        count = sql(target, f"SELECT count(*) FROM {table}")[0][0]
        assert count == len(expected[table]), table
    # what Gorkflow reads back on PostgreSQL: the same documents, the same bytes, the same instants
    for run_id, data in sql(target, "SELECT run_id, data::text FROM workflow_runs"):
        assert json.loads(data) == json.loads(expected["workflow_runs"][run_id.encode()])
    for run_id, key, value in sql(target, "SELECT run_id, key, value FROM workflow_state"):
        assert bytes(value) == expected["workflow_state"][f"{run_id}/{key}".encode()]
    created = {r[0] for r in sql(target, "SELECT created_at FROM workflow_runs")}
    assert datetime.fromisoformat(GO_TIME_UTC) in created
    assert all(t.tzinfo is not None and t.astimezone(UTC).year == 2026 for t in created)


def test_a_copy_into_jsonb_that_differs_in_meaning_does_not_verify(target: str, env: dict[str, str],
                                                                   tmp_path: Path) -> None:
    app = tmp_path / "workflows.db"
    fill_gorkflow(app, runs=1)
    src = f"sqlite://{app}?table=workflow_runs&key=run_id&value=*&json=data"
    dst = f"{target}?table=workflow_runs&key=run_id&value=*&write=true"
    assert run_kvctl(env, "migrate", src, dst, "--no-progress").returncode == 0
    before = catalog(target)
    sql(target, "UPDATE workflow_runs SET data = jsonb_set(data, '{status}', '\"failed\"')")
    diff = run_kvctl(env, "diff", src, dst)
    assert diff.returncode == 1, diff.stdout
    assert catalog(target) != before  # the rows changed (the digest), and the diff said so

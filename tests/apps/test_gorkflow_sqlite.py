"""Gorkflow's own SQLite tables through the URLs its operator would type (app-tables.md section 4),
over sqlite:// and libsql:// alike: the read part everywhere, the write part on workflow_state."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvctl.errors import UnsupportedError
from kvctl.registry import open_sync
from kvctl.store import Store
from kvctl.testing.mapped import MappedReadChecks, MappedWriteChecks

from .schemas import GO_TIME_UTC, fill_gorkflow

QUERIES = {
    "workflow_state": "table=workflow_state&key=run_id,key&value=value&version=updated_at",
    "step_outputs": "table=step_outputs&key=run_id,step_id&value=output_data",
    "workflow_runs": "table=workflow_runs&key=run_id&value=data&version=updated_at",
    "step_executions": "table=step_executions&key=run_id,step_id&value=data",
}


@pytest.fixture(scope="module")
def gorkflow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[bytes, bytes]]]:
    path = tmp_path_factory.mktemp("gorkflow") / "workflows.db"
    return path, fill_gorkflow(path)


@pytest.fixture(params=["sqlite", "libsql"])
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=list(QUERIES))
def table(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestGorkflowReads(MappedReadChecks):
    @pytest.fixture
    def database(self, gorkflow: tuple[Path, dict[str, dict[bytes, bytes]]]) -> Path:
        return gorkflow[0]

    @pytest.fixture
    def mapped_url(self, database: Path, scheme: str, table: str) -> str:
        return f"{scheme}://{database}?{QUERIES[table]}"

    @pytest.fixture
    def expected(self, gorkflow: tuple[Path, dict[str, dict[bytes, bytes]]], table: str) -> dict[bytes, bytes]:
        return gorkflow[1][table]


def test_runs_as_json_objects_normalise_gorkflow_times(gorkflow: tuple[Path, dict[str, dict[bytes, bytes]]]) -> None:
    """value=* with json=data: the object a SQLite -> PostgreSQL copy carries (TIMESTAMPTZ-ready)."""
    path, rows = gorkflow
    with open_sync(f"sqlite://{path}?table=workflow_runs&key=run_id&value=*&json=data", access="read") as s:
        assert s.capabilities.json_values and s.capabilities.ordered_scan
        first = next(iter(rows["workflow_runs"]))
        value = json.loads(s.get(first).value)  # type: ignore[union-attr]
        assert value["created_at"] == GO_TIME_UTC and value["data"] == json.loads(rows["workflow_runs"][first])
        assert list(value) == ["workflow_id", "status", "created_at", "updated_at", "resource_id", "data"]


def test_composite_keys_are_not_byte_ordered_and_versions_come_from_updated_at(
        gorkflow: tuple[Path, dict[str, dict[bytes, bytes]]]) -> None:
    path, _ = gorkflow
    with open_sync(f"sqlite://{path}?{QUERIES['workflow_state']}", access="read") as s:
        caps = s.capabilities
        assert (caps.ordered_scan, caps.versions, caps.ttl, caps.change_feed) == (False, True, False, False)
        assert all(r.version is not None for p in s.scan() for r in p.records)
        with pytest.raises(UnsupportedError):
            next(iter(s.scan(start_after=b"a")))


class TestGorkflowStateWrites(MappedWriteChecks):
    @pytest.fixture
    def app(self, tmp_path: Path) -> tuple[Path, dict[str, dict[bytes, bytes]]]:
        path = tmp_path / "workflows.db"
        return path, fill_gorkflow(path, runs=2)

    @pytest.fixture
    def writer(self, app: tuple[Path, dict[str, dict[bytes, bytes]]], scheme: str) -> Iterator[Store]:
        with open_sync(f"{scheme}://{app[0]}?{QUERIES['workflow_state']}&write=true") as store:
            yield store

    @pytest.fixture
    def sample(self, app: tuple[Path, dict[str, dict[bytes, bytes]]]) -> tuple[bytes, bytes]:
        run = next(iter(app[1]["workflow_runs"]))
        return run + b"/new/key%", b'{"fresh":true}'

    def test_update_keeps_unmapped_columns_and_deletes_one_row(
            self, writer: Store, app: tuple[Path, dict[str, dict[bytes, bytes]]]) -> None:
        key = next(iter(app[1]["workflow_state"]))
        writer.set(key, b'"no"')
        assert writer.get(key).value == b'"no"'  # type: ignore[union-attr]
        assert writer.delete(key) and writer.get(key) is None and not writer.delete(key)
        with sqlite3.connect(app[0]) as conn:  # nothing but that row changed: other runs' state intact
            left = conn.execute("SELECT count(*) FROM workflow_state").fetchone()[0]
            assert left == len(app[1]["workflow_state"]) - 1
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert not any(n.startswith("kv") for n in names), names

    def test_runs_need_every_not_null_column_to_be_writable(self, app: tuple[Path, dict[str, dict[bytes, bytes]]],
                                                            scheme: str) -> None:
        with pytest.raises(UnsupportedError, match="workflow_id, status, created_at, updated_at"):
            open_sync(f"{scheme}://{app[0]}?table=workflow_runs&key=run_id&value=data&write=true")
        url = f"{scheme}://{app[0]}?table=workflow_runs&key=run_id&value=*&json=data&write=true"
        with open_sync(url) as runs:
            key = next(iter(app[1]["workflow_runs"]))
            row = json.loads(runs.get(key).value)  # type: ignore[union-attr]
            row["status"] = "completed"
            runs.set(key, json.dumps(row).encode())
            assert json.loads(runs.get(key).value)["status"] == "completed"  # type: ignore[union-attr]

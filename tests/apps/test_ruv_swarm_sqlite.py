"""ruv-swarm-persistence's SQLite tables through the URLs of app-tables.md section 4: model tables
read-only as value=data (their other columns are NOT NULL), writable as value=* with json=, and
deletes that its foreign keys would cascade refused unless write=cascade."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from kvctl.errors import ConflictError, UnsupportedError
from kvctl.hlc import make_version
from kvctl.registry import open_sync
from kvctl.testing.mapped import MappedReadChecks

from .schemas import fill_ruv_swarm

QUERIES = {
    "agents": "table=agents&key=id&value=data&version=updated_at:s",
    "tasks": "table=tasks&key=id&value=data&version=updated_at:s",
    "events": "table=events&key=id&value=data",
    "task_dependencies": "table=task_dependencies&key=task_id,depends_on&value=created_at",
}


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[bytes, bytes]]]:
    path = tmp_path_factory.mktemp("swarm") / "swarm.db"
    return path, fill_ruv_swarm(path)


class TestRuvSwarmReads(MappedReadChecks):
    @pytest.fixture(params=["sqlite", "libsql"])
    def scheme(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture(params=list(QUERIES))
    def table(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def database(self, swarm: tuple[Path, dict[str, dict[bytes, bytes]]]) -> Path:
        return swarm[0]

    @pytest.fixture
    def mapped_url(self, database: Path, scheme: str, table: str) -> str:
        return f"{scheme}://{database}?{QUERIES[table]}"

    @pytest.fixture
    def expected(self, swarm: tuple[Path, dict[str, dict[bytes, bytes]]], table: str) -> dict[bytes, bytes]:
        return swarm[1][table]


def test_versions_are_unix_seconds(swarm: tuple[Path, dict[str, dict[bytes, bytes]]]) -> None:
    path, rows = swarm
    with open_sync(f"sqlite://{path}?{QUERIES['agents']}", access="read") as agents:
        versions = [agents.get(k).version for k in rows["agents"]]  # type: ignore[union-attr]
    assert versions == [make_version((1_767_225_600 + i) * 1000) for i in range(len(versions))]


@pytest.fixture
def fresh(tmp_path: Path) -> tuple[Path, dict[str, dict[bytes, bytes]]]:
    path = tmp_path / "swarm.db"
    return path, fill_ruv_swarm(path)


def test_model_tables_are_read_only_as_value_data(fresh: tuple[Path, dict[str, dict[bytes, bytes]]]) -> None:
    with pytest.raises(UnsupportedError, match="name, agent_type, status, capabilities, metadata, heartbeat"):
        open_sync(f"sqlite://{fresh[0]}?table=agents&key=id&value=data&write=true")


def test_value_star_writes_and_cascading_deletes_need_write_cascade(
        fresh: tuple[Path, dict[str, dict[bytes, bytes]]]) -> None:
    path, rows = fresh
    base = f"sqlite://{path}?table=agents&key=id&value=*&json=capabilities,metadata,data&version=updated_at:s"
    aid = next(iter(rows["agents"]))
    with open_sync(base + "&write=true") as agents:
        row = json.loads(agents.get(aid).value)  # type: ignore[union-attr]
        assert row["capabilities"] == ["search"] and row["data"]["name"] == "worker-0"
        row["status"] = "busy"
        agents.set(aid, json.dumps(row).encode())
        assert json.loads(agents.get(aid).value)["status"] == "busy"  # type: ignore[union-attr]
        with pytest.raises(UnsupportedError, match=r"events\(agent_id\) ON DELETE CASCADE"):
            agents.delete(aid)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT status FROM agents WHERE id = ?", (aid.decode(),)).fetchone()[0] == "busy"
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == len(rows["events"])
    with open_sync(base + "&write=cascade") as agents:
        assert agents.delete(aid)
    with sqlite3.connect(path) as conn:  # foreign keys on for kvctl's write, as ruv-swarm has them
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == len(rows["events"]) - 1
        assert conn.execute("SELECT count(*) FROM tasks WHERE assigned_to IS NULL").fetchone()[0] == 1


def test_libsql_refuses_deletes_it_cannot_cascade(fresh: tuple[Path, dict[str, dict[bytes, bytes]]]) -> None:
    path, rows = fresh
    url = f"libsql://{path}?table=agents&key=id&value=*&json=capabilities,metadata,data&write=cascade"
    with open_sync(url) as agents, pytest.raises(UnsupportedError, match="use a sqlite:// URL"):
        agents.delete(next(iter(rows["agents"])))
    tasks = f"libsql://{path}?table=tasks&key=id&value=*&json=payload,data&write=true"
    with open_sync(tasks) as store, pytest.raises(UnsupportedError, match=r"\(agents\) that libsql-client"):
        store.set(b"t-new", b"{}")


def test_foreign_key_violation_is_a_conflict(fresh: tuple[Path, dict[str, dict[bytes, bytes]]]) -> None:
    path, rows = fresh
    url = f"sqlite://{path}?table=task_dependencies&key=task_id,depends_on&value=created_at&write=true"
    task = next(iter(rows["tasks"])).decode()
    with open_sync(url) as deps, pytest.raises(ConflictError, match="FOREIGN KEY constraint failed"):
        deps.set(f"{task}/no-such-task".encode(), b"1767225600")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM task_dependencies").fetchone()[0] == len(rows["task_dependencies"])

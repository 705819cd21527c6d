"""The engines on mapped tables, through the CLI as an operator runs them: every read command
leaves the application's file byte for byte as it was; migrate (both directions), diff,
export/import, snapshot create/restore and sync (by comparison) work on Gorkflow's tables."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from kvctl.testing.cli import read_commands, run_kvctl
from kvctl.testing.mapped import digest

from .schemas import GORKFLOW_DDL, fill_gorkflow, fill_ruv_swarm

STATE = "table=workflow_state&key=run_id,key&value=value&version=updated_at"
RUNS = "table=workflow_runs&key=run_id&value=*&json=data"


def empty_gorkflow(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.executescript(GORKFLOW_DDL)
    return path


@pytest.mark.parametrize("scheme", ["sqlite", "libsql"])
@pytest.mark.parametrize("query", [STATE, RUNS, "table=*"])
def test_every_read_command_leaves_the_file_as_it_was(scheme: str, query: str, env: dict[str, str],
                                                       tmp_path: Path) -> None:
    db = tmp_path / "workflows.db"
    rows = fill_gorkflow(db)
    url = f"{scheme}://{db}?{query}"
    key = next(iter(rows["workflow_state"])).decode()
    before = digest(db)
    out = tmp_path / "out"
    out.mkdir()
    for args in read_commands(url, "memory://", out, key=key):
        done = run_kvctl(env, *args)
        assert done.returncode in (0, 1), (args, done.stderr)
        assert digest(db) == before, f"{args} changed the application's database"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ruv_swarm_reads_leave_the_file_as_it_was(env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "swarm.db"
    rows = fill_ruv_swarm(db)
    url = f"sqlite://{db}?table=agents&key=id&value=data&version=updated_at:s"
    before = digest(db)
    out = tmp_path / "out"
    out.mkdir()
    for args in read_commands(url, "memory://", out, key=next(iter(rows["agents"])).decode()):
        assert run_kvctl(env, *args).returncode in (0, 1), args
        assert digest(db) == before, f"{args} changed the application's database"


def test_discovery_lists_tables_with_their_urls(env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "swarm.db"
    fill_ruv_swarm(db)
    done = run_kvctl(env, "-u", f"sqlite://{db}?table=*", "get", "task_dependencies")
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)
    assert entry["url"] == f"sqlite://{db}?table=task_dependencies&key=task_id,depends_on&value=created_at"
    assert "referenced_by" not in entry and entry["mappable"]
    agents = json.loads(run_kvctl(env, "-u", f"sqlite://{db}?table=*", "get", "agents").stdout)
    assert "events(agent_id) ON DELETE CASCADE" in agents["referenced_by"]
    refused = run_kvctl(env, "-u", f"sqlite://{db}?table=*", "set", "agents", "x")
    assert refused.returncode == 4 and refused.stderr.count("\n") == 1


def test_refusals_are_one_line_with_their_exit_code(env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "workflows.db"
    fill_gorkflow(db, runs=1)
    before = digest(db)
    cases = [
        (f"{STATE}&key=run_id".replace("key=run_id,key&", ""), ["count"], 2, "not its primary key"),
        ("table=nope&key=id", ["count"], 2, "no table nope"),
        ("table=workflow_state&key=run_id,key", ["count"], 2, "candidates: value, updated_at"),
        (STATE, ["set", "r/k", "v"], 4, "mapped read-only"),
        (f"{STATE}&write=true", ["set", "r/k", "v", "--ttl", "1h"], 4, "no expiry column"),
        ("table=workflow_runs&key=run_id&value=data&write=true", ["set", "r", "{}"], 4, "NOT NULL"),
        (f"{RUNS}&write=true", ["set", "r", "[1]"], 5, "not a JSON object"),
        (f"{STATE}&write=true", ["set", "nosep", "v"], 5, "does not name a row"),
        (f"{STATE}&feed=true", ["count"], 2, "unknown option"),
    ]
    for query, args, code, message in cases:
        done = run_kvctl(env, "-u", f"sqlite://{db}?{query}", *args)
        assert done.returncode == code and message in done.stderr, (query, args, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr
        assert digest(db) == before, (query, args)


def test_migrate_diff_export_import_snapshot_sync(env: dict[str, str], tmp_path: Path) -> None:
    app = tmp_path / "workflows.db"
    rows = fill_gorkflow(app)
    src = f"sqlite://{app}?{STATE}"
    kv = f"sqlite://{tmp_path / 'kv.db'}"

    def ok(*args: str) -> str:
        done = run_kvctl(env, *args)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    # out of the application's table, and back into a fresh copy of its schema
    ok("migrate", src, kv, "--verify", "--no-progress")
    ok("diff", src, kv)
    back = f"sqlite://{empty_gorkflow(tmp_path / 'back.db')}?{STATE}&write=true"
    ok("migrate", kv, back, "--verify", "--no-progress")
    ok("diff", src, back)
    # export / import
    ok("export", src, "-o", str(tmp_path / "state.jsonl"))
    imported = f"libsql://{empty_gorkflow(tmp_path / 'imported.db')}?{STATE}&write=true"
    ok("import", str(tmp_path / "state.jsonl"), imported)
    ok("diff", src, imported)
    # snapshot create / restore
    ok("snapshot", "create", src, "-o", str(tmp_path / "state.kvs"))
    restored = f"sqlite://{empty_gorkflow(tmp_path / 'restored.db')}?{STATE}&write=true"
    ok("snapshot", "restore", str(tmp_path / "state.kvs"), restored)
    ok("diff", src, restored)
    # sync by comparison: the application changes a value, sync carries it
    key = next(iter(rows["workflow_state"]))
    run_id, name = key.decode().split("/", 1)
    with sqlite3.connect(app) as conn:
        conn.execute("UPDATE workflow_state SET value = ?, updated_at = '2099-01-01 00:00:00' "
                     "WHERE run_id = ? AND key = ?", (b'"changed"', run_id, name))
    ok("sync", src, kv)
    assert ok("-u", kv, "get", key.decode()) == '"changed"'
    # and the whole run table as JSON objects into a kvctl store and back
    runs_back = f"sqlite://{empty_gorkflow(tmp_path / 'runs.db')}?{RUNS}&write=true"
    ok("migrate", f"sqlite://{app}?{RUNS}", runs_back, "--verify", "--no-progress")
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        assert conn.execute("SELECT count(*) FROM workflow_runs").fetchone()[0] == len(rows["workflow_runs"])

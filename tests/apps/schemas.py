"""The seed applications' own SQLite tables, created and filled the way each application does.

Gorkflow: ``store/libsql_schema.go`` (sicko7947/gorkflow), verbatim; rows as ``store/libsql.go``
writes them: ``uuid.New().String()`` run ids, ``json.Marshal`` state values in a BLOB, run JSON
in ``data`` TEXT, ``time.Time`` written by modernc.org/sqlite as ``t.String()`` (zone
abbreviation and monotonic reading included) on local files and as RFC 3339 through Hrana,
``CURRENT_TIMESTAMP`` defaults.  ruv-swarm-persistence: ``sql/schema.sql`` plus migrations 2-4
(ruvnet/ruv-FANN ``ruv-swarm/crates/ruv-swarm-persistence``), verbatim; Unix-seconds times,
UUID ids, the whole model as JSON in ``data``, ``PRAGMA foreign_keys=ON`` and WAL as it opens
the file.

Each ``fill_*`` returns what the rows must read as through the URLs the operator would type
(app-tables.md section 4), computed here from the inserted values, not by kvctl.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import uuid
from pathlib import Path

GORKFLOW_DDL = """
CREATE TABLE IF NOT EXISTS workflow_runs (
	run_id TEXT PRIMARY KEY,
	workflow_id TEXT NOT NULL,
	status TEXT NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	resource_id TEXT,
	data TEXT
);
CREATE INDEX IF NOT EXISTS idx_runs_workflow_status ON workflow_runs(workflow_id, status);
CREATE INDEX IF NOT EXISTS idx_runs_resource_status ON workflow_runs(resource_id, status);
CREATE INDEX IF NOT EXISTS idx_runs_updated_at ON workflow_runs(updated_at);
CREATE INDEX IF NOT EXISTS idx_runs_workflow_created ON workflow_runs(workflow_id, created_at);

CREATE TABLE IF NOT EXISTS step_executions (
	run_id TEXT NOT NULL,
	step_id TEXT NOT NULL,
	execution_index INTEGER NOT NULL DEFAULT 0,
	status TEXT NOT NULL,
	created_at DATETIME NOT NULL,
	started_at DATETIME,
	completed_at DATETIME,
	error TEXT,
	data TEXT,
	PRIMARY KEY (run_id, step_id)
);
CREATE INDEX IF NOT EXISTS idx_step_executions_run_index ON step_executions(run_id, execution_index);
CREATE INDEX IF NOT EXISTS idx_step_executions_status ON step_executions(status);

CREATE TABLE IF NOT EXISTS step_outputs (
	run_id TEXT NOT NULL,
	step_id TEXT NOT NULL,
	output_data BLOB,
	created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
	PRIMARY KEY (run_id, step_id)
);

CREATE TABLE IF NOT EXISTS workflow_state (
	run_id TEXT NOT NULL,
	key TEXT NOT NULL,
	value BLOB,
	updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
	PRIMARY KEY (run_id, key)
);
"""

RUV_SWARM_DDL = """
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    agent_type TEXT NOT NULL,
    status TEXT NOT NULL,
    capabilities TEXT NOT NULL, -- JSON array
    metadata TEXT NOT NULL, -- JSON object
    heartbeat INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    data TEXT NOT NULL -- Full JSON representation
);
CREATE INDEX IF NOT EXISTS idx_agents_status ON agents(status);
CREATE INDEX IF NOT EXISTS idx_agents_type ON agents(agent_type);
CREATE INDEX IF NOT EXISTS idx_agents_heartbeat ON agents(heartbeat);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY NOT NULL,
    task_type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    status TEXT NOT NULL,
    assigned_to TEXT,
    payload TEXT NOT NULL, -- JSON
    result TEXT, -- JSON
    error TEXT,
    retry_count INTEGER DEFAULT 0,
    max_retries INTEGER DEFAULT 3,
    dependencies TEXT, -- JSON array
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    data TEXT NOT NULL, -- Full JSON representation
    FOREIGN KEY (assigned_to) REFERENCES agents(id) ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS idx_tasks_status ON tasks(status);
CREATE INDEX IF NOT EXISTS idx_tasks_priority ON tasks(priority DESC);
CREATE INDEX IF NOT EXISTS idx_tasks_assigned ON tasks(assigned_to);
CREATE INDEX IF NOT EXISTS idx_tasks_created ON tasks(created_at);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY NOT NULL,
    event_type TEXT NOT NULL,
    agent_id TEXT,
    task_id TEXT,
    payload TEXT NOT NULL, -- JSON
    metadata TEXT NOT NULL, -- JSON
    timestamp INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    data TEXT NOT NULL, -- Full JSON representation
    FOREIGN KEY (agent_id) REFERENCES agents(id) ON DELETE CASCADE,
    FOREIGN KEY (task_id) REFERENCES tasks(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS idx_events_type ON events(event_type);
CREATE INDEX IF NOT EXISTS idx_events_agent ON events(agent_id);
CREATE INDEX IF NOT EXISTS idx_events_task ON events(task_id);
CREATE INDEX IF NOT EXISTS idx_events_timestamp ON events(timestamp);
CREATE INDEX IF NOT EXISTS idx_events_sequence ON events(sequence);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY NOT NULL,
    from_agent TEXT NOT NULL,
    to_agent TEXT NOT NULL,
    message_type TEXT NOT NULL,
    content TEXT NOT NULL, -- JSON
    priority TEXT NOT NULL,
    read INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    read_at INTEGER,
    data TEXT NOT NULL, -- Full JSON representation
    FOREIGN KEY (from_agent) REFERENCES agents(id) ON DELETE CASCADE,
    FOREIGN KEY (to_agent) REFERENCES agents(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS metrics (
    id TEXT PRIMARY KEY NOT NULL,
    metric_type TEXT NOT NULL,
    agent_id TEXT,
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    tags TEXT NOT NULL, -- JSON object
    timestamp INTEGER NOT NULL,
    data TEXT NOT NULL, -- Full JSON representation
    FOREIGN KEY (agent_id) REFERENCES agents(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_agents_capabilities
ON agents(json_extract(capabilities, '$'));
CREATE TABLE IF NOT EXISTS task_dependencies (
    task_id TEXT NOT NULL,
    depends_on TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, depends_on),
    FOREIGN KEY (task_id) REFERENCES tasks(id) ON DELETE CASCADE,
    FOREIGN KEY (depends_on) REFERENCES tasks(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS agent_groups (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    metadata TEXT NOT NULL, -- JSON
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_group_members (
    group_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    role TEXT,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, agent_id),
    FOREIGN KEY (group_id) REFERENCES agent_groups(id) ON DELETE CASCADE,
    FOREIGN KEY (agent_id) REFERENCES agents(id) ON DELETE CASCADE
);
"""

# Go's time.Time.String() as modernc.org/sqlite writes it, RFC 3339 as Hrana sends it, and
# SQLite's CURRENT_TIMESTAMP: the three forms one Gorkflow file can hold.
GO_TIME = "2026-03-30 10:11:12.123456789 +0200 CEST m=+0.001234567"
GO_TIME_UTC = "2026-03-30T08:11:12.123456Z"  # the same instant, as a JSON value reads it (µs)
RFC3339_TIME = "2026-03-30T09:00:00Z"


def _run_ids(n: int, seed: int) -> list[str]:
    return [str(uuid.UUID(int=(seed << 64) | i, version=4)) for i in range(n)]


def fill_gorkflow(path: Path, runs: int = 3, *, wal: bool = True) -> dict[str, dict[bytes, bytes]]:
    """Gorkflow's tables with ``runs`` runs; per table, key -> value as the §4 URLs read them:
    ``workflow_state`` value=value, ``step_outputs`` value=output_data, ``workflow_runs`` and
    ``step_executions`` value=data."""
    conn = sqlite3.connect(path)
    conn.executescript(GORKFLOW_DDL)
    if wal:  # Gorkflow's local files: libsql.go opens them with these pragmas
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    out: dict[str, dict[bytes, bytes]] = {"workflow_runs": {}, "step_executions": {}, "step_outputs": {},
                                          "workflow_state": {}}
    for i, run_id in enumerate(_run_ids(runs, 7)):
        stamp = GO_TIME if i % 2 == 0 else RFC3339_TIME
        run = {"id": run_id, "workflow_id": "order-flow", "status": "running", "input": {"n": i, "ü": "✓"}}
        data = json.dumps(run)
        conn.execute("INSERT INTO workflow_runs (run_id, workflow_id, status, created_at, updated_at, resource_id, "
                     "data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (run_id, "order-flow", "running", stamp, stamp, None if i else "tenant-1", data))
        out["workflow_runs"][run_id.encode()] = data.encode()
        for step in ("fetch", "charge", "ship/eu"):
            sdata = json.dumps({"step_id": step, "status": "completed", "attempt": 1})
            conn.execute("INSERT INTO step_executions (run_id, step_id, execution_index, status, created_at, "
                         "started_at, completed_at, error, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (run_id, step, 0, "completed", stamp, stamp, None, None, sdata))
            out["step_executions"][f"{run_id}/{step}".encode()] = sdata.encode()
            output = json.dumps({"ok": True, "step": step}).encode()
            conn.execute("INSERT INTO step_outputs (run_id, step_id, output_data) VALUES (?, ?, ?) "
                         "ON CONFLICT(run_id, step_id) DO UPDATE SET output_data = excluded.output_data",
                         (run_id, step, output))
            out["step_outputs"][f"{run_id}/{step}".encode()] = output
        # SaveState: json.Marshal of the user's value, upserted; keys may hold '/', '%', spaces
        for key, value in (("approval", "yes"), ("cart/items", [1, 2]), ("100% done", None), ("é", {"a": 1})):
            blob = json.dumps(value, separators=(",", ":")).encode()
            conn.execute("INSERT INTO workflow_state (run_id, key, value, updated_at) VALUES (?, ?, ?, "
                         "CURRENT_TIMESTAMP) ON CONFLICT(run_id, key) DO UPDATE SET value = excluded.value, "
                         "updated_at = CURRENT_TIMESTAMP", (run_id, key, blob))
            out["workflow_state"][f"{run_id}/{key}".encode()] = blob
    conn.commit()
    conn.close()
    return out


def fill_ruv_swarm(path: Path, agents: int = 3) -> dict[str, dict[bytes, bytes]]:
    """ruv-swarm's tables; per table, key -> value as the §4 URLs read them (value=data, and
    task_dependencies value=created_at)."""
    conn = sqlite3.connect(path)
    conn.executescript(RUV_SWARM_DDL)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("INSERT INTO schema_migrations VALUES (1, 'initial_schema', 1767225600)")
    out: dict[str, dict[bytes, bytes]] = {"agents": {}, "tasks": {}, "events": {}, "task_dependencies": {}}
    now = 1_767_225_600  # Unix seconds, as chrono's timestamp() gives
    agent_ids = _run_ids(agents, 11)
    task_ids = _run_ids(agents, 13)
    for i, (aid, tid) in enumerate(zip(agent_ids, task_ids, strict=True)):
        agent = {"id": aid, "name": f"worker-{i}", "agent_type": "researcher", "status": "idle",
                 "capabilities": ["search"], "metadata": {}, "heartbeat": now}
        data = json.dumps(agent)
        conn.execute("INSERT INTO agents (id, name, agent_type, status, capabilities, metadata, heartbeat, "
                     "created_at, updated_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                     (aid, f"worker-{i}", "researcher", "idle", '["search"]', "{}", now, now, now + i, data))
        out["agents"][aid.encode()] = data.encode()
        task = {"id": tid, "task_type": "analyze", "priority": 2, "status": "pending", "assigned_to": aid}
        tdata = json.dumps(task)
        conn.execute("INSERT INTO tasks (id, task_type, priority, status, assigned_to, payload, result, error, "
                     "retry_count, max_retries, dependencies, created_at, updated_at, started_at, completed_at, "
                     "data) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, 0, 3, '[]', ?, ?, NULL, NULL, ?)",
                     (tid, "analyze", 2, "pending", aid, "{}", now, now, tdata))
        out["tasks"][tid.encode()] = tdata.encode()
        eid = str(uuid.UUID(int=(17 << 64) | i, version=4))
        edata = json.dumps({"id": eid, "event_type": "task_assigned", "sequence": i})
        conn.execute("INSERT INTO events (id, event_type, agent_id, task_id, payload, metadata, timestamp, sequence, "
                     "data) VALUES (?, ?, ?, ?, '{}', '{}', ?, ?, ?)", (eid, "task_assigned", aid, tid, now, i, edata))
        out["events"][eid.encode()] = edata.encode()
    for a, b in itertools.pairwise(task_ids):
        conn.execute("INSERT INTO task_dependencies (task_id, depends_on, created_at) VALUES (?, ?, ?)", (b, a, now))
        out["task_dependencies"][f"{b}/{a}".encode()] = str(now).encode()
    conn.commit()
    conn.close()
    return out

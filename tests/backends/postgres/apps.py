"""The seed applications' own PostgreSQL tables, created and filled the way each application does.

Gorkflow (gorkflow.sql: store/postgres_schema.go) writes ``time.Now().UTC()`` into TIMESTAMPTZ,
``json.Marshal`` of the run into JSONB and of each state value into BYTEA; run ids are UUIDs.
Querator (querator.sql: internal/store/postgres.go) names a partition's table after a hash of the
queue name, keys items by KSUID text under ``COLLATE "C"`` and truncates times to microseconds.
Every database is new and uniquely named (the server is shared), and dropped afterwards.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.backends.postgres.support import Statement, sql

HERE = Path(__file__).parent
GORKFLOW_DDL = (HERE / "gorkflow.sql").read_text()
GORKFLOW_SCHEMA = GORKFLOW_DDL.split("\nINSERT", 1)[0]  # the tables without gorkflow.sql's two rows
QUERATOR_DDL = (HERE / "querator.sql").read_text()
QUERATOR_ITEMS = "items_1buPSdlPil_0"  # queue "orders", partition 0, as Querator names it
GORKFLOW_TABLES = ["workflow_runs", "step_executions", "step_outputs", "workflow_state"]  # FK order

RUNS = [f"6f1c2e9a-{n:04x}-4000-8000-{n:012x}" for n in range(2, 6)]
BASE = datetime(2026, 3, 30, 8, 11, 12, 123456, tzinfo=UTC)
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def on_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@contextmanager
def database(server_url: str, tag: str) -> Iterator[str]:
    """A new database named after ``tag`` on the server; its URL, dropped on exit."""
    name = f"kvctl_{tag}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    sql(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield on_database(server_url, name)
    finally:
        sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill_gorkflow(url: str) -> None:
    """Gorkflow's four tables with runs, steps, outputs and state, as its PostgreSQL store writes them."""
    # one connection for every statement (each still its own transaction, as Gorkflow writes them)
    statements: list[Statement] = [GORKFLOW_DDL]
    add = statements.extend
    for n, run in enumerate(RUNS):
        at = BASE + timedelta(minutes=n)
        run_json = json.dumps({"run_id": run, "workflow_id": "approve", "status": "running",
                               "input": {"amount": 100 * n, "currency": "EUR"}, "progress": n / 4,
                               "created_at": at.isoformat()}, separators=(",", ":"))
        add([("INSERT INTO workflow_runs (run_id, workflow_id, status, created_at, updated_at, resource_id, data) "
                  "VALUES ($1, 'approve', 'running', $2, $2, $3, $4::jsonb)", (run, at, None if n % 2 else f"res-{n}",
                                                                              run_json))])
        for i, step in enumerate(["fetch", "review", "notify"][: n + 1]):
            step_json = json.dumps({"step_id": step, "status": "completed", "attempt": 1})
            add([("INSERT INTO step_executions (run_id, step_id, execution_index, status, created_at, started_at, "
                      "completed_at, error, data) VALUES ($1, $2, $3, 'completed', $4, $4, $5, NULL, $6::jsonb)",
                      (run, step, i, at, at + timedelta(seconds=1), step_json)),
                (("INSERT INTO step_outputs (run_id, step_id, output_data) VALUES ($1, $2, $3)",
                  (run, step, json.dumps({"ok": True, "step": step, "bytes": "\u00e9\u00e8"}).encode())))])
        for key, value in [("approval", "pending"), ("approver/name", "Zoë"), ("count", n),
                           ("limits", {"max": 5, "tags": ["a", "b"]})]:
            add([("INSERT INTO workflow_state (run_id, key, value, updated_at) VALUES ($1, $2, $3, $4) "
                      "ON CONFLICT (run_id, key) DO UPDATE SET value = EXCLUDED.value, "
                      "updated_at = EXCLUDED.updated_at",
                      (run, key, json.dumps(value).encode(), at))])
    sql(url, *statements)


def ksuid(n: int) -> str:
    """A KSUID-shaped id (27 base-62 characters), increasing with ``n`` as Querator's are in time."""
    out = ""
    value = 10**40 + n * 7919
    while len(out) < 27:
        out = _B62[value % 62] + out
        value //= 62
    return out


def fill_querator(url: str, items: int = 25) -> list[str]:
    """The queues table and queue "orders" partition 0 with ``items`` items; their ids, in order."""
    statements: list[Statement] = [QUERATOR_DDL]
    add = statements.extend
    now = BASE
    info = json.dumps([{"partition": 0, "queue": "orders", "read_only": False}])
    add([("INSERT INTO queues (name, lease_timeout_ns, expire_timeout_ns, requested_partitions, partition_info, "
              "created_at, updated_at) VALUES ('orders', 60000000000, 86400000000000, 1, $1::jsonb, $2, $2)",
              (info, now))])
    ids = [ksuid(n) for n in range(items)]
    for n, item in enumerate(ids):
        add([(f'INSERT INTO "{QUERATOR_ITEMS}" (id, source_id, is_leased, lease_deadline, expire_deadline, '
                  "created_at, attempts, max_attempts, reference, encoding, kind, payload) "
                  "VALUES ($1, $2, $3, $4, $5, $6, $7, 3, 'ref', 'application/json', 'order', $8)",
                  (item, f"src-{n}" if n % 3 == 0 else None, n % 4 == 0,
                   now + timedelta(minutes=1) if n % 4 == 0 else None, now + timedelta(days=1), now, n % 2,
                   json.dumps({"order": n, "sku": f"SKU-{n:03d}"}).encode()))])
    sql(url, *statements)
    return sorted(ids)

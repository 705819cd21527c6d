-- Gorkflow's PostgreSQL schema (store/postgres_schema.go), as described in
-- /work/shared/reference/app-tables.md section 1.1: an application's own tables, none of kvctl's.
CREATE TABLE IF NOT EXISTS workflow_runs (
    run_id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    resource_id TEXT,
    data JSONB NOT NULL
);
CREATE TABLE IF NOT EXISTS step_executions (
    run_id TEXT NOT NULL REFERENCES workflow_runs(run_id) ON DELETE CASCADE,
    step_id TEXT NOT NULL,
    execution_index INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    error TEXT,
    data JSONB NOT NULL,
    PRIMARY KEY (run_id, step_id)
);
CREATE TABLE IF NOT EXISTS step_outputs (
    run_id TEXT NOT NULL REFERENCES workflow_runs(run_id) ON DELETE CASCADE,
    step_id TEXT NOT NULL,
    output_data BYTEA,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    PRIMARY KEY (run_id, step_id)
);
CREATE TABLE IF NOT EXISTS workflow_state (
    run_id TEXT NOT NULL REFERENCES workflow_runs(run_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value BYTEA,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (run_id, key)
);
INSERT INTO workflow_runs VALUES ('6f1c2e9a-0000-4000-8000-000000000001', 'approve', 'running', now(), now(), NULL,
                                  '{"status": "running"}');
INSERT INTO workflow_state (run_id, key, value)
VALUES ('6f1c2e9a-0000-4000-8000-000000000001', 'approval', convert_to('"pending"', 'UTF8'));

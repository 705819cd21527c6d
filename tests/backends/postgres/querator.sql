-- Querator's PostgreSQL store (kapetan-io/querator internal/store/postgres.go): the queues table
-- and one items table per partition, named items_<hash of the queue name>_<partition>, quoted as
-- pgx.Identifier.Sanitize quotes it, with its indexes. Queue "orders", partition 0.
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    lease_timeout_ns BIGINT NOT NULL,
    expire_timeout_ns BIGINT NOT NULL,
    dead_queue TEXT NOT NULL DEFAULT '',
    max_attempts INTEGER NOT NULL DEFAULT 0,
    reference TEXT NOT NULL DEFAULT '',
    requested_partitions INTEGER NOT NULL,
    partition_info JSONB NOT NULL DEFAULT '[]'::jsonb,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS "items_1buPSdlPil_0" (
    id TEXT COLLATE "C" PRIMARY KEY,
    source_id TEXT,
    is_leased BOOLEAN NOT NULL DEFAULT false,
    lease_deadline TIMESTAMPTZ,
    expire_deadline TIMESTAMPTZ NOT NULL,
    enqueue_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 0,
    reference TEXT NOT NULL DEFAULT '',
    encoding TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT '',
    payload BYTEA
);
CREATE UNIQUE INDEX IF NOT EXISTS "idx_1buPSdlPil_0_src" ON "items_1buPSdlPil_0" (source_id) WHERE source_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS "idx_1buPSdlPil_0_lse" ON "items_1buPSdlPil_0"(is_leased, enqueue_at)
    WHERE is_leased = false AND enqueue_at IS NULL;
CREATE INDEX IF NOT EXISTS "idx_1buPSdlPil_0_sch" ON "items_1buPSdlPil_0"(enqueue_at) WHERE enqueue_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS "idx_1buPSdlPil_0_dln" ON "items_1buPSdlPil_0"(lease_deadline) WHERE is_leased = true;
CREATE INDEX IF NOT EXISTS "idx_1buPSdlPil_0_exp" ON "items_1buPSdlPil_0"(expire_deadline);

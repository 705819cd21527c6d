# Apply with: find tests bench README.md \( -name '*.py' -o -name '*.sh' -o -name '*.md' \) -print0 | xargs -0 sed -i -f .lead/tests-rename.sed
# Imports between test modules after tests/ became a package in folders (apply to tests/**/*.py).
s/^\( *\)from conftest import/\1from tests.conftest import/
s/^\( *\)from backends import/\1from tests.families import/
s/^\( *\)from browser import/\1from tests.browser import/
s/^\( *\)from sync_support import/\1from tests.sync_support import/
s/^\( *\)from test_migrate_support import/\1from tests.engines.support import/
s/^\( *\)from test_snapshot_incremental import/\1from tests.engines.snapshot.test_incremental import/
s/^\( *\)from test_migrate_resume import/\1from tests.engines.migrate.test_resume import/
s/^\( *\)from test_cli_json import/\1from tests.cli.test_json import/
s/^\( *\)from test_cli_conventions import/\1from tests.cli.test_conventions import/
s/"sqlite_schema_v2\.sql"/"schema_v2.sql"/
s/"gorkflow_postgres\.sql"/"gorkflow.sql"/
s/\bkvctl\.testing\.suite\b/kvctl.testing.conformance/g
s/\bkvctl\.testing\.machine\b/kvctl.testing.stateful/g
s#\bkvctl/testing/suite\.py\b#kvctl/testing/conformance.py#g
s#\bkvctl/testing/machine\.py\b#kvctl/testing/stateful.py#g
# sync_support is gone: cli_env -> kvctl.testing.cli.clean_env, kvctl(env, ...) -> run_kvctl(env, ...),
# sync_json / sigkill_mid_sync -> kvctl.testing.replication (fix such imports by hand)
# Paths named in comments, docs and scripts
s#\btests/backends\.py\b#tests/families.py#g
s#\btests/test_adapt\.py\b#tests/core/test_adapt.py#g
s#\btests/test_hlc\.py\b#tests/core/test_hlc.py#g
s#\btests/test_url\.py\b#tests/core/test_url.py#g
s#\btests/test_registry\.py\b#tests/core/test_registry.py#g
s#\btests/test_packaging\.py\b#tests/core/test_packaging.py#g
s#\btests/test_cli\.py\b#tests/cli/test_commands.py#g
s#\btests/test_cli_admin\.py\b#tests/cli/test_admin.py#g
s#\btests/test_cli_conventions\.py\b#tests/cli/test_conventions.py#g
s#\btests/test_cli_errors\.py\b#tests/cli/test_errors.py#g
s#\btests/test_cli_json\.py\b#tests/cli/test_json.py#g
s#\btests/test_cli_keys\.py\b#tests/cli/test_keys.py#g
s#\btests/test_cli_progress\.py\b#tests/cli/test_progress.py#g
s#\btests/test_output_dirs\.py\b#tests/cli/test_output_dirs.py#g
s#\btests/test_stopped\.py\b#tests/cli/test_stopped.py#g
s#\btests/test_store_naming\.py\b#tests/cli/test_store_naming.py#g
s#\btests/test_disk_faults\.py\b#tests/cli/test_disk_faults.py#g
s#\btests/test_embedded_reads\.py\b#tests/cli/test_embedded_reads.py#g
s#\btests/test_bench\.py\b#tests/cli/test_bench.py#g
s#\btests/test_migrate_support\.py\b#tests/engines/support.py#g
s#\btests/test_migrate\.py\b#tests/engines/migrate/test_engine.py#g
s#\btests/test_migrate_cli\.py\b#tests/engines/migrate/test_cli.py#g
s#\btests/test_migrate_pairs\.py\b#tests/engines/migrate/test_pairs.py#g
s#\btests/test_migrate_plan\.py\b#tests/engines/migrate/test_plan.py#g
s#\btests/test_migrate_redis\.py\b#tests/engines/migrate/test_redis_types.py#g
s#\btests/test_migrate_resume\.py\b#tests/engines/migrate/test_resume.py#g
s#\btests/test_migrate_resume_conflicts\.py\b#tests/engines/migrate/test_resume_conflicts.py#g
s#\btests/test_migrate_workers\.py\b#tests/engines/migrate/test_workers.py#g
s#\btests/test_executor_dask\.py\b#tests/engines/migrate/test_executor_dask.py#g
s#\btests/test_diff\.py\b#tests/engines/test_diff.py#g
s#\btests/test_export\.py\b#tests/engines/test_export.py#g
s#\btests/test_snapshot\.py\b#tests/engines/snapshot/test_snapshot.py#g
s#\btests/test_snapshot_incremental\.py\b#tests/engines/snapshot/test_incremental.py#g
s#\btests/test_snapshot_incremental_cli\.py\b#tests/engines/snapshot/test_incremental_cli.py#g
s#\btests/test_sync\.py\b#tests/engines/test_sync.py#g
s#\btests/test_sqlite\.py\b#tests/backends/sqlite/test_sqlite.py#g
s#\btests/test_sqlite_feed\.py\b#tests/backends/sqlite/test_feed.py#g
s#\btests/test_sqlite_other_writers\.py\b#tests/backends/sqlite/test_other_writers.py#g
s#\btests/test_sqlite_reads\.py\b#tests/backends/sqlite/test_reads.py#g
s#\btests/test_sync_sqlite\.py\b#tests/backends/sqlite/test_sync.py#g
s#\btests/sqlite_schema_v2\.sql\b#tests/backends/sqlite/schema_v2.sql#g
s#\btests/test_postgres\.py\b#tests/backends/postgres/test_postgres.py#g
s#\btests/test_postgres_bulk\.py\b#tests/backends/postgres/test_bulk.py#g
s#\btests/test_postgres_faults\.py\b#tests/backends/postgres/test_faults.py#g
s#\btests/test_postgres_feed\.py\b#tests/backends/postgres/test_feed.py#g
s#\btests/test_postgres_readonly\.py\b#tests/backends/postgres/test_readonly.py#g
s#\btests/test_sync_postgres\.py\b#tests/backends/postgres/test_sync.py#g
s#\btests/gorkflow_postgres\.sql\b#tests/backends/postgres/gorkflow.sql#g
s#\btests/test_redis\.py\b#tests/backends/redis/test_redis.py#g
s#\btests/test_redis_auth_env\.py\b#tests/backends/redis/test_auth_env.py#g
s#\btests/test_redis_bulk\.py\b#tests/backends/redis/test_bulk.py#g
s#\btests/test_redis_cache\.py\b#tests/backends/redis/test_local_cache.py#g
s#\btests/test_redis_faults\.py\b#tests/backends/redis/test_faults.py#g
s#\btests/test_redis_features\.py\b#tests/backends/redis/test_features.py#g
s#\btests/test_redis_feed\.py\b#tests/backends/redis/test_feed.py#g
s#\btests/test_redis_feed_cluster\.py\b#tests/backends/redis/test_feed_cluster.py#g
s#\btests/test_sync_redis\.py\b#tests/backends/redis/test_sync.py#g
s#\btests/test_file\.py\b#tests/backends/file/test_file.py#g
s#\btests/test_file_cli\.py\b#tests/backends/file/test_cli.py#g
s#\btests/test_file_corruption\.py\b#tests/backends/file/test_corruption.py#g
s#\btests/test_file_crash\.py\b#tests/backends/file/test_crash.py#g
s#\btests/test_file_feed\.py\b#tests/backends/file/test_feed.py#g
s#\btests/test_file_lock\.py\b#tests/backends/file/test_lock.py#g
s#\btests/test_sync_file\.py\b#tests/backends/file/test_sync.py#g
s#\btests/test_lmdb\.py\b#tests/backends/lmdb/test_lmdb.py#g
s#\btests/test_rocksdb\.py\b#tests/backends/rocksdb/test_rocksdb.py#g
s#\btests/test_libsql\.py\b#tests/backends/libsql/test_libsql.py#g
s#\btests/test_libsql_remote\.py\b#tests/backends/libsql/test_remote.py#g
s#\btests/test_cookie\.py\b#tests/backends/cookie/test_cookie.py#g
s#\btests/test_cache\.py\b#tests/backends/cache/test_cache.py#g
s#\btests/test_shard\.py\b#tests/backends/shard/test_shard.py#g
s#\btests/test_memory\.py\b#tests/backends/memory/test_memory.py#g
s#\btests/test_indexeddb\.py\b#tests/backends/indexeddb/test_indexeddb.py#g
s#\btests/test_indexeddb_keys\.py\b#tests/backends/indexeddb/test_keys.py#g

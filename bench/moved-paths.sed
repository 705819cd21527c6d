# Rewrites references to the files moved into bench/results/ and bench/ci/ (idempotent).
#   git grep -lzE 'bench/(RESULTS|results\.json|[a-z_]+_RESULTS|suite-ci|baseline-ci)' -- ':!bench/results' ':!bench/ci/baseline-ci.json' \
#     | xargs -0 sed -i -f bench/moved-paths.sed
s#bench/RESULTS\.md#bench/results/RESULTS.md#g
s#bench/results\.json\.gz#bench/results/results.json.gz#g
s#bench/\*_RESULTS\.md#bench/results/*_RESULTS.md#g
s#bench/\(embedded\|file\|indexeddb\|migrate\|postgres\|redis\|scaleout\|seedbackends\|snapshot_incremental\|startup\|sync\|sync_postgres\|sync_redis\|sync_sqlite\)_RESULTS\.md#bench/results/\1_RESULTS.md#g
s#bench/suite-ci\.toml#bench/ci/suite-ci.toml#g
s#bench/baseline-ci\.json#bench/ci/baseline-ci.json#g
# After `git mv bench/bulk_RESULTS.md bench/gate_RESULTS.md bench/results/`, also:
s#bench/\(bulk\|bulk_redis\|gate\)_RESULTS\.md#bench/results/\1_RESULTS.md#g

# kvctl issue 15 part 2 (features, not layers): module renames in kvctl/engines and kvctl/cli.
# Apply with: sed -i -E -f renames-features.sed $(git ls-files 'tests/*.py' 'bench/*.py')
# then: ruff check --fix --select I tests bench   (the new import lines sort as first-party)
# Specific lines first (names that moved between modules), then whole modules.
s/^from kvctl\.engines\.parallel import key_range_split, ranges_from$/from kvctl.engines.migrate.split import key_range_split, ranges_from/
s/^( *)from kvctl\.engines\.parallel import plan_slices, slice_plan$/\1from kvctl.engines.migrate.split import plan_slices, slice_plan/
s/^( *)from kvctl\.engines\.migrate import Plan, Progress, Reporter, Summary, migrate$/\1from kvctl.engines.migrate import Plan, Summary, migrate\n\1from kvctl.engines.reporting import Progress, Reporter/
s/^( *)from kvctl\.engines\.migrate import Plan, Reporter, Summary, migrate$/\1from kvctl.engines.migrate import Plan, Summary, migrate\n\1from kvctl.engines.reporting import Reporter/
s/^( *)from kvctl\.engines\.migrate import Progress, Reporter$/\1from kvctl.engines.reporting import Progress, Reporter/
s/^( *)from kvctl\.engines import distributed as /\1from kvctl.engines.distributed import migrate as /
s/^( *)from kvctl\.engines import checkpoint$/\1from kvctl.engines.migrate import checkpoint/
s/"kvctl\.engines\.distributed"/"kvctl.engines.distributed.migrate"/g
s/\bkvctl\.engines\.distributed_diff\b/kvctl.engines.distributed.diff/g
s/\bkvctl\.engines\.executor\b/kvctl.engines.distributed.executor/g
s/\bkvctl\.engines\.transfer\b/kvctl.engines._batches/g
s/\bkvctl\.engines\.pipeline\b/kvctl.engines._pipeline/g
s/\bkvctl\.engines\.fsutil\b/kvctl.engines._files/g
s/\bkvctl\.engines\.stopped\b/kvctl.engines._stopped/g
s/\bkvctl\.engines\.storeops\b/kvctl.engines._stores/g
s/\bkvctl\.engines\.slices\b/kvctl.engines._slices/g
s/\bkvctl\.engines\.export\b/kvctl.engines.dump/g
s/\bkvctl\.engines\.checkpoint\b/kvctl.engines.migrate.checkpoint/g
s/\bkvctl\.engines\.parallel\b/kvctl.engines.migrate.parallel/g
s/\bkvctl\.engines\.planfile\b/kvctl.engines.migrate.planfile/g
s/\bkvctl\.engines\.snapformat\b/kvctl.engines.snapshot.format/g
s/\bkvctl\.engines\.sync\b/kvctl.engines.replicate/g
s/\bkvctl\/engines\/SNAPSHOT_FORMAT\.md\b/kvctl\/engines\/snapshot\/FORMAT.md/g
s/\bkvctl\.cli\.config_cmd\b/kvctl.cli.config/g
s/\bkvctl\.cli\.data\b/kvctl.cli.keys/g
s/\bkvctl\.cli\.engines\b/kvctl.cli.app/g
# SyncResult offers to_dict(), as every engine result does (it was to_json()).
s/\bresult\.to_json\(\)/result.to_dict()/g

# s4-bulkpg: plugins/postgres/store.py split into modules (no behaviour change).
#   PostgresStore._connection/_open_table/_stmt/_fetch/_write_one/_purge* -> plugins/postgres/core.py (PostgresCore)
#   set_many/set_newer_many/apply_many/_write_batch/_upsert_rows/_load_directly -> plugins/postgres/bulk.py (BulkWrites)
#   feed_cursor/changes/_horizon/_bulk_load -> plugins/postgres/feedread.py (FeedReads)
#   _Use -> plugins/postgres/use.py Use;  _Hot -> use.Hot;  _RangeTaken -> bulk._RangeTaken
#   COPY_MIN_ROWS/COPY_MIN_BYTES (bulk), MAX_KEY/MAX_VALUE/PURGE_* (core) stay importable from .store.
# Apply with: sed -i -E -f renames-s4-bulkpg.sed $(grep -rlE "postgres\.store import .*(_Use|_Hot)" plugins tests)
s/from kvctl_plugins\.postgres\.store import _Use\b/from kvctl_plugins.postgres.use import Use/
s/from kvctl_plugins\.postgres\.store import _Hot\b/from kvctl_plugins.postgres.use import Hot/
s/\b_Use\(/Use(/g

# Re-apply the plugins/redis module moves of branch s4-bulkredis to code from other branches:
#   sed -i -f tools/redis-split.sed $(git grep -l 'kvctl_plugins.redis\|from \.base import\|from \.feed import' -- '*.py')
# base.py -> commands.py: SLICE_KEYS SLICE_BYTES Commands escape_glob expiry ranges interleave raise_first_error
s/from kvctl_plugins\.redis\.base import \(SLICE_BYTES, SLICE_KEYS, ranges\)$/from kvctl_plugins.redis.commands import \1/
s/from kvctl_plugins\.redis\.base import escape_glob$/from kvctl_plugins.redis.commands import escape_glob/
s/^from \.base import MAX_STRING, Commands, RedisStoreBase, interleave, raise_first_error, ranges$/from .base import MAX_STRING, RedisStoreBase\nfrom .commands import Commands, interleave, raise_first_error, ranges/
s/^from \.base import escape_glob$/from .commands import escape_glob/
s/^    from kvctl_plugins\.redis import base$/    from kvctl_plugins.redis import commands as base/
# feed.py -> subscription.py: TAG REQUIRED_CLASSES TYPED_CLASSES KEYSPACE KEYEVENT IGNORED_EVENTS classes
#   usable_mode with_required _config_value flush_count pattern_of Subscription
s/from kvctl_plugins\.redis\.feed import \(.*\(Subscription\|usable_mode\|with_required\|flush_count\|pattern_of\).*\)$/from kvctl_plugins.redis.subscription import \1/

# kvctl issue 15 part 1: plugin helpers moved from kvctl.store to kvctl.plugin_kit, and
# kvctl.errors.TimeoutError_ is now TimedOutError.
# Apply with: sed -i -E -f renames-contract.sed $(grep -rlE "kvctl.store import|TimeoutError_" tests)
# The kvctl.plugin_kit line goes before a "from kvctl.registry" line just above, keeping isort order.
/^from kvctl\.registry import [^\n]*$/{
  N
  s/^(from kvctl\.registry import [^\n]*)\nfrom kvctl\.store import AsyncStoreBase, Page, Record$/from kvctl.plugin_kit import AsyncStoreBase\n\1\nfrom kvctl.store import Page, Record/
  s/^(from kvctl\.registry import [^\n]*)\nfrom kvctl\.store import Capabilities, Page, Record, StoreBase, StoreURL$/from kvctl.plugin_kit import StoreBase\n\1\nfrom kvctl.store import Capabilities, Page, Record, StoreURL/
  s/^(from kvctl\.registry import [^\n]*)\nfrom kvctl\.store import AsyncStoreBase, Capabilities, Page, Record, Store, check_limits, key_cursor, now_ms$/from kvctl.plugin_kit import AsyncStoreBase, ScanRange, check_limits, key_cursor\n\1\nfrom kvctl.store import Capabilities, Page, Record, Store, now_ms/
  s/^(from kvctl\.registry import [^\n]*)\nfrom kvctl\.store import MAX_EXPIRY_MS, Record, deadline_ms, now_ms$/from kvctl.plugin_kit import deadline_ms\n\1\nfrom kvctl.store import MAX_EXPIRY_MS, Record, now_ms/
}
s/^from kvctl\.store import Capabilities, Page, Record, StoreBase, StoreURL, is_live, page_size$/from kvctl.plugin_kit import StoreBase, page_size\nfrom kvctl.store import Capabilities, Page, Record, StoreURL, is_live/
s/^([ ]+)from kvctl\.store import AsyncStoreBase$/\1from kvctl.plugin_kit import AsyncStoreBase/
s/\bTimeoutError_\b/TimedOutError/g
# StoreBase._start_key is gone: ScanRange.of(...).after is the key an ordered scan resumes after
s/self\._start_key\(prefix, start_after, cursor\)/ScanRange.of(prefix, start_after, cursor, batch_size).after/

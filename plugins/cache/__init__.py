"""``cache://?max_bytes=64MiB``: a memory-bounded in-process cache (GridKV's Ristretto row).

TinyLFU admission and sampled-LFU eviction by cost, bounded in bytes (see
:mod:`kvctl_plugins.cache.bounded` for the policy and why it is not theine's).  Usable:

* alone: ``cache://?max_bytes=64MiB`` (private) or ``cache://NAME?max_bytes=64MiB`` (shared by
  every store of that name in the process, like ``memory://NAME``).  Entries may be evicted or
  refused admission when the cache is full: it is a cache, not a store of record.
* in front of any store, as a read-through/write-through tier:
  ``cache://?max_bytes=64MiB&backend=<the store's URL, percent-encoded>``, e.g.
  ``cache://?max_bytes=16MiB&backend=sqlite%3A%2F%2F%2Fdata%2Fapp.db``.  Reads try the cache,
  then fetch misses from the store in one batch and admit them; writes and deletes go to the store
  first and then to the cache (a failed write drops the keys from the cache); scans and counts go
  to the store, so a scan never pollutes the cache.  The tier has its store's capabilities.
  ``max_age=30s`` bounds how stale a cached copy can get when other writers share the store.

Options: ``max_bytes`` (default 64MiB), ``backend``, ``max_age``, ``samples`` (eviction sample
size, default 5).  ``stats`` reports hits, misses, hit rate, evictions, refused admissions and
bytes held.
"""

from .store import CacheStore

__all__ = ["CacheStore"]

"""``indexeddb://``: one object store of a running Chromium's IndexedDB, through DevTools.

See :mod:`.store` for the URL and its options, :mod:`.keys` for how IndexedDB keys map to
bytes, and :mod:`.scripts` for how values travel and are written.
"""

from .store import IndexedDBStore

__all__ = ["IndexedDBStore"]

"""`kvctl snapshot`: point-in-time files of a store, full or incremental (the file format:
FORMAT.md beside this file; its codec: :mod:`.format`).

The commands' entry points are :func:`create`, :func:`verify`, :func:`restore` and
:func:`inspect`: each owns its event loop, if it needs one.  :func:`create_from` and
:func:`restore_into` are the async cores, on a store already open.
"""

from .creation import create, create_from
from .inspection import inspect
from .restoration import restore, restore_into
from .result import SnapshotSummary, meta_filter
from .verification import read_meta, verify

__all__ = ["SnapshotSummary", "create", "create_from", "inspect", "meta_filter", "read_meta", "restore",
           "restore_into", "verify"]

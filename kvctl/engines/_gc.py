"""The cyclic garbage collector on bulk paths: rare while pages stream, held off while a run of
records is built.

A bulk copy makes a few container objects per key, none of them cyclic, and each collection
walks every young object still alive.  So while pages stream through a pump the collector runs
once per :data:`STREAMING_GC_THRESHOLD` new objects instead of every 700
(:func:`rare_collections`).  Building one run of parsed lines or one decoded snapshot block is
held off altogether (:func:`collector_held`): it makes thousands of objects at once (the
parser's dicts, then the records), and a :class:`~kvctl.store.Record` is a tuple subclass,
which the collector never untracks, so even a rare collection in the middle walks and promotes
the records made so far.  Neither step creates a reference cycle, so nothing is lost by waiting.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# Measured about a fifth of the client CPU of a bulk import into PostgreSQL at the default.
STREAMING_GC_THRESHOLD = 100_000


@contextlib.contextmanager
def rare_collections() -> Iterator[None]:
    """Collect cyclic garbage rarely (see STREAMING_GC_THRESHOLD) inside the block."""
    first, *older = gc.get_threshold()
    if first:  # 0: the collector was turned off; leave it so
        gc.set_threshold(max(first, STREAMING_GC_THRESHOLD), *older)
    try:
        yield
    finally:
        gc.set_threshold(first, *older)


@contextlib.contextmanager
def collector_held() -> Iterator[None]:
    """Hold the cyclic collector off for the block (left as it is when already off)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()

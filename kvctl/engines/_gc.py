"""Building thousands of records in one step without the cyclic garbage collector walking them.

The collector runs every few hundred allocations of container objects.  A run of parsed lines
or a decoded snapshot block allocates thousands (the parser's dicts, then the records), and a
:class:`~kvctl.store.Record` is a tuple subclass, which the collector never untracks: so it
walked the records made so far again and again, promoted them, and so brought on full
collections that walk every record still alive.  Such a step creates no reference cycle, so
nothing is lost by holding the collector off until it ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
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

"""Hybrid logical clock versions.

A version is one non-negative integer that fits a signed 64-bit column:

    | physical milliseconds (42 bits) | counter (13 bits) | node id (8 bits) |

Comparing two versions as integers orders them by physical time, then by the logical counter,
then by node id, which breaks ties between two writers in the same millisecond.  The clock never
goes backwards: when the wall clock stalls or steps back, the counter advances, and when the
counter overflows the logical millisecond moves ahead of the wall clock (the standard HLC rule).
``observe`` folds in a version seen elsewhere (another replica, or the newest version already on
disk when a store reopens), so versions keep growing across machines with skewed clocks and
across restarts.
"""

from __future__ import annotations

import threading
import time

NODE_BITS = 8
COUNTER_BITS = 13
_LOW_BITS = NODE_BITS + COUNTER_BITS
_COUNTER_MAX = (1 << COUNTER_BITS) - 1
_time_ns = time.time_ns
MAX_NODE = (1 << NODE_BITS) - 1


def physical_ms(version: int) -> int:
    """The wall-clock millisecond a version was taken at."""
    return version >> _LOW_BITS


def make_version(ms: int, counter: int = 0, node: int = 0) -> int:
    return (ms << _LOW_BITS) | (counter << NODE_BITS) | node


class HLC:
    """A thread-safe hybrid logical clock for one writer (a store, a sync run)."""

    __slots__ = ("_counter", "_lock", "_ms", "_wall", "node")

    def __init__(self, node: int = 0, *, wall_ms=None) -> None:
        if not 0 <= node <= MAX_NODE:
            raise ValueError(f"node id must be in 0..{MAX_NODE}")
        self.node = node
        self._ms = 0
        self._counter = 0
        self._lock = threading.Lock()
        self._wall = wall_ms  # None: the system clock, read inline (this is on every write's path)

    def now(self) -> int:
        """A version greater than every version this clock has issued or observed."""
        with self._lock:
            wall = _time_ns() // 1_000_000 if self._wall is None else self._wall()
            if wall > self._ms:
                self._ms = wall
                self._counter = 0
            elif self._counter < _COUNTER_MAX:
                self._counter += 1
            else:
                self._ms += 1
                self._counter = 0
            return (self._ms << _LOW_BITS) | (self._counter << NODE_BITS) | self.node

    def observe(self, version: int | None) -> None:
        """Make every later ``now()`` greater than ``version``."""
        if version is None:
            return
        with self._lock:
            ms, counter = version >> _LOW_BITS, (version >> NODE_BITS) & _COUNTER_MAX
            if (ms, counter) > (self._ms, self._counter):
                self._ms, self._counter = ms, counter

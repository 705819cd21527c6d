"""A Redis Cluster's slot ranges as partitions: as many slices as an executor asks for, each key
read by exactly one of them.

A part is ``"<master>/<a>-<b>[,<c>-<d>...]"``: slots served by one master.  The plan counts every
slot's keys (``CLUSTER COUNTKEYSINSLOT``, one pipelined round trip per master) and gives each
master at least one part and the rest by its share of the keys, each part a run of the master's
slots holding about the same number of keys (a slot weighs its keys plus one, so empty slots
still spread evenly).  A key lives in one slot and a slot in one part: each key is read once.

Reading a part: Redis has no cursor inside a slot, so a part is read slot by slot, a page made
of whole slots: their key counts for a window of slots, then ``CLUSTER GETKEYSINSLOT`` of as
many slots as fill a page, the values through the store's pipelined read.  Each round trip also
sends, per slot, ``EXISTS`` of a key of that slot: a slot the master no longer serves answers
MOVED (ASK while it migrates), and the read stops with UnavailableError instead of missing keys
that went elsewhere.

Memory: a slot's keys are held at once only up to ``MAX_SLOT_KEYS``.  A bigger slot (a hot hash
tag) is read by a keys-only SCAN of its master that keeps the keys of that slot, a page at a
time: one extra pass over the master per such slot.

Cursors: ``slot:<n>`` resumes at slot n (a resumed part re-reads at most that slot), and
``slot:<n>:<scan cursor>`` inside a slot read by SCAN.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from redis.exceptions import AskError, ClusterDownError, TryAgainError

from kvctl.errors import UnavailableError, UsageError
from kvctl.store import Page

from . import scripts
from .commands import escape_glob, raise_first_error
from .errors import translating
from .routing import key_slots

if TYPE_CHECKING:
    from .cluster import RedisClusterStore

SLOTS = 16384
MAX_SLOT_KEYS = 100_000  # keys of one slot held at once (~10 MB of short keys); more: SCAN
WINDOW = 256  # slots whose keys are counted in one round trip
_MOVED = (AskError, TryAgainError, ClusterDownError)  # MOVED is an AskError
_probes: list[bytes] = []


# -- planning ----------------------------------------------------------------------------------
def plan(store: RedisClusterStore, slices: int) -> list[str]:
    """About ``slices`` parts (at least one per master, at most one per slot)."""
    with translating(store.where):
        store._refresh()  # cut the cluster as it is now
        owners = store._slots
        masters: dict[str, list[int]] = {}
        for slot, name in enumerate(owners):
            if name:
                masters.setdefault(name, []).append(slot)
        replies = store._on_nodes({name: [(b"CLUSTER", b"COUNTKEYSINSLOT", s) for s in slots]
                                   for name, slots in masters.items()})
    weights: dict[str, list[int]] = {}
    for name, reply in replies.items():
        raise_first_error(reply)
        weights[name] = [int(n) + 1 for n in reply]
    names = sorted(masters)
    shares = _shares([sum(weights[n]) for n in names], [len(masters[n]) for n in names], slices)
    return [f"{name}/{_ranges_text(group)}" for name, k in zip(names, shares, strict=True)
            for group in _cut(masters[name], weights[name], k)]


def _shares(weights: list[int], caps: list[int], slices: int) -> list[int]:
    """Parts per master: one each, the rest by weight (largest remainders), at most one per slot."""
    extra = max(0, slices - len(weights))
    total = sum(weights) or 1
    raw = [extra * w / total for w in weights]
    shares = [1 + int(r) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: int(raw[i]) - raw[i])
    for i in by_remainder[: extra - sum(int(r) for r in raw)]:
        shares[i] += 1
    return [min(s, cap) for s, cap in zip(shares, caps, strict=True)]


def _cut(slots: list[int], weights: list[int], k: int) -> list[list[int]]:
    """``slots`` in ``k`` runs of about equal weight, none empty."""
    total = sum(weights)
    groups: list[list[int]] = []
    start, seen = 0, 0
    for i, weight in enumerate(weights):
        seen += weight
        left = k - len(groups) - 1  # runs still to start after this one
        if left > 0 and (seen >= total * (len(groups) + 1) / k or len(slots) - i - 1 == left):
            groups.append(slots[start:i + 1])
            start = i + 1
    groups.append(slots[start:])
    return groups


def _ranges_text(slots: list[int]) -> str:
    runs: list[list[int]] = []
    for slot in slots:
        if runs and runs[-1][1] == slot - 1:
            runs[-1][1] = slot
        else:
            runs.append([slot, slot])
    return ",".join(f"{a}-{b}" for a, b in runs)


def is_slot_part(partition: str) -> bool:
    return "/" in partition


def _parse(store: RedisClusterStore, partition: str) -> tuple[str, list[int]]:
    master, _, text = partition.partition("/")
    slots: list[int] = []
    try:
        for run in text.split(","):
            a, _, b = run.partition("-")
            slots.extend(range(int(a), int(b) + 1))
    except ValueError:
        raise UsageError(f"{partition!r} is not a part of {store.where}") from None
    if not slots or not all(0 <= s < SLOTS for s in slots):
        raise UsageError(f"{partition!r} is not a part of {store.where}")
    return master, slots


# -- reading -----------------------------------------------------------------------------------
def scan(store: RedisClusterStore, partition: str, prefix: bytes, cursor: str | None, batch_size: int,
         keys_only: bool) -> Iterator[Page]:
    """The keys under ``prefix`` of the slots of ``partition``, as pages of whole slots."""
    master, slots = _parse(store, partition)
    first, scan_cursor = _parse_cursor(store, cursor, slots)
    with translating(store.where):
        if master not in {name for name, _ in store._primaries()}:
            raise UnavailableError(f"{master} is no longer a master of {store.where}",
                                   hint="the cluster changed: start the copy again to re-plan it")
        pool = store._pool(master)
    reader = _Reader(store, pool, store.ns + prefix, batch_size, keys_only)
    yield from reader.pages(slots, first, scan_cursor)


def _parse_cursor(store: RedisClusterStore, cursor: str | None, slots: list[int]) -> tuple[int, int | None]:
    """(index in ``slots`` to start at, SCAN cursor inside that slot or None)."""
    if cursor is None:
        return 0, None
    kind, _, rest = cursor.partition(":")
    slot, _, inner = rest.partition(":")
    if kind != "slot" or not slot.isdigit() or int(slot) not in slots or (inner and not inner.isdigit()):
        raise UsageError(f"not a cursor of this part of {store.where}: {cursor!r}")
    return slots.index(int(slot)), int(inner) if inner else None


class _Reader:
    def __init__(self, store: RedisClusterStore, pool: Any, full_prefix: bytes, batch_size: int,
                 keys_only: bool) -> None:
        self.store, self.pool, self.full = store, pool, full_prefix
        self.batch_size, self.keys_only = batch_size, keys_only

    def pages(self, slots: list[int], first: int, scan_cursor: int | None) -> Iterator[Page]:
        pending: list[bytes] = []  # matching keys of whole slots, not yet in a page
        i = first
        if scan_cursor is not None:  # resumed inside a slot read by SCAN
            yield from self._big_slot(slots, i, scan_cursor)
            i += 1
        while i < len(slots):
            window = slots[i:i + WINDOW]
            counts = self._run([c for s in window
                                for c in (_probe(s), (b"CLUSTER", b"COUNTKEYSINSLOT", s))])[1::2]
            j = 0
            while j < len(window):
                if counts[j] > MAX_SLOT_KEYS:
                    if pending:
                        yield self._page(pending, _cursor(slots, i + j))
                        pending = []
                    yield from self._big_slot(slots, i + j, 0)
                    j += 1
                    continue
                group = self._group(window, counts, j)
                j += len(group)
                pending.extend(self._keys(group))
                after = _cursor(slots, i + j)
                if len(pending) >= self.batch_size:
                    # a page ends after a whole slot; a slot bigger than a page is cut, and each of
                    # its pages resumes at that slot
                    while len(pending) > self.batch_size and len(group) == 1:
                        yield self._page(pending[: self.batch_size], _cursor(slots, i + j - 1))
                        pending = pending[self.batch_size:]
                    yield self._page(pending, after)
                    pending = []
            i += len(window)
        if pending:
            yield self._page(pending, None)

    def _group(self, window: list[int], counts: list[int], j: int) -> list[tuple[int, int]]:
        """(slot, key count) of the whole slots from ``window[j]`` on that make about one page."""
        group: list[tuple[int, int]] = []
        size = 0
        while j < len(window) and counts[j] <= MAX_SLOT_KEYS and (not group or size + counts[j] <= self.batch_size):
            group.append((window[j], counts[j]))
            size += counts[j]
            j += 1
        return group

    def _keys(self, group: list[tuple[int, int]]) -> list[bytes]:
        """The matching keys of the whole slots of ``group`` (slot, count when counted)."""
        asks = [(slot, n + max(64, n // 4)) for slot, n in group if n]
        out: list[bytes] = []
        while asks:
            replies = self._run([c for slot, ask in asks
                                 for c in (_probe(slot), (b"CLUSTER", b"GETKEYSINSLOT", slot, ask))])
            again = []
            for (slot, ask), keys in zip(asks, replies[1::2], strict=True):
                if len(keys) < ask:  # the whole slot
                    out.extend(k for k in keys if k.startswith(self.full))
                elif ask <= MAX_SLOT_KEYS:  # it grew since it was counted: ask for more
                    again.append((slot, min(2 * ask, MAX_SLOT_KEYS + 1)))
                else:
                    raise UnavailableError(f"slot {slot} of {self.store.where} grew past {MAX_SLOT_KEYS} keys "
                                           "while it was read", hint="run the copy again")
            asks = again
        return out

    def _big_slot(self, slots: list[int], index: int, scan_cursor: int) -> Iterator[Page]:
        """A slot with too many keys to hold: a keys-only SCAN of the master keeping that slot's."""
        slot = slots[index]
        match, count = escape_glob(self.full), max(self.batch_size, 100)
        while True:
            scan_cursor, found = self._run([_probe(slot), (b"SCAN", scan_cursor, b"MATCH", match, b"COUNT", count)])[1]
            scan_cursor = int(scan_cursor)
            keys = [k for k, at in zip(found, key_slots(found), strict=True) if at == slot and k.startswith(self.full)]
            done = scan_cursor == 0
            if keys or done:
                yield self._page(keys, _cursor(slots, index + 1) if done else f"slot:{slot}:{scan_cursor}")
            if done:
                return

    def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        with translating(self.store.where):
            replies = scripts.run(self.pool, commands)
            for reply in replies:
                if isinstance(reply, _MOVED):
                    raise UnavailableError(f"a slot moved while {self.store.where} was read ({reply})",
                                           hint="the cluster changed: start the copy again to re-plan it")
            raise_first_error(replies)
        return replies

    def _page(self, full_keys: list[bytes], cursor: str | None) -> Page:
        with translating(self.store.where):
            return Page(self.store._page(full_keys, self.keys_only), cursor)


def _cursor(slots: list[int], index: int) -> str | None:
    return f"slot:{slots[index]}" if index < len(slots) else None


def _probe(slot: int) -> tuple[bytes, bytes]:
    """A read of a key of ``slot``: MOVED or ASK when the node does not (fully) serve it."""
    if not _probes:
        # the first key of the sequence kvctl-probe-0, -1, ... in each slot, their slots computed
        # a chunk at a time (about 160,000 keys cover the 16,384 slots)
        table: dict[int, bytes] = {}
        start = 0
        while len(table) < SLOTS:
            keys = [b"kvctl-probe-%d" % i for i in range(start, start + 32768)]
            # reversed: where a slot repeats, the dict keeps its first key
            first = dict(zip(reversed(key_slots(keys)), reversed(keys), strict=True))
            table = {**first, **table}
            start += len(keys)
        _probes.extend(table[s] for s in range(SLOTS))
    return (b"EXISTS", _probes[slot])

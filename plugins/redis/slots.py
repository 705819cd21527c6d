"""A Redis Cluster's slot ranges as partitions: as many slices as an executor asks for, each key
read by exactly one of them.

A part is ``"<master>/<a>-<b>[,<c>-<d>...]"``: slots served by one master.  The plan counts every
slot's keys (``CLUSTER COUNTKEYSINSLOT``, one pipelined round trip per master) and gives each
master at least one part and the rest by its share of the keys, each part a run of the master's
slots holding about the same number of keys (a slot weighs its keys plus one, so empty slots
still spread evenly).  A key lives in one slot and a slot in one part: each key is read once.

Reading slots (a part, or every master at once for a whole-cluster scan that reads values,
``scan_all``): Redis has no cursor inside a slot, so slots are read one after another, a page
made of whole slots.  Each round trip asks ``CLUSTER GETKEYSINSLOT`` of as many slots as make
about a page and, per slot, ``EXISTS`` of a key of that slot: a slot the master no longer serves
answers MOVED (ASK while it migrates), and the read stops with UnavailableError instead of
missing keys that went elsewhere.  The same round trip reads the values of the slots asked
before (SlotScan: one MGET per slot, the keys of one slot being allowed in one command).

Memory: a slot's keys are held at once only up to ``MAX_SLOT_KEYS``.  A bigger slot (a hot hash
tag) is read by a keys-only SCAN of its master that keeps the keys of that slot, a page at a
time: one extra pass over the master per such slot.

Cursors: ``slot:<n>`` resumes a part at slot n (a resumed part re-reads at most that slot), and
``slot:<n>:<scan cursor>`` inside a slot read by SCAN; ``done:<a>-<b>,...`` resumes a
whole-cluster scan after the slots it names.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from itertools import chain, compress, repeat
from typing import TYPE_CHECKING, Any

from redis.exceptions import AskError, ClusterDownError, TryAgainError

from kvctl.errors import UnavailableError, UsageError
from kvctl.store import Page, Record

from . import bulk, scanning, scripts
from .commands import errors_in, escape_glob, raise_first_error
from .errors import translating
from .routing import key_slots

if TYPE_CHECKING:
    from .cluster import RedisClusterStore

SLOTS = 16384
MAX_SLOT_KEYS = 100_000  # keys of one slot held at once (~10 MB of short keys); more: SCAN
WINDOW = 256  # slots one request asks for at most
_MOVED = (AskError, TryAgainError)  # MOVED is an AskError (ClusterDownError is checked first)
_probes: list[bytes] = []
_PROBE_STEM = b"kvctl-probe-"


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
    reader = SlotScan(store, pool, slots, first, store.ns + prefix, batch_size, keys_only, scan_cursor)
    for page in reader.pages():
        if page is not None:
            records, at, inner = page
            cursor = _cursor(slots, at)
            yield Page(records, f"{cursor}:{inner}" if inner is not None and cursor else cursor)


def _parse_cursor(store: RedisClusterStore, cursor: str | None, slots: list[int]) -> tuple[int, int | None]:
    """(index in ``slots`` to start at, SCAN cursor inside that slot or None)."""
    if cursor is None:
        return 0, None
    kind, _, rest = cursor.partition(":")
    slot, _, inner = rest.partition(":")
    if kind != "slot" or not slot.isdigit() or int(slot) not in slots or (inner and not inner.isdigit()):
        raise UsageError(f"not a cursor of this part of {store.where}: {cursor!r}")
    return slots.index(int(slot)), int(inner) if inner else None


# -- every master at once -----------------------------------------------------------------------
# A cursor of such a scan: "done:" then the slots read to their end, as ranges "a-b" joined by ",".
# It names no master: a resumed scan reads every other slot from whichever master serves it then.
DONE_CURSOR = "done:"


def scan_all(store: RedisClusterStore, prefix: bytes, cursor: str | None, batch_size: int,
             keys_only: bool) -> Iterator[Page]:
    """Every slot not yet read (all of them, or those a ``done:`` cursor does not name), each
    master's slots by a SlotScan, the masters read at once: every master has its next request
    in hand while the client reads another's, pages taken from them in turn."""
    done = _parse_done(store, cursor)
    with translating(store.where):
        store._refresh()  # the slot map as it is now: a slot moved later is found by its probe
        owners = list(store._slots)
        pools = dict(store._primaries())
    todo: dict[str, list[int]] = {}
    for slot, name in enumerate(owners):
        if not done[slot]:
            todo.setdefault(name, []).append(slot)
    if "" in todo or not set(todo) <= set(pools):
        raise UnavailableError(f"not every slot of {store.where} is served by a master it knows",
                               hint="the cluster is changing: try again once it is stable")
    scans = {name: SlotScan(store, pools[name], slots, 0, store.ns + prefix, batch_size, keys_only)
             for name, slots in sorted(todo.items())}
    active = [(name, scan.pages()) for name, scan in scans.items()]
    try:
        while active:
            for name, pages in list(active):
                try:
                    page = next(pages)
                except StopIteration:
                    active.remove((name, pages))
                    continue
                if page is None:
                    continue
                records, at, _ = page
                slots = scans[name].slots
                for slot in slots[scans[name].done_to:at]:
                    done[slot] = 1
                scans[name].done_to = at
                yield Page(records, _done_text(done))
    finally:
        for _, pages in active:
            pages.close()


def _parse_done(store: RedisClusterStore, cursor: str | None) -> bytearray:
    """Per slot, 1 when the cursor names it as read."""
    done = bytearray(SLOTS)
    if cursor is None:
        return done
    text = cursor[len(DONE_CURSOR):]
    try:
        for run in filter(None, text.split(",")):
            a, _, b = run.partition("-")
            if not (0 <= int(a) <= int(b) < SLOTS):
                raise ValueError
            done[int(a):int(b) + 1] = b"\x01" * (int(b) + 1 - int(a))
    except ValueError:
        raise UsageError(f"not a scan cursor of {store.where}: {cursor!r}") from None
    return done


def _done_text(done: bytearray) -> str | None:
    """The cursor of the slots ``done`` names (None: all of them); found in C, each page."""
    if done.count(0) == 0:
        return None
    return DONE_CURSOR + ",".join(f"{m.start()}-{m.end() - 1}" for m in _RUNS.finditer(done))


_RUNS = re.compile(rb"\x01+")


# A page of SlotScan.pages: its records, the index of the first slot not read to its end, and the
# SCAN cursor inside that slot when it is read by SCAN (None: that slot is not begun).
SlotPage = tuple[list[Record], int, int | None]


class SlotScan(scanning.NodeScan):
    """One master's ``slots`` from index ``first`` on, read like a SCAN of it (scanning.NodeScan:
    a request always in flight, a page's values read in the same round trip as the next keys),
    but slot by slot: each request asks the keys of the next slots (``CLUSTER GETKEYSINSLOT``,
    then a probe of each slot, see the module's docstring).  One slot's keys are one ``MGET``,
    which a cluster allows, so the values are read as scanning's MGET path reads a standalone
    database (``MULTI``, the MGETs, ``INFO keyspace``, ``EXEC``), and per key from the first
    page where the master holds a key with an expiry.

    How many slots a request asks is set by the keys per slot seen so far, to make about one
    page.  A slot of more than ``MAX_SLOT_KEYS`` keys is read by SCAN once nothing is in flight."""

    def __init__(self, store: RedisClusterStore, pool: Any, slots: list[int], first: int, full_prefix: bytes,
                 batch_size: int, keys_only: bool, scan_cursor: int | None = None) -> None:
        super().__init__(store, pool, full_prefix, 0, batch_size, keys_only, lambda at: at)
        self.mget = not keys_only
        self.db = b"db0:"  # a cluster has one database
        self.slots, self.next = slots, first  # the index of the next slot to ask
        self.asking = range(0)  # the indexes of the slots the request in flight asks
        self.fetch_span = (first, first)  # the indexes of the slots of the keys in flight
        self.seen = [0, 0]  # keys and slots answered so far
        self.done_to = first  # the index of the first slot not yielded to its end (scan_all's)
        self.big: int | None = first if scan_cursor is not None else None  # a slot to read by SCAN
        self.big_cursor = scan_cursor or 0

    def pages(self) -> Generator[SlotPage | None, None, None]:
        """The pages to the last slot; None for a round trip without one (the caller may read
        another master meanwhile)."""
        failed = False
        try:
            with translating(self.store.where):
                self.conn = self.pool.get_connection()
            while True:
                if not self.in_flight:
                    if self.big is not None:
                        yield from self._big_slot()
                    if self.next >= len(self.slots):
                        return
                    self._send_next([], (self.next, self.next))
                pages = self.step()
                if not pages:
                    yield None
                yield from pages
        except BaseException:
            failed = True
            raise
        finally:
            self.close(failed)

    def step(self) -> list[SlotPage]:  # type: ignore[override]
        """Read the replies in flight, send the next request, and return the pages read."""
        with translating(self.store.where):
            asked, self.asking = self.asking, range(0)
            replies = bulk.read_replies(self.conn, self.fetch_replies + 2 * len(asked))
            self.in_flight = False
            fetched, fetched_mget, span = self.fetching, self.fetch_mget, self.fetch_span
            fetched_replies = replies[: self.fetch_replies]
            groups = self._found(asked, replies[self.fetch_replies:])
            answered = (asked.start, asked.start + len(groups))
            if self.keys_only:  # nothing to fetch: the page is ready now
                fetched, span, fetched_replies = list(chain.from_iterable(groups)), answered, []
                groups = []
            if groups or (self.big is None and self.next < len(self.slots)):
                self._send_next(groups, answered)
            else:
                self.fetching, self.fetch_replies = [], 0
            if not fetched:
                return []
            if self.keys_only:
                records = self.store._page(fetched, True)
            elif fetched_mget:
                records = self._mget_records(fetched, [self._joined(fetched_replies[3::4])])
            else:
                records = self._records(fetched, fetched_replies)
        return self._paged(records, span)

    def _joined(self, answers: list[Any]) -> list[Any] | None:
        """The answers of the per-slot transactions as one of scanning's MGET path (the MGETs'
        replies then an INFO reply) when every slot's INFO counts no key with an expiry; None
        (that path then reads per key) otherwise."""
        if not all(isinstance(a, list) and len(a) == 2 and isinstance(a[1], bytes) for a in answers):
            return None
        if any(scanning.volatile(info, self.db) != 0 for _, info in answers) or errors_in(answers):
            return None
        return [*(values for values, _ in answers), answers[0][1]]

    def _paged(self, records: list[Record], span: tuple[int, int]) -> list[SlotPage]:
        """``records`` of the slots of indexes ``span`` as pages: one, unless it holds more than
        two pages' worth; then cut between slots, a slot bigger than a page cut inside it (each
        of those pages resumes at that slot)."""
        if len(records) <= 2 * self.batch_size:
            return [(records, span[1], None)]
        index = {slot: i for i, slot in enumerate(self.slots[span[0]:span[1]], span[0])}
        ns = self.store.ns
        at = [index[s] for s in key_slots([ns + r.key for r in records])]
        order = sorted(range(len(records)), key=at.__getitem__)  # stable: a slot's records together
        pages: list[SlotPage] = []
        page: list[Record] = []
        for n, i in enumerate(order):
            page.append(records[i])
            ends_slot = n + 1 == len(order) or at[order[n + 1]] != at[i]
            if len(page) >= self.batch_size or n + 1 == len(order):
                pages.append((page, at[i] + 1 if ends_slot else at[i], None))
                page = []
        pages[-1] = (pages[-1][0], span[1], None)
        return pages

    def _found(self, asked: range, replies: list[Any]) -> list[list[bytes]]:
        """The matching keys of each slot of ``asked`` up to a slot too big to hold (then read
        later by SCAN: ``self.big``)."""
        self._check(replies)
        groups: list[list[bytes]] = []
        full = self.prefix
        for index, keys in zip(asked, replies[0::2], strict=True):
            if len(keys) > MAX_SLOT_KEYS:
                self.big, self.big_cursor = index, 0
                break
            self.seen[0] += len(keys)
            self.seen[1] += 1
            groups.append(list(compress(keys, map(bytes.startswith, keys, repeat(full)))) if full else keys)
        return groups

    def _send_next(self, groups: list[list[bytes]], span: tuple[int, int]) -> None:
        """Send the reads of ``groups`` (the keys of the whole slots of indexes ``span``) and
        the ask of the next slots."""
        chunks: list[bytes] = []
        keys = list(chain.from_iterable(groups))
        self.fetching, self.fetch_span = keys, span
        self.fetch_mget, self.fetch_replies = bool(keys) and self.mget, 0
        if self.fetch_mget:
            chunks, transactions = _transactions(groups)
            self.fetch_replies = 4 * transactions  # OK, QUEUED, QUEUED, the EXEC's array
        elif keys:
            chunks = bulk.reads(keys, b"PTTL" if self.store.relative_ttl else b"PEXPIRETIME").chunks
            self.fetch_replies = 2 * len(keys)
        if self.big is None and self.next < len(self.slots):
            per_slot = self.seen[0] / self.seen[1] if self.seen[1] else self.batch_size
            count = max(1, min(WINDOW, int(self.batch_size / max(per_slot, 1.0))))
            self.asking = range(self.next, min(self.next + count, len(self.slots)))
            self.next = self.asking.stop
            chunks.append(b"".join(map(_ask, self.slots[self.asking.start:self.asking.stop])))
        self.conn.send_packed_command(chunks, check_health=False)
        self.in_flight = True

    def _big_slot(self) -> Iterator[SlotPage]:
        """A slot with too many keys to hold: a keys-only SCAN of the master keeping that slot's
        keys, their values read by the store's general path."""
        assert self.big is not None
        index, scan_cursor = self.big, self.big_cursor
        slot = self.slots[index]
        match, count = escape_glob(self.prefix), max(self.batch_size, 100)
        while True:
            with translating(self.store.where):
                replies = scripts.run(self.pool, [probe(slot), (b"SCAN", scan_cursor, b"MATCH", match,
                                                                  b"COUNT", count)])
                self._check(replies)
                scan_cursor, found = int(replies[1][0]), replies[1][1]
                keys = [k for k, at in zip(found, key_slots(found), strict=True)
                        if at == slot and k.startswith(self.prefix)]
                done = scan_cursor == 0
                records = self.store._page(keys, self.keys_only) if keys else []
            if records or done:
                yield (records, index + 1, None) if done else (records, index, scan_cursor)
            if done:
                self.big, self.next = None, index + 1
                return

    def _check(self, replies: list[Any]) -> None:
        """Raise the first error of ``replies``: a probe's MOVED or ASK as a slot that moved."""
        for reply in replies:
            if isinstance(reply, ClusterDownError):
                raise UnavailableError(f"{self.store.where} answered that the cluster is down ({reply})",
                                       hint="try again once every slot is served")
            if isinstance(reply, _MOVED):
                raise UnavailableError(f"a slot moved while {self.store.where} was read ({reply})",
                                       hint="the cluster changed: start the copy again to re-plan it")
        raise_first_error(replies)


def _transactions(groups: list[list[bytes]]) -> tuple[list[bytes], int]:
    """``MULTI, MGET <keys>, INFO keyspace, EXEC`` for each non-empty group (a transaction may not
    span slots) in RESP, and how many; the keys' part built by C-level passes."""
    keys = list(chain.from_iterable(groups))
    lens = list(map(len, keys))
    heads = {n: b"$%d\r\n" % n for n in set(lens)}
    pieces: list[bytes] = [b""] * (3 * len(keys))
    pieces[0::3] = map(heads.__getitem__, lens)
    pieces[1::3] = keys
    pieces[2::3] = repeat(b"\r\n", len(keys))
    out: list[bytes] = []
    at = 0
    for group in filter(None, groups):
        out.append(b"%s*%d\r\n$4\r\nMGET\r\n" % (scanning.MULTI, len(group) + 1))
        out.extend(pieces[3 * at:3 * (at + len(group))])
        out.append(scanning.INFO_EXEC)
        at += len(group)
    return [b"".join(out)], sum(map(bool, groups))


def _ask(slot: int) -> bytes:
    """``CLUSTER GETKEYSINSLOT slot MAX_SLOT_KEYS + 1`` and the probe of ``slot``, in RESP."""
    cap = MAX_SLOT_KEYS + 1
    packed = _asks.get((slot, cap))
    if packed is None:
        text, key = b"%d" % slot, probe(slot)[1]
        packed = _asks[slot, cap] = b"".join((
            b"*4\r\n$7\r\nCLUSTER\r\n$13\r\nGETKEYSINSLOT\r\n$%d\r\n%s\r\n$%d\r\n%d\r\n"
            % (len(text), text, len(b"%d" % cap), cap),
            b"*2\r\n$6\r\nEXISTS\r\n$%d\r\n%s\r\n" % (len(key), key)))
    return packed


_asks: dict[tuple[int, int], bytes] = {}


def _cursor(slots: list[int], index: int) -> str | None:
    return f"slot:{slots[index]}" if index < len(slots) else None


def probe(slot: int) -> tuple[bytes, bytes]:
    """A read of a key of ``slot``: MOVED or ASK when the node does not (fully) serve it."""
    if not _probes:
        # Two bytes after a fixed stem reach every CRC16 value (the CRC of a message's last 16
        # bits is a bijection), so these 65,536 keys cover every slot; the first one per slot kept
        # (reversed: where a slot repeats, the dict keeps its first key).
        keys = [_PROBE_STEM + i.to_bytes(2, "big") for i in range(1 << 16)]
        table = dict(zip(reversed(key_slots(keys)), reversed(keys), strict=True))
        _probes.extend(table[s] for s in range(SLOTS))
    return (b"EXISTS", _probes[slot])

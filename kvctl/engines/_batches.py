"""Writing batches of records into a destination: the shared back half of migrate, import, restore.

:class:`BatchWriter` takes one batch of source records at a time and applies, in order:

1. expiry: records whose absolute expiry has passed are skipped and counted;
2. typed values (``Record.kind``): copied with ``dump_many``/``restore_many`` when both sides
   declare ``typed_values``, otherwise reported by name and counted as *incomplete*;
3. TTLs: a destination without the ``ttl`` capability refuses a record with an expiry
   (:class:`UnsupportedError`) unless ``drop_ttl`` is set, which writes it without one;
4. records the destination cannot store: over a size limit it declares, or refused one by one
   (:class:`LimitError`, e.g. an empty key in LMDB): reported by name and counted as *failed*,
   the rest of the batch still written (:func:`store_what_fits`, the one rule for every backend);
5. the conflict policy (``overwrite``, ``skip``, ``newer``, ``fail``): every policy but
   ``overwrite`` reads the batch's keys from the destination with one ``get_many``;
6. one ``set_many`` (and one ``restore_many`` for typed records), unless this is a dry run.

Per-record work is kept to one pass over the batch with a handful of attribute reads, because
this loop runs for every key a migrate moves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from operator import attrgetter
from typing import Literal, get_args

from kvctl.abilities import AsyncNewerWrites, AsyncPreparedWrites
from kvctl.codec import show_key
from kvctl.errors import ConflictError, LimitError, UnsupportedError
from kvctl.plugin_kit import check_limits
from kvctl.store import AsyncStore, Record, now_ms

from ._stores import dump_many, restore_many
from .preview import Preview
from .reporting import Counts, Problems

Policy = Literal["overwrite", "skip", "newer", "fail"]
POLICIES: tuple[str, ...] = get_args(Policy)
_kind = attrgetter("kind")
_expiry = attrgetter("expires_at_ms")
_key = attrgetter("key")
_value = attrgetter("value")


def _size(records: list[Record]) -> int:
    """The bytes of the records' keys and values."""
    return sum(map(len, map(_key, records))) + sum(map(len, map(_value, records)))


Refuse = Callable[[Record, str], None]  # told of each record set aside, with the reason
MAX_REFUSED_IN_A_ROW = 16  # single records refused in a row before the refusal is not theirs


def within_limits(dst: AsyncStore, records: list[Record], refuse: Refuse) -> list[Record]:
    """The records within the size limits ``dst`` declares; the others go to ``refuse``."""
    caps = dst.capabilities
    max_key, max_value = caps.max_key_size, caps.max_value_size
    if not records:
        return records
    if (max_key is None or max(map(len, map(_key, records))) <= max_key) and (
            max_value is None or max(map(len, map(_value, records))) <= max_value):
        return records  # the usual case, decided by two C-level passes
    out = []
    for rec in records:
        try:
            check_limits(caps, dst.name, rec.key, rec.value)
        except LimitError as exc:
            refuse(rec, exc.message)
        else:
            out.append(rec)
    return out


async def store_what_fits(write: Callable[[list[Record]], Awaitable[object]], records: list[Record],
                          refuse: Refuse) -> list[Record]:
    """Write ``records`` with ``write``, setting aside each record the store refuses alone.

    A :class:`LimitError` can name a limit no capability declares (LMDB refuses an empty key), so
    the batch is halved until the refused records stand alone; they go to ``refuse`` and the rest
    is written.  This relies on the store contract that a refused write changes nothing.  When
    many records in a row are refused alone the cause is not theirs (a server out of memory):
    the error is raised and the copy stops.  Returns the records written.
    """
    written: list[Record] = []
    refused: list[tuple[Record, str]] = []
    in_a_row = 0

    async def attempt(part: list[Record]) -> None:
        nonlocal in_a_row
        try:
            await write(part)
        except LimitError as exc:
            if len(part) > 1:
                half = len(part) // 2
                await attempt(part[:half])
                await attempt(part[half:])
                return
            in_a_row += 1
            if in_a_row >= MAX_REFUSED_IN_A_ROW:
                raise
            refused.append((part[0], exc.message))
        else:
            in_a_row = 0
            written.extend(part)

    if records:
        await attempt(records)
    for rec, reason in refused:  # counted once the batch is settled, so a raise counts none
        refuse(rec, reason)
    return written


def check_policy(policy: str, src_versions: bool, dst: AsyncStore) -> None:
    """Refuse a policy the two sides cannot honour, before anything is written."""
    if policy not in POLICIES:
        raise UnsupportedError(f"unknown conflict policy {policy!r} (use one of {', '.join(POLICIES)})")
    if policy == "newer" and not (src_versions and dst.capabilities.versions):
        side = "the source" if not src_versions else f"the {dst.name} backend"
        raise UnsupportedError(
            f"--on-conflict newer compares versions, but {side} does not keep versions",
            hint="use overwrite, skip or fail",
        )


class BatchWriter:
    """Applies expiry, typed values, TTL support, limits and the conflict policy, then writes."""

    def __init__(
        self,
        dst: AsyncStore,
        *,
        policy: Policy = "overwrite",
        source: AsyncStore | None = None,
        typed_ok: bool = False,
        drop_ttl: bool = False,
        dry_run: bool = False,
        unversioned_wins: bool = True,
    ) -> None:
        self.dst = dst
        self.policy = policy
        self.source = source  # where dump_many reads typed values from (None: records carry them)
        self.typed_ok = typed_ok
        self.drop_ttl = drop_ttl
        self.dry_run = dry_run
        self.unversioned_wins = unversioned_wins
        caps = dst.capabilities
        self._dst_ttl = caps.ttl
        self._max_key = caps.max_key_size
        self._max_value = caps.max_value_size
        self.counts = Counts()
        self.problems = Problems()
        self.preview: Preview | None = Preview() if dry_run else None  # the keys a dry run would write
        # the optional set_newer_many of a store that keeps versions (see kvctl.store)
        self._set_newer_many = dst.set_newer_many if caps.versions and isinstance(dst, AsyncNewerWrites) else None
        # the split set_many of a store that offers it, for the batches of the plain path (ready)
        self._prepares = dst if isinstance(dst, AsyncPreparedWrites) and policy == "overwrite" and not dry_run \
            else None

    def ready(self, records: list[Record]) -> Callable[[], Awaitable[None]]:
        """The write of one batch (already filtered by key), as :meth:`write` does it, with the
        destination's own work up to the server done now where it offers that
        (:class:`~kvctl.abilities.PreparedWrites`) and the batch is plain: every record a bytes
        value, none expired, none refused for its expiry.  Nothing is counted until the write
        starts, so a batch made ready and never written counts for nothing."""
        dst = self._prepares
        n = len(records)
        if dst is None or not n or any(map(_kind, records)):  # a kind is a non-empty name
            return partial(self.write, records)
        exps = list(map(_expiry, records))
        first_expiry = None
        if exps.count(None) != n:
            first_expiry = min(e for e in exps if e is not None)
            if not self._dst_ttl or first_expiry <= now_ms():
                return partial(self.write, records)
        try:
            prepared = dst.prepare_many(records)
        except LimitError:  # write sets the refused records aside
            return partial(self.write, records)

        async def write() -> None:
            if first_expiry is not None and first_expiry <= now_ms():
                await self.write(records)  # one expired while it waited: write() skips and counts it
                return
            self.counts.read += n
            done = records
            try:
                await dst.write_prepared(prepared)
            except LimitError:  # nothing was written: the same rule as write's
                done = await store_what_fits(self.dst.set_many, self._within_limits(records), self._refuse)
            self.counts.copied += len(done)
            self.counts.bytes += _size(done)

        return write

    async def write(self, records: list[Record]) -> None:
        """Process one batch (already filtered by key)."""
        counts = self.counts
        n = len(records)
        counts.read += n
        now = now_ms()
        # Whole-batch checks with C-level passes (map/count/sum); the per-record Python loops
        # below only run for the batches that need them.
        kinds = list(map(_kind, records))
        if kinds.count(None) == n:
            plain, typed = records, []
        else:
            plain = [r for r, k in zip(records, kinds, strict=True) if k is None]
            typed = [r for r, k in zip(records, kinds, strict=True) if k is not None]
        exps = [e for e in map(_expiry, plain) if e is not None]
        has_ttl = bool(exps)
        if has_ttl and min(exps) <= now:
            live = [r for r in plain if r.expires_at_ms is None or r.expires_at_ms > now]
            counts.expired += len(plain) - len(live)
            plain = live
        dumped = await self._typed(typed, now) if typed else []
        if dumped and not has_ttl:
            has_ttl = any(r.expires_at_ms is not None for r in dumped)
        if has_ttl and not self._dst_ttl:
            plain, dumped = self._without_ttl(plain), self._without_ttl(dumped)
        if self.dry_run and (self._max_key is not None or self._max_value is not None):
            plain = self._within_limits(plain)  # a real run finds these when the backend refuses
        # --on-conflict newer decided by the destination itself, in the write (one round trip,
        # no rows read back), where it offers that; typed values still go through _resolve.
        on_server = (self.policy == "newer" and not dumped and not self.dry_run
                     and self._set_newer_many is not None)
        if self.policy != "overwrite" and (plain or dumped) and not on_server:
            plain, dumped = await self._resolve(plain, dumped)
        if on_server:
            newer_many = self._set_newer_many
            assert newer_many is not None
            done = [0, 0]  # written, bytes

            async def write_newer(part: list[Record]) -> None:
                written, size = await newer_many(part)
                done[0] += written
                done[1] += size

            if plain:
                try:
                    await write_newer(plain)
                except LimitError:  # nothing was written: the same rule as below
                    plain = await store_what_fits(write_newer, self._within_limits(plain), self._refuse)
            counts.skipped += len(plain) - done[0]
            counts.copied += done[0]
            counts.bytes += done[1]
            return
        if not self.dry_run:
            if plain:
                try:
                    await self.dst.set_many(plain)
                except LimitError:
                    # Backends check limits before writing anything: set the unstorable records
                    # aside (reported by name) and write the rest.  Checking every batch up
                    # front would cost two passes over every record for a rare case.
                    plain = await store_what_fits(self.dst.set_many, self._within_limits(plain), self._refuse)
            if dumped:
                await restore_many(self.dst, dumped)
        elif self.preview is not None:
            await self.preview.writes(self.dst, [r.key for r in plain] + [r.key for r in dumped])
        counts.copied += len(plain) + len(dumped)
        counts.bytes += _size(plain) + _size(dumped)

    async def _typed(self, typed: list[Record], now: int) -> list[Record]:
        """Typed records ready to restore; the rest reported as incomplete."""
        if not self.typed_ok:
            self.counts.incomplete += len(typed)
            for rec in typed:
                self.problems.note_incomplete(rec.key, rec.kind or "?")
            return []
        if self.source is not None:
            fetched = await dump_many(self.source, [r.key for r in typed])
            # a None is a key deleted since the scan: nothing to copy
            ready = [r for r in fetched if r is not None]
        else:
            ready = typed  # records from a snapshot or an export already carry the dump
        live = [r for r in ready if r.expires_at_ms is None or r.expires_at_ms > now]
        self.counts.expired += len(ready) - len(live)
        return live

    def _without_ttl(self, records: list[Record]) -> list[Record]:
        if not records:
            return records
        if not self.drop_ttl:
            for rec in records:
                if rec.expires_at_ms is not None:
                    raise UnsupportedError(
                        f"key {show_key(rec.key)} has an expiry but the {self.dst.name} backend "
                        "cannot store expiries",
                        hint="add --drop-ttl to copy such keys without their expiry",
                    )
        out = []
        for rec in records:
            if rec.expires_at_ms is not None:
                self.counts.ttl_dropped += 1
                rec = Record(rec.key, rec.value, None, rec.version, rec.kind)
            out.append(rec)
        return out

    def _within_limits(self, records: list[Record]) -> list[Record]:
        return within_limits(self.dst, records, self._refuse)

    def _refuse(self, rec: Record, reason: str) -> None:
        self.counts.failed += 1
        self.problems.note_failed(rec.key, reason)

    async def _resolve(self, plain: list[Record], dumped: list[Record]) -> tuple[list[Record], list[Record]]:
        """Apply skip/newer/fail against what the destination holds now."""
        candidates = plain + dumped
        existing = await self.dst.get_many([r.key for r in candidates])
        keep: set[int] = set()
        for i, (rec, old) in enumerate(zip(candidates, existing, strict=True)):
            if old is None:
                keep.add(i)
            elif self.policy == "fail":
                if self.dry_run:  # report what a real run would stop at, and keep counting
                    self.counts.failed += 1
                    self.problems.note_failed(rec.key, "already exists (--on-conflict fail)")
                    continue
                raise ConflictError(
                    f"key {show_key(rec.key)} already exists in the destination (--on-conflict fail)"
                )
            elif self.policy == "newer":
                if rec.version is None or old.version is None:
                    if self.unversioned_wins:
                        keep.add(i)
                elif rec.version > old.version:
                    keep.add(i)
            # skip: an existing key is left alone
        if self.policy != "fail":
            self.counts.skipped += len(candidates) - len(keep)
        n = len(plain)
        return (
            [r for i, r in enumerate(plain) if i in keep],
            [r for i, r in enumerate(dumped, n) if i in keep],
        )

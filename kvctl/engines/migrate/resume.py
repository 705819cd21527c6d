"""Resuming a migrate under ``skip``, ``newer`` or ``fail``: telling its own earlier writes from conflicts."""

from __future__ import annotations

from kvctl.store import AsyncStore, Record, now_ms

from .._batches import BatchWriter
from .._compare import json_sides, same_value
from .._stores import dump_many
from ..diff import same_expiry
from ..reporting import Counts, Problems
from .plan import Plan


class ResumeWriter:
    """The batches of a resumed run under ``skip``, ``newer`` or ``fail``: its own earlier writes
    are not conflicts.

    A checkpoint is saved every few batches, so the run that saved it may have written batches
    after its cursor before it stopped: up to a second of batches on a kill, part of a batch on a
    lost server (a batch need not be atomic); a Ctrl-C finishes and saves the batch in flight.
    A resumed run reads those records again and finds them in the destination.  Under ``overwrite`` that is
    harmless; under ``fail`` it would stop at the first of them on every resume, and ``skip`` and
    ``newer`` would count them as skipped rather than copied.

    So while it replays, a destination record with the source record's content (the same value,
    by meaning where a side holds JSON documents, or for a typed value the same dump; the same
    expiry within ``expiry_tolerance_ms``, or any expiry where ``--drop-ttl`` writes none; the
    same version where both sides keep one) counts as this migrate's own write: it is written
    again (writing a record twice yields the same record) and counted as copied.  Any other
    content is a conflict as in an uninterrupted run.  Writes are sequential, one batch at a
    time, so the replay ends with the first batch the destination holds none of: past it, an
    identical key is not this migrate's and the policy applies to it as usual.
    """

    def __init__(self, src: AsyncStore, dst: AsyncStore, writer: BatchWriter, plan: Plan) -> None:
        self.src = src
        self.dst = dst
        self.writer = writer
        self.replaying = True
        self.tolerance_ms = plan.expiry_tolerance_ms
        self.ignore_expiry = plan.drop_ttl and not dst.capabilities.ttl
        self.typed_ok = writer.typed_ok
        self.json_values = json_sides(src, dst)
        # the same pipeline as ``writer`` (expiry, TTLs, limits, typed values) and the same
        # totals, without the conflict check
        self.again = BatchWriter(dst, policy="overwrite", source=writer.source, typed_ok=writer.typed_ok,
                                 drop_ttl=writer.drop_ttl, dry_run=writer.dry_run)
        self.again.counts, self.again.problems = writer.counts, writer.problems

    @property
    def counts(self) -> Counts:
        return self.writer.counts

    @property
    def problems(self) -> Problems:
        return self.writer.problems

    async def write(self, records: list[Record]) -> None:
        if not self.replaying or not records:
            await self.writer.write(records)
            return
        held = await self.dst.get_many([r.key for r in records])
        live_after = now_ms() + self.tolerance_ms
        ours: list[Record] = []
        rest: list[Record] = []
        typed: list[tuple[Record, Record]] = []
        absent_live = False
        for rec, old in zip(records, held, strict=True):
            if old is None:
                rest.append(rec)
                absent_live = absent_live or rec.expires_at_ms is None or rec.expires_at_ms > live_after
            elif rec.kind is not None and self.typed_ok and rec.kind == old.kind:
                typed.append((rec, old))  # compared by their dumps below
            elif self.same(rec, old):
                ours.append(rec)
            else:
                rest.append(rec)
        if typed:
            keys = [r.key for r, _ in typed]
            mine, theirs = await dump_many(self.src, keys), await dump_many(self.dst, keys)
            for (rec, _), a, b in zip(typed, mine, theirs, strict=True):
                (ours if a is not None and b is not None and self.same(a, b) else rest).append(rec)
        if absent_live and all(old is None for old in held):
            self.replaying = False  # the destination holds none of this batch: past the replay
        if ours:
            await self.again.write(ours)
        if rest:
            await self.writer.write(rest)

    def same(self, rec: Record, old: Record) -> bool:
        """Does the destination hold exactly what writing ``rec`` would leave there?"""
        if rec.kind != old.kind or not same_value(rec.value, old.value, self.json_values and rec.kind is None):
            return False
        if rec.version is not None and old.version is not None and rec.version != old.version:
            return False
        return self.ignore_expiry or same_expiry(rec.expires_at_ms, old.expires_at_ms, self.tolerance_ms)

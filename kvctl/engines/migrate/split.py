"""Splitting a migrate into slices, shared by every executor: ``--workers`` processes
(:mod:`.parallel`), a Dask cluster (:mod:`kvctl.engines.distributed`) and plan files
(:mod:`.planfile`).

How the keyspace is split (by capability, never by backend):

* **partitioned sources** (``partitioned``, e.g. Redis Cluster): one slice per part, each read
  once by one reader; a store that can cut its parts finer (``SplitPartitioned``, e.g. a Redis
  Cluster's slot ranges) is asked for as many parts as slices.
* **ordered sources** (``ordered_scan``): by key range.  The coordinator discovers how keys
  branch with a few hundred one-key probes (``scan(prefix, start_after=x, batch_size=1)``):
  starting at the prefix, it lists the distinct next bytes of each populated prefix and expands
  breadth-first until it has about 8 populated prefixes per slice, then gives each slice a
  contiguous run of them holding an equal estimated share of the keys (a prefix's share is its
  parent's divided among the parent's populated children).  Slice i copies keys in
  ``(boundary[i-1], boundary[i]]``; the ranges cover the whole key line whatever the boundaries
  are, so balance is approximate (it assumes siblings hold similar numbers of keys) but coverage
  is exact.
* **other sources**: by hash slice.  Every slice scans the source keys-only and copies the keys
  with ``crc32(key) % N == i``, fetching their values with ``get_many``.  Keys cross the wire N
  times, values and writes once, so this scales when writing (or value transfer) is the
  bottleneck.

The coordinator checkpoint holds the split and the slices finished so far (:func:`prepare`);
each slice checkpoints its own copy (its fingerprint names the slice).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from kvctl.abilities import AsyncSplitPartitioned
from kvctl.errors import UsageError
from kvctl.store import AsyncStore

from .._batches import check_policy
from .._slices import slice_of
from .._stores import describe, first_key
from ..reporting import Counts, Problems, Reporter, plural
from . import checkpoint
from .plan import Plan, Summary

TARGET_PREFIXES_PER_WORKER = 8
PROBE_BUDGET = 512
_FAR = b"\xff" * 64  # appended to a prefix: past (nearly) every key that starts with it


# -- splitting ---------------------------------------------------------------------------------
class _Prober:
    def __init__(self, store: AsyncStore, budget: int) -> None:
        self.store = store
        self.budget = budget

    async def first_after(self, prefix: bytes, after: bytes | None) -> bytes | None:
        """The first key under ``prefix`` greater than ``after`` (one round trip)."""
        self.budget -= 1
        return await first_key(self.store, prefix, after)

    async def children(self, node: bytes) -> list[bytes] | None:
        """The populated one-byte extensions of ``node``; None when the budget ran out."""
        out: list[bytes] = []
        after: bytes | None = node
        while True:
            if self.budget <= 0:
                return None
            key = await self.first_after(node, after)
            if key is None:
                return out
            child = key[: len(node) + 1]
            if out and out[-1] == child:  # a key beyond child + _FAR: step past it
                after = key + _FAR
                continue
            out.append(child)
            if child[-1] == 0xFF:
                return out
            after = child + _FAR


async def key_range_split(store: AsyncStore, prefix: bytes, n: int,
                          budget: int = PROBE_BUDGET) -> list[bytes]:
    """Up to ``n - 1`` increasing boundaries splitting the keys under ``prefix`` into n ranges.

    The key tree is expanded breadth-first, one byte at a time, until there are enough prefixes
    or the probe budget is spent.  Each prefix carries its estimated share of the keys (its
    parent's share divided among the parent's populated children), and the bounds cut the
    cumulative share evenly: prefixes of different depths (a level expanded halfway) weigh what
    they cover, not one each.
    """
    prober = _Prober(store, budget)
    leaves: list[tuple[bytes, float]] = [(prefix, 1.0)]
    target = n * TARGET_PREFIXES_PER_WORKER
    while len(leaves) < target:
        expanded: list[tuple[bytes, float]] = []
        grew = False
        for i, (node, share) in enumerate(leaves):
            kids = await prober.children(node)
            if kids is None:  # out of probes: keep the rest as they are
                expanded.extend(leaves[i:])
                break
            if kids:
                grew = grew or len(kids) > 1 or kids[0] != node
                expanded.extend((kid, share / len(kids)) for kid in kids)
            else:
                expanded.append((node, share))  # a key with nothing after it: a leaf
            if len(expanded) + len(leaves) - i - 1 >= target:
                expanded.extend(leaves[i + 1:])
                break
        if expanded == leaves or not grew:
            leaves = expanded
            break
        leaves = expanded
    if len(leaves) < 2:
        return []
    groups = min(n, len(leaves))
    bounds: list[bytes] = []
    total = sum(share for _, share in leaves)
    seen = 0.0
    for node, share in leaves:
        # a bound at the first prefix that starts past the next equal share of the keys
        if seen >= total * (len(bounds) + 1) / groups and len(bounds) < groups - 1:
            bounds.append(node)
        seen += share
    return sorted(set(bounds))


def ranges_from(bounds: list[bytes]) -> list[tuple[bytes | None, bytes | None]]:
    """Worker ranges (after, upto] covering the whole key line."""
    edges: list[bytes | None] = [None, *bounds, None]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


async def prepare(src: AsyncStore, dst: AsyncStore, src_url: str, dst_url: str, plan: Plan, reporter: Reporter,
                  slices: int, option: str, **fingerprint: Any,
                  ) -> tuple[checkpoint.Checkpoint, Path, Summary, Plan]:
    """Check both stores, then load (``--resume``) or make the coordinator checkpoint: the split
    into ``slices`` slices and the slices finished so far.  Shared by every executor."""
    for store in (src, dst):
        caps = store.capabilities
        if not (caps.persistent or caps.multi_node):
            raise UsageError(f"{option} needs stores that other processes can open; the {store.name} "
                             "backend keeps its data inside one process",
                             hint="use --workers 1" if option == "--workers" else "use --executor local")
    if dst.capabilities.one_writer:
        raise UsageError(f"{option} needs a destination several processes can write at once; the {dst.name} "
                         "backend takes one writer at a time",
                         hint="use --workers 1" if option == "--workers" else "use --executor local")
    check_policy(plan.on_conflict, src.capabilities.versions, dst)
    fp = checkpoint.fingerprint(parent=plan.fingerprint(src_url, dst_url), workers=slices,
                                ordered=src.capabilities.ordered_scan, **fingerprint)
    cp_path = plan.checkpoint_path or checkpoint.default_path(fp)
    found = None if plan.dry_run else checkpoint.load(cp_path, fp)
    cp = found if plan.resume else None
    summary = Summary(describe(src), describe(dst), dry_run=plan.dry_run, workers=plan.workers,
                      checkpoint=None if plan.dry_run else str(cp_path), resumed=cp is not None,
                      copied_before=0 if cp is None else None)  # the caller counts its slices' checkpoints
    if cp is None:
        if plan.resume and not plan.dry_run:
            reporter.note("no checkpoint of this migrate to resume: starting from the beginning")
        elif found is not None:
            reporter.note("a checkpoint of an interrupted run of this migrate exists; starting over "
                          "(use --resume to continue it)")
        plan = replace(plan, resume=False)  # a new split: no worker resumes an older one's slice
        cp = checkpoint.Checkpoint(fp, summary.src, summary.dst, started_at_ms=time.time_ns() // 1_000_000)
        cp.extra = {"slices": await plan_slices(src, plan, slices), "finished": {}}
        if not plan.dry_run:
            cp.save(cp_path)
    else:
        reporter.note(f"resuming {plural(len(cp.extra['slices']) - len(cp.extra['finished']), 'unfinished slice')}")
    return cp, cp_path, summary, plan


def collect(cp: checkpoint.Checkpoint, summary: Summary) -> None:
    """The totals of every finished slice, those of this run and those a resumed run skipped."""
    counts = Counts()
    problems = Problems()
    for done in cp.extra["finished"].values():
        counts.add(Counts.from_dict(done["counts"]))
        problems.extend(Problems.from_dict(done.get("problems", {})))
    summary.counts, summary.problems = counts, problems


async def plan_slices(src: AsyncStore, plan: Plan, n: int, ordered: bool | None = None,
                      partitions: bool = True) -> list[dict[str, Any]]:
    """About ``n`` slices of the source under the plan's filter, as small JSON values: the parts
    of a partitioned source (each read once: about ``n`` when it can cut its parts finer, else
    its own parts whatever ``n`` is); key ranges when
    the source (or, for ``ordered``, every store the slices are read from) scans in order; hash
    slices otherwise (``n`` keys-only scans of the source)."""
    prefix = plan.key_filter.scan_prefix
    if partitions and src.capabilities.partitioned and prefix is not None:
        partitioned: Any = src  # partitions is an optional method of the protocol
        parts = (await src.partitions_for(prefix, slices=n) if isinstance(src, AsyncSplitPartitioned)
                 else await partitioned.partitions(prefix))
        return [{"partition": p} for p in parts]
    if src.capabilities.ordered_scan if ordered is None else ordered:
        bounds = await key_range_split(src, prefix or b"", n) if prefix is not None else []
        return [{"range": [None if a is None else a.hex(), None if b is None else b.hex()]}
                for a, b in ranges_from(bounds)]
    return [{"hash": [i, n]} for i in range(n)]


def slice_plan(plan: Plan, spec: dict[str, Any], index: int) -> Plan:
    """The plan of one slice's copy: its part of the keyspace, its own checkpoint, kept when done."""
    part = slice_of(spec)
    return replace(plan, key_range=part.key_range, hash_slice=part.hash_slice, partition=part.partition,
                   delete_extra=False, verify=False,
                   workers=1, estimate_total=False, checkpoint_path=_worker_cp(plan, index),
                   keep_checkpoint=True)


def _worker_cp(plan: Plan, index: int) -> Path | None:
    return None if plan.checkpoint_path is None else plan.checkpoint_path.with_name(
        f"{plan.checkpoint_path.name}.w{index}")

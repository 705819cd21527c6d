"""The ShardStore: child stores with weights; each key lives on the child that owns it."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from kvctl.abilities import SplitPartitioned
from kvctl.errors import BadURLError, ConflictError, UnavailableError, UsageError
from kvctl.plugin_kit import ScanRange, StoreBase, key_cursor, new_clock, page_size, show_key
from kvctl.registry import open_sync
from kvctl.store import Capabilities, Page, Record, Store, StoreURL, newer

from .placement import Placement
from .spec import OPTIONS, ChildSpec, ResolvingGuard, parse_children

MISPLACED_SCAN_LIMIT = 100_000  # stats counts misplaced keys only up to this many keys in all


@dataclass
class RebalanceReport:
    """What :meth:`ShardStore.rebalance` did (or, dry run, would do)."""

    examined: int = 0
    moved: int = 0  # copied to their owner and removed from where they were
    stale_dropped: int = 0  # the owner already held a newer copy: only the misplaced one was removed
    moves: dict[str, int] = field(default_factory=dict)  # "from -> to": count
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"examined": self.examined, "moved": self.moved, "stale_dropped": self.stale_dropped,
                "moves": dict(self.moves), "dry_run": self.dry_run}


class ShardStore(StoreBase):
    name = "shard"
    list_options = frozenset({"child", "weight", "name"})  # one of each per child (see .spec)
    description = ("Child stores with weights; keys placed by weighted rendezvous hashing: "
                   "shard://?child=URL&weight=3&child=URL&weight=7")
    # The real capabilities are those all children share (computed per store); these are what a
    # shard over children that have everything can offer.
    capabilities = Capabilities(persistent=True, ttl=True, ordered_scan=True, versions=True,
                                durability="that of each child")

    def __init__(self, url: StoreURL, specs: list[ChildSpec], children: list[Store], *, fallback: bool) -> None:
        self.url = url
        self.where = "shard://?" + "&".join(f"child={s.where}&weight={s.weight:g}" for s in specs)
        self.specs = specs
        self.children = children
        self.placement = Placement([s.id for s in specs], [s.weight for s in specs])
        self.fallback = fallback and len(children) > 1
        self.capabilities = _shared_capabilities(specs, children)  # type: ignore[misc]
        self._clock = new_clock()

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        url.check_options(OPTIONS)
        specs = parse_children(url)
        fallback = url.bool_option("fallback", True)
        children: list[Store] = []
        try:
            for spec in specs:
                with ResolvingGuard([spec.profile or ""]):
                    children.append(open_sync(spec.url, access=url.access))
        except BaseException:
            for child in children:
                child.close()
            raise
        return cls(url, specs, children, fallback=fallback)

    def __repr__(self) -> str:
        return f"<ShardStore {self.where}>"

    # -- placement -------------------------------------------------------------------------
    def owner(self, key: bytes) -> str:
        """The id of the child that owns ``key`` under the current weights."""
        return self.specs[self.placement.owner(key)].id

    def _group(self, keys: Iterable[bytes]) -> dict[int, list[int]]:
        """Positions of ``keys`` by owning child index."""
        groups: dict[int, list[int]] = {}
        owner = self.placement.owner
        for pos, key in enumerate(keys):
            groups.setdefault(owner(key), []).append(pos)
        return groups

    # -- reads -----------------------------------------------------------------------------
    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        found: list[Record | None] = [None] * len(keys)
        for index, positions in self._group(keys).items():
            got = self.children[index].get_many([keys[p] for p in positions])
            for pos, rec in zip(positions, got, strict=True):
                found[pos] = rec
        if self.fallback:
            self._fallback_reads(keys, found)
        return found

    def _fallback_reads(self, keys: Sequence[bytes], found: list[Record | None]) -> None:
        """Keys their owner lacks may still sit on another child (weights changed, rebalance not
        run yet): look there too, one batch per child, so no key ever disappears from view."""
        missing = [p for p, rec in enumerate(found) if rec is None]
        if not missing:
            return
        owners = {p: self.placement.owner(keys[p]) for p in missing}
        for index, child in enumerate(self.children):
            asked = [p for p in missing if owners[p] != index]
            if not asked:
                continue
            for pos, rec in zip(asked, child.get_many([keys[p] for p in asked]), strict=True):
                if rec is not None and (found[pos] is None or newer(rec, found[pos])):
                    found[pos] = rec

    def scan(self, prefix: bytes = b"", *, start_after: bytes | None = None, cursor: str | None = None,
             batch_size: int = 1000, keys_only: bool = False) -> Iterator[Page]:
        batch_size = page_size(batch_size)
        if len(self.children) == 1:
            yield from self.children[0].scan(prefix, start_after=start_after, cursor=cursor,
                                             batch_size=batch_size, keys_only=keys_only)
        elif self.capabilities.ordered_scan:
            yield from self._merged_scan(prefix, ScanRange.of(prefix, start_after, cursor, batch_size).after,
                                         batch_size, keys_only)
        else:
            yield from self._chained_scan(prefix, cursor, batch_size, keys_only)

    def _merged_scan(self, prefix: bytes, after: bytes | None, batch_size: int,
                     keys_only: bool) -> Iterator[Page]:
        """Every child in key order (heapq.merge); a key held by two children (a copy left by a
        weight change) appears once, from its owner."""
        def records(index: int) -> Iterator[tuple[bytes, int, Record]]:
            for page in self.children[index].scan(prefix, start_after=after, batch_size=batch_size,
                                                  keys_only=keys_only):
                for rec in page.records:
                    yield rec.key, index, rec

        merged = heapq.merge(*(records(i) for i in range(len(self.children))))
        batch: list[Record] = []
        last: bytes | None = None
        for key, index, rec in merged:
            if key == last:
                if index == self.placement.owner(key):
                    batch[-1] = rec
                continue
            if len(batch) >= batch_size:
                yield Page(batch, key_cursor(batch[-1].key))
                batch = []
            batch.append(rec)
            last = key
        if batch:
            yield Page(batch, key_cursor(batch[-1].key))

    def _chained_scan(self, prefix: bytes, cursor: str | None, batch_size: int, keys_only: bool) -> Iterator[Page]:
        """Children one after the other (some cannot scan in order); cursor ``s:<child>:<theirs>``."""
        first, inner = 0, None
        if cursor is not None:
            tag, _, rest = cursor.partition(":")
            position, _, inner_cursor = rest.partition(":")
            if tag != "s" or not position.isdigit() or int(position) > len(self.children):
                raise UsageError(f"not a cursor of this shard store: {cursor!r}")
            first, inner = int(position), inner_cursor or None
        for index in range(first, len(self.children)):
            pages = self.children[index].scan(prefix, cursor=inner if index == first else None,
                                              batch_size=batch_size, keys_only=keys_only)
            for page in pages:
                if page.records:
                    yield Page(page.records, f"s:{index}:{page.cursor or ''}" if page.cursor
                               else f"s:{index + 1}:")

    # -- partitions: each child once (its own parts when it has some), for parallel readers ---
    def partitions(self, prefix: bytes = b"") -> list[str]:
        """``"<i>"`` for child i, or ``"<i>:<part>"`` for each part of a partitioned child."""
        return self._parts(prefix, None)

    def partitions_for(self, prefix: bytes = b"", *, slices: int) -> list[str]:
        """As :meth:`partitions`; a child that can cut its parts finer is asked for its share of
        ``slices``."""
        return self._parts(prefix, max(1, slices // len(self.children)))

    def _parts(self, prefix: bytes, share: int | None) -> list[str]:
        out: list[str] = []
        for index, child in enumerate(self.children):
            if not child.capabilities.partitioned:
                out.append(str(index))
                continue
            parts = (child.partitions_for(prefix, slices=share) if share and isinstance(child, SplitPartitioned)
                     else child.partitions(prefix))  # type: ignore[attr-defined]
            out += [f"{index}:{part}" for part in parts]
        return out

    def scan_partition(self, partition: str, prefix: bytes = b"", *, cursor: str | None = None,
                       batch_size: int = 1000, keys_only: bool = False) -> Iterator[Page]:
        """One child's keys (or one part of it) as a whole-store scan shows them: a copy left on
        a child that no longer owns the key (weights changed, rebalance not run) is skipped when
        its owner holds the key, as :meth:`scan` shows the owner's copy."""
        position, _, part = partition.partition(":")
        if not position.isdigit() or int(position) >= len(self.children):
            raise UnavailableError(f"{partition!r} is not a part of {self.where}",
                                   hint="the shard's children changed: start the copy again to re-plan it")
        index = int(position)
        child: Any = self.children[index]
        batch_size = page_size(batch_size)
        pages = (child.scan_partition(part, prefix, cursor=cursor, batch_size=batch_size, keys_only=keys_only)
                 if part else child.scan(prefix, cursor=cursor, batch_size=batch_size, keys_only=keys_only))
        for page in pages:
            yield Page(self._shown_here(index, page.records), page.cursor)

    def _shown_here(self, index: int, records: list[Record]) -> list[Record]:
        """``records`` of child ``index`` less the misplaced ones a whole-store scan takes from
        elsewhere: from the owner when it holds the key, else from the first child holding it."""
        if len(self.children) == 1:
            return records
        misplaced = [r.key for r in records if self.placement.owner(r.key) != index]
        if not misplaced:
            return records
        elsewhere: set[bytes] = set()
        for other, child in enumerate(self.children):
            if other == index:
                continue
            asked = [k for k in misplaced if other == self.placement.owner(k) or other < index]
            if asked:
                elsewhere.update(r.key for r in child.get_many(asked) if r is not None)
        return [r for r in records if r.key not in elsewhere]

    def count(self, prefix: bytes = b"") -> int:
        # Each child counts natively.  Until a rebalance, a copy left behind by a weight change
        # is counted on both children; scans show it once.
        return sum(child.count(prefix) for child in self.children)

    # -- writes ----------------------------------------------------------------------------
    def set_many(self, records: Iterable[Record]) -> None:
        records = list(records)
        caps = self.capabilities
        prepared: list[Record] = []
        for rec in records:  # every record is checked before any child is written
            self._check(rec.key, rec.value)
            if rec.expires_at_ms is not None:
                caps.require("ttl", self.name)
            if caps.versions:  # one clock for all children, so copies compare across them
                if rec.version is None:
                    rec = rec._replace(version=self._clock.now())
                else:
                    self._clock.observe(rec.version)
            prepared.append(rec)
        for index, positions in self._group(r.key for r in prepared).items():
            self.children[index].set_many([prepared[p] for p in positions])

    def delete_many(self, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0
        if not self.fallback:
            return sum(self.children[i].delete_many([keys[p] for p in positions])
                       for i, positions in self._group(keys).items())
        unique = list(dict.fromkeys(keys))
        present = sum(rec is not None for rec in self.get_many(unique))
        for child in self.children:  # copies left on other children go too
            child.delete_many(unique)
        return present

    def clear(self) -> int:
        return sum(child.clear() for child in self.children)

    # -- expire and set_if: on the child that owns the key, atomically there ------------------
    def expire(self, key: bytes, expires_at_ms: int | None) -> bool:
        return bool(self._owner_of(key).expire(key, expires_at_ms))

    def set_if(self, record: Record, *, exists: bool | None = None, keep_ttl: bool = False) -> bool:
        self._check(record.key, record.value)
        return bool(self._owner_of(record.key).set_if(record, exists=exists, keep_ttl=keep_ttl))

    def _owner_of(self, key: bytes) -> Any:
        """The owner child, which decides alone: refused while a copy of the key still sits on
        another child (weights changed, rebalance not run), which the owner cannot see."""
        self.capabilities.require("conditional_writes", self.name)
        owner = self.placement.owner(key)
        if self.fallback and any(child.get(key) is not None
                                 for i, child in enumerate(self.children) if i != owner):
            raise ConflictError(f"key {show_key(key)} is not on the child that owns it yet: run kvctl rebalance first")
        return self.children[owner]

    # -- rebalancing -----------------------------------------------------------------------
    def rebalance(self, *, dry_run: bool = False, batch_size: int = 1000,
                  progress: Callable[[int], None] | None = None) -> RebalanceReport:
        """Move every key that is not on its owner (after a weight change) to its owner.

        Only keys whose owner changed move; each is copied (value, expiry and version kept) before
        it is deleted from where it was, so a crash leaves a duplicate, never a loss, and running
        again finishes the job.  An owner already holding a newer copy keeps it.  ``progress`` is
        told the keys examined so far after each page.
        """
        report = RebalanceReport(dry_run=dry_run)
        for index, child in enumerate(self.children):
            cursor: str | None = None
            while True:
                page = next(iter(child.scan(cursor=cursor, batch_size=batch_size)), None)
                if page is None or not page.records:
                    break
                report.examined += len(page.records)
                self._move_page(index, page.records, report, dry_run)
                if progress is not None:
                    progress(report.examined)
                if page.cursor is None:
                    break
                cursor = page.cursor
        return report

    def _move_page(self, source: int, records: list[Record], report: RebalanceReport, dry_run: bool) -> None:
        by_owner: dict[int, list[Record]] = {}
        for rec in records:
            owner = self.placement.owner(rec.key)
            if owner != source:
                by_owner.setdefault(owner, []).append(rec)
        misplaced: list[bytes] = []
        for owner, moving in by_owner.items():
            label = f"{self.specs[source].id} -> {self.specs[owner].id}"
            report.moves[label] = report.moves.get(label, 0) + len(moving)
            target = self.children[owner]
            current = target.get_many([r.key for r in moving])
            copies = [r for r, cur in zip(moving, current, strict=True) if cur is None or newer(r, cur)]
            report.moved += len(copies)
            report.stale_dropped += len(moving) - len(copies)
            if not dry_run and copies:
                target.set_many(copies)
            misplaced.extend(r.key for r in moving)
        if misplaced and not dry_run:
            self.children[source].delete_many(misplaced)

    # -- admin -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Totals, then per child (flat ``<id>.<stat>`` names): keys held, share of the keys beside
        the share of the weight, and keys not on their owner (counted up to 100,000 keys in all)."""
        counts = [child.count() for child in self.children]
        total = sum(counts)
        weight_total = sum(s.weight for s in self.specs)
        misplaced = self._misplaced() if total <= MISPLACED_SCAN_LIMIT else None
        out: dict[str, Any] = {"keys": total, "children": len(self.children)}
        for i, (spec, n) in enumerate(zip(self.specs, counts, strict=True)):
            out[f"{spec.id}.url"] = spec.where
            out[f"{spec.id}.weight"] = spec.weight
            out[f"{spec.id}.weight_share"] = round(spec.weight / weight_total, 4)
            out[f"{spec.id}.keys"] = n
            out[f"{spec.id}.share"] = round(n / total, 4) if total else None
            out[f"{spec.id}.misplaced"] = None if misplaced is None else misplaced[i]
        if misplaced is not None and any(misplaced):
            out["hint"] = f"{sum(misplaced)} keys are not on their owner: run a rebalance"
        return out

    def _misplaced(self) -> list[int]:
        out = []
        for index, child in enumerate(self.children):
            out.append(sum(1 for page in child.scan(keys_only=True) for rec in page.records
                           if self.placement.owner(rec.key) != index))
        return out

    def close(self) -> None:
        errors: list[BaseException] = []
        for child in self.children:
            try:
                child.close()
            except Exception as exc:  # close every child, then report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]


def _shared_capabilities(specs: list[ChildSpec], children: list[Store]) -> Capabilities:
    caps = [c.capabilities for c in children]

    def smallest(values: list[int | None]) -> int | None:
        known = [v for v in values if v is not None]
        return min(known) if known else None

    if not caps:
        raise BadURLError("a shard needs at least one child")
    return Capabilities(
        persistent=all(c.persistent for c in caps),
        ttl=all(c.ttl for c in caps),
        ordered_scan=all(c.ordered_scan for c in caps),
        versions=all(c.versions for c in caps),
        conditional_writes=all(c.conditional_writes for c in caps),
        atomic_batch=len(caps) == 1 and caps[0].atomic_batch,
        multi_node=any(c.multi_node for c in caps),
        host_local=any(c.host_local for c in caps),
        max_key_size=smallest([c.max_key_size for c in caps]),
        max_value_size=smallest([c.max_value_size for c in caps]),
        durability="; ".join(f"{s.id}: {c.durability or '?'}" for s, c in zip(specs, caps, strict=True)),
        blocking_io=any(c.blocking_io for c in caps),
        partitioned=len(caps) > 1 or caps[0].partitioned,
    )

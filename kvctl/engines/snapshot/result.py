"""What a snapshot command did: :class:`SnapshotSummary` (create, verify, restore) and the
:class:`Step` of each file a restore applied."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kvctl.codec import show

from ..keyfilter import KeyFilter
from ..preview import Preview
from ..reporting import Counts, Problems

FULL, INCREMENTAL = "full", "incremental"
KINDS = (FULL, INCREMENTAL)


@dataclass
class Step:
    """What restoring one file of a chain did."""

    path: str
    kind: str
    base_cursor: str | None
    end_cursor: str | None
    records: int = 0  # records read from the file (incremental: upserts and tombstones)
    tombstones: int = 0
    applied: int = 0  # written (full) or took effect (incremental)
    stale: int = 0  # not newer than what the store holds: left alone
    expired: int = 0  # full: skipped; incremental: applied as a deletion at its version
    incomplete: int = 0  # typed values the store cannot hold
    failed: int = 0  # over a limit of the store
    ttl_dropped: int = 0


@dataclass
class SnapshotSummary:
    path: str
    store: str
    records: int = 0
    blocks: int = 0
    size: int = 0
    raw_bytes: int = 0
    expired: int = 0
    incomplete: int = 0
    counts: Counts | None = None  # restore: totals over the chain
    problems: Problems = field(default_factory=Problems)
    seconds: float = 0.0
    kind: str = FULL  # restore of several files: "chain"
    base_cursor: str | None = None
    end_cursor: str | None = None
    upserts: int | None = None  # None: not known without decoding (verify --quick of an old file)
    tombstones: int | None = None
    with_expiry: int = 0  # verify with records: how many upserts carry an expiry
    steps: list[Step] = field(default_factory=list)  # restore: one per file
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False  # restore --dry-run: nothing was written
    preview: Preview | None = None  # restore --dry-run: the keys it would create, overwrite, delete

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path, "store": self.store, "kind": self.kind, "base_cursor": self.base_cursor,
            "end_cursor": self.end_cursor, "records": self.records, "upserts": self.upserts,
            "tombstones": self.tombstones, "blocks": self.blocks,
            "size": self.size, "raw_bytes": self.raw_bytes, "expired": self.expired,
            "incomplete": self.incomplete, "seconds": round(self.seconds, 3),
            "keys_per_s": round(self.records / self.seconds, 1) if self.seconds else 0.0,
            "incomplete_keys": [[show(k, "text"), kind] for k, kind in self.problems.incomplete],
        }
        if self.counts is not None:
            out.update(self.counts.to_dict())
        if self.steps:
            out["steps"] = [asdict(s) for s in self.steps]
        if self.notes:
            out["notes"] = self.notes
        if self.preview is not None:
            out.update(dry_run=True, **self.preview.to_dict())
        return out

    def check(self) -> None:
        if self.dry_run:
            return
        self.problems.check("snapshot" if self.counts is None else "restore", self.incomplete,
                            0 if self.counts is None else self.counts.failed)


def meta_filter(meta: dict[str, Any]) -> KeyFilter:
    """The key filter a snapshot's header records."""
    f = meta.get("filter") or {}
    glob = f.get("glob")
    return KeyFilter(bytes.fromhex(f.get("prefix") or ""), None if glob is None else bytes.fromhex(glob))

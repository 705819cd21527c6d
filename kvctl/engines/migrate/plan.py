"""What a migrate is asked to do (:class:`Plan`) and what it did (:class:`Summary`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvctl.codec import json_key
from kvctl.errors import DifferenceError, IncompleteError

from .._batches import Policy
from ..diff import DiffResult
from ..keyfilter import KeyFilter
from ..preview import Preview
from ..reporting import Counts, Problems
from ..typedjson import Types
from . import checkpoint


@dataclass(frozen=True)
class Plan:
    """Everything the user chose; the fields marked (*) decide the checkpoint fingerprint."""

    prefix: bytes = b""  # (*)
    glob: bytes | None = None  # (*)
    on_conflict: Policy = "overwrite"  # (*)
    drop_ttl: bool = False  # (*)
    # (*) "json": typed values are read as their JSON documents (engines.typedjson) and copied as
    # plain values; "dump": by the stores' own dumps, where both sides hold typed values
    types: Types = "dump"
    dry_run: bool = False
    delete_extra: bool = False
    max_delete: int = 1000
    resume: bool = False
    verify: bool = False
    batch_size: int = 5000
    queue_depth: int = 4
    checkpoint_every: int = 10  # batches between checkpoints ...
    checkpoint_interval: float = 1.0  # ... and at least this many seconds (each costs two fsyncs)
    checkpoint_path: Path | None = None
    expiry_tolerance_ms: int = 2000
    estimate_total: bool = False  # count the source for a progress total (costs a keys-only scan)
    workers: int = 1
    # a worker's slice of the keyspace (*): keys in (after, upto], or crc32(key) % n == i
    key_range: tuple[bytes | None, bytes | None] | None = None
    hash_slice: tuple[int, int] | None = None
    partition: str | None = None  # (*) one part of a partitioned source (Store.partitions)
    # a worker's: keep the checkpoint of a finished copy (done) for the coordinator to remove once
    # it has recorded the slice as finished, so a lost "done" never makes a resume start over
    keep_checkpoint: bool = False
    # called before every checkpoint write; an executor's slice uses it to publish the cursor
    # where a retry on another host finds it, and to stop a stale attempt by raising
    before_checkpoint: Callable[[checkpoint.Checkpoint], None] | None = field(default=None, compare=False)

    @property
    def key_filter(self) -> KeyFilter:
        return KeyFilter(self.prefix, self.glob)

    def fingerprint(self, src_url: str, dst_url: str) -> str:
        rng = None if self.key_range is None else [None if b is None else b.hex() for b in self.key_range]
        return checkpoint.fingerprint(
            src=src_url, dst=dst_url, prefix=self.prefix.hex(),
            glob=None if self.glob is None else self.glob.hex(), policy=self.on_conflict,
            drop_ttl=self.drop_ttl, range=rng, slice=self.hash_slice,
            **({"partition": self.partition} if self.partition is not None else {}),
            **({"types": self.types} if self.types != "dump" else {}),
        )


@dataclass
class Summary:
    src: str
    dst: str
    dry_run: bool = False
    counts: Counts = field(default_factory=Counts)
    problems: Problems = field(default_factory=Problems)
    seconds: float = 0.0  # the whole command, with --delete-extra and --verify
    copy_seconds: float = 0.0
    processed_this_run: int = 0
    resumed: bool = False
    # keys the interrupted runs this one resumed had copied (in ``counts``); None: not known
    copied_before: int | None = 0
    workers: int = 1
    extra_found: int | None = None  # keys only in DST (with --delete-extra)
    deleted: int = 0
    delete_refused: str | None = None
    verify: DiffResult | None = None
    checkpoint: str | None = None
    preview: Preview | None = None  # a dry run: the keys it would create, overwrite and delete

    @property
    def copied_this_run(self) -> int | None:
        return None if self.copied_before is None else self.counts.copied - self.copied_before

    @property
    def keys_per_s(self) -> float:
        return self.processed_this_run / self.copy_seconds if self.copy_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        def named(items: list[tuple[bytes, str]], what: str) -> list[dict[str, Any]]:
            return [{**json_key(key), what: why} for key, why in items]

        return {
            "src": self.src, "dst": self.dst, "dry_run": self.dry_run, **self.counts.to_dict(),
            "seconds": round(self.seconds, 3), "copy_seconds": round(self.copy_seconds, 3),
            "keys_per_s": round(self.keys_per_s, 1), "processed": self.processed_this_run,
            "copied_this_run": self.copied_this_run,
            "resumed": self.resumed, "workers": self.workers,
            "extra_found": self.extra_found, "deleted": self.deleted,
            "delete_refused": self.delete_refused,
            "verify": None if self.verify is None else self.verify.to_dict(),
            "incomplete_keys": named(self.problems.incomplete, "kind"),
            "failed_keys": named(self.problems.failed, "reason"),
            **({} if self.preview is None else self.preview.to_dict()),
        }

    def check(self) -> None:
        """Raise the error the exit status must report, if any (after the summary is shown)."""
        if self.dry_run:
            return
        self.problems.check("copy", self.counts.incomplete, self.counts.failed)
        if self.delete_refused:
            raise IncompleteError(f"extra keys left in the destination: {self.delete_refused}")
        if self.verify is not None and not self.verify.equal:
            raise DifferenceError(f"verify failed: {self.verify.counts_line()}")


def checkpoint_file(plan: Plan, src_url: str, dst_url: str) -> Path:
    """Where a run of this plan keeps its checkpoint."""
    return plan.checkpoint_path or checkpoint.default_path(plan.fingerprint(src_url, dst_url))


def read_checkpoint(plan: Plan, src_url: str, dst_url: str) -> checkpoint.Checkpoint | None:
    """The checkpoint --resume would continue from (for the cli and the worker coordinator)."""
    return checkpoint.load(checkpoint_file(plan, src_url, dst_url), plan.fingerprint(src_url, dst_url))

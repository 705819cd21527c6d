"""What a sync run did (:class:`SyncResult`), and a watch of many runs (:class:`WatchResult`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kvctl.codec import json_key, show_key
from kvctl.errors import IncompleteError

from ..preview import Preview
from ..reporting import plural


@dataclass
class Conflict:
    key: bytes
    winner: str  # "src" or "dst"
    src_version: int | None
    dst_version: int | None


@dataclass
class SyncResult:
    mode: str = "feed"  # "feed" (incremental) or "diff" (full comparison)
    fallback: str | None = None  # why a diff pass replaced the feed, when it did
    applied_to_dst: int = 0
    applied_to_src: int = 0
    stale_skipped: int = 0
    deleted: int = 0
    kept_at_dst: int = 0  # destination-only keys newer than the previous run (one-way)
    conflicts: list[Conflict] = field(default_factory=list)
    # keys of non-bytes types (Redis hashes...) the other side cannot hold: reported, not dropped
    skipped_typed: list[bytes] = field(default_factory=list)
    # records the receiving store refused (over a limit, an empty key in LMDB): (key, reason)
    failed: list[tuple[bytes, str]] = field(default_factory=list)
    src_cursor: str | None = None
    dst_cursor: str | None = None
    seconds: float = 0.0
    converged: bool = False
    dry_run: bool = False  # nothing was applied: the counts say what a run would do
    # a dry run: the keys it would create, overwrite and delete on each side
    to_dst: Preview | None = None
    to_src: Preview | None = None

    def preview_for(self, destination: bool) -> Preview:
        if destination:
            self.to_dst = self.to_dst or Preview()
            return self.to_dst
        self.to_src = self.to_src or Preview()
        return self.to_src

    def to_dict(self) -> dict[str, Any]:
        """Keys as everywhere else in kvctl's JSON: ``key`` when UTF-8, else ``key_b64``."""
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        for side in ("to_dst", "to_src"):
            preview = getattr(self, side)
            if preview is None:
                del out[side]
            else:
                out[side] = preview.to_dict()
        out["conflicts"] = [
            {**json_key(c.key), "winner": c.winner, "src_version": c.src_version, "dst_version": c.dst_version}
            for c in self.conflicts
        ]
        out["skipped_typed"] = [json_key(k) for k in self.skipped_typed]
        out["failed"] = [{**json_key(k), "reason": why} for k, why in self.failed]
        return out

    def check(self, key_encoding: str = "text") -> None:
        """Exit 8 when keys were left behind: of a type the other store cannot hold, or refused by
        it (over a limit).  ``key_encoding``: how the error names a key (the cli's --keys)."""
        if self.dry_run:
            return
        refuse_uncopied(self.skipped_typed, key_encoding)
        if self.failed:
            key, why = self.failed[0]
            raise IncompleteError(f"{plural(len(self.failed), 'key')} failed (first: {show_key(key, key_encoding)}: "
                                  f"{why}); they were not copied")


@dataclass
class WatchResult:
    """The totals of a ``--watch``: every run since it started."""

    runs: int = 0
    applied: int = 0
    deleted: int = 0
    max_lag_ms: int | None = None  # known only for versioned changes (HLC time)
    # Keys of a type the destination cannot hold, each once (a comparison pass meets it again on
    # every run); ``new_uncopied``: those first met by the last run.
    uncopied: dict[bytes, None] = field(default_factory=dict)
    new_uncopied: list[bytes] = field(default_factory=list)

    def add(self, result: SyncResult) -> None:
        self.runs += 1
        self.applied += result.applied_to_dst + result.applied_to_src
        self.deleted += result.deleted
        self.new_uncopied = [k for k in dict.fromkeys(result.skipped_typed) if k not in self.uncopied]
        self.uncopied.update(dict.fromkeys(self.new_uncopied))

    def saw_lag(self, lag_ms: int | None) -> None:
        if lag_ms is not None:
            self.max_lag_ms = max(self.max_lag_ms or 0, lag_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "applied": self.applied, "deleted": self.deleted, "max_lag_ms": self.max_lag_ms,
                "skipped_typed": [json_key(k) for k in self.uncopied]}

    def check(self, key_encoding: str = "text") -> None:
        """Exit 8 when keys of a type the destination cannot hold were left behind."""
        refuse_uncopied(list(self.uncopied), key_encoding)


def refuse_uncopied(keys: list[bytes], key_encoding: str = "text") -> None:
    """Exit 8 (IncompleteError) when keys of a type the other store cannot hold were left behind."""
    if keys:
        raise IncompleteError(
            f"{len(keys)} key{'s' if len(keys) != 1 else ''} hold{'' if len(keys) != 1 else 's'} values of a "
            f"type the other store cannot hold (e.g. {show_key(keys[0], key_encoding)}); "
            f"{'they were' if len(keys) != 1 else 'it was'} not copied"
        )

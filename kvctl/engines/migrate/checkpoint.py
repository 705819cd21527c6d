"""Resumable progress: where a migrate stopped, written atomically as it goes.

A checkpoint is a small JSON file under ``config.state_dir()/migrate/`` named by the *plan
fingerprint*: a hash of everything that decides which records go where (both URLs, filters,
conflict policy, TTL handling, the worker's slice of the keyspace).  ``--resume`` only ever picks
up a checkpoint with the same fingerprint, so a resumed run cannot continue a different plan.
The file holds the scan cursor of the last batch fully written to the destination and the
counts up to that batch, so a resumed run ends with the same data and the same totals as an
uninterrupted one.  Batches after the cursor are read and written again: the interrupted run may
have written some of them already, which the migrate engine recognises as its own writes, not
as conflicts (:class:`.resume.ResumeWriter`).  URLs inside are redacted; the
fingerprint is a one-way hash, so no password reaches the state directory.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kvctl.errors import CorruptError, StoreIOError

from .._files import write_atomic

FORMAT = 1


def fingerprint(**parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def default_path(fp: str, kind: str = "migrate") -> Path:
    from kvctl.config import state_dir

    return state_dir() / kind / f"{fp[:32]}.json"


@dataclass
class Checkpoint:
    fingerprint: str
    src: str  # redacted
    dst: str  # redacted
    cursor: str | None = None  # resume the source scan after this cursor; None: from the start
    counts: dict[str, int] = field(default_factory=dict)
    done: bool = False  # the copy finished; only post-copy steps (delete-extra, verify) remain
    started_at_ms: int = 0
    updated_at_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the split of a --workers run

    def save(self, path: Path) -> None:
        self.updated_at_ms = time.time_ns() // 1_000_000
        doc = {"format": FORMAT, **asdict(self)}
        write_atomic(path, json.dumps(doc, indent=1).encode("utf-8"), mode=0o600, make_directory=True)


def load(path: Path, fp: str) -> Checkpoint | None:
    """The checkpoint at ``path`` if it belongs to the plan ``fp``; None if there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreIOError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    try:
        doc = json.loads(raw)
        if doc.pop("format") != FORMAT:
            raise ValueError("unknown format")
        cp = Checkpoint(**doc)
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptError(f"checkpoint {path} is unreadable ({exc})",
                           hint="delete it to start over") from None
    return cp if cp.fingerprint == fp else None


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)

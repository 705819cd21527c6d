"""The state of a sync pair: its cursors and when its last run finished, one file per pair."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from kvctl.errors import filesystem

STATE_VERSION = 1


def state_path(state_dir: Path, src_url: str, dst_url: str, two_way: bool) -> Path:
    """One file per (src, dst, direction); named by a hash so no secret reaches the file name."""
    digest = hashlib.sha256(f"{src_url}\0{dst_url}\0{two_way}".encode()).hexdigest()[:20]
    return state_dir / "sync" / f"{digest}.json"


def load_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # an unreadable state only costs a full pass; it can never lose data
    return state if state.get("format") == STATE_VERSION else {}


def save_state(path: Path, state: dict[str, Any], *, durable: bool = True) -> None:
    """Atomic (rename) always; fsynced when ``durable``.  A cursor lost to a power cut only
    replays changes, which last-writer-wins makes harmless, so mid-run saves skip the fsync."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        with filesystem(f"cannot save the sync state in {path.parent}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as fh:
                json.dump({**state, "format": STATE_VERSION}, fh)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

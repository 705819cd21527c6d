"""``META``: the store's identity, written once when a writer first opens the directory.

It holds a random ``store_id`` (change-feed cursors name it, so a cursor of another store is
refused) and a random HLC ``node`` id (0..255), so two file stores writing in the same
millisecond issue different versions and last-writer-wins picks the same winner everywhere.
It is a small JSON file replaced atomically (temporary file, fsync, rename, directory fsync);
segments never depend on it, so losing it only costs a new identity: feed cursors of the old one
become gaps (the sync engine then compares both stores) and the node id changes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from kvctl.hlc import MAX_NODE
from kvctl.plugin_kit import random_node

from .format import TMP_SUFFIX, parse_segment_name
from .lock import LOCK_NAME
from .log import fsync_dir

META_NAME = "META"
META_FORMAT = 1


@dataclass(frozen=True)
class StoreMeta:
    store_id: str  # 16 hex digits
    node: int


def is_store(directory: str) -> bool:
    """``directory`` holds a file store: its ``META`` or a segment (a reader needs one of them;
    an empty or unrelated directory is no store, and a read must not pass it off as an empty one)."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return META_NAME in names or any(parse_segment_name(n) is not None for n in names)


def holds_other_files(directory: str) -> bool:
    """``directory`` holds no file store but other files: somebody else's directory, which a
    writer must not turn into a store unasked.  What a writer's first open leaves before its
    ``META`` (the lock, temporary files) does not count."""
    if is_store(directory):
        return False
    return any(n != LOCK_NAME and not n.endswith(TMP_SUFFIX) for n in os.listdir(directory))


def load_meta(directory: str, *, writer: bool, report: Callable[[str], None]) -> StoreMeta:
    """Read ``META``; a writer creates (or, when unreadable, replaces) it."""
    path = os.path.join(directory, META_NAME)
    meta = _read(path)
    if meta is not None:
        return meta
    if os.path.exists(path):
        report(f"{path}: unreadable store identity; a new one is written (sync cursors of the old one "
               "become feed gaps)" if writer else f"{path}: unreadable store identity")
    if not writer:  # a reader never writes: an anonymous identity for this open only
        return StoreMeta("0" * 16, 0)
    meta = StoreMeta(os.urandom(8).hex(), random_node())
    _write(directory, path, meta)
    return meta


def _read(path: str) -> StoreMeta | None:
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(4096))
        store_id, node = doc["store_id"], doc["node"]
        if doc.get("format") != META_FORMAT or not isinstance(node, int) or not 0 <= node <= MAX_NODE:
            return None
        int(store_id, 16)
        if len(store_id) != 16:
            return None
        return StoreMeta(store_id, node)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(directory: str, path: str, meta: StoreMeta) -> None:
    tmp = path + ".tmp"
    body = json.dumps({"format": META_FORMAT, "store_id": meta.store_id, "node": meta.node}).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)

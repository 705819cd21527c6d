"""Crash-safe file replacement: write a temporary file, fsync it, rename it, fsync the directory.

Checkpoints and snapshots use this so that a reader only ever sees the old file or the complete
new one, never a torn write, even after a power loss.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from kvctl.errors import StoreIOError, UsageError, filesystem


def writable_dir(directory: Path, what: str) -> None:
    """Create ``directory`` if needed and prove a file can be created in it, before a command
    changes anything it could not then record (a sync's cursors, a migrate's checkpoint): a
    read-only or full filesystem, or a denied permission, is one line naming ``what`` and the
    directory (exit 74, or 77 for a permission)."""
    with filesystem(f"cannot write {what} in {directory}"):
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: Path, mode: int = 0o644, *, make_directory: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` atomically when the block exits normally.

    On an exception the temporary file is removed and ``path`` is left untouched.  A symlink is
    followed (its target is replaced; the link stays).  A path that exists and is not a regular
    file (a FIFO, ``/dev/null``, a terminal) is written in place: replacing it would destroy it.

    The directory must exist (a usage error, exit 2, otherwise): a file named on the command
    line with a mistyped directory must not grow a tree.  ``make_directory``: kvctl's own files
    (checkpoints), whose directories it owns, create it.
    """
    path = Path(os.path.realpath(path))
    try:
        special = path.exists() and not path.is_file()
    except OSError:
        special = False
    if special:
        yield from _write_in_place(path)
        return
    directory = path.parent if str(path.parent) else Path(".")
    if not make_directory and not directory.is_dir():
        raise UsageError(f"cannot write {path}: no such directory {directory}")
    try:
        if make_directory:
            directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise StoreIOError(f"cannot create a file in {directory}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            try:
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                raise StoreIOError(f"cannot write {path}: {exc.strerror}") from None
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise StoreIOError(f"cannot rename into {path}: {exc.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(directory)


def _write_in_place(path: Path) -> Iterator[BinaryIO]:
    if path.is_dir():
        raise StoreIOError(f"cannot write {path}: it is a directory")
    try:
        fh = open(path, "wb")  # noqa: SIM115 - closed below, after the caller's block
    except OSError as exc:
        raise StoreIOError(f"cannot write {path}: {exc.strerror}") from None
    with fh:
        yield fh
        try:
            fh.flush()
        except OSError as exc:
            raise StoreIOError(f"cannot write {path}: {exc.strerror}") from None


def write_atomic(path: Path, data: bytes, mode: int = 0o644, *, make_directory: bool = False) -> None:
    try:
        with atomic_writer(path, mode, make_directory=make_directory) as fh:
            fh.write(data)
    except OSError as exc:
        raise StoreIOError(f"cannot write {path}: {exc.strerror}") from None

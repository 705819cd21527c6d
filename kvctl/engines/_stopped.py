"""What a write that stops part-way says: how much it wrote, and how to go on.

Migrate, import, snapshot restore and sync write in batches, so when one stops (Ctrl-C, SIGTERM,
which the cli turns into the same interruption, a malformed input line, a server gone) the
destination keeps what the earlier batches wrote.  Each engine wraps its writing in
:func:`saying` with its own account of that, and the user reads it in one line: on an error, in
the error's hint, which the cli prints on the error line; on an interruption, as a note before
the cli exits 130 (143 for SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

from kvctl.errors import KvctlError

Note = Callable[[str], None]


def resumable(read: int, *, whole: bool = True) -> str:
    """How far a checkpointed copy got and how to go on.  A whole run stopped before its first
    key saved nothing, so rerunning it is starting it; a slice of a parallel run cannot tell, as
    the other slices may have saved theirs (``whole`` False)."""
    if read == 0 and whole:
        return "before any key was copied; nothing to resume"
    return f"after {read:,} keys; progress saved: rerun with --resume to continue"


@contextlib.contextmanager
def saying(status: Callable[[], str], note: Note | None) -> Iterator[None]:
    """On a failure inside the block, add "stopped <status>" to the error's hint; on an
    interruption, tell ``note`` (None: tell no one).  ``status`` is called only then, so it
    reads the counts at the stop: e.g. ``after 5,000 records written; rerun ...``."""
    try:
        yield
    except KvctlError as exc:
        said = f"stopped {status()}"
        exc.hint = said if exc.hint is None else f"{exc.hint}; {said}"
        raise
    except (Exception, KeyboardInterrupt, asyncio.CancelledError):
        # an interruption, or an internal error the cli reports on its own line
        if note is not None:
            with contextlib.suppress(Exception):  # never hide the original
                note(f"stopped {status()}")
        raise

"""Terminal output.  rich is imported only when something is rendered.

The CLI entry point (:func:`kvctl.cli.app.main`) routes every write to standard output through
:func:`guard_stdout`, so a full disk or a reader that went away is one :class:`OutputError`
wherever the write happened, and every Python warning through :func:`show_warning`, so it
prints as one ``kvctl: warning: ...`` line.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import sys
from typing import Annotated, Any

import typer

from kvctl.errors import KvctlError

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away


def console(stderr: bool = False, width: int | None = None) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def table(title: str | None, columns: list[str], rows: list[list[Any]], *, wide: bool = False) -> None:
    """A rich table; ``wide`` tables get 120 columns when stdout is not a terminal."""
    from rich import box
    from rich.table import Table

    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for i, col in enumerate(columns):
        t.add_column(col, no_wrap=i == 0)
    for row in rows:
        t.add_row(*[_cell(v) for v in row])
    width = 120 if wide and not sys.stdout.isatty() else None
    console(width=width).print(t)


def _cell(value: Any) -> str:
    if value is True:
        return "✓"
    if value is False:
        return "·"
    if value is None:
        return "-"
    return str(value)


def json_line(obj: Any) -> None:
    """One JSON object on one line (a stream of them: scan, get of several keys)."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")


def json_doc(obj: Any) -> None:
    """A command's one JSON result.  An error after it adds no second document to stdout (see
    :func:`fail`): the result already says what happened, and stdout stays one JSON value."""
    from kvctl.cli.context import STATE

    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    STATE.json_result = True


# --json, one meaning for every command: the result as JSON on stdout, and a failure as one
# {"error": {...}} object there too (besides the stderr line).
JsonOpt = Annotated[bool, typer.Option(
    "--json", help='Print the result as JSON; a failure prints {"error": {"code", "kind", "message"}}.')]


def fail(code: int, kind: str, message: str, *, prefix: str = "kvctl: error: ") -> int:
    """Report a failure: one line on stderr and, under ``--json``, also one JSON object on stdout
    (``{"error": {"code", "kind", "message"}}``) so a script reading stdout can branch on it.
    Returns ``code``, the exit status."""
    from kvctl.cli.context import STATE

    sys.stderr.write(f"{prefix}{message}\n")
    if STATE.json and not STATE.json_result:
        with contextlib.suppress(OSError, ValueError, OutputError):  # stdout gone: stderr said it
            json_line({"error": {"code": code, "kind": kind, "message": message}})
    return code


def error_kind(exc: BaseException) -> str:
    """The ``kind`` of an error in JSON: its class in snake case (NotFoundError: not_found)."""
    name = type(exc).__name__.rstrip("_").removesuffix("Error") or "error"
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


def warn(message: str) -> None:
    sys.stderr.write(f"kvctl: warning: {message}\n")


def note(message: str) -> None:
    """A notice from an engine (e.g. what an interrupted command wrote): every notice that is not
    an error is one ``kvctl: warning: ...`` line, so a script greps one prefix."""
    warn(message)


def info(message: str) -> None:
    """A line about what a command did, on stderr; none under --quiet."""
    from kvctl.cli.context import STATE

    if not STATE.quiet:
        sys.stderr.write(f"{message}\n")


def _set_quiet(value: bool) -> bool:
    from kvctl.cli.context import STATE

    STATE.quiet = STATE.quiet or value
    return value


# -q/--quiet, one meaning for every command that has it: no progress and no informational lines
# on stderr; results on stdout, warnings and errors stay.
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", callback=_set_quiet, help="No progress and no informational lines (warnings and "
    "errors still print).")]


class OutputError(KvctlError):
    """Writing to standard output failed (exit 74; a reader that went away: 141, quietly).

    Not an ``OSError``, so click's own broken-pipe handling (which exits 1) never sees it."""

    exit_code = 74

    def __init__(self, exc: OSError) -> None:
        super().__init__(f"cannot write to standard output: {exc.strerror or exc}")
        self.broken_pipe = exc.errno == errno.EPIPE


class _WholeWriter(io.RawIOBase):
    """Standard output's file descriptor, written whole or not at all.

    Python's own stdout returns short counts silently (a large write cut by a full disk or a
    closing pipe is dropped without an error); this one writes every byte or raises."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError as exc:
            raise OutputError(exc) from exc
        return done


def guard_stdout() -> Any:
    """Make ``sys.stdout`` (text and ``.buffer``) write whole or raise :class:`OutputError`;
    returns the stream it replaced.  A stream without a descriptor (an in-process capture) is
    left as it is; a closed stdout (``None``) becomes one whose writes fail (exit 74)."""
    old: Any = sys.stdout
    if old is None:
        fd, encoding, errors, line_buffering, write_through = 1, "utf-8", "strict", False, False
    else:
        try:
            fd = old.fileno()
        except (AttributeError, OSError, ValueError):
            return old
        old.flush()
        encoding, errors = old.encoding, old.errors
        line_buffering, write_through = bool(old.line_buffering), bool(getattr(old, "write_through", False))
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(_WholeWriter(fd)), encoding=encoding, errors=errors,
                                  line_buffering=line_buffering, write_through=write_through)
    return old


def discard_stdout(stream: Any) -> None:
    """Point ``stream``'s file descriptor at /dev/null after a failed write, so what is still
    buffered is flushed harmlessly (also by the interpreter at exit: no "Exception ignored")."""
    try:
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):  # no descriptor (an in-process capture): nothing to point
        return
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the CLI: one ``kvctl: warning: <message>`` line, secrets scrubbed."""
    from kvctl.cli.context import scrub

    with contextlib.suppress(OSError, ValueError):  # stderr gone: a warning must never become the failure
        warn(scrub(" ".join(str(message).split())))

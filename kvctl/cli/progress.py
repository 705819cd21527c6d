"""What a long command shows while it runs: a rich progress bar on stderr, on a terminal only.

:class:`ProgressBar` is the engines' :class:`~kvctl.engines.reporting.Reporter` for the cli:
it draws their progress events and prints their notes (above the bar while it is drawn).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from kvctl.cli.context import STATE
from kvctl.cli.output import info, note
from kvctl.engines.reporting import Progress, Reporter


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def show_progress(no_progress: bool = False) -> bool:
    """Draw a bar: not asked not to, not --quiet, and stderr is a terminal."""
    return not no_progress and not STATE.quiet and sys.stderr.isatty()


class ProgressBar(Reporter):
    """Renders engine progress events as a rich progress bar on stderr (only when ``enabled``);
    notes are printed either way."""

    def __init__(self, enabled: bool, unit: str = "keys") -> None:
        self.enabled = enabled
        self.unit = unit  # what the counts count
        self._progress: Any = None
        self._task: Any = None
        self._phase = ""
        self._last = 0.0
        self._held: Progress | None = None  # the last event skipped between redraws

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

            from kvctl.cli.output import console

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[count]}"), TextColumn("{task.fields[size]}"),
                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                console=console(stderr=True), transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("copy", total=None, count="", size="", rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            if self._held is not None:  # the final frame shows the final counts, as the summary does
                self._draw(self._held)
                self._progress.refresh()
            self._progress.stop()

    @property
    def reporter(self) -> ProgressBar | None:
        """This bar when it is drawn, else None: engines then skip the work progress costs (a
        count of the source for the total)."""
        return self if self.enabled else None

    def progress(self, event: Progress) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if event.phase == self._phase and now - self._last < 0.1:
            self._held = event  # rich redraws at 10 Hz; skip work between redraws
            return
        self._phase, self._last = event.phase, now
        self._draw(event)

    def _draw(self, event: Progress) -> None:
        self._held = None
        done, total, elapsed = event.counts.read, event.total, event.elapsed
        unit = self.unit
        rate = f"{done / elapsed:,.{2 if unit == 'jobs' else 0}f} {unit}/s" if elapsed > 0 else ""
        total = max(total, done) if total is not None else None  # an estimate can fall short
        count = f"{done:,}/{total:,} {unit}" if total is not None else f"{done:,} {unit}"
        size = human_bytes(event.counts.bytes) if event.counts.bytes else ""
        self._progress.update(self._task, description=event.phase, completed=done, total=total, count=count,
                              size=size, rate=rate)

    def note(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(f"kvctl: warning: {message}", markup=False, highlight=False)
        else:
            note(message)

    def say(self, line: str) -> None:
        """An informational line (none under --quiet), above the bar while it is drawn."""
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
        else:
            info(line)

"""Terminal output.  rich is imported only when something is rendered."""

from __future__ import annotations

import json
import sys
from typing import Any


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
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")


def json_doc(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def warn(message: str) -> None:
    sys.stderr.write(f"kvctl: warning: {message}\n")


def info(message: str) -> None:
    sys.stderr.write(f"{message}\n")

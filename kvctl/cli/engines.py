"""Registration of the engine command groups (migrate, diff, export/import, snapshot, bench, sync).

Each group lives in its own module with a ``register(app)`` function; engine code is imported
inside the commands, so ``kvctl --help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

# Modules are added here as their engines land.
GROUPS: tuple[str, ...] = ("kvctl.cli.migrate", "kvctl.cli.snapshot", "kvctl.cli.bench", "kvctl.cli.sync")


def register(app: typer.Typer) -> None:
    for name in GROUPS:
        importlib.import_module(name).register(app)

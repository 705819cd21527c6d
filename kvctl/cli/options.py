"""Options that several commands share, and turning them into what the engines take."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import typer

from kvctl.cli.context import STATE
from kvctl.codec import decode_arg

if TYPE_CHECKING:
    from kvctl.engines.distributed.executor import Placement
    from kvctl.engines.keyfilter import KeyFilter

Conflict = Literal["overwrite", "skip", "newer", "fail"]

PrefixOpt = Annotated[str, typer.Option(
    "--prefix", "-p", help="Only keys starting with this prefix (in the --keys encoding).")]
GlobOpt = Annotated[str | None, typer.Option(
    "--glob", "-g", help="Only keys matching this shell pattern (* ? [...]), e.g. 'user:*:name'.")]
DRY_RUN_HELP = ("Count what would happen; write nothing (a missing destination is compared as empty, "
                "not created).")
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Records per batch (memory is a few batches).")]
FormatOpt = Annotated[str | None, typer.Option(
    "--format", "-f", help="jsonl or csv (default: csv for a .csv file name, else jsonl).")]
ToleranceOpt = Annotated[str, typer.Option(
    "--expiry-tolerance", help="Expiries this close count as equal (backends round TTLs).")]
ExecutorOpt = Annotated[str, typer.Option(
    "--executor", envvar="KVCTL_EXECUTOR", help=(
        "Where the slices run: local (this machine's --workers processes), dask://local (a Dask "
        "cluster of --workers processes here), dask://HOST:PORT or dask+tls://HOST:PORT (a Dask "
        "scheduler; needs kvctl[dask] on every worker)."))]
SlicesOpt = Annotated[int | None, typer.Option(
    "--slices", min=1, max=100_000, help="Slices of the keyspace on an executor (default: 8 per worker).")]
SharedFsOpt = Annotated[bool, typer.Option(
    "--shared-fs", help="A file store's path is the same shared filesystem on every executor worker.")]


def key_filter(prefix: str, glob: str | None) -> KeyFilter:
    from kvctl.engines.keyfilter import KeyFilter

    p = decode_arg(prefix, STATE.key_encoding, "prefix") if prefix else b""
    g = glob.encode("utf-8", "surrogateescape") if glob is not None else None
    return KeyFilter(p, g)


def duration_ms(text: str, option: str) -> int:
    from kvctl.errors import UsageError
    from kvctl.url import parse_duration_ms

    try:
        return parse_duration_ms(text)
    except Exception as exc:
        raise UsageError(f"{option}: {exc}") from None


def placement(executor: str, refs: tuple[str, str], *, slices: int | None, shared_fs: bool,
              workers: int = 1) -> Placement:
    """Where an engine's slices run (``--executor`` and its companions); ``refs``: the two stores
    as the user named them, which is what remote workers open."""
    from kvctl.engines.distributed.executor import Placement, parse_executor

    return Placement(parse_executor(executor), refs, slices=slices, shared_fs=shared_fs, workers=workers)


def quiet_setting_notices() -> None:
    """Under --quiet, no notice that a plugin changed a server setting (it is a warning otherwise:
    :class:`~kvctl.errors.SettingChangedWarning`)."""
    import warnings

    from kvctl.errors import SettingChangedWarning

    if STATE.quiet:
        warnings.simplefilter("ignore", SettingChangedWarning)

"""`kvctl diff`: compare two stores (the engine: kvctl.engines.diff)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from kvctl.cli.context import STATE, resolve_url
from kvctl.cli.options import (
    BatchOpt,
    ExecutorOpt,
    GlobOpt,
    PrefixOpt,
    SharedFsOpt,
    SlicesOpt,
    ToleranceOpt,
    duration_ms,
    key_filter,
    placement,
)
from kvctl.cli.output import JsonOpt, QuietOpt, json_doc
from kvctl.cli.progress import ProgressBar, show_progress
from kvctl.cli.usage import examples
from kvctl.codec import show_key
from kvctl.errors import DifferenceError

if TYPE_CHECKING:
    from kvctl.engines.diff import DiffResult


def diff(
    a: Annotated[str, typer.Argument(help="Store A: URL or profile name.")],
    b: Annotated[str, typer.Argument(help="Store B: URL or profile name.")],
    prefix: PrefixOpt = "",
    glob: GlobOpt = None,
    sample: Annotated[int, typer.Option("--sample", min=0, help="Keys to name per kind of difference.")] = 10,
    expiry_tolerance: ToleranceOpt = "2s",
    ignore_expiry: Annotated[bool, typer.Option("--ignore-expiry", help="Compare values only.")] = False,
    batch_size: BatchOpt = 5000,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    executor: ExecutorOpt = "local",
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, max=64,
                                         help="Worker processes of --executor dask://local.")] = 1,
    slices: SlicesOpt = None,
    shared_fs: SharedFsOpt = False,
) -> None:
    """Compare two stores: keys missing from B, extra in B, and differing values or expiries.

    Exit 0 when equal, 1 when they differ (the summary says how; no error line, as with cmp
    and diff).  Key-ordered backends are merge-joined in batches;
    others are looked up with batched reads.
    """
    from kvctl.engines import diff as engine

    a_url, b_url = resolve_url(a, access="read"), resolve_url(b, access="read")
    opts = engine.DiffOptions(filter=key_filter(prefix, glob), batch_size=batch_size, sample=sample,
                              expiry_tolerance_ms=duration_ms(expiry_tolerance, "--expiry-tolerance"),
                              ignore_expiry=ignore_expiry)
    where = placement(executor, (a, b), slices=slices, shared_fs=shared_fs, workers=workers)
    with ProgressBar(show_progress()) as bar:
        result = engine.run(a_url, b_url, opts, bar.reporter, where)
    render_diff(result, as_json)
    if not result.equal:
        # as cmp and diff do: the result (stdout) says how the stores differ, the exit status
        # that they do; a difference is the answer asked for, not an error
        raise typer.Exit(DifferenceError.exit_code)


def render_diff(result: DiffResult, as_json: bool) -> None:
    if as_json:
        json_doc(result.to_dict())
        return
    print(result.summary_line())
    labels = {"missing": "missing from B", "extra": "extra in B", "differing": "differing"}
    for kind, keys in result.samples.items():
        if keys:
            shown = ", ".join(show_key(k, STATE.key_encoding) for k in keys)
            print(f"  {labels[kind]}: {shown}")
    if result.differing:
        print("  differences: " + ", ".join(f"{n} {r}" for r, n in result.reasons.items() if n))


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("diff", epilog=examples(
        "kvctl diff sqlite:///data/app.db redis://localhost:6379/0",
        "kvctl diff old new --prefix user: --json",
    ))(diff)

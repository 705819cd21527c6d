"""`kvctl sync SRC DST`: incremental replication (see kvctl.engines.replicate)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from kvctl.cli.context import STATE, resolve_url
from kvctl.cli.options import quiet_setting_notices
from kvctl.cli.output import QuietOpt, info, json_doc, warn
from kvctl.cli.progress import ProgressBar, show_progress
from kvctl.cli.usage import examples
from kvctl.codec import show_key
from kvctl.engines.reporting import plural

if TYPE_CHECKING:
    from kvctl.engines.replicate import SyncResult, WatchResult


def sync(
    src: Annotated[str, typer.Argument(help="Source store URL or profile.")],
    dst: Annotated[str, typer.Argument(help="Destination store URL or profile.")],
    two_way: Annotated[bool, typer.Option("--two-way", help="Exchange changes both ways; conflicts: last writer wins.")]
    = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep following the source until Ctrl-C.")] = False,
    interval: Annotated[str, typer.Option("--interval", help="With --watch: time between runs.")] = "10ms",
    full: Annotated[bool, typer.Option("--full", help="Ignore the saved cursor: compare both stores.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help=(
        "Count what a run would apply each way and delete (--json: which keys, the first 1,000 of each); "
        "write to neither store, save no cursor, create no state directory."))] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Changes applied per batch.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Replicate changes from SRC to DST since the last sync of this pair.

    The first run copies everything; later runs move only what changed (from the source's change
    feed, or by comparing both stores when it has none — announced). Versions decide: a change is
    applied only when it is newer than what the other side holds. Exit status 0 only when the
    destination has converged to the reported cursor.
    """
    from kvctl.config import state_dir
    from kvctl.engines import replicate
    from kvctl.url import parse_duration_ms

    if dry_run and watch:
        from kvctl.errors import UsageError

        raise UsageError("--dry-run and --watch do not go together: a dry run reports one run")
    write = "read" if dry_run else "write"
    plan = replicate.SyncPlan(resolve_url(src, access=write if two_way else "read"), resolve_url(dst, access=write),
                              state_dir(), two_way=two_way, batch_size=batch_size, force_full=full,
                              dry_run=dry_run, estimate_total=show_progress())
    quiet_setting_notices()
    if watch:
        totals = replicate.watch(plan, parse_duration_ms(interval) / 1000, on_result=_watching)
        _report_watch(totals, as_json)
        totals.check(STATE.key_encoding)
        return
    with ProgressBar(show_progress()) as bar:
        result = replicate.run(plan, bar)
    _report(result, as_json)
    result.check(STATE.key_encoding)


def _watching(result: SyncResult, totals: WatchResult) -> None:
    """One run of a watch: its notice, the typed keys it could not copy, the status line."""
    if result.fallback:
        sys.stderr.write("\n")
        warn(result.fallback)
    for key in totals.new_uncopied:
        sys.stderr.write("\n" if sys.stderr.isatty() else "")
        warn(f"not copied: {show_key(key, STATE.key_encoding)} holds a value of a type the destination "
             "cannot hold")
    if sys.stderr.isatty() and not STATE.quiet:
        sys.stderr.write(f"\rwatching: {plural(totals.runs, 'run')}, {_counts(totals)}, "
                         f"max lag {_ms(totals.max_lag_ms)}   ")
        sys.stderr.flush()


def _report_watch(totals: WatchResult, as_json: bool) -> None:
    if as_json:
        json_doc(totals.to_dict())
    else:
        info(f"\nstopped after {plural(totals.runs, 'run')}: {_counts(totals)}, max lag {_ms(totals.max_lag_ms)}"
             + (f", {plural(len(totals.uncopied), 'typed key')} NOT copied" if totals.uncopied else ""))


def _counts(totals: WatchResult) -> str:
    return f"{totals.applied:,} applied, {totals.deleted:,} deleted"


def _ms(value: int | None) -> str:
    return "n/a (unversioned source)" if value is None else f"{value} ms"


def _report(result: SyncResult, as_json: bool) -> None:
    if result.fallback:
        warn(result.fallback)
    if as_json:
        json_doc(result.to_dict())
        return
    verb = "would apply" if result.dry_run else "applied"
    print(("dry run: " if result.dry_run else "")
          + f"{result.mode} sync: {result.applied_to_dst:,} {verb} to destination"
          + (f", {result.applied_to_src:,} to source" if result.applied_to_src else "")
          + f", {result.deleted:,} {'would be ' if result.dry_run else ''}deleted, "
          f"{result.stale_skipped:,} stale skipped"
          + (f", {result.kept_at_dst:,} kept as newer at the destination" if result.kept_at_dst else "")
          + f", {plural(len(result.conflicts), 'conflict')}, {result.seconds:.2f}s"
          + (f", {plural(len(result.skipped_typed), 'typed key')} NOT copied" if result.skipped_typed else "")
          + (f", {plural(len(result.failed), 'key')} NOT copied (refused by the store)" if result.failed else ""))
    for c in result.conflicts[:20]:
        print(f"  conflict {show_key(c.key, STATE.key_encoding)}: {c.winner} wins "
              f"(src v{c.src_version}, dst v{c.dst_version})")
    if len(result.conflicts) > 20:
        print(f"  ... {len(result.conflicts) - 20:,} more (see --json)")
    for key, why in result.failed[:100]:
        warn(f"not copied: {show_key(key, STATE.key_encoding)}: {why}")


def register(app: typer.Typer) -> None:
    app.command("sync", epilog=examples(
        "kvctl sync sqlite:///data/app.db redis://localhost:6379/0",
        "kvctl sync primary replica --watch --interval 1s",
        "kvctl sync laptop server --two-way --json",
        "kvctl sync primary replica --dry-run            # what a run would apply and delete",
    ))(sync)

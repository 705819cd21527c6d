"""`kvctl migrate`: copy every key from one store to another (the engine: kvctl.engines.migrate)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kvctl.cli.context import STATE, resolve_url
from kvctl.cli.options import (
    BatchOpt,
    Conflict,
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
from kvctl.cli.output import JsonOpt, QuietOpt, info, json_doc, warn
from kvctl.cli.progress import ProgressBar, human_bytes, show_progress
from kvctl.cli.typed import TypesOpt
from kvctl.cli.usage import examples
from kvctl.codec import show_key

if TYPE_CHECKING:
    from kvctl.engines.migrate import Plan, Summary


def migrate(
    src: Annotated[str, typer.Argument(help="Source store: URL or profile name.")],
    dst: Annotated[str, typer.Argument(help="Destination store: URL or profile name.")],
    prefix: PrefixOpt = "",
    glob: GlobOpt = None,
    on_conflict: Annotated[Conflict, typer.Option(
        "--on-conflict", help="For keys DST already holds: overwrite, skip, newer (version wins), fail.")
    ] = "overwrite",
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help=(
        "Count what would be created, overwritten and deleted (--json: which keys, the first 1,000 of "
        "each); write nothing: no record, no store, no checkpoint."))] = False,
    delete_extra: Annotated[bool, typer.Option(
        "--delete-extra", help="After a complete, error-free copy, delete DST keys SRC lacks.")] = False,
    max_delete: Annotated[int, typer.Option(
        "--max-delete", min=0, help="Never delete more than this many keys (else delete none).")] = 1000,
    resume: Annotated[bool, typer.Option("--resume", help=(
        "Continue an interrupted run from its checkpoint (keys it had already copied are not conflicts)."))
    ] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Diff both sides afterwards; exit 0 only if equal.")] = False,
    drop_ttl: Annotated[bool, typer.Option(
        "--drop-ttl", help="Copy keys with an expiry into a backend without TTLs, without the expiry.")] = False,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, max=64,
                                         help="Processes splitting the keyspace.")] = 1,
    batch_size: BatchOpt = 5000,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="Checkpoint file (default: one per plan in the state directory).")] = None,
    checkpoint_every: Annotated[int, typer.Option(
        "--checkpoint-every", min=1, help="Batches between checkpoints (at most one a second).")] = 10,
    expiry_tolerance: ToleranceOpt = "2s",
    types: TypesOpt = "dump",
    as_json: JsonOpt = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    quiet: QuietOpt = False,
    executor: ExecutorOpt = "local",
    slices: SlicesOpt = None,
    shared_fs: SharedFsOpt = False,
    plan_out: Annotated[Path | None, typer.Option(
        "--plan-out", help="Only split the source into --slices slices and write them to this plan file.")] = None,
    plan_file: Annotated[Path | None, typer.Option(
        "--plan", help="Copy one slice (--slice) of a plan file written by --plan-out.")] = None,
    one_slice: Annotated[str | None, typer.Option(
        "--slice", help="K/N: copy slice K (from 0) of the N in --plan, e.g. $JOB_COMPLETION_INDEX/16.")] = None,
) -> None:
    """Copy every key from SRC to DST: streaming, resumable, with expiries and versions.

    Keys already expired are skipped and counted.  Typed values (e.g. Redis hashes) are copied
    by DUMP/RESTORE when both sides support them, otherwise reported by name (exit 8); with
    --types json every one is copied as its JSON document, a plain value any store holds.  Exit codes: 0 done;
    1 --verify found differences; 4 unsupported (e.g. a TTL key into a backend without TTLs,
    use --drop-ttl); 6 --on-conflict fail met an existing key; 8 incomplete copy or
    --delete-extra refused; 130 interrupted, 143 by SIGTERM (progress saved: rerun with --resume).
    """
    from kvctl.engines import migrate as engine

    where = placement(executor, (src, dst), slices=slices, shared_fs=shared_fs)
    src_url, dst_url = resolve_url(src, access="read"), resolve_url(dst)
    kf = key_filter(prefix, glob)
    progress = show_progress(no_progress)
    plan = engine.Plan(
        prefix=kf.prefix, glob=kf.glob, on_conflict=on_conflict, dry_run=dry_run,
        delete_extra=delete_extra, max_delete=max_delete, resume=resume, verify=verify,
        drop_ttl=drop_ttl, batch_size=batch_size, checkpoint_path=checkpoint,
        checkpoint_every=checkpoint_every, expiry_tolerance_ms=duration_ms(expiry_tolerance, "--expiry-tolerance"),
        estimate_total=progress, workers=workers, types=types,
    )
    if plan_out is not None:
        count = engine.write_plan(src_url, dst_url, plan, slices or 8 * workers, plan_out)
        info(f"wrote a plan of {count} slices to {plan_out}: copy each with --plan {plan_out} --slice K/{count} "
             f"(K from 0 to {count - 1})")
        return
    if (plan_file is None) != (one_slice is None):
        from kvctl.errors import UsageError

        raise UsageError("--plan and --slice go together")
    with ProgressBar(progress) as bar:
        if plan_file is not None and one_slice is not None:
            summary = engine.run_slice(src_url, dst_url, plan, plan_file, one_slice, bar)
        else:
            summary = engine.run(src_url, dst_url, plan, bar, where)
    render_migrate(summary, plan, as_json)
    summary.check()


def render_migrate(summary: Summary, plan: Plan, as_json: bool) -> None:
    if as_json:
        json_doc(summary.to_dict())
        return
    c = summary.counts
    verb = "would copy" if summary.dry_run else "copied"
    split = "" if summary.preview is None else (
        f", {summary.preview.create.count:,} new, {summary.preview.overwrite.count:,} overwritten")
    this_run = summary.copied_this_run
    copied = (f"{c.copied:>12,}  ({human_bytes(c.bytes)}{split})" if not summary.resumed or this_run is None
              else f"{this_run:>12,}  this run ({c.copied:,} in total, {human_bytes(c.bytes)})")
    lines = [
        f"{summary.src} -> {summary.dst}{' (dry run)' if summary.dry_run else ''}"
        f"{' (resumed)' if summary.resumed else ''}",
        f"  {verb:<10}{copied}",
        f"  {'skipped':<10}{c.skipped:>12,}  (--on-conflict {plan.on_conflict})",
        f"  {'expired':<10}{c.expired:>12,}",
        f"  {'failed':<10}{c.failed:>12,}",
    ]
    if c.incomplete:
        lines.append(f"  {'incomplete':<10}{c.incomplete:>12,}  (typed values the destination cannot hold)")
    if c.ttl_dropped:
        lines.append(f"  {'ttl dropped':<10}{c.ttl_dropped:>11,}")
    if plan.delete_extra:
        found = "-" if summary.extra_found is None else f"{summary.extra_found:,}"
        if summary.delete_refused:
            done = "none deleted"
        elif summary.dry_run:
            done = f"would delete {summary.extra_found or 0:,}"
        else:
            done = f"deleted {summary.deleted:,}"
        lines.append(f"  {'extra':<10}{found:>12}  ({done})")
    lines.append(f"  {'seconds':<10}{summary.seconds:>12.2f}  ({summary.keys_per_s:,.0f} keys/s"
                 f"{f', {summary.workers} workers' if summary.workers > 1 else ''})")
    if summary.verify is not None:
        lines.append(f"  verify: {summary.verify.summary_line()}")
    print("\n".join(lines))
    for key, kind in summary.problems.incomplete[:100]:
        warn(f"not copied: {show_key(key, STATE.key_encoding)} is a {kind}")
    for key, why in summary.problems.failed[:100]:
        warn(f"not copied: {show_key(key, STATE.key_encoding)}: {why}")
    more = c.incomplete + c.failed - min(100, len(summary.problems.incomplete)) - min(100, len(summary.problems.failed))
    if more > 0:
        warn(f"... and {more:,} more (see --json)")


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("migrate", epilog=examples(
        "kvctl migrate sqlite:///data/app.db redis://localhost:6379/0",
        "kvctl migrate old new --prefix user: --dry-run     # count what would be copied",
        "kvctl migrate old new --resume --verify            # continue a stopped run, then compare",
        "kvctl migrate redis://r:6379/0 sqlite:///r.db --types json   # hashes, lists... as JSON values",
    ))(migrate)

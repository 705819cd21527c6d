"""`kvctl migrate`, `kvctl diff`, `kvctl export` and `kvctl import`.

The commands parse options, call an engine (imported inside the command so `kvctl --help` stays
fast) and render what it returns: a rich progress bar on a terminal, then a summary as text or
JSON.  They never touch a driver.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, Literal

import typer

from kvctl.cli.context import STATE, open_input_file, resolve_url
from kvctl.cli.output import JsonOpt, QuietOpt, info, json_doc, note, warn
from kvctl.cli.usage import examples
from kvctl.codec import decode_arg, show_key

if TYPE_CHECKING:
    from kvctl.engines.keyfilter import KeyFilter
    from kvctl.engines.migrate import Plan, Progress, Summary

Conflict = Literal["overwrite", "skip", "newer", "fail"]

PrefixOpt = Annotated[str, typer.Option(
    "--prefix", "-p", help="Only keys starting with this prefix (in the --keys encoding).")]
GlobOpt = Annotated[str | None, typer.Option(
    "--glob", "-g", help="Only keys matching this shell pattern (* ? [...]), e.g. 'user:*:name'.")]
DRY_RUN_HELP = ("Count what would happen; write no records (a missing embedded destination, such as a "
                "SQLite file, is still created empty).")
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


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# -- progress ----------------------------------------------------------------------------------
class ProgressBar:
    """Renders engine progress events as a rich progress bar on stderr (only on a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self._phase = ""
        self._last = 0.0

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
            self._progress.stop()

    def update(self, phase: str, done: int, total: int | None, size: int, elapsed: float) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if phase == self._phase and now - self._last < 0.1:
            return  # rich redraws at 10 Hz; skip work between redraws
        self._phase, self._last = phase, now
        rate = f"{done / elapsed:,.0f} keys/s" if elapsed > 0 else ""
        total = max(total, done) if total is not None else None  # an estimate can fall short
        count = f"{done:,}/{total:,} keys" if total is not None else f"{done:,} keys"
        self._progress.update(self._task, description=phase, completed=done, total=total, count=count,
                              size=human_bytes(size), rate=rate)

    def note(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(f"kvctl: {message}")
        else:
            note(message)


def _reporter(bar: ProgressBar) -> Any:
    from kvctl.engines.migrate import Reporter

    class BarReporter(Reporter):
        def progress(self, event: Progress) -> None:
            bar.update(event.phase, event.counts.read, event.total, event.counts.bytes, event.elapsed)

        def note(self, message: str) -> None:
            bar.note(message)

    return BarReporter()


def show_progress(no_progress: bool) -> bool:
    return not no_progress and not STATE.quiet and sys.stderr.isatty()


# -- migrate -----------------------------------------------------------------------------------
def migrate(
    src: Annotated[str, typer.Argument(help="Source store: URL or profile name.")],
    dst: Annotated[str, typer.Argument(help="Destination store: URL or profile name.")],
    prefix: PrefixOpt = "",
    glob: GlobOpt = None,
    on_conflict: Annotated[Conflict, typer.Option(
        "--on-conflict", help="For keys DST already holds: overwrite, skip, newer (version wins), fail.")
    ] = "overwrite",
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help=DRY_RUN_HELP)] = False,
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
    when both sides support them, otherwise reported by name (exit 8).  Exit codes: 0 done;
    1 --verify found differences; 4 unsupported (e.g. a TTL key into a backend without TTLs,
    use --drop-ttl); 6 --on-conflict fail met an existing key; 8 incomplete copy or
    --delete-extra refused; 130 interrupted, 143 by SIGTERM (progress saved: rerun with --resume).
    """
    from kvctl.engines import migrate as engine
    from kvctl.engines.distributed.executor import parse_executor

    spec = parse_executor(executor)
    src_url, dst_url = resolve_url(src, access="read"), resolve_url(dst)
    kf = key_filter(prefix, glob)
    progress = show_progress(no_progress)
    plan = engine.Plan(
        prefix=kf.prefix, glob=kf.glob, on_conflict=on_conflict, dry_run=dry_run,
        delete_extra=delete_extra, max_delete=max_delete, resume=resume, verify=verify,
        drop_ttl=drop_ttl, batch_size=batch_size, checkpoint_path=checkpoint,
        checkpoint_every=checkpoint_every, expiry_tolerance_ms=duration_ms(expiry_tolerance, "--expiry-tolerance"),
        estimate_total=progress, workers=workers,
    )
    if plan_out is not None:
        from kvctl.engines.migrate.planfile import write_plan

        count = write_plan(src_url, dst_url, plan, slices or 8 * workers, plan_out)
        info(f"wrote a plan of {count} slices to {plan_out}: copy each with --plan {plan_out} --slice K/{count} "
             f"(K from 0 to {count - 1})")
        return
    if (plan_file is None) != (one_slice is None):
        from kvctl.errors import UsageError

        raise UsageError("--plan and --slice go together")
    with ProgressBar(progress) as bar:
        if plan_file is not None and one_slice is not None:
            from kvctl.engines.migrate.planfile import run_slice

            summary = run_slice(src_url, dst_url, plan, plan_file, one_slice, _reporter(bar))
        elif spec.kind == "dask":
            from kvctl.engines.distributed import migrate as distributed

            summary = distributed.run(src, dst, src_url, dst_url, plan, spec, slices=slices, shared_fs=shared_fs,
                                      reporter=_reporter(bar))
        elif workers > 1:
            from kvctl.engines.migrate.parallel import run as run_parallel

            summary = run_parallel(src_url, dst_url, plan, _reporter(bar))
        else:
            summary = engine.run(src_url, dst_url, plan, _reporter(bar))
    render_migrate(summary, plan, as_json)
    summary.check()


def render_migrate(summary: Summary, plan: Plan, as_json: bool) -> None:
    if as_json:
        json_doc(summary.to_dict())
        return
    c = summary.counts
    verb = "would copy" if summary.dry_run else "copied"
    lines = [
        f"{summary.src} -> {summary.dst}{' (dry run)' if summary.dry_run else ''}"
        f"{' (resumed)' if summary.resumed else ''}",
        f"  {verb:<10}{c.copied:>12,}  ({human_bytes(c.bytes)})",
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
    if summary.delete_refused:
        warn(f"--delete-extra: {summary.delete_refused}")


# -- diff --------------------------------------------------------------------------------------
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

    Exit 0 when equal, 1 when they differ.  Key-ordered backends are merge-joined in batches;
    others are looked up with batched reads.
    """
    import asyncio

    from kvctl.engines._stores import open_async
    from kvctl.engines.diff import DiffOptions, compare
    from kvctl.engines.distributed.executor import parse_executor

    a_url, b_url = resolve_url(a, access="read"), resolve_url(b, access="read")
    opts = DiffOptions(filter=key_filter(prefix, glob), batch_size=batch_size, sample=sample,
                       expiry_tolerance_ms=duration_ms(expiry_tolerance, "--expiry-tolerance"),
                       ignore_expiry=ignore_expiry)

    async def work(bar: ProgressBar) -> Any:
        sa = open_async(a_url, access="read")
        try:
            sb = open_async(b_url, access="read")
            try:
                return await compare(sa, sb, opts, reporter=_reporter(bar) if bar.enabled else None)
            finally:
                await sb.close()
        finally:
            await sa.close()

    spec = parse_executor(executor)
    with ProgressBar(show_progress(False)) as bar:
        if spec.kind == "dask":
            from kvctl.engines.distributed import diff as distributed_diff

            result = distributed_diff.run(a, b, a_url, b_url, opts, spec, workers=workers, slices=slices,
                                          shared_fs=shared_fs, reporter=_reporter(bar) if bar.enabled else None)
        else:
            result = asyncio.run(work(bar))
    if as_json:
        json_doc(result.to_dict())
    else:
        print(result.summary_line())
        labels = {"missing": "missing from B", "extra": "extra in B", "differing": "differing"}
        for kind, keys in result.samples.items():
            if keys:
                shown = ", ".join(show_key(k, STATE.key_encoding) for k in keys)
                print(f"  {labels[kind]}: {shown}")
        if result.differing:
            print("  differences: " + ", ".join(f"{n} {r}" for r, n in result.reasons.items() if n))
    result.check()


# -- export / import ---------------------------------------------------------------------------
def export(
    url: Annotated[str | None, typer.Argument(help="Store (URL or profile); default: --url.")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="File to write, or - for stdout.")] = "-",
    fmt: FormatOpt = None,
    prefix: PrefixOpt = "",
    glob: GlobOpt = None,
    batch_size: BatchOpt = 5000,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the summary as JSON on stdout (with -o FILE: stdout carries the export "
        "otherwise).")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Write every key as JSON lines (or CSV): binary-safe, with absolute expiry and version."""
    import asyncio

    from kvctl.engines._stores import open_async
    from kvctl.engines.dump import export_to, guess_format

    if as_json and output == "-":
        from kvctl.errors import UsageError

        raise UsageError("--json needs -o FILE: without it, stdout carries the export")
    store_url = resolve_url(url, access="read")
    kind = guess_format(output, fmt)
    kf = key_filter(prefix, glob)

    async def work(out: BinaryIO, bar: ProgressBar) -> Any:
        store = open_async(store_url, access="read")
        try:
            return await export_to(store, out, kind, key_filter=kf, batch_size=batch_size,
                                   reporter=_reporter(bar) if bar.enabled else None)
        finally:
            await store.close()

    with ProgressBar(show_progress(False)) as bar:
        if output == "-":
            summary = asyncio.run(work(sys.stdout.buffer, bar))
        else:
            from kvctl.engines._files import atomic_writer

            with atomic_writer(Path(output)) as fh:  # the file appears only when the export is complete
                summary = asyncio.run(work(fh, bar))
        if as_json:
            json_doc(summary.to_dict())
        info(f"exported {summary.records:,} records from {summary.store} to {output} "
             f"({summary.expired} expired skipped)")
    summary.check()


def import_(
    input: Annotated[str, typer.Argument(help="File to read (JSON lines or CSV), or - for stdin.")],
    url: Annotated[str | None, typer.Argument(help="Store (URL or profile); default: --url.")] = None,
    fmt: FormatOpt = None,
    on_conflict: Annotated[Conflict, typer.Option("--on-conflict", help="overwrite, skip, newer or fail.")
                           ] = "overwrite",
    drop_ttl: Annotated[bool, typer.Option("--drop-ttl", help="Import expiring keys without expiry.")] = False,
    prefix: PrefixOpt = "",
    glob: GlobOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Parse and count. " + DRY_RUN_HELP)] = False,
    from_line: Annotated[int, typer.Option(
        "--from-line", min=1, help="Write only the records from this line on (an interrupted import says "
        "where to resume); earlier lines are still read and checked.")] = 1,
    batch_size: BatchOpt = 5000,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Read an export back into a store, in batches (records already expired are skipped).

    A malformed line stops the import (exit 65, naming the line).  A stopped import (an error,
    Ctrl-C, SIGTERM) says how many records it wrote and the --from-line to resume from.
    """
    import asyncio

    from kvctl.engines._stores import open_async
    from kvctl.engines.dump import guess_format, import_from

    store_url = resolve_url(url)
    kind = guess_format(input, fmt)
    kf = key_filter(prefix, glob)

    async def work(inp: BinaryIO, name: str, bar: ProgressBar) -> Any:
        store = open_async(store_url)
        try:
            return await import_from(store, inp, kind, name, policy=on_conflict, batch_size=batch_size,
                                     drop_ttl=drop_ttl, key_filter=kf, dry_run=dry_run, from_line=from_line,
                                     note=bar.note, reporter=_reporter(bar) if bar.enabled else None)
        finally:
            await store.close()

    with ProgressBar(show_progress(False)) as bar:
        if input == "-":
            summary = asyncio.run(work(sys.stdin.buffer, "stdin", bar))
        else:
            with open_input_file(Path(input)) as fh:
                summary = asyncio.run(work(fh, input, bar))
    if as_json:
        json_doc(summary.to_dict())
    else:
        c = summary.counts
        verb = "would import" if dry_run else "imported"
        print(f"{verb} {c.copied:,} records into {summary.store} ({c.skipped:,} skipped, "
              f"{c.expired:,} expired, {c.failed:,} failed) in {summary.seconds:.2f} s")
    summary.check()


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("migrate", epilog=examples(
        "kvctl migrate sqlite:///data/app.db redis://localhost:6379/0",
        "kvctl migrate old new --prefix user: --dry-run     # count what would be copied",
        "kvctl migrate old new --resume --verify            # continue a stopped run, then compare",
    ))(migrate)
    app.command("diff", epilog=examples(
        "kvctl diff sqlite:///data/app.db redis://localhost:6379/0",
        "kvctl diff old new --prefix user: --json",
    ))(diff)
    app.command("export", epilog=examples(
        "kvctl export -o backup.jsonl",
        "kvctl export redis://localhost:6379/0 --prefix user: -o users.csv",
        "kvctl export | gzip > backup.jsonl.gz",
    ))(export)
    app.command("import", epilog=examples(
        "kvctl import backup.jsonl",
        "kvctl import users.csv sqlite:///data/app.db --on-conflict skip",
        "gunzip -c backup.jsonl.gz | kvctl import - --dry-run",
    ))(import_)

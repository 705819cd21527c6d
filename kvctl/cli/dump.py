"""`kvctl export` and `kvctl import`: JSON lines or CSV dumps (the engine: kvctl.engines.dump)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kvctl.cli.context import open_input_file, resolve_url
from kvctl.cli.options import DRY_RUN_HELP, BatchOpt, Conflict, FormatOpt, GlobOpt, PrefixOpt, key_filter
from kvctl.cli.output import JsonOpt, QuietOpt, info, json_doc
from kvctl.cli.progress import ProgressBar, show_progress
from kvctl.cli.typed import TypesOpt
from kvctl.cli.usage import examples


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
    types: TypesOpt = "dump",
) -> None:
    """Write every key as JSON lines (or CSV): binary-safe, with absolute expiry and version.

    A Redis hash, list, set, sorted set or stream is written as its DUMP payload with its kind
    (--types dump: import restores it into Redis), or as a JSON document, a plain value that any
    store can import (--types json).
    """
    from kvctl.engines import dump

    if as_json and output == "-":
        from kvctl.errors import UsageError

        raise UsageError("--json needs -o FILE: without it, stdout carries the export")
    store_url = resolve_url(url, access="read")
    opts = dump.ExportOptions(dump.guess_format(output, fmt), key_filter(prefix, glob), batch_size, types)
    with ProgressBar(show_progress()) as bar:
        # to a file: it appears only when the export is complete
        summary = dump.export(store_url, sys.stdout.buffer if output == "-" else Path(output), opts, bar.reporter)
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
    from kvctl.engines import dump

    store_url = resolve_url(url, access="read" if dry_run else "write")
    opts = dump.ImportOptions(dump.guess_format(input, fmt), on_conflict, batch_size, drop_ttl,
                              key_filter(prefix, glob), dry_run, from_line)
    with ProgressBar(show_progress()) as bar:
        if input == "-":
            summary = dump.import_(store_url, sys.stdin.buffer, "stdin", opts, bar)
        else:
            with open_input_file(Path(input)) as fh:
                summary = dump.import_(store_url, fh, input, opts, bar)
    if as_json:
        json_doc(summary.to_dict())
    else:
        c = summary.counts
        assert c is not None  # an import's summary always has its counts
        verb = "would import" if dry_run else "imported"
        print(f"{verb} {c.copied:,} records into {summary.store} ({c.skipped:,} skipped, "
              f"{c.expired:,} expired, {c.failed:,} failed) in {summary.seconds:.2f} s")
    summary.check()


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("export", epilog=examples(
        "kvctl export -o backup.jsonl",
        "kvctl export redis://localhost:6379/0 --prefix user: -o users.csv",
        "kvctl export | gzip > backup.jsonl.gz",
        "kvctl export redis://localhost:6379/0 --types json -o readable.jsonl   # hashes etc. as JSON",
    ))(export)
    app.command("import", epilog=examples(
        "kvctl import backup.jsonl",
        "kvctl import users.csv sqlite:///data/app.db --on-conflict skip",
        "gunzip -c backup.jsonl.gz | kvctl import - --dry-run",
    ))(import_)

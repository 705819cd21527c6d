"""`kvctl snapshot create|verify|restore|inspect`: point-in-time files of a store.

Full snapshots hold every key; incremental ones (``create --since``) the changes after a
change-feed cursor; ``restore`` applies a chain of them.  The file format is specified in
kvctl/engines/snapshot/FORMAT.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from kvctl.cli.context import STATE, input_file, resolve_url
from kvctl.cli.options import BatchOpt, GlobOpt, PrefixOpt, key_filter, quiet_setting_notices
from kvctl.cli.output import JsonOpt, QuietOpt, info, json_doc, table, warn
from kvctl.cli.progress import ProgressBar, human_bytes, show_progress
from kvctl.cli.usage import examples
from kvctl.codec import show_key
from kvctl.errors import UsageError

snapshot_app = typer.Typer(
    help="Self-describing, checksummed snapshot files, full or incremental: create, verify, restore, "
         "inspect.",
    no_args_is_help=True,
    rich_markup_mode=None,
    epilog=examples("kvctl snapshot create -o full.kvs", "kvctl snapshot restore full.kvs sqlite:///data/copy.db"),
)

FileArg = Annotated[Path, typer.Argument(help="The snapshot file.")]
UrlArg = Annotated[str | None, typer.Argument(help="Store (URL or profile); default: --url.")]


@snapshot_app.command("create", epilog=examples(
    "kvctl snapshot create -o full.kvs",
    "kvctl snapshot create redis://localhost:6379/0 -o users.kvs --prefix user:",
    "kvctl snapshot create -o inc1.kvs --since full.kvs   # changes since full.kvs",
))
def create(
    output: Annotated[Path, typer.Option("--output", "-o", help="The snapshot file to write.")],
    url: UrlArg = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Write an incremental snapshot: the changes after this change-feed cursor, or "
                        "after the end of this snapshot file (FILE.kvs).", show_default=False)] = None,
    prefix: PrefixOpt = "",
    glob: GlobOpt = None,
    compression: Annotated[str | None, typer.Option(
        "--compression", help="zstd (default when installed), zlib or none.")] = None,
    batch_size: BatchOpt = 5000,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a snapshot file atomically: every key (under a prefix/glob), or with --since the changes.

    A full snapshot of a store with a change feed records the feed's position (its end cursor),
    so `create --since FULL.kvs` can continue from it, and `--since LAST.kvs` from each
    incremental in turn.  An incremental snapshot holds upserts and deletions (tombstones), each
    with its version; it covers the keys of the snapshot it continues.

    Exit 4 when the store has no change feed (--since); 9 when the feed no longer reaches the
    cursor (take a new full snapshot); 8 when typed values (e.g. Redis hashes) could not be
    dumped (the file is still written).
    """
    from kvctl.engines import snapshot

    if since is not None and Path(since).suffix == ".kvs":  # a snapshot file to continue, not a cursor
        input_file(Path(since))
    quiet_setting_notices()
    with ProgressBar(show_progress()) as bar:
        summary = snapshot.create(resolve_url(url, access="read"), output, key_filter=key_filter(prefix, glob),
                                  batch_size=batch_size, codec=compression, since=since, reporter=bar.reporter)
    if as_json:
        json_doc(summary.to_dict())
    else:
        size = f"{human_bytes(summary.size)} ({human_bytes(summary.raw_bytes)} uncompressed)"
        if summary.kind == "incremental":
            print(f"wrote {output}: incremental, {summary.upserts:,} upserts and {summary.tombstones:,} "
                  f"tombstones from {summary.store} (changes after {summary.base_cursor} up to "
                  f"{summary.end_cursor}), {size} in {summary.seconds:.2f} s")
        else:
            print(f"wrote {output}: {summary.records:,} records from {summary.store}, {size} "
                  f"in {summary.seconds:.2f} s" + (f", {summary.expired} expired skipped" if summary.expired else "")
                  + (f"; change-feed position {summary.end_cursor}" if summary.end_cursor else ""))
        for key, kind in summary.problems.incomplete[:100]:
            warn(f"not in the snapshot: {show_key(key, STATE.key_encoding)} is a {kind}")
    summary.check()


@snapshot_app.command("verify", epilog=examples(
    "kvctl snapshot verify full.kvs",
    "kvctl snapshot verify --quick full.kvs",
))
def verify(
    file: FileArg,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Check framing and the whole-file hash only (no decompression).")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check every record and the trailer; show kind, cursors, counts of upserts and tombstones.

    Exit 0 when sound, 65 naming the first bad offset."""
    from kvctl.engines import snapshot

    with ProgressBar(show_progress()) as bar:
        summary = snapshot.verify(input_file(file), records=not quick, reporter=bar.reporter)
    if as_json:
        json_doc({"ok": True, **summary.to_dict()})
    elif summary.kind == "incremental":
        counts = ("" if summary.upserts is None else
                  f"{summary.upserts:,} upserts and {summary.tombstones:,} tombstones, ")
        print(f"ok: {file}: incremental (changes after {summary.base_cursor} up to {summary.end_cursor}), "
              f"{counts}{summary.records:,} records in {summary.blocks:,} blocks, {human_bytes(summary.size)}, "
              "checksums and whole-file hash verified")
    else:
        print(f"ok: {file}: {summary.kind}, {summary.records:,} records in {summary.blocks:,} blocks, "
              f"{human_bytes(summary.size)}, checksums and whole-file hash verified"
              + (f"; change-feed position {summary.end_cursor}" if summary.end_cursor else ""))


def restore_target(targets: list[str]) -> str | None:
    """The store a restore writes to: the last of several arguments when it is a URL or a
    profile; else (None) the store chosen with --url, $KVCTL_URL or a default profile.  Without
    one, the last argument was meant as the store (or the store was forgotten): refused, never
    the embedded default store, and a mistyped name is "no such file or profile"."""
    from kvctl import config

    last = targets[-1]
    profiles = config.load(warn=False)
    if len(targets) > 1 and (config.is_url(last) or last in profiles.profiles):
        return last
    if STATE.url is not None or "KVCTL_URL" in os.environ or profiles.default is not None:
        return None
    if len(targets) > 1 and not Path(last).exists():
        raise UsageError(f"no such file or profile: {last}")
    raise UsageError("name the store to restore into: kvctl snapshot restore FILE... URL (or -u URL)")


@snapshot_app.command("restore", epilog=examples(
    "kvctl snapshot restore full.kvs sqlite:///data/restored.db",
    "kvctl snapshot restore full.kvs inc1.kvs inc2.kvs prod --replace",
    "kvctl snapshot restore full.kvs prod --replace --dry-run   # what it would delete",
))
def restore(
    targets: Annotated[list[str], typer.Argument(
        help="Snapshot files in chain order, then the store (URL or profile; default: --url).",
        metavar="FILE... [URL]", show_default=False)],
    replace: Annotated[bool, typer.Option(
        "--replace", help="Make the store exactly the full snapshot (deletes other keys under its filter) "
                          "before the incrementals are applied.")] = False,
    drop_ttl: Annotated[bool, typer.Option(
        "--drop-ttl", help="Restore expiring keys without expiry into a backend without TTLs.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help=(
        "Count the keys the restore would create, overwrite and (--replace) delete (--json: which keys, the "
        "first 1,000 of each); write nothing, create no store."))] = False,
    batch_size: BatchOpt = 5000,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Restore a snapshot or a chain: a full snapshot then incrementals, in order.

    Incrementals alone are applied onto a store that already holds the state they continue from.

    The last argument is the store (a URL or a profile), else the store is the one of --url,
    $KVCTL_URL or the default profile (never the embedded default).  Every file is verified and
    the chain checked before anything is written: each incremental must start at the cursor the
    previous file ends at (a hole or a wrong order is refused, exit 2; a damaged file, exit 65).
    The full snapshot is merged by version (newer wins; a record without a version on either
    side is taken from the snapshot), or with --replace becomes the store's content under its
    filter.  Incrementals apply last-writer-wins: upserts and deletions take effect only when
    newer than what the store holds.  --replace needs a full snapshot first.  Records the store
    cannot hold (over a size limit, an empty key in LMDB) are listed and skipped: exit 8.
    """
    from kvctl.engines import snapshot

    url = restore_target(targets)
    files = [Path(t) for t in (targets if url is None else targets[:-1])]
    for f in files:
        input_file(f)
    with ProgressBar(show_progress()) as bar:
        summary = snapshot.restore(files, resolve_url(url, access="read" if dry_run else "write"), replace=replace,
                                   batch_size=batch_size, drop_ttl=drop_ttl, reporter=bar, dry_run=dry_run)
    if as_json:
        json_doc(summary.to_dict())
    elif summary.preview is not None:
        p = summary.preview
        print(f"dry run: restoring {summary.path} into {summary.store} would create {p.create.count:,} keys, "
              f"overwrite {p.overwrite.count:,}" + (f" and delete {p.delete.count:,}" if replace else "")
              + f" ({summary.counts.skipped if summary.counts else 0:,} kept as newer); nothing was written")
        for text in summary.notes:
            info(text)
    else:
        for step in summary.steps:
            if step.kind == "full":
                print(f"restored {step.applied:,} records into {summary.store} from {step.path} ({step.stale:,} "
                      f"kept as newer, {step.expired:,} expired, {step.incomplete:,} incomplete)")
            else:
                print(f"applied {step.path} to {summary.store}: {step.records - step.tombstones:,} upserts and "
                      f"{step.tombstones:,} tombstones read, {step.applied:,} took effect, {step.stale:,} older "
                      f"than the store's, {step.expired:,} expired" + (
                          f", {step.incomplete:,} incomplete" if step.incomplete else ""))
        print(f"done in {summary.seconds:.2f} s" + (
            f"; the store is at change-feed position {summary.end_cursor} of the source"
            if summary.end_cursor else ""))
        for text in summary.notes:
            info(text)
        for key, kind in summary.problems.incomplete[:100]:
            warn(f"not restored: {show_key(key, STATE.key_encoding)} is a {kind}")
        for key, why in summary.problems.failed[:100]:
            warn(f"not restored: {show_key(key, STATE.key_encoding)}: {why}")
    summary.check()


@snapshot_app.command("inspect", epilog=examples(
    "kvctl snapshot inspect full.kvs",
    "kvctl snapshot inspect full.kvs --top 50 --json",
))
def inspect(
    file: FileArg,
    top: Annotated[int, typer.Option("--top", min=1, help="Prefixes in the histogram.")] = 20,
    prefix_len: Annotated[int | None, typer.Option(
        "--prefix-len", min=1, help="Group keys by their first N bytes (default: up to ':' or '/'; "
                                    "keys without one count as (no separator)).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a snapshot's header, kind, cursors, counts, sizes and key prefix histogram.

    Reads the whole file; upserts and tombstones (deletions, in incrementals) are counted apart."""
    from kvctl.engines import snapshot

    result = snapshot.inspect(input_file(file), top=top, prefix_len=prefix_len)
    if as_json:
        json_doc(result.to_dict())
        return
    h = result.header
    rows: list[list[Any]] = [
        ["source", h.get("source")], ["backend", h.get("backend")], ["kind", h.get("kind")],
        ["base cursor", h.get("base_cursor")], ["end cursor", h.get("end_cursor")],
        ["created", _when(h.get("created_at_ms"))], ["writer", h.get("writer")],
        ["codec", ", ".join(f"{k} x{v}" for k, v in result.codecs.items()) or h.get("codec")],
        ["size", f"{human_bytes(result.size)} ({human_bytes(result.raw_bytes)} uncompressed)"],
        ["blocks", result.blocks], ["upserts", result.records], ["tombstones", result.tombstones],
        ["typed", result.typed],
        ["with expiry", f"{result.with_expiry} ({result.expired_now} expired now)"],
        ["with version", result.with_version],
        ["key bytes", human_bytes(result.key_bytes)], ["value bytes", human_bytes(result.value_bytes)],
    ]
    table(str(file), ["field", "value"], rows, wide=True)  # long URLs and cursors: 120 columns in a pipe
    hist: list[list[Any]] = [[p, n] for p, n in result.histogram]
    if result.other_prefixes:
        hist.append(["(other)", result.other_prefixes])
    table("key prefixes", ["prefix", "keys"], hist)


def _when(ms: object) -> str:
    import datetime as dt

    if not isinstance(ms, int):
        return "?"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.add_typer(snapshot_app, name="snapshot")

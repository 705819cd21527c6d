"""`kvctl snapshot create|verify|restore|inspect`: point-in-time files of a store.

The file format is specified in kvctl/engines/SNAPSHOT_FORMAT.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kvctl.cli.context import STATE, resolve_url
from kvctl.cli.migrate import BatchOpt, GlobOpt, JsonOpt, PrefixOpt, human_bytes, key_filter
from kvctl.cli.output import json_doc, table, warn
from kvctl.codec import show

snapshot_app = typer.Typer(
    help="Self-describing, checksummed snapshot files: create, verify, restore, inspect.",
    no_args_is_help=True,
)

FileArg = Annotated[Path, typer.Argument(help="The snapshot file.")]
UrlArg = Annotated[str | None, typer.Argument(help="Store (URL or profile); default: --url.")]


@snapshot_app.command("create")
def create(
    output: Annotated[Path, typer.Option("--output", "-o", help="The snapshot file to write.")],
    url: UrlArg = None,
    prefix: PrefixOpt = "",
    glob: GlobOpt = None,
    compression: Annotated[str | None, typer.Option(
        "--compression", help="zstd (default when installed), zlib or none.")] = None,
    batch_size: BatchOpt = 5000,
    as_json: JsonOpt = False,
) -> None:
    """Write every key (under a prefix/glob) to a snapshot file, atomically.

    Exit 8 when typed values (e.g. Redis hashes) could not be dumped; the file is still written.
    """
    from kvctl.engines import snapshot

    summary = snapshot.create(resolve_url(url or STATE.url), output, key_filter=key_filter(prefix, glob),
                              batch_size=batch_size, codec=compression)
    if as_json:
        json_doc(summary.to_dict())
    else:
        print(f"wrote {output}: {summary.records:,} records from {summary.store}, "
              f"{human_bytes(summary.size)} ({human_bytes(summary.raw_bytes)} uncompressed) "
              f"in {summary.seconds:.2f} s" + (f", {summary.expired} expired skipped" if summary.expired else ""))
        for key, kind in summary.problems.incomplete[:100]:
            warn(f"not in the snapshot: {show(key, STATE.key_encoding)!r} is a {kind}")
    summary.check()


@snapshot_app.command("verify")
def verify(
    file: FileArg,
    quick: Annotated[bool, typer.Option(
        "--quick", help="Check framing and the whole-file hash only (no decompression).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check every record and the trailer.  Exit 0 when sound, 65 naming the first bad offset."""
    from kvctl.engines import snapshot

    summary = snapshot.verify(file, records=not quick)
    if as_json:
        json_doc({"ok": True, **summary.to_dict()})
    else:
        print(f"ok: {file}: {summary.records:,} records in {summary.blocks:,} blocks, "
              f"{human_bytes(summary.size)}, checksums and whole-file hash verified")


@snapshot_app.command("restore")
def restore(
    file: FileArg,
    url: UrlArg = None,
    replace: Annotated[bool, typer.Option(
        "--replace", help="Make the store exactly the snapshot (deletes other keys under its filter).")] = False,
    drop_ttl: Annotated[bool, typer.Option(
        "--drop-ttl", help="Restore expiring keys without expiry into a backend without TTLs.")] = False,
    batch_size: BatchOpt = 5000,
    as_json: JsonOpt = False,
) -> None:
    """Restore a verified snapshot: merge by version (newer wins), or --replace.

    A record without a version on either side is taken from the snapshot.  A file that fails
    verification is refused before anything is written (exit 65).
    """
    from kvctl.engines import snapshot

    summary = snapshot.restore(file, resolve_url(url or STATE.url), replace=replace, batch_size=batch_size,
                               drop_ttl=drop_ttl)
    if as_json:
        json_doc(summary.to_dict())
    else:
        c = summary.counts
        assert c is not None
        print(f"restored {c.copied:,} records into {summary.store} from {file} ({c.skipped:,} kept as newer, "
              f"{c.expired:,} expired, {c.incomplete:,} incomplete) in {summary.seconds:.2f} s")
        for key, kind in summary.problems.incomplete[:100]:
            warn(f"not restored: {show(key, STATE.key_encoding)!r} is a {kind}")
    summary.check()


@snapshot_app.command("inspect")
def inspect(
    file: FileArg,
    top: Annotated[int, typer.Option("--top", min=1, help="Prefixes in the histogram.")] = 20,
    prefix_len: Annotated[int | None, typer.Option(
        "--prefix-len", min=1, help="Group keys by their first N bytes (default: up to ':' or '/').")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a snapshot's header, counts, sizes and key prefix histogram (reads the whole file)."""
    from kvctl.engines import snapshot

    result = snapshot.inspect(file, top=top, prefix_len=prefix_len)
    if as_json:
        json_doc(result.to_dict())
        return
    h = result.header
    rows: list[list[Any]] = [
        ["source", h.get("source")], ["backend", h.get("backend")], ["kind", h.get("kind")],
        ["created", _when(h.get("created_at_ms"))], ["writer", h.get("writer")],
        ["codec", ", ".join(f"{k} x{v}" for k, v in result.codecs.items()) or h.get("codec")],
        ["size", f"{human_bytes(result.size)} ({human_bytes(result.raw_bytes)} uncompressed)"],
        ["blocks", result.blocks], ["records", result.records], ["typed", result.typed],
        ["with expiry", f"{result.with_expiry} ({result.expired_now} expired now)"],
        ["with version", result.with_version],
        ["key bytes", human_bytes(result.key_bytes)], ["value bytes", human_bytes(result.value_bytes)],
    ]
    table(str(file), ["field", "value"], rows)
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

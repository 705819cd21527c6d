"""Commands over a set of keys: scan, count, del (single keys: :mod:`kvctl.cli.data`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from kvctl.cli.context import STATE, open_store, store_name
from kvctl.cli.data import _key, _shown_value, record_json
from kvctl.cli.migrate import GlobOpt, PrefixOpt, key_filter
from kvctl.cli.output import JsonOpt, QuietOpt, info, json_doc, json_line
from kvctl.cli.usage import examples
from kvctl.codec import json_key, show
from kvctl.errors import UsageError

# `del --prefix/--glob` asks before deleting more keys than this (refuses without a terminal).
CONFIRM_ABOVE = 100

BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Keys fetched per round trip.")]


def matching(store: Any, prefix: str, glob: str | None, *, batch_size: int = 1000) -> Iterator[Any]:
    """The records (keys only) under ``--prefix``/``--glob``."""
    kf = key_filter(prefix, glob)
    if kf.scan_prefix is None:  # the prefix and the glob exclude each other
        return
    for page in store.scan(kf.scan_prefix, batch_size=batch_size, keys_only=True):
        yield from kf.keep(page.records)


def scan(
    prefix: PrefixOpt = "",
    glob: GlobOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="Stop after N keys.")] = None,
    cursor: Annotated[str | None, typer.Option(
        "--cursor", help="Continue a scan where it stopped (the cursor --limit printed).")] = None,
    start: Annotated[str | None, typer.Option(
        "--start", help="Only keys after this one (ordered backends).", show_default=False)] = None,
    keys_only: Annotated[bool, typer.Option("--keys-only", "-k", help="Print keys only.")] = False,
    as_json: JsonOpt = False,
    batch_size: BatchOpt = 1000,
    quiet: QuietOpt = False,
) -> None:
    """List keys (and values) under a prefix or glob, in key order where the backend keeps one.

    Text output shows a key as it is when that is safe, else in double quotes with escapes
    ("b:\\n", "a\\x80"), one line per key; --keys hex and --json are exact.  When --limit stops
    the scan, the cursor to continue from is printed on stderr.
    """
    if cursor is not None and start is not None:
        raise UsageError("give --cursor or --start, not both")
    from kvctl.plugin_kit import key_cursor

    kf = key_filter(prefix, glob)
    begin, after = _parse_cursor(cursor)
    shown, last = 0, None
    with open_store(access="read") as store:
        if kf.scan_prefix is None:  # the prefix and the glob exclude each other
            return
        ordered = store.capabilities.ordered_scan
        pages = store.scan(kf.scan_prefix, start_after=_key(start) if start is not None else None,
                           cursor=begin, batch_size=batch_size, keys_only=keys_only)
        for page in pages:
            records = kf.keep(page.records)
            if after is not None:  # continue after the last key shown, if it is still there
                keys = [r.key for r in records]
                records = records[keys.index(after) + 1:] if after in keys else records
                after = None
            for rec in records:
                if limit is not None and shown >= limit:
                    resume = key_cursor(last) if ordered and last is not None else _page_cursor(begin, last)
                    info(f"kvctl: more keys: continue with --cursor {resume}")
                    return
                shown += 1
                last = rec.key
                if as_json:
                    json_line(record_json(rec, keys_only))
                elif keys_only:
                    print(show(rec.key, STATE.key_encoding))
                else:
                    print(f"{show(rec.key, STATE.key_encoding)}\t{_shown_value(rec)}")
            begin = page.cursor


# A backend without key order continues a scan only at a page boundary: the cursor --limit
# prints is then the page's cursor and the last key shown in it, PAGE#HEXKEY.  Continuing skips
# the page's keys up to that one, or shows the whole page again if it is gone: a key may show
# twice, none is skipped.
def _page_cursor(begin: str | None, last: bytes | None) -> str:
    return f"{begin or ''}#{(last or b'').hex()}"


def _parse_cursor(cursor: str | None) -> tuple[str | None, bytes | None]:
    if cursor is None or "#" not in cursor:
        return cursor, None
    page, _, after = cursor.rpartition("#")
    try:
        return page or None, bytes.fromhex(after)
    except ValueError:
        raise UsageError(f"malformed scan cursor: {cursor!r}") from None


def count(
    prefix: PrefixOpt = "",
    glob: GlobOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the number of live keys (under a prefix or a glob; a glob reads the keys)."""
    with open_store(access="read") as store:
        if glob is None:
            n = store.count(_key(prefix) if prefix else b"")
        else:
            n = sum(1 for _ in matching(store, prefix, glob))
        name = store_name(store)
    if as_json:
        json_doc({"store": name, **key_filter(prefix, glob).describe(), "count": n})
    else:
        print(n)


def delete(
    keys: Annotated[list[str] | None, typer.Argument(help="Keys to delete.", metavar="[KEY]...",
                                                     show_default=False)] = None,
    prefix: PrefixOpt = "",
    glob: GlobOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="List what would be deleted; delete nothing.")
                       ] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help=f"Delete more than {CONFIRM_ABOVE} keys by --prefix/--glob without asking.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Delete keys, or every key under --prefix/--glob; prints how many were deleted.

    Deleting more than a hundred keys by --prefix/--glob asks first on a terminal, and is refused
    without one unless --yes is given (exit 2).  --dry-run lists the keys it would delete.
    """
    by_filter = bool(prefix) or glob is not None
    if keys and by_filter:
        raise UsageError("give KEYs or --prefix/--glob, not both")
    if not keys and not by_filter:
        raise UsageError("nothing to delete: give KEYs, --prefix or --glob (--glob '*' for every key)")
    with open_store(access="read" if dry_run else "write") as store:
        name = store_name(store)
        if by_filter:
            targets = [rec.key for rec in matching(store, prefix, glob)]
        else:
            wanted = [_key(k) for k in keys or []]
            targets = [k for k, rec in zip(wanted, store.get_many(wanted), strict=True) if rec is not None]
        if dry_run:
            _report_dry_run(name, targets, as_json)
            return
        if by_filter and len(targets) > CONFIRM_ABOVE and not yes:
            _confirm(len(targets), name)
        deleted = sum(store.delete_many(targets[i:i + 1000]) for i in range(0, len(targets), 1000))
    if as_json:
        json_doc({"store": name, "deleted": deleted})
    else:
        print(deleted)


def _report_dry_run(name: str, targets: list[bytes], as_json: bool) -> None:
    if as_json:
        json_doc({"store": name, "dry_run": True, "would_delete": len(targets),
                  "keys": [json_key(k) for k in targets]})
        return
    for k in targets:
        print(show(k, STATE.key_encoding))
    info(f"would delete {len(targets):,} key{'s' if len(targets) != 1 else ''} from {name} (dry run)")


def _confirm(n: int, name: str) -> None:
    """Ask before a large delete; without a terminal to ask on, refuse (a script says --yes)."""
    if sys.stdin is None or not sys.stdin.isatty():
        raise UsageError(f"refusing to delete {n:,} keys from {name} without confirmation "
                         f"(more than {CONFIRM_ABOVE}): add --yes, or see them with --dry-run")
    if not typer.confirm(f"delete {n:,} keys from {name}?", default=False, err=True):
        raise UsageError("nothing deleted")


def register(app: typer.Typer) -> None:
    app.command("del", epilog=examples(
        "kvctl del greeting session:1             # prints how many existed",
        "kvctl del --prefix tmp: --dry-run        # list what would go",
        "kvctl del --glob 'cache:*:v1' --yes      # no question, for scripts",
    ))(delete)
    app.command("scan", epilog=examples(
        "kvctl scan --prefix user: --limit 20     # then --cursor C to continue",
        "kvctl scan --glob 'user:*:email' --keys-only | wc -l",
        "kvctl --keys hex scan --json | jq .      # exact bytes, one JSON object a line",
    ))(scan)
    app.command("count", epilog=examples(
        "kvctl count",
        "kvctl -u sqlite:///var/lib/app.db count --prefix user: --json",
    ))(count)

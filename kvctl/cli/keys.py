"""The key commands: get, set (one key) and scan, count, del (a set of keys); expiries are in :mod:`.expiry`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kvctl.cli.context import STATE, open_store, read_input_file, store_name
from kvctl.cli.options import GlobOpt, PrefixOpt, key_filter
from kvctl.cli.output import JsonOpt, QuietOpt, info, json_doc, json_line, warn
from kvctl.cli.typed import TypesOpt, typed_shown
from kvctl.cli.usage import examples
from kvctl.codec import decode_arg, decode_input, json_bytes, json_key, show, show_key
from kvctl.engines.reporting import plural
from kvctl.errors import NotFoundError, UnsupportedError, UsageError

if TYPE_CHECKING:
    from kvctl.store import Record

KeyArg = Annotated[str, typer.Argument(help="The key (in the --keys encoding; text by default).")]


def parse_key(text: str) -> bytes:
    """A KEY argument as bytes, in the --keys encoding (text by default)."""
    return decode_arg(text, STATE.key_encoding, "key")


def record_json(rec: Record, keys_only: bool = False) -> dict[str, Any]:
    """A record as kvctl's JSON shows it, the same for get, scan and every key list."""
    obj: dict[str, Any] = json_key(rec.key)
    if not keys_only and (rec.kind is None or rec.value):  # a typed value's dump has bytes
        json_bytes(obj, "value", rec.value)
    if rec.kind is not None:
        obj["kind"] = rec.kind
    obj["expires_at_ms"] = rec.expires_at_ms
    if rec.version is not None:
        obj["version"] = rec.version
    return obj


def get(
    keys: Annotated[list[str], typer.Argument(help="The keys (in the --keys encoding; text by default).",
                                              metavar="KEY...")],
    as_json: JsonOpt = False,
    types: TypesOpt = "json",
) -> None:
    """Print KEY's value: the exact bytes (pipe-safe), or hex/base64 with --values.

    With several keys, one line each: KEY, a tab, the value (shown as scan shows it); a key that
    is missing is named on stderr.  Exit 1 when a key is missing.  A Redis hash, list, set,
    sorted set or stream prints as a JSON document (--types json), or as its DUMP payload
    (--types dump).
    """
    ks = [parse_key(k) for k in keys]
    with open_store(access="read") as store:
        recs = store.get_many(ks) if len(ks) > 1 else [store.get(ks[0])]
        recs = typed_shown(store, recs, types)
        name = store_name(store)
    if len(ks) == 1:
        _print_one(ks[0], recs[0], name, as_json)
        return
    missing = 0
    for k, rec in zip(ks, recs, strict=True):
        if rec is None:
            missing += 1
            if as_json:
                json_line({**json_key(k), "found": False})
            else:
                warn(f"key {show_key(k, STATE.key_encoding)} not found")
        elif as_json:
            json_line(record_json(rec))
        else:
            print(f"{show(k, STATE.key_encoding)}\t{_shown_value(rec)}")
    if missing:
        raise NotFoundError(f"{missing:,} of {plural(len(ks), 'key')} not found in {name}")


def _print_one(k: bytes, rec: Record | None, name: str, as_json: bool) -> None:
    if rec is None:
        raise NotFoundError(f"key {show_key(k, STATE.key_encoding)} not found in {name}")
    if as_json:
        json_doc(record_json(rec))
        return
    if rec.kind is not None and not rec.value:  # a type without a JSON shape
        raise UnsupportedError(f"key {show_key(k, STATE.key_encoding)} holds a {rec.kind}, which kvctl cannot "
                               "show as JSON", hint="--types dump prints the store's dump payload")
    out = sys.stdout.buffer
    if STATE.value_encoding == "raw":
        out.write(rec.value)
        if sys.stdout.isatty() and not rec.value.endswith(b"\n"):
            out.write(b"\n")  # only for a person at a terminal; pipes get the exact bytes
    else:
        out.write(show(rec.value, STATE.value_encoding).encode() + b"\n")
    out.flush()


def _shown_value(rec: Record) -> str:
    """A value on one line of a listing (get of several keys, scan): never raw bytes."""
    if rec.kind is not None and not rec.value:
        return f"({rec.kind})"
    return show(rec.value, "text" if STATE.value_encoding == "raw" else STATE.value_encoding)


def set_(
    key: KeyArg,
    value: Annotated[
        str | None, typer.Argument(help="The value; omitted or '-' reads stdin (binary-safe).")
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Read the value from this file.")] = None,
    ttl: Annotated[
        str | None, typer.Option("--ttl", "-t", help="Expire after this long: 500ms, 30s, 5m, 1h30m, 7d.")
    ] = None,
    nx: Annotated[bool, typer.Option("--nx", help="Only if KEY does not exist (exit 1 if it does).")] = False,
    xx: Annotated[bool, typer.Option("--xx", help="Only if KEY exists (exit 1 if it does not).")] = False,
    keep_ttl: Annotated[bool, typer.Option("--keep-ttl", help="Keep KEY's current expiry.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Set KEY to VALUE, to a file's contents (--file) or to stdin.

    --nx and --xx write only when KEY is missing or present, checked and written in one atomic
    step of the backend; a value not written is exit 1, with the reason on stderr (none with -q).
    --keep-ttl keeps the key's expiry as Redis's SET KEEPTTL does.
    """
    k = parse_key(key)
    ttl_ms = _ttl(ttl) if ttl is not None else None
    if nx and xx:
        raise UsageError("give --nx or --xx, not both")
    if keep_ttl and ttl is not None:
        raise UsageError("give --ttl or --keep-ttl, not both")
    if file is not None and value not in (None, "-"):
        raise UsageError("give either VALUE or --file, not both")
    if file is not None:
        v = decode_input(read_input_file(file), STATE.value_encoding)
    elif value is None or value == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("no value: give VALUE, --file FILE, or pipe the value on stdin")
        v = decode_input(sys.stdin.buffer.read(), STATE.value_encoding)
    else:
        v = decode_arg(value, "text" if STATE.value_encoding == "raw" else STATE.value_encoding, "value")
    exists = True if xx else False if nx else None
    with open_store() as store:
        name = store_name(store)
        if exists is None and not keep_ttl:
            store.set(k, v, ttl_ms=ttl_ms)
            written = True
        else:
            from kvctl.abilities import ConditionalWrites
            from kvctl.plugin_kit import deadline_ms
            from kvctl.store import Record

            if not (store.capabilities.conditional_writes and isinstance(store, ConditionalWrites)):
                flag = "--nx" if nx else "--xx" if xx else "--keep-ttl"
                raise UnsupportedError(f"the {store.name} backend cannot do set {flag} atomically")
            written = store.set_if(Record(k, v, deadline_ms(ttl_ms)), exists=exists, keep_ttl=keep_ttl)
    if as_json:
        json_doc({"store": name, **json_key(k), "written": written, "bytes": len(v), "ttl_ms": ttl_ms})
    if not written:
        info(f"not written: key {show_key(k, STATE.key_encoding)} "
             f"{'already exists' if nx else 'does not exist'} in {name}")
        raise typer.Exit(1)


def _ttl(text: str) -> int:
    """--ttl as milliseconds, checked here the same for every backend: positive, and an expiry
    kvctl can keep (:func:`kvctl.store.deadline_ms`: before 2109-05-15)."""
    from kvctl.cli.options import duration_ms
    from kvctl.plugin_kit import deadline_ms

    ttl_ms = duration_ms(text, "--ttl")
    if ttl_ms <= 0:
        raise UsageError("--ttl must be positive")
    try:
        deadline_ms(ttl_ms)
    except UsageError as exc:
        raise UsageError(f"--ttl {text} is out of range", hint=exc.hint) from None
    return ttl_ms


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
    types: TypesOpt = "json",
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
        pages = store.scan(kf.scan_prefix, start_after=parse_key(start) if start is not None else None,
                           cursor=begin, batch_size=batch_size, keys_only=keys_only)
        for page in pages:
            records = kf.keep(page.records)
            if after is not None:  # continue after the last key shown, if it is still there
                keys = [r.key for r in records]
                records = records[keys.index(after) + 1:] if after in keys else records
                after = None
            if not keys_only:
                records = [r for r in typed_shown(store, records, types) if r is not None]
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
            n = store.count(parse_key(prefix) if prefix else b"")
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
            wanted = [parse_key(k) for k in keys or []]
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
    app.command("get", epilog=examples(
        "kvctl get greeting",
        "kvctl get user:1 user:2 user:3 --json",
        "kvctl -u redis://localhost:6379/0 get session:42 > session.bin",
        "kvctl --values hex get blob              # the value as hex",
    ))(get)
    app.command("set", epilog=examples(
        "kvctl set greeting hello",
        "kvctl set session:42 --ttl 30m < session.bin",
        "kvctl set config:app --file app.json",
        "kvctl set lock:job1 me --nx --ttl 30s    # exit 1 if someone holds it",
        "kvctl set session:42 --xx --keep-ttl < session.bin",
    ))(set_)
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

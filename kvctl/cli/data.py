"""Single-key data commands: get, set, ttl (key sets: :mod:`kvctl.cli.keys`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kvctl.cli.context import STATE, open_store, read_input_file, store_name
from kvctl.cli.output import JsonOpt, json_doc, json_line, warn
from kvctl.cli.usage import examples
from kvctl.codec import decode_arg, decode_input, json_bytes, json_key, show, show_key
from kvctl.errors import NotFoundError, UnsupportedError, UsageError

if TYPE_CHECKING:
    from kvctl.store import Record

KeyArg = Annotated[str, typer.Argument(help="The key (in the --keys encoding; text by default).")]


def _key(text: str) -> bytes:
    return decode_arg(text, STATE.key_encoding, "key")


def record_json(rec: Record, keys_only: bool = False) -> dict[str, Any]:
    """A record as kvctl's JSON shows it, the same for get, scan and every key list."""
    obj: dict[str, Any] = json_key(rec.key)
    if not keys_only and rec.kind is None:
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
) -> None:
    """Print KEY's value: the exact bytes (pipe-safe), or hex/base64 with --values.

    With several keys, one line each: KEY, a tab, the value (shown as scan shows it); a key that
    is missing is named on stderr.  Exit 1 when a key is missing.
    """
    ks = [_key(k) for k in keys]
    with open_store(access="read") as store:
        recs = store.get_many(ks) if len(ks) > 1 else [store.get(ks[0])]
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
        raise NotFoundError(f"{missing} of {len(ks)} keys not found in {name}")


def _print_one(k: bytes, rec: Record | None, name: str, as_json: bool) -> None:
    if rec is None:
        raise NotFoundError(f"key {show_key(k, STATE.key_encoding)} not found in {name}")
    if as_json:
        json_doc(record_json(rec))
        return
    if rec.kind is not None:
        raise UnsupportedError(f"key {show_key(k, STATE.key_encoding)} holds a {rec.kind}, not a string value")
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
    if rec.kind is not None:
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
    as_json: JsonOpt = False,
) -> None:
    """Set KEY to VALUE, to a file's contents (--file) or to stdin."""
    k = _key(key)
    ttl_ms = _ttl(ttl) if ttl is not None else None
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
    with open_store() as store:
        store.set(k, v, ttl_ms=ttl_ms)
        name = store_name(store)
    if as_json:
        json_doc({"store": name, **json_key(k), "written": True, "bytes": len(v), "ttl_ms": ttl_ms})


def _ttl(text: str) -> int:
    """--ttl as milliseconds, checked here the same for every backend: positive, and an expiry
    kvctl can keep (:func:`kvctl.store.deadline_ms`: before 2109-05-15)."""
    from kvctl.cli.migrate import duration_ms
    from kvctl.plugin_kit import deadline_ms

    ttl_ms = duration_ms(text, "--ttl")
    if ttl_ms <= 0:
        raise UsageError("--ttl must be positive")
    try:
        deadline_ms(ttl_ms)
    except UsageError as exc:
        raise UsageError(f"--ttl {text} is out of range", hint=exc.hint) from None
    return ttl_ms


def ttl(
    key: KeyArg,
    ms: Annotated[bool, typer.Option("--ms", help="Print whole milliseconds (-1: no expiry).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print the time KEY has left (e.g. 59.873s), or 'none' when it never expires."""
    from kvctl.store import now_ms

    k = _key(key)
    with open_store(access="read") as store:
        rec = store.get(k)
        if rec is None:
            raise NotFoundError(f"key {show_key(k, STATE.key_encoding)} not found in {store_name(store)}")
    left = None if rec.expires_at_ms is None else max(0, rec.expires_at_ms - now_ms())
    if as_json:
        json_doc({**json_key(k), "expires_at_ms": rec.expires_at_ms, "ttl_ms": left})
    elif left is None:
        print(-1 if ms else "none")
    else:
        print(left if ms else f"{left / 1000:.3f}s")


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
    ))(set_)
    app.command("ttl", epilog=examples(
        "kvctl ttl session:42                     # 1799.532s, or none",
        "kvctl ttl --ms session:42",
    ))(ttl)

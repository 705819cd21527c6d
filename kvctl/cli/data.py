"""Single-store data commands: get, set, del, scan, count, ttl."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kvctl.cli.context import STATE, open_store, read_input_file, store_name
from kvctl.cli.output import json_line
from kvctl.cli.usage import examples
from kvctl.codec import decode_arg, decode_input, json_bytes, show, show_key
from kvctl.errors import NotFoundError, UnsupportedError, UsageError

KeyArg = Annotated[str, typer.Argument(help="The key (in the --keys encoding; text by default).")]
PrefixOpt = Annotated[str, typer.Option("--prefix", "-p", help="Only keys starting with this prefix.")]


def _key(text: str) -> bytes:
    return decode_arg(text, STATE.key_encoding, "key")


def _missing(key: bytes, store: object) -> NotFoundError:
    return NotFoundError(f"key {show_key(key, STATE.key_encoding)} not found in {store_name(store)}")


def get(key: KeyArg) -> None:
    """Print KEY's value: the exact bytes (pipe-safe), or hex/base64 with --values.

    A missing key exits with status 1 and a message on stderr.
    """
    k = _key(key)
    with open_store(access="read") as store:
        rec = store.get(k)
        if rec is None:
            raise _missing(k, store)
    if rec.kind is not None:
        raise UnsupportedError(
            f"key {show_key(k, STATE.key_encoding)} holds a {rec.kind}, not a string value"
        )
    out = sys.stdout.buffer
    if STATE.value_encoding == "raw":
        out.write(rec.value)
        if sys.stdout.isatty() and not rec.value.endswith(b"\n"):
            out.write(b"\n")  # only for a person at a terminal; pipes get the exact bytes
    else:
        out.write(show(rec.value, STATE.value_encoding).encode() + b"\n")
    out.flush()


def set_(
    key: KeyArg,
    value: Annotated[
        str | None, typer.Argument(help="The value; omitted or '-' reads stdin (binary-safe).")
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Read the value from this file.")] = None,
    ttl: Annotated[
        str | None, typer.Option("--ttl", "-t", help="Expire after this long: 500ms, 30s, 5m, 2h, 7d.")
    ] = None,
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


def _ttl(text: str) -> int:
    """--ttl as milliseconds, checked here the same for every backend: positive, and an expiry
    kvctl can keep (:func:`kvctl.store.deadline_ms`: before 2109-05-15)."""
    from kvctl.store import deadline_ms
    from kvctl.url import parse_duration_ms

    ttl_ms = parse_duration_ms(text)
    if ttl_ms <= 0:
        raise UsageError("--ttl must be positive")
    try:
        deadline_ms(ttl_ms)
    except UsageError as exc:
        raise UsageError(f"--ttl {text} is out of range", hint=exc.hint) from None
    return ttl_ms


def delete(keys: Annotated[list[str], typer.Argument(help="Keys to delete.")]) -> None:
    """Delete keys; prints how many existed."""
    ks = [_key(k) for k in keys]
    with open_store() as store:
        n = store.delete_many(ks)
    print(n)


def scan(
    prefix: PrefixOpt = "",
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="Stop after N keys.")] = None,
    keys_only: Annotated[bool, typer.Option("--keys-only", "-k", help="Print keys only.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines (binary-safe, see README).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Keys fetched per round trip.")] = 1000,
) -> None:
    """List keys (and values) under a prefix, in key order where the backend keeps one."""
    p = _key(prefix) if prefix else b""
    shown = 0
    with open_store(access="read") as store:
        for page in store.scan(p, batch_size=batch_size, keys_only=keys_only):
            for rec in page.records:
                if limit is not None and shown >= limit:
                    return
                shown += 1
                if as_json:
                    obj: dict[str, object] = {}
                    json_bytes(obj, "key", rec.key)
                    if not keys_only and rec.kind is None:
                        json_bytes(obj, "value", rec.value)
                    if rec.kind is not None:
                        obj["kind"] = rec.kind
                    obj["expires_at_ms"] = rec.expires_at_ms
                    if rec.version is not None:
                        obj["version"] = rec.version
                    json_line(obj)
                elif keys_only or rec.kind is not None:
                    suffix = f"\t({rec.kind})" if rec.kind and not keys_only else ""
                    print(show(rec.key, STATE.key_encoding) + suffix)
                else:
                    enc = "text" if STATE.value_encoding == "raw" else STATE.value_encoding
                    print(f"{show(rec.key, STATE.key_encoding)}\t{show(rec.value, enc)}")


def count(prefix: PrefixOpt = "") -> None:
    """Print the number of live keys (under a prefix)."""
    p = _key(prefix) if prefix else b""
    with open_store(access="read") as store:
        print(store.count(p))


def ttl(
    key: KeyArg,
    ms: Annotated[bool, typer.Option("--ms", help="Print whole milliseconds (-1: no expiry).")] = False,
) -> None:
    """Print the time KEY has left (e.g. 59.873s), or 'none' when it never expires."""
    from kvctl.store import now_ms

    k = _key(key)
    with open_store(access="read") as store:
        rec = store.get(k)
        if rec is None:
            raise _missing(k, store)
    if rec.expires_at_ms is None:
        print(-1 if ms else "none")
        return
    left = max(0, rec.expires_at_ms - now_ms())
    print(left if ms else f"{left / 1000:.3f}s")


def register(app: typer.Typer) -> None:
    app.command("get", epilog=examples(
        "kvctl get greeting",
        "kvctl -u redis://localhost:6379/0 get session:42 > session.bin",
        "kvctl --values hex get blob              # the value as hex",
    ))(get)
    app.command("set", epilog=examples(
        "kvctl set greeting hello",
        "kvctl set session:42 --ttl 30m < session.bin",
        "kvctl set config:app --file app.json",
    ))(set_)
    app.command("del", epilog=examples(
        "kvctl del greeting",
        "kvctl del session:1 session:2            # prints how many existed",
    ))(delete)
    app.command("scan", epilog=examples(
        "kvctl scan --prefix user: --limit 20",
        "kvctl scan --keys-only | wc -l",
        "kvctl --keys hex scan --json | jq .      # exact bytes, one JSON object a line",
    ))(scan)
    app.command("count", epilog=examples(
        "kvctl count",
        "kvctl -u sqlite:///var/lib/app.db count --prefix user:",
    ))(count)
    app.command("ttl", epilog=examples(
        "kvctl ttl session:42                     # 1799.532s, or none",
        "kvctl ttl --ms session:42",
    ))(ttl)

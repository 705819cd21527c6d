"""The expiry commands: ttl, expire and persist (one key's expiry, its value untouched)."""

from __future__ import annotations

from typing import Annotated

import typer

from kvctl.cli.context import STATE, open_store, store_name
from kvctl.cli.keys import KeyArg, parse_key
from kvctl.cli.output import JsonOpt, json_doc
from kvctl.cli.usage import examples
from kvctl.codec import json_key, show_key
from kvctl.errors import NotFoundError, UnsupportedError, UsageError


def ttl(
    key: KeyArg,
    ms: Annotated[bool, typer.Option("--ms", help="Print whole milliseconds (-1: no expiry).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print the time KEY has left (e.g. 59.873s), or 'none' when it never expires."""
    from kvctl.store import now_ms

    k = parse_key(key)
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


def expire(
    key: KeyArg,
    duration: Annotated[str | None, typer.Argument(
        help="Expire after this long: 500ms, 30s, 5m, 1h30m, 7d (0 deletes the key).", show_default=False)] = None,
    at: Annotated[str | None, typer.Option(
        "--at", metavar="TIME", help="Expire at this time: milliseconds since the epoch, or ISO 8601 (UTC unless it "
        "gives a zone).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set KEY's expiry without touching its value, as Redis's PEXPIRE/PEXPIREAT do.

    An expiry now or in the past deletes the key.  Exit 1 when KEY does not exist.
    """
    from kvctl.store import now_ms

    if (duration is None) == (at is None):
        raise UsageError("give DURATION or --at TIME (one of them)")
    if duration is not None:
        from kvctl.cli.options import duration_ms

        expires = now_ms() + duration_ms(duration, "DURATION")
    else:
        expires = _instant_ms(at or "")
    _set_expiry(parse_key(key), expires, as_json)


def persist(key: KeyArg, as_json: JsonOpt = False) -> None:
    """Remove KEY's expiry so it never expires, without touching its value (Redis's PERSIST).

    Exit 0 when KEY exists (with or without an expiry before), 1 when it does not.
    """
    _set_expiry(parse_key(key), None, as_json)


def _set_expiry(k: bytes, expires: int | None, as_json: bool) -> None:
    from kvctl.abilities import Expiry
    from kvctl.store import MAX_EXPIRY_MS, now_ms

    if expires is not None and expires > MAX_EXPIRY_MS:
        raise UsageError("the expiry is out of range: it must fall before 2109-05-15")
    with open_store() as store:
        name = store_name(store)
        if not (store.capabilities.conditional_writes and isinstance(store, Expiry)):
            raise UnsupportedError(f"the {store.name} backend cannot change an expiry atomically")
        deleting = expires is not None and expires <= now_ms()
        if not store.expire(k, expires):
            raise NotFoundError(f"key {show_key(k, STATE.key_encoding)} not found in {name}")
    if as_json:
        json_doc({"store": name, **json_key(k), "deleted": deleting,
                  "expires_at_ms": None if deleting else expires})


def _instant_ms(text: str) -> int:
    """--at as milliseconds since the epoch: a whole number of them, or an ISO 8601 time."""
    from datetime import UTC, datetime

    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at {text!r}: not milliseconds since the epoch nor an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("ttl", epilog=examples(
        "kvctl ttl session:42                     # 1799.532s, or none",
        "kvctl ttl --ms session:42",
    ))(ttl)
    app.command("expire", epilog=examples(
        "kvctl expire session:42 30m              # exit 1 if the key is missing",
        "kvctl expire report:2024 --at 2025-01-01T00:00:00Z --json",
        "kvctl expire tmp:1 0                     # an expiry now deletes the key",
    ))(expire)
    app.command("persist", epilog=examples(
        "kvctl persist session:42                 # never expires now",
        "kvctl persist session:42 --json",
    ))(persist)

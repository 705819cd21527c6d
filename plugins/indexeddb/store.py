"""``indexeddb://HOST:PORT/ORIGIN/DATABASE/STORE``: one object store of a running Chromium.

kvctl attaches to the browser's DevTools port, opens its own hidden tab on the origin (see
:mod:`.tab`) and runs one small script per batch call (see :mod:`.scripts`): a scan page is one
``getAllRecords`` of up to ``batch_size`` records over a key range; ``set_many`` and
``delete_many`` are one read-write transaction each.  Keys map to bytes as :mod:`.keys`
describes; values read as bytes (strings as UTF-8, binary as itself, other JavaScript values as
JSON text).  Nothing here creates a database or object store unless ``create=true``.

Options: ``values=auto|bytes|json`` (how bytes are written, see
:func:`.scripts.value_to_wire`), ``create=true`` (create the database/object store when
missing, by a version upgrade), ``durability=default|strict|relaxed`` (the transactions'
durability hint), ``timeout=30s`` (per DevTools call), ``path=/__kvctl__`` (the path of the
origin kvctl's tab shows; it is answered by kvctl, never by the site).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Self

from kvctl.errors import (
    ConflictError,
    KvctlError,
    LimitError,
    LockedError,
    StoreIOError,
    TimedOutError,
    UnavailableError,
    UnsupportedError,
    UsageError,
    one_line,
)
from kvctl.plugin_kit import AsyncStoreBase, page_size
from kvctl.store import Capabilities, Page, Record, StoreURL

from . import keys as wirekeys
from .cdp import CDPClosed, CDPError
from .listing import list_stores
from .location import Location, parse_location
from .scripts import AUTO, JSON_MODE, VALUE_MODES, pack, value_from_wire, value_kind
from .tab import ScriptError, Tab

MiB = 1024 * 1024
# kvctl's own limit: keys travel inside DevTools messages too (IndexedDB sets none this low).
MAX_KEY = 1 * MiB
# Chromium's DevTools server refuses messages over 100 MiB; a value travels base64-encoded.
MAX_VALUE = 64 * MiB
# Encoded size of one message of a batch: bigger batches are sent in parts, applied at once.
PART_BUDGET = 16 * MiB
# Encoded size of values the browser returns in one answer (a scan page or a get_many part).
READ_BUDGET = 32 * MiB
OPTIONS = {"values", "create", "durability", "timeout", "path"}


def _no_ttl() -> UnsupportedError:
    return UnsupportedError("the indexeddb backend does not support ttl (IndexedDB has no expiry)")


class IndexedDBStore(AsyncStoreBase):
    name = "indexeddb"
    description = (
        "One object store of a running Chromium's IndexedDB, through its DevTools port "
        "(indexeddb://HOST:PORT/ORIGIN/DATABASE/STORE; no store: scan lists databases and stores). "
        "Strings read as UTF-8 bytes, ArrayBuffer/typed-array/Blob values as their exact bytes, structured "
        "JavaScript objects as JSON text (shown as JSON on get, migrated as those JSON bytes). "
        "Writes: UTF-8 as strings, other bytes as Uint8Array (values=bytes|json to change). "
        "Keys: strings as UTF-8, other key types in a reversible tagged form (\\xff...)."
    )
    capabilities = Capabilities(
        persistent=True, ttl=False, ordered_scan=False, versions=False, atomic_batch=True, host_local=True,
        max_key_size=MAX_KEY, max_value_size=MAX_VALUE,
        durability="the browser's IndexedDB commit (hint: ?durability=default|strict|relaxed)",
    )

    def __init__(self, url: StoreURL, where: Location, *, values: str, create: bool, durability: str | None,
                 timeout_ms: int, path: str) -> None:
        self.url = url
        self._shown = url.redacted()
        self.where = where
        self.values = values
        self.create = create
        self.durability = durability
        self.timeout = timeout_ms / 1000
        self.path = path
        self._tab: Tab | None = None
        self._opening: asyncio.Lock | None = None
        self._checked = False

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        url.check_options(OPTIONS)
        where = parse_location(url)
        durability = url.choice_option("durability", ("default", "strict", "relaxed"), "default")
        path = url.option("path") or "/__kvctl__"
        if not path.startswith("/"):
            raise UsageError(f"option path={path!r} in {url.redacted()} must start with '/'")
        return cls(
            url, where,
            values=url.choice_option("values", VALUE_MODES, AUTO),
            create=url.bool_option("create", False),
            durability=None if durability == "default" else durability,
            timeout_ms=url.duration_option_ms("timeout", 30_000) or 30_000,
            path=path,
        )

    # -- the tab -----------------------------------------------------------------------------
    @property
    def _target(self) -> dict[str, Any]:
        """The arguments naming this store in every helper call."""
        return {"db": self.where.database, "store": self.where.store, "durability": self.durability}

    async def _open(self) -> Tab:
        if self._tab is not None and self._tab.usable:
            return self._tab
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._tab is not None and self._tab.usable:
                return self._tab
            if self._tab is not None:  # closed or crashed: start over with a new tab
                old, self._tab = self._tab, None
                await old.close()
            w = self.where
            try:
                self._tab = await Tab.open(w.host, w.port, w.origin, self.path, self.timeout)
            except (OSError, CDPClosed) as exc:
                raise UnavailableError(
                    f"cannot reach Chromium's DevTools at {w.host}:{w.port} for {self._shown}: "
                    f"{one_line(exc)}",
                    hint="start Chromium with --remote-debugging-port=PORT and a --user-data-dir",
                ) from None
            except BaseException as exc:
                raise self._translate(exc) from None
            return self._tab

    async def _call(self, name: str, args: dict[str, Any]) -> Any:
        """One helper call on this store's object store, with errors translated."""
        if self.where.store is None:
            raise UnsupportedError(
                f"{self._shown} names no object store: it lists databases and stores (read-only)",
                hint="add /DATABASE/STORE to the URL",
            )
        for attempt in (1, 2):
            tab = await self._open()
            try:
                if not self._checked and self.create:
                    await tab.call("ensure", self._target)
                self._checked = True
                return await tab.call(name, {**self._target, **args})
            except BaseException as exc:
                if attempt == 1 and _tab_went_away(tab, exc, name):
                    continue  # kvctl's tab was closed or crashed: once more in a new tab
                raise self._translate(exc) from None
        raise AssertionError("unreachable")

    def _translate(self, exc: BaseException) -> BaseException:
        where = self._shown
        if isinstance(exc, KvctlError | asyncio.CancelledError | KeyboardInterrupt):
            return exc
        if isinstance(exc, asyncio.TimeoutError | TimeoutError):
            return TimedOutError(f"Chromium did not answer within {self.timeout:g} s for {where}")
        if isinstance(exc, CDPClosed | ConnectionError):
            return UnavailableError(f"lost the DevTools connection to {where}: {one_line(exc)}")
        if isinstance(exc, CDPError):
            return StoreIOError(f"DevTools refused {exc.method} on {where}: {exc.message}")
        if isinstance(exc, ScriptError):
            msg = one_line(exc.message)
            if exc.name in ("NoDatabase", "NoStore"):
                return UsageError(f"{msg} in {self.where.origin} ({where})",
                                  hint="kvctl never creates one unless the URL says create=true")
            if exc.name == "NavigationError":
                return UnavailableError(f"{msg} ({where})")
            if exc.name == "QuotaExceededError":
                return LimitError(f"the browser's storage quota is exhausted for {self.where.origin} ({where})")
            if exc.name == "ConstraintError":
                return ConflictError(f"an index of the object store refused the write: {msg} ({where})")
            if exc.name == "Blocked":
                return LockedError(f"{msg} ({where})")
            if exc.name in ("DataError", "DataCloneError", "TypeError"):
                return UsageError(f"{msg} ({where})")
            return StoreIOError(f"IndexedDB failed on {where}: {exc.name}: {msg}")
        return StoreIOError(f"IndexedDB failed on {where}: {type(exc).__name__}: {one_line(exc)}")

    # -- batches -------------------------------------------------------------------------------
    async def _send_in_parts(self, name: str, items: list[Any], weights: list[int],
                             encode: Callable[[list[Any]], dict[str, Any]]) -> Any:
        """Send ``items`` as one helper call, staging parts first when over one message's budget.

        The browser keeps staged parts in the tab and applies them all in the final call's
        transaction, so a batch too big for one DevTools message still commits or fails whole.
        """
        parts: list[list[Any]] = [[]]
        size = 0
        for item, weight in zip(items, weights, strict=True):
            if parts[-1] and size + weight > PART_BUDGET:
                parts.append([])
                size = 0
            parts[-1].append(item)
            size += weight
        json_mode = self.values == JSON_MODE
        if len(parts) == 1:
            return await self._call(name, {**encode(items), "json": json_mode})
        stage = uuid.uuid4().hex
        try:
            for part in parts[:-1]:
                await self._call("stage", {"id": stage, **encode(part)})
            return await self._call(name, {**encode(parts[-1]), "staged": stage, "json": json_mode})
        except BaseException:
            if self._tab is not None and self._tab.usable:
                with contextlib.suppress(Exception):  # the original error matters more
                    await self._tab.call("unstage", {"id": stage})
            raise

    async def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        if self.where.store is None:
            listing = {r.key: r for r in await self._listing()}
            return [listing.get(k) for k in keys]
        out: list[Record | None] = []
        pending = list(keys)
        while pending:
            part = pending[:1000]
            values = await self._call("get", {"keys": [wirekeys.from_bytes(k) for k in part],
                                              "budget": READ_BUDGET})
            for key, value in zip(part, values, strict=False):
                out.append(None if value is None else Record(key, value_from_wire(value)))
            pending = pending[max(len(values), 1):]
        return out

    async def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        if ttl_ms is not None:
            raise _no_ttl()
        await self.set_many([Record(key, value)])

    async def set_many(self, records: Iterable[Record]) -> None:
        items, weights = [], []
        mode, from_bytes = self.values, wirekeys.from_bytes
        for rec in records:  # every check before anything is sent
            if rec.expires_at_ms is not None:
                raise _no_ttl()
            self._check(rec.key, rec.value)
            items.append((from_bytes(rec.key), value_kind(rec.value, mode), rec.value))
            weights.append(len(rec.value) * 4 // 3 + 2 * len(rec.key) + 16)
        if items:
            await self._send_in_parts("put", items, weights, _pack_records)

    async def delete_many(self, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0
        wire = [wirekeys.from_bytes(k) for k in keys]
        return int(await self._send_in_parts("delete", wire, [2 * len(k) + 32 for k in keys],
                                             lambda part: {"keys": part}))

    async def clear(self) -> int:
        return int(await self._call("clear", {}))

    async def count(self, prefix: bytes = b"") -> int:
        if self.where.store is None:
            return sum(1 for r in await self._listing() if r.key.startswith(prefix))
        if not prefix:
            return int(await self._call("count", {"range": None}))
        return await super().count(prefix)

    async def stats(self) -> dict[str, Any]:
        if self.where.store is None:
            stores = await self._listing()
            return {"keys": len(stores), "origin": self.where.origin}
        info = await self._call("info", {})
        stats: dict[str, Any] = {"keys": await self.count(), "origin": self.where.origin,
                                 "database": self.where.database, "store": self.where.store,
                                 "database_version": info["version"], "key_path": info["keyPath"],
                                 "auto_increment": info["autoIncrement"], "indexes": info["indexes"]}
        tab = await self._open()
        try:
            usage = await tab.send("Storage.getUsageAndQuota", {"origin": self.where.origin})
            stats["origin_usage_bytes"] = int(usage["usage"])
            stats["origin_quota_bytes"] = int(usage["quota"])
        except (CDPError, KeyError):
            pass
        return stats

    # -- scans ---------------------------------------------------------------------------------
    def scan(self, prefix: bytes = b"", *, start_after: bytes | None = None, cursor: str | None = None,
             batch_size: int = 1000, keys_only: bool = False) -> AsyncIterator[Page]:
        if start_after is not None:
            raise UnsupportedError(
                "the indexeddb backend does not support ordered scan (IndexedDB orders keys by type, then "
                "strings by UTF-16): resume with the scan cursor instead of a key"
            )
        if self.where.store is None:
            return self._scan_listing(prefix, cursor, batch_size, keys_only)
        return self._scan(prefix, cursor, page_size(batch_size), keys_only)

    async def _scan(self, prefix: bytes, cursor: str | None, batch_size: int,
                    keys_only: bool) -> AsyncIterator[Page]:
        segments = _segments(prefix)
        first, after = _parse_cursor(cursor, len(segments)) if cursor else (0, None)
        for index in range(first, len(segments)):
            lower, upper = segments[index]
            while True:
                span = [after or lower, upper, after is not None, True] if (after or lower or upper) else None
                keys, values, truncated = await self._call("read", {
                    "range": span, "count": batch_size, "keysOnly": keys_only, "budget": READ_BUDGET,
                    "readAhead": True})
                if not keys:
                    break
                after = keys[-1]
                to_bytes = wirekeys.to_bytes
                if keys_only:
                    page = [Record(k) for k in map(to_bytes, keys)]
                else:
                    page = list(map(Record, map(to_bytes, keys), map(value_from_wire, values)))
                if prefix:
                    page = [r for r in page if r.key.startswith(prefix)]
                if page:
                    yield Page(page, _cursor(index, after))
                if len(keys) < batch_size and not truncated:
                    break
            after = None

    async def _listing(self) -> list[Record]:
        tab = await self._open()
        try:
            return await list_stores(tab, self.where)
        except BaseException as exc:
            raise self._translate(exc) from None

    async def _scan_listing(self, prefix: bytes, cursor: str | None, batch_size: int,
                            keys_only: bool) -> AsyncIterator[Page]:
        records = sorted((r for r in await self._listing() if r.key.startswith(prefix)), key=lambda r: r.key)
        start = _parse_cursor(cursor, len(records))[0] if cursor else 0
        batch_size = page_size(batch_size)
        for i in range(start, len(records), batch_size):
            page = records[i:i + batch_size]
            if keys_only:
                page = [Record(r.key) for r in page]
            yield Page(page, _cursor(i + len(page), None))

    async def close(self) -> None:
        tab, self._tab = self._tab, None
        if tab is not None:
            await tab.close()


def _pack_records(part: list[tuple[Any, str, bytes]]) -> dict[str, Any]:
    keys, kinds, values = zip(*part, strict=True)
    return {"batch": pack(list(keys), list(kinds), list(values))}


# -- scan segments and cursors -------------------------------------------------------------------
Span = tuple[wirekeys.WireKey | None, wirekeys.WireKey | None]


def _segments(prefix: bytes) -> list[Span]:
    """Key ranges that hold every key whose bytes start with ``prefix`` (results are filtered).

    Tagged keys (numbers, dates, arrays...) all start with 0xFF, so for any other prefix only two
    ranges can match: strings starting with the prefix's text, and binary keys whose bytes start
    with it.
    """
    if not prefix or prefix[0] == wirekeys.TAG:
        return [(None, None)]
    spans: list[Span] = []
    text = _text_prefix(prefix)
    if text is not None:
        spans.append((["s", text], _after_strings_with(text)))
    end = _bytes_after(prefix)
    spans.append((["b", _b64(prefix)], None if end is None else ["b", _b64(end)]))
    return spans


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _text_prefix(prefix: bytes) -> str | None:
    """The text every string key matching ``prefix`` starts with (a cut UTF-8 tail is dropped)."""
    try:
        return prefix.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and exc.end == len(prefix):
            return prefix[:exc.start].decode("utf-8")
        return None


def _after_strings_with(text: str) -> wirekeys.WireKey:
    """The smallest key above every string that starts with ``text`` (IndexedDB compares UTF-16 units)."""
    units = [int.from_bytes(text.encode("utf-16-le", "surrogatepass")[i:i + 2], "little")
             for i in range(0, len(text.encode("utf-16-le", "surrogatepass")), 2)]
    while units and units[-1] == 0xFFFF:
        units.pop()
    if not units:
        return ["b", ""]  # every string sorts before every binary key
    units[-1] += 1
    raw = b"".join(u.to_bytes(2, "little") for u in units)
    return ["s", raw.decode("utf-16-le", "surrogatepass")]


def _bytes_after(prefix: bytes) -> bytes | None:
    stripped = prefix.rstrip(b"\xff")
    return None if not stripped else stripped[:-1] + bytes([stripped[-1] + 1])


def _cursor(segment: int, after: wirekeys.WireKey | None) -> str:
    raw = json.dumps([segment, after], separators=(",", ":")).encode()
    return "i:" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str, segments: int) -> tuple[int, wirekeys.WireKey | None]:
    try:
        if not cursor.startswith("i:"):
            raise ValueError
        text = cursor[2:]
        segment, after = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(segment, int) or not 0 <= segment <= segments:
            raise ValueError
        return segment, after
    except (ValueError, TypeError):
        raise UsageError(f"not a scan cursor of the indexeddb backend: {cursor!r}") from None


# Calls that may run twice: a retry after losing the tab mid-call changes nothing.
_IDEMPOTENT = {"read", "get", "count", "info", "put", "ensure"}


def _tab_went_away(tab: Tab, exc: BaseException, name: str) -> bool:
    if isinstance(exc, CDPError):
        text = exc.message.lower()
        if "session" in text and "not found" in text:  # the browser no longer knows it: nothing ran
            return True
        # The page navigated (reloaded) under the call: it may have run, or been cut short.
        return "navigated or closed" in text and name in _IDEMPOTENT
    return isinstance(exc, CDPClosed) and tab.broken is not None and name in _IDEMPOTENT



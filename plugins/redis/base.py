"""What the standalone and the cluster Redis stores share: keys, records, scans, the local cache,
the change feed.

A subclass supplies the server side through a few primitives working on *full* Redis keys (the
namespace already prepended): ``_fetch``, ``_write``, ``_unlink``, ``_scan_targets``, ``_flush``,
``_dump``, ``_restore``, ``_info`` and ``_on_nodes``; optionally ``_pack`` and ``_send``, so
that a batch's commands are built by ``prepare_many`` (kvctl.abilities.PreparedWrites) before
its write.  Everything a user sees (namespace stripping, expiry filtering, cache hits and
invalidations, scan pages and cursors, the feed of feed.py) is done once, here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, cast

from kvctl.errors import KvctlError, UnsupportedError, UsageError
from kvctl.plugin_kit import StoreBase, check_conditional, deadline_ms, new_records, typedjson
from kvctl.store import Capabilities, Page, Record, StoreURL, now_ms

from . import limits, scanning
from .cache import DELETED, INVALIDATED, Invalidator, LocalCache
from .commands import Commands, expiry, raise_first_error, typed_content
from .errors import DRIVER_ERRORS, translate, translating
from .options import RedisSettings

if TYPE_CHECKING:
    from .feed import NotifyFeed

MAX_STRING = 512 * 1024 * 1024  # Redis's proto-max-bulk-len default: the largest key or value

# PERSIST answers 0 both for a missing key and for one without an expiry: the script tells them
# apart in the same atomic step.
PERSIST = b"if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PERSIST', KEYS[1]) return 1 end return 0"


_KEY = _FIRST = itemgetter(0)
_VALUE = _SECOND = itemgetter(1)
_EXPIRY = itemgetter(2)


class Prepared(NamedTuple):
    """A batch made ready to write (``RedisStoreBase.prepare_many``).  ``records``: the whole
    batch, when its write needs the server first; else the columns (store keys, without the
    namespace; each key once where the subclass's write needs that) and the subclass's packed
    commands (None: none)."""

    records: list[Record] | None
    keys: list[bytes]
    values: list[bytes]
    expiries: list[int | None]
    packed: Any


class RedisStoreBase(StoreBase):
    cluster: ClassVar[bool] = False
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, url: StoreURL, settings: RedisSettings) -> None:
        self.url = url
        self.where = url.redacted()
        self.settings = settings
        self.ns = settings.namespace
        self.codec = settings.codec  # ?codec=session: values read and written as Session stores them
        self.relative_ttl = False  # True on servers older than 7.0 (no PEXPIRETIME)
        self._bulk_limit: int | None = None  # the server's proto-max-bulk-len, once asked (limits.py)
        self._bulk_asked = False
        self.cache: LocalCache | None = None
        self.invalidator: Invalidator | None = None
        if settings.cache is not None:
            self.cache = LocalCache(settings.cache.entries, settings.cache.ttl_ms)
            self.invalidator = Invalidator(settings.cache, self.cache, self.ns, self._subscriber_client)
        self.feed: NotifyFeed | None = None
        if settings.feed:
            from .feed import NotifyFeed  # only stores that ask for a feed pay for it

            self.feed = NotifyFeed(self, settings.feed_buffer, settings.connection.get("socket_timeout") or 60.0)
            self.capabilities = dataclasses.replace(type(self).capabilities, change_feed=True)  # type: ignore[misc]

    # -- primitives a subclass supplies (full keys) ------------------------------------------
    def _fetch(self, keys: list[bytes]) -> list[tuple[Any, Any]]:
        """For each key: (value bytes | [type] | None, expiry reply)."""
        raise NotImplementedError

    def _write(self, keys: list[bytes], values: list[bytes], expiries: list[int | None],
               publish: Commands) -> None:
        """Write the records given as three parallel lists (expiries absolute, None: none), each
        key once."""
        raise NotImplementedError

    def _pack(self, keys: list[bytes], values: list[bytes], expiries: list[int | None],
              publish: Commands, prefix: bytes = b"", size: int | None = None) -> Any:
        """``_write``'s commands for ``prefix + key`` of each key, built ahead of the write, for
        ``_send`` (None: ``_write`` builds them itself).  ``size``: a bound on the bytes of the
        keys and values, when known."""
        return None

    def _unique_keys_needed(self, expiries: list[int | None]) -> bool:
        """Whether ``_pack``'s commands could let an earlier record of a key written twice in a
        batch land after its last one, so the batch must hold each key once."""
        return True

    def _send(self, packed: Any) -> None:
        """Send what ``_pack`` built and check its replies."""
        raise NotImplementedError

    def _unlink(self, keys: list[bytes], publish: Commands) -> int:
        raise NotImplementedError

    def _key_command(self, command: tuple[Any, ...], publish: Commands) -> Any:
        """Run one command on the node of its key (the second or, for EVAL, fourth argument),
        then ``publish``; its reply."""
        raise NotImplementedError

    def _scan_targets(self) -> list[tuple[str, Any]]:
        """(name, connection pool) of every node to scan, in a stable order."""
        raise NotImplementedError

    def _flush(self, publish: Commands) -> int:
        raise NotImplementedError

    def _dump(self, keys: list[bytes]) -> list[tuple[Any, Any, Any]]:
        """For each key: (DUMP reply, expiry reply, TYPE reply)."""
        raise NotImplementedError

    def _read_typed(self, keys: list[bytes]) -> list[tuple[Any, Any, Any]]:
        """For each key, read atomically: (whole content or None, expiry reply, TYPE reply)."""
        raise NotImplementedError

    def _restore(self, commands: Commands) -> None:
        raise NotImplementedError

    def _info(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _subscriber_client(self) -> Any:
        raise NotImplementedError

    def _on_nodes(self, batches: dict[str, Commands]) -> dict[str, list[Any]]:
        """Run each node's commands (nodes named as by ``_scan_targets``); errors are returned."""
        raise NotImplementedError

    # -- what the change feed needs from the server side (see feed.py) ------------------------
    def _feed_nodes(self) -> list[tuple[str, Any]]:
        """(name, connection pool) of every node whose notifications the feed must hear."""
        return self._scan_targets()

    def _feed_moved(self, nodes: list[str]) -> str | None:
        """Why a subscription to ``nodes`` no longer hears every change (None: it does)."""
        return None

    def _key_on(self, node: str, stem: bytes) -> bytes:
        """A full key starting with ``stem`` that lives on ``node``."""
        return stem

    # -- reads -------------------------------------------------------------------------------
    def _records(self, keys: Sequence[bytes]) -> list[Record | None]:
        """Read from Redis; ``keys`` are store keys (no namespace)."""
        ns = self.ns
        try:
            replies = self._fetch([ns + k for k in keys] if ns else list(keys))
        except DRIVER_ERRORS as exc:
            raise translate(exc, self.where) from None
        if not replies:
            return []
        return self._made(keys, list(map(_FIRST, replies)), list(map(_SECOND, replies)))

    def _made(self, keys: Sequence[bytes], values: list[Any], exps: list[Any]) -> list[Record | None]:
        """The records of ``keys`` from the replies to their GET and expiry commands."""
        if (self.codec is None and exps.count(-1) == len(exps)
                and set(map(type, values)) == {bytes}):
            # the usual page: every key holds a string without an expiry; made in C
            return cast("list[Record | None]", new_records(zip(keys, values, repeat(None), repeat(None), repeat(None))))
        now = now_ms()
        relative = self.relative_ttl
        out: list[Record | None] = []
        append = out.append
        for key, value, exp in zip(keys, values, exps, strict=True):
            # exp: PEXPIRETIME's absolute ms (PTTL's relative ms before 7.0); -1 none, -2 missing
            if value is None or exp == -2:
                append(None)
                continue
            if exp < 0:
                exp = None
            else:
                if relative:
                    exp += now
                if exp <= now:
                    append(None)
                    continue
            if value.__class__ is bytes:
                append(Record(key, value, exp))
            else:  # another Redis type: reported, never dropped
                kind = value[0].decode() if isinstance(value[0], bytes) else str(value[0])
                append(Record(key, b"", exp, kind=kind))
        return self._decoded(out) if self.codec is not None else out

    def _decoded(self, records: list[Record | None]) -> list[Record | None]:
        codec = self.codec
        assert codec is not None
        return [r if r is None or r.kind is not None else r._replace(value=codec.decode(r.key, r.value))
                for r in records]

    def _encoded(self, records: list[Record]) -> list[Record]:
        """``records`` with their values as the codec stores them, each the way the value it
        replaces is stored (read first: one round trip)."""
        codec = self.codec
        assert codec is not None
        ns = self.ns
        try:
            current = self._fetch([ns + r.key for r in records])
        except DRIVER_ERRORS as exc:
            raise translate(exc, self.where) from None
        return [r._replace(value=codec.encode(r.key, r.value, old if isinstance(old, bytes) else None))
                for r, (old, _) in zip(records, current, strict=True)]

    def get(self, key: bytes) -> Record | None:
        cache = self.cache
        if cache is not None:
            hit = cache.get(key)
            if hit is not None:
                return hit
            epoch = cache.epoch
            record = self._records([key])[0]
            if record is not None and record.kind is None:
                cache.put_many(epoch, (record,))
            return record
        return self._records([key])[0]

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        if not keys:
            return []
        cache = self.cache
        if cache is None:
            return self._records(keys)
        out: list[Record | None] = [cache.get(k) for k in keys]
        missing = [i for i, r in enumerate(out) if r is None]
        if missing:
            epoch = cache.epoch
            fetched = self._records([keys[i] for i in missing])
            for i, record in zip(missing, fetched, strict=True):
                out[i] = record
            cache.put_many(epoch, (r for r in fetched if r is not None and r.kind is None))
        return out

    # -- writes ------------------------------------------------------------------------------
    def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        if self.codec is not None and ttl_ms is None:
            # editing one Session value never makes the session immortal: its expiry stays
            self.set_if(Record(key, value), keep_ttl=True)
            return
        self.set_many([Record(key, value, deadline_ms(ttl_ms))])

    def set_many(self, records: Iterable[Record]) -> None:
        batch = records if isinstance(records, list) else list(records)
        if batch:
            self.write_prepared(self.prepare_many(batch))

    def prepare_many(self, records: list[Record]) -> Prepared:
        """``set_many``'s work up to the server (kvctl.abilities.PreparedWrites): the batch as
        columns, checked against the declared limits, each key once where the write needs that
        (``_unique_keys_needed``) and, where the subclass can, packed into its commands, the
        namespace included.  A batch that needs the server first (values
        through a codec, strings the server's own limit may refuse) is left whole for the write."""
        batch = records if isinstance(records, list) else list(records)
        if not batch:
            return Prepared(None, [], [], [], None)
        # the records as columns, one C-level pass each (faster than zip(*batch), which builds
        # every column of records spread over memory at once)
        keys, values, expiries = list(map(_KEY, batch)), list(map(_VALUE, batch)), list(map(_EXPIRY, batch))
        caps = self.capabilities
        # strings over limits.FLOOR are checked against the server's own limit (see
        # _write_records).  The total of the lengths bounds the largest: one cheap C-level pass
        # per column decides the usual batch, and the total bounds the write's buffers too.
        max_key = min(caps.max_key_size or MAX_STRING, limits.FLOOR)
        max_value = min(caps.max_value_size or MAX_STRING, limits.FLOOR)
        key_bytes, value_bytes = sum(map(len, keys)), sum(map(len, values))
        if self.codec is not None or (key_bytes > max_key and max(map(len, keys)) > max_key) or (
                value_bytes > max_value and max(map(len, values)) > max_value):
            return Prepared(batch, [], [], [], None)
        if self._unique_keys_needed(expiries) and len(set(keys)) < len(keys):
            # A key written twice: keep its last record only, as set_many promises.
            latest = dict(zip(keys, zip(values, expiries, strict=True), strict=True))
            keys = list(latest)
            values, expiries = [v for v, _ in latest.values()], [e for _, e in latest.values()]
        ns = self.ns
        size = key_bytes + len(ns) * len(keys) + value_bytes
        return Prepared(None, keys, values, expiries, self._pack(keys, values, expiries, [], ns, size))

    def write_prepared(self, prepared: object) -> None:
        """Write a batch :meth:`prepare_many` made ready, as ``set_many`` would have."""
        assert isinstance(prepared, Prepared)
        if prepared.records is not None:
            self._write_records(prepared.records)
            return
        if not prepared.keys:
            return
        publish = self._invalidate(INVALIDATED, prepared.keys)
        try:
            if prepared.packed is not None and not publish:
                self._send(prepared.packed)
            else:
                ns, keys = self.ns, prepared.keys
                self._write(list(map(ns.__add__, keys)) if ns else keys, prepared.values, prepared.expiries,
                            publish)
        except DRIVER_ERRORS as exc:
            raise translate(exc, self.where) from None

    def _write_records(self, batch: list[Record]) -> None:
        """``set_many`` of a batch that needs the server before its write: values encoded as
        the codec stores them, or strings over limits.FLOOR checked against the server's limit."""
        if self.codec is not None:
            batch = self._encoded(batch)
        # the declared limits, then the server's, for the strings over limits.FLOOR only
        over = [r for r in batch if len(r.key) > limits.FLOOR or len(r.value) > limits.FLOOR]
        for r in over:
            self._check(r.key, r.value)
        biggest = self._check_bulk(over) if over else None
        latest = {r.key: r for r in batch}  # each key once: its last record
        keys = list(latest)
        values = [r.value for r in latest.values()]
        expiries = [r.expires_at_ms for r in latest.values()]
        publish = self._invalidate(INVALIDATED, keys)
        ns = self.ns
        try:
            self._write([ns + k for k in keys] if ns else keys, values, expiries, publish)
        except DRIVER_ERRORS as exc:
            raise self._write_error(exc, biggest) from None

    # -- expire and set_if: native commands, atomic on the server ------------------------------
    def expire(self, key: bytes, expires_at_ms: int | None) -> bool:
        full = self.ns + key
        command = ((b"EVAL", PERSIST, 1, full) if expires_at_ms is None
                   else (b"PEXPIREAT", full, expires_at_ms))  # a time in the past deletes the key
        return self._one_key(key, command)

    def set_if(self, record: Record, *, exists: bool | None = None, keep_ttl: bool = False) -> bool:
        check_conditional(record, keep_ttl)
        if self.codec is not None:
            record = self._encoded([record])[0]
        self._check(record.key, record.value)
        command: tuple[Any, ...] = (b"SET", self.ns + record.key, record.value)
        if exists is not None:
            command += (b"XX",) if exists else (b"NX",)
        if keep_ttl:
            command += (b"KEEPTTL",)
        elif record.expires_at_ms is not None:
            command += (b"PXAT", max(1, record.expires_at_ms))
        return self._one_key(record.key, command)

    def _one_key(self, key: bytes, command: tuple[Any, ...]) -> bool:
        publish = self._invalidate(INVALIDATED, [key])
        try:
            return bool(self._key_command(command, publish))
        except DRIVER_ERRORS as exc:
            raise translate(exc, self.where) from None

    def _check_bulk(self, records: list[Record]) -> tuple[Record, int] | None:
        """Refuse a record over the server's proto-max-bulk-len; return the biggest one over
        limits.FLOOR (None: none), for recognising a refusal when the limit cannot be read."""
        found = limits.biggest(records)
        if found is None:
            return None
        if not self._bulk_asked:
            self._bulk_asked = True
            try:
                replies = self._on_nodes({name: [limits.CONFIG_GET] for name, _ in self._scan_targets()})
                read = [limits.parse_limit(r[0]) for r in replies.values()]
                numbers = [n for n in read if n is not None]
                if numbers and len(numbers) == len(read):  # every node's, or none
                    self._bulk_limit = min(numbers)
            except DRIVER_ERRORS:
                pass  # the write that follows reports the server's state
        if self._bulk_limit is not None and found[1] > self._bulk_limit:
            raise limits.over(self.where, found[0], found[1], self._bulk_limit, before=True)
        return found

    def _write_error(self, exc: BaseException, biggest: tuple[Record, int] | None) -> KvctlError:
        """The kvctl error for a failed write: a LimitError when the server refused an over-long
        string (see limits.refused_for_size), else the driver error translated."""
        if biggest is not None and limits.refused_for_size(exc, self._ping):
            return limits.over(self.where, biggest[0], biggest[1], self._bulk_limit)
        return translate(exc, self.where)

    def _ping(self) -> None:
        for replies in self._on_nodes({name: [(b"PING",)] for name, _ in self._scan_targets()}).values():
            raise_first_error(replies)

    def delete_many(self, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0
        publish = self._invalidate(DELETED, keys)
        ns = self.ns
        try:
            return self._unlink([ns + k for k in keys] if ns else list(keys), publish)
        except DRIVER_ERRORS as exc:
            raise translate(exc, self.where) from None

    def _invalidate(self, kind: str, keys: Sequence[bytes]) -> Commands:
        """Evict ``keys`` here and return the PUBLISH commands that evict them elsewhere."""
        if self.cache is None or self.invalidator is None:
            return []
        self.cache.invalidate(keys)
        return self.invalidator.messages(kind, keys)

    # -- scans -------------------------------------------------------------------------------
    def scan(self, prefix: bytes = b"", *, start_after: bytes | None = None, cursor: str | None = None,
             batch_size: int = 1000, keys_only: bool = False) -> Iterator[Page]:
        if start_after is not None:
            raise UnsupportedError(
                f"the {self.name} backend scans in no key order, so it cannot resume after a key: "
                "resume with the page cursor instead")
        with translating(self.where):
            targets = self._scan_targets()
        yield from self._scan_nodes(targets, prefix, cursor, batch_size, keys_only)

    def _scan_nodes(self, targets: list[tuple[str, Any]], prefix: bytes, cursor: str | None, batch_size: int,
                    keys_only: bool) -> Iterator[Page]:
        """SCAN ``targets`` one after the other (scanning.py); page cursors name the node and its
        cursor."""
        names = [name for name, _ in targets]
        node, redis_cursor = self._parse_cursor(cursor, names)
        while node < len(targets):
            def resume(at: int, node: int = node) -> str | None:
                if at:
                    return self._cursor(names[node], at)
                return self._cursor(names[node + 1], 0) if node + 1 < len(names) else None

            yield from scanning.node_pages(self, targets[node][1], self.ns + prefix, redis_cursor, batch_size,
                                           keys_only, resume)
            node, redis_cursor = node + 1, 0

    def _page(self, full_keys: list[bytes], keys_only: bool) -> list[Record]:
        cut = len(self.ns)
        keys = [k[cut:] for k in full_keys] if cut else full_keys
        if keys_only:
            return [Record(k) for k in keys]
        return [r for r in self._records(keys) if r is not None]

    def _cursor(self, node: str, redis_cursor: int) -> str:
        return f"c:{node}:{redis_cursor}" if self.cluster else f"s:{redis_cursor}"

    def _parse_cursor(self, cursor: str | None, names: list[str]) -> tuple[int, int]:
        if cursor is None:
            return 0, 0
        kind, _, rest = cursor.partition(":")
        node_name, _, number = rest.rpartition(":")
        if kind != ("c" if self.cluster else "s") or not number.isdigit():
            raise UsageError(f"not a scan cursor of {self.where}: {cursor!r}")
        if not self.cluster:
            return 0, int(number)
        if node_name not in names:
            raise UsageError(f"scan cursor {cursor!r} names a node that is no longer a master of "
                             f"{self.where}: start the scan again")
        return names.index(node_name), int(number)

    def count(self, prefix: bytes = b"") -> int:
        return sum(len(p.records) for p in self.scan(prefix, keys_only=True, batch_size=5000))

    # -- change feed (?feed=notify) -----------------------------------------------------------
    def _require_feed(self) -> NotifyFeed:
        if self.feed is None:
            raise UnsupportedError(
                f"the {self.name} backend offers a change feed only with ?feed=notify (keyspace "
                f"notifications) in the URL: {self.where}")
        return self.feed

    def feed_cursor(self) -> str:
        """The position after the newest change; starts the notification subscription."""
        feed = self._require_feed()
        with translating(self.where):
            return feed.cursor()

    def changes(self, cursor: str | None, *, batch_size: int = 1000) -> Iterator[Page]:
        """Keys notified after ``cursor`` with their current value (see feed.py)."""
        feed = self._require_feed()
        with translating(self.where):
            yield from feed.changes(cursor, batch_size)

    # -- administration ----------------------------------------------------------------------
    def clear(self) -> int:
        publish: Commands = []
        if self.cache is not None and self.invalidator is not None:
            self.cache.clear()
            publish = [self.invalidator.clear_message()]
        if self.ns:
            removed = 0
            for page in self.scan(keys_only=True, batch_size=5000):
                removed += self.delete_many([r.key for r in page.records])
            return removed
        with translating(self.where):
            return self._flush(publish)

    def stats(self) -> dict[str, Any]:
        with translating(self.where):
            infos = self._info()
        out: dict[str, Any] = {}
        if self.ns:
            out["keys"] = self.count()
            out["namespace"] = self.ns.decode("utf-8", "backslashreplace")
        else:
            # DBSIZE: may include keys that expired but that Redis has not reclaimed yet.
            out["keys"] = sum(int(i.get("dbsize", 0)) for i in infos)
        out["memory_used"] = sum(int(i.get("used_memory", 0)) for i in infos)
        out["server_version"] = infos[0].get("redis_version", "?") if infos else "?"
        out["nodes"] = len(infos)
        if self.cache is not None and self.invalidator is not None:
            out.update(self.cache.stats())
            out.update(self.invalidator.stats())
        if self.feed is not None:
            out.update(self.feed.stats())
        return out

    # -- Redis types: DUMP / RESTORE for the migrate engine -----------------------------------
    def dump_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        """DUMP payloads of ``keys`` (any type), with their Redis type as ``kind`` and expiry."""
        return self._per_key(keys, self._dump, lambda key, payload, exp, kind: Record(
            key, payload, exp, kind=kind) if isinstance(payload, bytes) else None)

    def json_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        """TypedJSON: each key's value with a typed one as its JSON document
        (kvctl.plugin_kit.typedjson), type, content and expiry read in one atomic step per key."""
        return self._per_key(keys, self._read_typed, self._json_record)

    def _json_record(self, key: bytes, content: Any, exp: int | None, kind: str) -> Record:
        if kind == "string":
            return Record(key, content if self.codec is None else self.codec.decode(key, content), exp)
        if content is None:  # a module's type: no JSON shape, reported as typed
            return Record(key, b"", exp, kind=kind)
        return Record(key, typedjson.document(kind, typed_content(kind, content)), exp)

    def _per_key(self, keys: Sequence[bytes], read: Callable[[list[bytes]], list[tuple[Any, Any, Any]]],
                 make: Callable[[bytes, Any, int | None, str], Record | None]) -> list[Record | None]:
        """``read`` (full keys -> (payload, expiry reply, TYPE reply) each) made into records;
        None for a key that is missing or expired."""
        if not keys:
            return []
        ns = self.ns
        with translating(self.where):
            replies = read([ns + k for k in keys] if ns else list(keys))
        now = now_ms()
        out: list[Record | None] = []
        for key, (payload, exp_reply, kind) in zip(keys, replies, strict=True):
            exp = expiry(exp_reply, now, self.relative_ttl)
            kind_text = kind.decode() if isinstance(kind, bytes) else str(kind)
            if kind_text == "none" or exp_reply == -2 or (exp is not None and exp <= now):
                out.append(None)
            else:
                out.append(make(key, payload, exp, kind_text))
        return out

    def restore_many(self, records: Iterable[Record]) -> None:
        """RESTORE DUMP payloads (REPLACE, ABSTTL); an expired record removes the key."""
        batch = list(records)
        if not batch:
            return
        for record in batch:
            self._check(record.key, record.value)
        biggest = self._check_bulk(batch)
        publish = self._invalidate(INVALIDATED, [r.key for r in batch])
        ns = self.ns
        commands: Commands = [
            (b"RESTORE", ns + r.key, r.expires_at_ms or 0, r.value, b"REPLACE", b"ABSTTL") for r in batch
        ]
        try:
            self._restore(commands + publish)
        except DRIVER_ERRORS as exc:
            raise self._write_error(exc, biggest) from None

    def close(self) -> None:
        if self.feed is not None:
            self.feed.close()
        if self.invalidator is not None:
            self.invalidator.close()

"""``redis+cluster://`` and ``rediss+cluster://``: a real Redis Cluster through redis-py.

redis-py's ``RedisCluster`` finds the nodes from the seeds and keeps the slot map.  Batches go
straight to the nodes: the keys are grouped by the node that owns their slot, every node gets
its slice as one buffer of plain per-key commands (reads and writes, bulk.py) or one Lua script
(deletes, typed reads; keys in ARGV, ``allow-cross-slot-keys``), all nodes are written to
before any reply is read, so the nodes work in parallel.  This is far faster than redis-py's own
cluster pipeline, which spends ~13 µs of Python per key.  A bulk write is routed and packed by
``prepare_many`` (``_pack``, with the slot map already loaded) while the batch before it is
being written; its write (``_send``) only sends each node's buffer and reads the replies.

When a node answers a slice with a redirection (MOVED, ASK, TRYAGAIN, or a script touching a key
that is no longer local), the slot map is refreshed and that slice is redone through redis-py's
cluster pipeline, which follows MOVED and ASK itself (a write of a slice is idempotent: each key
gets its one record again).  A node that cannot be reached triggers one
refresh (a replica may have been promoted) and then a one-line UnavailableError.

A batch is atomic per node only (declared: atomic_batch False); a scan reads every master at
once: slot by slot when it reads values in a cluster that suits it (``_by_slot``: big enough,
mostly under the scan's prefix, the commands allowed; slots.py: its cursor names the slots
already read), else by SCAN (its cursor names every master's SCAN cursor).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError

from kvctl.errors import UnavailableError
from kvctl.store import Capabilities, Page, StoreURL

from . import bulk, options, routing, scanning, scripts, slots, tls
from .base import MAX_STRING, RedisStoreBase
from .commands import Commands, errors_in, raise_first_error, ranges
from .errors import translating
from .store import client_kwargs

# Checks every key is local before unlinking any, so a moved slot never leaves half a delete.
_DELETE = scripts.DELETE.replace(
    "local removed = 0", "for i = 1, n do redis.call('EXISTS', kt[ko + i]) end\nlocal removed = 0")
DELETE = {False: scripts.Script(_DELETE), True: scripts.Script(_DELETE.split("\n", 1)[1])}
_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")
SAMPLE_KEYS = 16  # keys RANDOMKEY draws per master to choose how a scan of values reads (_by_slot)
SLOT_SCAN_MIN_KEYS = 65_536  # keys in the cluster below which a scan of values keeps to SCAN (_by_slot)


def _is_redirect(reply: Any) -> bool:
    # redis-py makes its own classes of MOVED and ASK replies, their text without the word
    if isinstance(reply, AskError | MovedError | TryAgainError | ClusterDownError):
        return True
    text = str(reply)
    return isinstance(reply, ResponseError) and (text.startswith(_REDIRECTS) or "non local key" in text)


class _Packed:
    """A batch routed and packed ahead of its write (``_pack``): the slot map it was routed
    with, the records (store keys, written as ``prefix + key``), which keys each node owns and
    each node's commands.  What only a retry needs (the namespaced keys, each node's key
    indices) is built if one happens."""

    __slots__ = ("_full", "batches", "expiries", "keys", "masks", "prefix", "table", "values")

    def __init__(self, table: routing.SlotMap, prefix: bytes, keys: list[bytes], values: list[bytes],
                 expiries: list[int | None], masks: dict[str, bytes | None],
                 batches: dict[str, bulk.Packed]) -> None:
        self.table, self.prefix, self.keys, self.values, self.expiries = table, prefix, keys, values, expiries
        self.masks, self.batches = masks, batches
        self._full: list[bytes] | None = None

    def full(self) -> list[bytes]:
        """The keys as written (the prefix prepended)."""
        if self._full is None:
            self._full = list(map(self.prefix.__add__, self.keys)) if self.prefix else self.keys
        return self._full

    def todo(self) -> dict[str, list[int]]:
        """The indices of each node's keys."""
        n = len(self.keys)
        return {name: routing.indices(n, mask) for name, mask in self.masks.items()}


class RedisClusterStore(RedisStoreBase):
    name = "redis+cluster"
    description = ("Redis Cluster (redis+cluster://h1:p1[,h2:p2][?seeds=...]): batches grouped by node, "
                   "scans every master; other types as JSON (--types json); ?codec=session; optional "
                   "local cache with pub/sub invalidation.")
    capabilities = Capabilities(
        persistent=True, ttl=True, ordered_scan=False, versions=False, atomic_batch=False,
        multi_node=True, typed_values=True, max_key_size=MAX_STRING, max_value_size=MAX_STRING,
        durability="the servers' (RDB/AOF as configured; none if both are off)", partitioned=True,
        conditional_writes=True,
    )
    cluster = True

    def __init__(self, url: StoreURL, settings: options.RedisSettings) -> None:
        self._rc: RedisCluster | None = None
        self._slots: list[str] = []
        self._map: routing.SlotMap | None = None
        self._pools: dict[str, Any] = {}
        super().__init__(url, settings)

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        return cls(url, options.parse(url, cluster=True))

    # -- topology ----------------------------------------------------------------------------
    @property
    def rc(self) -> RedisCluster:
        """The cluster client, connected on first use (opening a store never blocks)."""
        if self._rc is None:
            kwargs = dict(self.settings.connection)
            kwargs.pop("db", None)
            if kwargs.get("ssl"):
                kwargs["connection_class"] = tls.TLSConnection
            self._rc = RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in self.settings.seeds],
                require_full_coverage=True, **kwargs)
            self._load_slots()
        return self._rc

    def _load_slots(self) -> None:
        assert self._rc is not None
        self._pools = {}
        table = [""] * 16384
        for slot, nodes in self._rc.nodes_manager.slots_cache.items():
            if nodes:
                table[slot] = nodes[0].name
        self._map = routing.SlotMap(table)
        self._slots = table

    def _refresh(self) -> None:
        self.rc.nodes_manager.initialize()
        self._load_slots()

    def _pool(self, name: str) -> Any:
        pool = self._pools.get(name)
        if pool is None:
            node = self.rc.get_node(node_name=name)
            if node is None:
                raise redis.ConnectionError(f"node {name} is no longer part of the cluster")
            pool = self._pools[name] = self.rc.get_redis_connection(node).connection_pool
        return pool

    def _primaries(self) -> list[tuple[str, Any]]:
        names = sorted(n.name for n in self.rc.get_primaries())
        return [(name, self._pool(name)) for name in names]

    def _route(self, keys: list[bytes]) -> dict[str, list[int]]:
        if not self._slots:
            self._load_slots() if self._rc is not None else self.rc
        assert self._map is not None
        groups = routing.by_owner(keys, self._map)
        if "" in groups:
            slot = routing.key_slots([keys[groups[""][0]]])[0]
            raise redis.exceptions.SlotNotCoveredError(f"slot {slot} is not served by any node")
        return groups

    # -- running commands on nodes -----------------------------------------------------------
    def _exec(self, batches: Mapping[str, Commands | bulk.Packed]) -> dict[str, list[Any]]:
        """Write every node's commands, then read every node's replies (of a ``Packed`` whose
        replies are all ``+OK``: none, see bulk.read_oks)."""
        taken: list[tuple[str, Any, Any, int, bool]] = []
        try:
            for name, commands in batches.items():
                pool = self._pool(name)
                conn = pool.get_connection()
                if isinstance(commands, bulk.Packed):
                    taken.append((name, pool, conn, commands.replies, commands.oks))
                    conn.send_packed_command(commands.chunks, check_health=False)
                else:
                    taken.append((name, pool, conn, len(commands), False))
                    scripts.send(conn, commands)
            return {name: (bulk.read_oks if oks else bulk.read_replies)(conn, n)
                    for name, _, conn, n, oks in taken}
        except BaseException:
            for _, _, conn, _, _ in taken:
                conn.disconnect()
            raise
        finally:
            for _, pool, conn, _, _ in taken:
                pool.release(conn)

    def _per_node(
        self,
        keys: list[bytes] | None,
        build: Callable[[list[int], list[bytes]], Commands | bulk.Packed],
        parse: Callable[[list[bytes], list[Any]], list[Any]] | None,
        fallback: Callable[[list[bytes]], list[Any]],
        script_of: dict[bool, scripts.Script] | None = None,
        answer: Callable[[Any], bool] | None = None,
        first: _Packed | None = None,
    ) -> list[Any]:
        """Run ``build(indices, their keys)`` on the node of the keys at those indices of ``keys``; results in
        key order.
        ``parse``: None when the replies answer nothing but their errors (then nothing is returned).
        ``answer``: the error replies that are answers for ``parse``, not failures.
        ``first``: the first attempt of a write already routed and built (``_pack``); ``keys`` is
        then None, and the packed keys are built only if a retry needs them."""
        packed = first
        assert first is None or parse is None

        def all_keys() -> list[bytes]:
            if keys is not None:
                return keys
            assert packed is not None
            return packed.full()

        results: list[Any] = [None] * len(all_keys()) if parse is not None else []
        todo = self._route(all_keys()) if first is None else None
        refreshed = False
        parts: dict[str, list[bytes]] = {}
        batches: Mapping[str, Commands | bulk.Packed]
        for _ in range(4):
            try:
                if first is not None:
                    batches, first = first.batches, None
                else:
                    assert todo is not None
                    # each node's keys, once
                    parts = {name: routing.take(all_keys(), idx) for name, idx in todo.items()}
                    batches = {name: build(idx, parts[name]) for name, idx in todo.items()}
                replies = self._exec(batches)
            except (redis.ConnectionError, redis.TimeoutError):
                if refreshed:
                    raise
                refreshed = True  # a failover may have promoted a replica: look again, once
                self._refresh()
                if todo is None:
                    assert packed is not None
                    todo = packed.todo()
                pending = sorted(i for idx in todo.values() for i in idx)
                ks = all_keys()
                todo = {name: [pending[j] for j in idx]
                        for name, idx in self._route([ks[i] for i in pending]).items()}
                continue
            again: dict[str, list[int]] = {}
            moved: list[int] = []
            for name, reply in replies.items():
                errors = errors_in(reply)
                if errors and answer is not None:
                    errors = [e for e in errors if not answer(e)]
                if not errors and parse is None:  # nothing to answer (writes)
                    continue
                if todo is None:  # the packed attempt: its indices only now that one failed
                    assert packed is not None
                    todo = packed.todo()
                idx = todo[name]
                if not errors:
                    assert parse is not None
                    for i, value in zip(idx, parse(parts[name], reply), strict=True):
                        results[i] = value
                elif any(scripts.is_old_server(e) for e in errors) and not self.relative_ttl:
                    self.relative_ttl = True  # build() picks the pre-7.0 scripts from now on
                    again[name] = idx
                elif script_of is not None and any(scripts.is_noscript(e) for e in errors):
                    script = script_of[self.relative_ttl]
                    scripts.run(self._pool(name), [(b"SCRIPT", b"LOAD", script.text)])
                    again[name] = idx
                elif any(_is_redirect(e) for e in errors):
                    moved.extend(idx)
                else:
                    raise errors[0]
            if moved:
                self._refresh()
                ks = all_keys()
                for i, value in zip(moved, fallback([ks[i] for i in moved]), strict=True):
                    if parse is not None:
                        results[i] = value
            if not again:
                return results
            todo = again
        raise redis.ConnectionError("the cluster kept refusing a script")

    def _pipeline(self, commands: Commands) -> list[Any]:
        """redis-py's cluster pipeline: slow, but it follows MOVED and ASK."""
        pipe = self.rc.pipeline()
        for command in commands:
            name = command[0].decode() if isinstance(command[0], bytes) else command[0]
            pipe.execute_command(name, *command[1:])
        return list(pipe.execute(raise_on_error=False))

    # -- reads -------------------------------------------------------------------------------
    def _fetch(self, keys: list[bytes]) -> list[tuple[Any, Any]]:
        if len(keys) == 1 and not self.relative_ttl:
            # One key: plain GET + PEXPIRETIME on its node, cheaper than a script.  Anything odd
            # (another type, a redirection, a dead connection) takes the general path below.
            key = keys[0]
            name = next(iter(self._route(keys)))
            try:
                value, exp = self._exec({name: [(b"GET", key), (b"PEXPIRETIME", key)]})[name]
            except (redis.ConnectionError, redis.TimeoutError):
                value = exp = None
            if not isinstance(value, ResponseError) and isinstance(exp, int):
                return [(value, exp)]

        def build(idx: list[int], part: list[bytes]) -> bulk.Packed:
            return bulk.reads(part, b"PTTL" if self.relative_ttl else b"PEXPIRETIME")

        def parse(part: list[bytes], replies: list[Any]) -> list[Any]:
            out = bulk.pairs(replies)
            odd = [i for i, (v, _) in enumerate(out) if bulk.is_wrong_type(v)]
            if odd:  # another Redis type: its name, from the same node
                types = self._fetch_slowly([part[i] for i in odd])
                for i, typed in zip(odd, types, strict=True):
                    out[i] = typed
            return out

        return self._per_node(keys, build, parse, self._fetch_slowly, answer=bulk.is_wrong_type)

    def _fetch_slowly(self, keys: list[bytes]) -> list[tuple[Any, Any]]:
        exp = b"PTTL" if self.relative_ttl else b"PEXPIRETIME"
        replies = self._pipeline([c for k in keys for c in ((b"GET", k), (exp, k))])
        out = list(zip(replies[0::2], replies[1::2], strict=True))
        odd = [i for i, (v, _) in enumerate(out) if isinstance(v, ResponseError)]
        if odd:
            types = self._pipeline([(b"TYPE", keys[i]) for i in odd])
            for i, kind in zip(odd, types, strict=True):
                out[i] = ([kind], out[i][1])
        raise_first_error([e for pair in out for e in pair])
        return out

    # -- writes ------------------------------------------------------------------------------
    def _write(self, keys: list[bytes], values: list[bytes], expiries: list[int | None],
               publish: Commands) -> None:
        self._write_routed(keys, values, expiries, None)
        self._publish(publish)

    def _unique_keys_needed(self, expiries: list[int | None]) -> bool:
        # each node gets its keys' SETs in batch order, a retry too: a key's last record lands last
        return False

    def _pack(self, keys: list[bytes], values: list[bytes], expiries: list[int | None],
              publish: Commands, prefix: bytes = b"", size: int | None = None) -> _Packed | None:
        """The batch routed by the slot map already loaded and each node's SETs built (bulk.py);
        None before the map is loaded (preparing reaches no server) or with something to publish.
        ``_send`` routes again if the map was reloaded in between."""
        table = self._map
        if publish or table is None:
            return None
        masks = table.masks(keys, prefix)
        if "" in masks:
            return None  # an unserved slot: _write says which
        timed = expiries.count(None) != len(expiries)
        batches = {name: bulk.writes(routing.pick(keys, mask), routing.pick(values, mask),
                                     routing.pick(expiries, mask) if timed else None, prefix, size)
                   for name, mask in masks.items()}
        return _Packed(table, prefix, keys, values, expiries, masks, batches)

    def _send(self, packed: _Packed) -> None:
        # a refresh since _pack (on this thread) replaces the map: the packing may be stale
        if packed.table is self._map:
            self._write_routed(None, packed.values, packed.expiries, packed)
        else:
            self._write_routed(packed.full(), packed.values, packed.expiries, None)

    def _write_routed(self, keys: list[bytes] | None, values: list[bytes], expiries: list[int | None],
                      first: _Packed | None) -> None:
        """Write the records; ``keys`` None: those of ``first``, packed already."""
        def all_keys() -> list[bytes]:
            if keys is not None:
                return keys
            assert first is not None
            return first.full()

        def build(idx: list[int], part: list[bytes]) -> bulk.Packed:
            return bulk.writes(part, routing.take(values, idx), routing.take(expiries, idx))

        def slowly(part: list[bytes]) -> list[Any]:
            by_key = dict(zip(all_keys(), zip(values, expiries, strict=True), strict=True))
            commands: Commands = []
            for k in part:
                value, exp = by_key[k]
                commands.append((b"SET", k, value) if exp is None else (b"SET", k, value, b"PXAT", exp))
            replies = self._pipeline(commands)
            raise_first_error(replies)
            return replies

        self._per_node(keys, build, None, slowly, first=first)

    def _unlink(self, keys: list[bytes], publish: Commands) -> int:
        unique = list(dict.fromkeys(keys))

        def build(idx: list[int], part: list[bytes]) -> Commands:
            script = DELETE[self.relative_ttl]
            return [script.call(part[a:b], cluster=True) for a, b in ranges(part)]

        def parse(part: list[bytes], replies: list[Any]) -> list[Any]:
            # Per-slice counts; spread as one count on the first key of each slice.
            out: list[int] = [0] * len(part)
            for (a, _), n in zip(ranges(part), replies, strict=True):
                out[a] = int(n)
            return out

        def slowly(part: list[bytes]) -> list[Any]:
            replies = self._pipeline([(b"UNLINK", k) for k in part])
            raise_first_error(replies)
            return [int(n) for n in replies]

        removed = sum(self._per_node(unique, build, parse, slowly, DELETE))
        self._publish(publish)
        return removed

    def _key_command(self, command: tuple[Any, ...], publish: Commands) -> Any:
        # redis-py's cluster client routes by the command's key and follows MOVED and ASK
        reply = self.rc.execute_command(command[0].decode(), *command[1:])
        self._publish(publish)
        return reply

    def _publish(self, publish: Commands) -> None:
        # Cluster pub/sub is broadcast over the cluster bus: any one node will do.
        if publish:
            raise_first_error(scripts.run(self._primaries()[0][1], publish))

    # -- administration ----------------------------------------------------------------------
    def _scan_targets(self) -> list[tuple[str, Any]]:
        return self._primaries()

    def scan(self, prefix: bytes = b"", *, start_after: bytes | None = None, cursor: str | None = None,
             batch_size: int = 1000, keys_only: bool = False) -> Iterator[Page]:
        """Every master read at once: slot by slot when values are read (slots.scan_all: one
        MGET per slot), by SCAN when only keys are (scanning.all_nodes: SCAN's pattern keeps other
        keys on the server).  A cursor is followed the way it was made, those of earlier versions
        too: every master's SCAN at once (``m:``), or one master after another (``c:``)."""
        fresh = cursor is None and start_after is None
        if ((cursor is not None and cursor.startswith(scanning.MULTI_CURSOR))
                or (fresh and (keys_only or not self._by_slot(self.ns + prefix)))):
            with translating(self.where):
                targets = self._primaries()
            names = [name for name, _ in targets]
            positions: dict[str, int | None] = dict.fromkeys(names, 0)
            if cursor is not None:
                positions = scanning.parse_cursor(cursor, names, self.where)
            yield from scanning.all_nodes(self, targets, self.ns + prefix, positions, batch_size, keys_only)
        elif start_after is not None or (cursor is not None and not cursor.startswith(slots.DONE_CURSOR)):
            yield from super().scan(prefix, start_after=start_after, cursor=cursor, batch_size=batch_size,
                                    keys_only=keys_only)
        else:
            yield from slots.scan_all(self, prefix, cursor, batch_size, keys_only)

    def _by_slot(self, prefix: bytes) -> bool:
        """Whether a scan of values under ``prefix`` should read slot by slot.

        Slot by slot walks all 16,384 slots whatever the keys, and brings the name of every key
        of the cluster to the client, where SCAN's pattern keeps those outside ``prefix`` on the
        server: so it is chosen only for a cluster of at least :data:`SLOT_SCAN_MIN_KEYS` keys
        (``DBSIZE``) of which at least half of a sample (``RANDOMKEY`` on every master) is under
        ``prefix``, and where every master lets this client send what the slot reader sends:
        ``CLUSTER GETKEYSINSLOT`` and its probe of a slot (an ACL may refuse either, e.g. one
        that limits the keys).  One round trip per master, all at once; nothing is written."""
        with translating(self.where):
            masters = self._primaries()  # loads the slot map
        served: dict[str, int] = {}
        for slot, name in enumerate(self._slots):
            served.setdefault(name, slot)
        asks: Commands = [(b"DBSIZE",), (b"CLUSTER", b"GETKEYSINSLOT", 0, 0)]
        sample: Commands = [(b"RANDOMKEY",)] * SAMPLE_KEYS if prefix else []
        with translating(self.where):
            replies = self._on_nodes({name: [*asks, *([slots.probe(served[name])] if name in served else []), *sample]
                                      for name, _ in masters})
        answers = [r for rs in replies.values() for r in rs]
        if any(isinstance(r, Exception) for r in answers):
            return False
        if sum(rs[0] for rs in replies.values() if isinstance(rs[0], int)) < SLOT_SCAN_MIN_KEYS:
            return False
        keys = [k for k in answers if isinstance(k, bytes)]
        return 2 * sum(k.startswith(prefix) for k in keys) >= len(keys)

    # -- partitions: one per master, or slot ranges (slots.py), each read by one reader ---------
    def partitions(self, prefix: bytes = b"") -> list[str]:
        with translating(self.where):
            return [name for name, _ in self._primaries()]

    def partitions_for(self, prefix: bytes = b"", *, slices: int) -> list[str]:
        masters = self.partitions(prefix)
        return masters if slices <= len(masters) else slots.plan(self, slices)

    def scan_partition(self, partition: str, prefix: bytes = b"", *, cursor: str | None = None,
                       batch_size: int = 1000, keys_only: bool = False) -> Iterator[Page]:
        if slots.is_slot_part(partition):
            yield from slots.scan(self, partition, prefix, cursor, batch_size, keys_only)
            return
        with translating(self.where):
            targets = [t for t in self._primaries() if t[0] == partition]
        if not targets:  # resharded or failed over since the plan: its cursors mean nothing now
            raise UnavailableError(f"{partition} is no longer a master of {self.where}",
                                   hint="the cluster changed: start the copy again to re-plan it")
        yield from self._scan_nodes(targets, prefix, cursor, batch_size, keys_only)

    def _flush(self, publish: Commands) -> int:
        batches: dict[str, Commands] = {name: [(b"MULTI",), (b"DBSIZE",), (b"FLUSHDB",), (b"EXEC",)]
                                        for name, _ in self._primaries()}
        replies = self._exec(batches)
        for reply in replies.values():
            raise_first_error(reply)
        self._publish(publish)
        return sum(int(r[-1][0]) for r in replies.values())

    def _on_nodes(self, batches: dict[str, Commands]) -> dict[str, list[Any]]:
        return self._exec(batches)

    def _feed_moved(self, nodes: list[str]) -> str | None:
        # Notifications are node-local: a master the subscription does not cover (a failover, a
        # node added and given slots) would change keys unheard.  One CLUSTER SLOTS per barrier
        # tells; the slot map is then reloaded so the next subscription covers the new masters.
        # A node whose view lags may miss a new master for a moment: a later barrier sees it,
        # and the gap then makes the sync engine compare everything, so nothing stays lost.
        ask = nodes[0] if nodes else self._primaries()[0][0]
        reply = self._exec({ask: [(b"CLUSTER", b"SLOTS")]})[ask][0]
        raise_first_error([reply])
        default_host = ask.rsplit(":", 1)[0]
        masters = set()
        for entry in reply:
            host, port = entry[2][0], entry[2][1]
            host = host.decode() if isinstance(host, bytes) else str(host)
            masters.add(f"{host or default_host}:{port}")
        # Only a master the subscription lacks loses changes: one that stopped being a master
        # (a node's view lagging behind, a demoted master) hands its slots to another master.
        unheard = masters - set(nodes)
        if not unheard:
            return None
        self._refresh()
        return (f"the cluster's masters changed ({', '.join(sorted(unheard))} now serve slots; the "
                f"subscription covered {', '.join(sorted(nodes))}): changes there went unheard")

    def _key_on(self, node: str, stem: bytes) -> bytes:
        if not self._slots:
            self._load_slots() if self._rc is not None else self.rc
        for start in range(0, 1_000_000, 4096):  # a chunk's slots in one C-level pass (routing.py)
            keys = [stem + b":%d" % i for i in range(start, start + 4096)]
            for key, slot in zip(keys, routing.key_slots(keys), strict=True):
                if self._slots[slot] == node:
                    return key
        raise redis.exceptions.SlotNotCoveredError(f"node {node} serves no slot")

    def _info(self) -> list[dict[str, Any]]:
        infos = []
        for name, pool in self._primaries():
            client = redis.Redis(connection_pool=pool)
            info: dict[str, Any] = client.info()
            info["dbsize"] = client.dbsize()
            info["node"] = name
            infos.append(info)
        return infos

    def _dump(self, keys: list[bytes]) -> list[tuple[Any, Any, Any]]:
        exp = b"PTTL" if self.relative_ttl else b"PEXPIRETIME"

        def commands(part: list[bytes]) -> Commands:
            return [c for k in part for c in ((b"DUMP", k), (exp, k), (b"TYPE", k))]

        def parse(part: list[bytes], replies: list[Any]) -> list[Any]:
            return list(zip(replies[0::3], replies[1::3], replies[2::3], strict=True))

        def slowly(part: list[bytes]) -> list[Any]:
            replies = self._pipeline(commands(part))
            raise_first_error(replies)
            return parse(part, replies)

        return self._per_node(keys, lambda idx, part: commands(part), parse, slowly)

    def _read_typed(self, keys: list[bytes]) -> list[tuple[Any, Any, Any]]:
        def build(idx: list[int], part: list[bytes]) -> Commands:
            script = scripts.TYPED_SCRIPTS[self.relative_ttl]
            return [script.call(part[a:b], cluster=True) for a, b in ranges(part)]

        def parse(part: list[bytes], replies: list[Any]) -> list[Any]:
            flat = [x for r in replies for x in r]  # type, content, expiry of each key
            return list(zip(flat[1::3], flat[2::3], flat[0::3], strict=True))

        def slowly(part: list[bytes]) -> list[Any]:
            # one key per script, declared in KEYS, so the cluster client routes it to its node
            text = scripts.TYPED_SCRIPTS[self.relative_ttl].text
            replies = self._pipeline([(b"EVAL", text, 1, k) for k in part])
            raise_first_error(replies)
            return [(r[1], r[2], r[0]) for r in replies]

        return self._per_node(keys, build, parse, slowly, scripts.TYPED_SCRIPTS)

    def _restore(self, commands: Commands) -> None:
        restores = [c for c in commands if c[0] == b"RESTORE"]
        by_key = {c[1]: c for c in restores}

        def slowly(part: list[bytes]) -> list[Any]:
            replies = self._pipeline([by_key[k] for k in part])
            raise_first_error(replies)
            return replies

        keys = list(by_key)
        self._per_node(keys, lambda idx, part: [by_key[k] for k in part],
                       lambda part, replies: replies, slowly)
        self._publish([c for c in commands if c[0] == b"PUBLISH"])

    def _subscriber_client(self) -> Any:
        # Any node hears every PUBLISH of the cluster.  This runs on the subscriber's thread, so it
        # reads only the seeds and a snapshot of the slot map, trying the next node on each retry.
        known = [f"{h}:{p}" for h, p in self.settings.seeds] + sorted(set(self._slots) - {""})
        candidates = list(dict.fromkeys(known))
        attempt = self.invalidator.reconnects if self.invalidator is not None else 0
        host, port = candidates[attempt % len(candidates)].rsplit(":", 1)
        kwargs = {k: v for k, v in client_kwargs(self.settings).items() if k != "db"}
        return tls.client({**kwargs, "host": host, "port": int(port), "health_check_interval": 10})

    def close(self) -> None:
        super().close()
        if self._rc is not None:
            self._rc.close()

"""Bulk data movement: kvctl against the tool a user would pick instead, on the same data, in one run.

The data set is made once: N keys ``key:%08d`` with 100-byte values (random letters), as JSON
lines (kvctl's export format), as CSV for ``psql \\copy``, as Redis SET commands for
``redis-cli --pipe``, in a SQLite store, in a snapshot and in an ``mdb_dump`` file.  Then each
row runs kvctl and its peer back to back, every round, into a fresh destination each time, as
separate processes timed from start to exit (start-up included: what a user waits for), with
each process's peak RSS (``wait4``).  The table reports medians over the rounds and the
kvctl / peer ratio of the medians (below 1: kvctl is faster).

Rows (the peers are Debian's ``postgresql-client``, ``pgloader``, ``redis-tools``, ``sqlite3``
and ``lmdb-utils``):

* import JSON lines -> PostgreSQL, new table  |  ``psql \\copy`` of the same rows as CSV into a
  table with the same columns and indexes
* migrate Redis -> PostgreSQL  |  a hand-written script (below: redis-py SCAN + pipelined MGET ->
  asyncpg ``copy_records_to_table``, one transaction; it carries no TTLs and no versions)
* migrate SQLite -> PostgreSQL  |  ``pgloader``
* snapshot restore -> PostgreSQL  |  ``pg_restore`` of ``pg_dump -Fc -t`` of the peer's table
* upsert into a PostgreSQL table that holds the keys (``migrate --on-conflict newer`` from SQLite)  |
  ``psql``: ``\\copy`` into a temporary table, then one ``INSERT ... ON CONFLICT DO UPDATE``
* import JSON lines -> Redis  |  ``redis-cli --pipe`` of the SET commands
* snapshot create of Redis  |  ``redis-cli --rdb`` (the whole server; ``repl-diskless-sync-delay``
  set to 0 for the run and put back after)
* migrate SQLite -> SQLite (new file)  |  ``sqlite3 src.db .dump | sqlite3 new.db``
* snapshot restore -> LMDB  |  ``mdb_load`` of an ``mdb_dump -a`` of the same store
* import, restore and snapshot create with a 3-master Redis Cluster  |  one ``redis-cli --pipe``
  (or ``--rdb``) per master at once, each fed the SET commands of its own slots (split by the
  benchmark beforehand, untimed)
* migrate Redis Cluster -> PostgreSQL  |  the hand-written script for a cluster: each master's
  SCAN, its values by a pipeline of GETs to that master, asyncpg COPY, one transaction

The servers are those of tests/services.sh (``/tmp/kvctl-services/env``); PostgreSQL work goes
into a database of its own, created for the run and dropped after; Redis keys live under a
prefix of the run's own, removed after.

With ``--scale 1000000,10000000`` it measures how kvctl's side of the same rows scales instead,
without the peers: a data set of each size (only the files and sources the selected rows read),
each row run at every size, the sizes interleaved round by round, and per row each size's time,
keys/s and peak RSS, the time ratio of the largest size to the smallest and a verdict against
the bounds (peak RSS under 100 MiB at every size; 10x the keys in no more than ~10x the time),
written to ``bench/results/bulk_scale_RESULTS.md``.

Usage::

    python bench/bulk_bench.py [--keys 1000000] [--rounds 3] [--rows json-pg,restore-pg,...]
                               [--write bench/results/bulk_RESULTS.md]
    python bench/bulk_bench.py --scale 1000000,10000000 [--rounds 1] [--rows ...]
                               [--with-peers] [--write bench/results/bulk_scale_RESULTS.md]

``--with-peers`` (with ``--scale``) times the peers of the Redis rows listed in ``SCALE_PEERS`` at
every size too, on the same source right after kvctl, in a table of its own (the other rows run
kvctl alone): when the peer grows faster than its keys as well, the store's own cost per key grows
with the data set.  Every timed command waits first for the CPUs to be idle (``quiet``): a clear of
ten million keys or a big PostgreSQL load leaves the servers busy for seconds after it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from migrate_bench import fmt_rate, services  # noqa: E402  (bench/ is not a package)

VALUE_BYTES = 100
TIME = "/usr/bin/time"  # GNU time (Debian's ``time``), for each process's peak RSS
PEER_TABLE = "peer_kv"
# Before each timed command: wait for the CPUs to be this idle over a second, for at most this long.
QUIET_IDLE = 0.85
QUIET_LIMIT_S = 60.0


# -- the hand-written peers of "migrate Redis (Cluster) -> PostgreSQL" ---------------------------
Pages = Iterator[tuple[list[bytes], list[Any]]]  # (keys, their values) a page at a time


def _scanned(r: Any, prefix: str, values_of: Callable[[Any, list[bytes]], list[Any]]) -> Pages:
    """One server's keys under ``prefix`` by SCAN, a page at a time, with their values."""
    cursor = 0
    while True:
        cursor, keys = r.scan(cursor, match=prefix + "*", count=5000)
        if keys:
            yield keys, values_of(r, keys)
        if cursor == 0:
            return


async def _copy_to_pg(pages: Pages, pg_url: str, table: str) -> None:
    """A new table, every page of (keys, values) copied into it in one transaction (no TTLs)."""
    import asyncpg

    con = await asyncpg.connect(pg_url)
    try:
        await con.execute(f"CREATE TABLE {table} (key bytea PRIMARY KEY, value bytea NOT NULL)")
        async with con.transaction():
            for keys, values in pages:
                await con.copy_records_to_table(
                    table, records=[(k, v) for k, v in zip(keys, values, strict=True) if v is not None])
    finally:
        await con.close()


def child_redis_to_pg(redis_url: str, prefix: str, pg_url: str, table: str) -> None:
    """redis-py SCAN + MGET -> asyncpg COPY."""
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        asyncio.run(_copy_to_pg(_scanned(r, prefix, lambda r, keys: r.mget(keys)), pg_url, table))
    finally:
        r.close()


def _gets(r: Any, keys: list[bytes]) -> list[Any]:
    pipe = r.pipeline(transaction=False)  # an MGET may not span a cluster's slots
    for key in keys:
        pipe.get(key)
    return list(pipe.execute())


def child_cluster_to_pg(masters: list[list[Any]], prefix: str, pg_url: str, table: str) -> None:
    """The same for a cluster: each master's own SCAN, its keys' values by a pipeline of GETs to it."""
    import redis

    clients = [redis.Redis(host=host, port=port) for host, port in masters]
    try:
        pages = itertools.chain.from_iterable(_scanned(r, prefix, _gets) for r in clients)
        asyncio.run(_copy_to_pg(pages, pg_url, table))
    finally:
        for r in clients:
            r.close()


CHILDREN: dict[str, Callable[..., None]] = {"redis_to_pg": child_redis_to_pg, "cluster_to_pg": child_cluster_to_pg}


# -- timing one process ----------------------------------------------------------------------
@dataclass
class Run:
    seconds: float
    rss_mb: float
    cpu: float = 0.0  # user + system seconds of the process and its children


def _cpu_idle() -> tuple[int, int]:
    """The machine's idle (idle + iowait) and total CPU ticks so far (/proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)


def quiet(idle: float = QUIET_IDLE, limit_s: float | None = None) -> None:
    """Wait until the CPUs were at least ``idle`` idle over the last second (at most ``limit_s``):
    what a step before left running -- a server freeing or purging gigabytes after a clear, a
    PostgreSQL checkpoint or autovacuum after a big load -- would otherwise run beside the next
    timed command and slow it.  Without /proc (not Linux), no wait."""
    limit_s = QUIET_LIMIT_S if limit_s is None else limit_s
    if limit_s <= 0 or not os.path.exists("/proc/stat"):
        return
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        idle0, total0 = _cpu_idle()
        time.sleep(1.0)
        idle1, total1 = _cpu_idle()
        if (idle1 - idle0) >= idle * max(total1 - total0, 1):
            return


def timed(cmd: list[str] | str, *, stdin: Path | None = None) -> Run:
    """Run ``cmd`` (a string: through bash, for pipes) to its exit, once the machine is quiet:
    wall time, and the peak RSS of it and its children as GNU time reports it (a process forked
    from this one would carry this process's RSS as its floor)."""
    quiet()
    args = ["bash", "-c", cmd] if isinstance(cmd, str) else cmd
    with tempfile.TemporaryFile() as err, open(stdin or os.devnull, "rb") as inp, \
            tempfile.NamedTemporaryFile("r") as rss:
        t0 = time.perf_counter()
        done = subprocess.run([TIME, "-f", "%M %U %S", "-o", rss.name, *args], stdin=inp, stdout=subprocess.DEVNULL,
                              stderr=err, check=False)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{cmd!r} exited {done.returncode}: {err.read().decode(errors='replace')[-2000:]}")
        kib, user, system = rss.read().split()[-3:]
        return Run(seconds, int(kib) / 1024, float(user) + float(system))


@dataclass
class Row:
    path: str
    peer: str
    kvctl_durability: str
    peer_durability: str
    kvctl_cmd: str = ""
    peer_cmd: str = ""
    kvctl: list[Run] = field(default_factory=list)
    peers: list[Run] = field(default_factory=list)
    error: str | None = None


@dataclass
class Plan:
    """One row not yet run: each side's (prepare a fresh destination, command), the peer's stdin,
    and what must hold while the row runs (a server setting the peer needs, put back after)."""

    row: Row
    kvctl: tuple[Callable[[], None], list[str] | str]
    peer: tuple[Callable[[], None], list[str] | str]
    stdin: Path | None = None
    around: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext


def median(runs: list[Run]) -> Run:
    return Run(statistics.median(r.seconds for r in runs), max(r.rss_mb for r in runs))


# -- the data set ------------------------------------------------------------------------------
def make_data(d: Path, n: int, prefix: str, *, csv: bool = True, resp: bool = True) -> None:
    """data.jsonl, data.csv (psql) and set.resp (redis-cli --pipe, keys under ``prefix``); the last
    two only when asked for (the same keys and values either way)."""
    rng = random.Random(12)
    letters = (string.ascii_letters + string.digits).encode()
    with contextlib.ExitStack() as files:
        js = files.enter_context(open(d / "data.jsonl", "wb"))
        csv_file = files.enter_context(open(d / "data.csv", "wb")) if csv else None
        resp_file = files.enter_context(open(d / "set.resp", "wb")) if resp else None
        for i in range(n):
            key = b"key:%08d" % i
            value = bytes(rng.choices(letters, k=VALUE_BYTES))
            js.write(b'{"key":"%s","value":"%s","expires_at_ms":null}\n' % (key, value))
            if csv_file:
                csv_file.write(b"\\x%s,\\x%s\n" % (key.hex().encode(), value.hex().encode()))
            if resp_file:
                full = prefix.encode() + key
                resp_file.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                                % (len(full), full, len(value), value))


def settled(r: Any) -> None:
    """Wait for the server's background thread to free what UNLINK handed it: ten million keys
    take it seconds, which would otherwise run beside the next timed command."""
    while int(r.info("memory").get("lazyfree_pending_objects", 0)):
        time.sleep(0.05)


def with_db(url: str, db: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + db, parts.query, ""))


def redis_cli_args(url: str) -> list[str]:
    parts = urlsplit(url)
    db = (parts.path or "/0").strip("/") or "0"
    return ["redis-cli", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379), "-n", db]


# -- Redis Cluster: the peer's input split by node ---------------------------------------------
def cluster_masters(cluster_url: str) -> list[tuple[str, int, list[tuple[int, int]]]]:
    """(host, port, slot ranges) of every master, from CLUSTER SLOTS on the URL's first node."""
    import redis

    first = urlsplit(cluster_url).netloc.split(",")[0]
    host, _, port = first.rpartition(":")
    r = redis.Redis(host=host, port=int(port))
    try:
        masters: dict[tuple[str, int], list[tuple[int, int]]] = {}
        for start, end, node, *_ in r.execute_command("CLUSTER SLOTS"):
            h = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
            masters.setdefault((h, int(node[1])), []).append((int(start), int(end)))
    finally:
        r.close()
    return [(h, p, ranges) for (h, p), ranges in sorted(masters.items())]


def split_by_node(resp: Path, masters: list[tuple[str, int, list[tuple[int, int]]]], out: list[Path]) -> None:
    """Copy the ``SET key value`` commands of ``resp`` (as make_data writes them) into one file per
    master, by the key's hash slot: what a user feeding ``redis-cli --pipe`` a cluster must do."""
    from redis.crc import key_slot

    owner = [0] * 16384
    for i, (_, _, ranges) in enumerate(masters):
        for start, end in ranges:
            owner[start:end + 1] = [i] * (end - start + 1)
    files = [open(p, "wb") for p in out]  # noqa: SIM115 (closed below)
    try:
        with open(resp, "rb") as inp:
            for head in inp:  # *3, $3, SET, $len, key, $len, value: one line each
                command = [head, *(next(inp) for _ in range(6))]
                files[owner[key_slot(command[4][:-2])]].write(b"".join(command))
    finally:
        for f in files:
            f.close()


class Bench:
    def __init__(self, n: int, rounds: int, tmp: Path, tag: str = "") -> None:
        """``tag`` sets this data set's database and key prefix apart from another's of the same run."""
        env = services()
        self.n, self.rounds, self.tmp = n, rounds, tmp
        self.redis = env["KVCTL_TEST_REDIS_URL"]
        self.pg_admin = env["KVCTL_TEST_POSTGRES_URL"]
        self.db = f"kvctl_bulk_{os.getpid()}{tag}"
        self.pg = with_db(self.pg_admin, self.db)
        # the peers' tables live in a database of their own: kvctl refuses to add its table beside
        # tables it does not know (unless told ?create=true), as a user's first run would find
        self.peer_pg = with_db(self.pg_admin, self.db + "_peer")
        self.prefix = f"kvctl-bulk-{os.getpid()}{tag}:"
        self.kvctl = [sys.executable, "-m", "kvctl"]
        self.cluster = env.get("KVCTL_TEST_REDIS_CLUSTER_URL", "")
        self.masters: list[tuple[str, int, list[tuple[int, int]]]] = []

    # -- helpers ------------------------------------------------------------------------------
    def psql(self, sql: str, url: str | None = None) -> None:
        subprocess.run(["psql", url or self.peer_pg, "-qX", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True,
                       capture_output=True)

    def drop_kvctl_table(self, table: str) -> None:
        self.psql(f"DROP TABLE IF EXISTS {table}, {table}__tombs, {table}__changes CASCADE; "
                  f"DROP FUNCTION IF EXISTS {table}__kv_stamp, {table}__kv_capture, {table}__kv_rename, "
                  f"{table}__kv_register CASCADE; "
                  f"DO $$ BEGIN IF to_regclass('kvctl_meta') IS NOT NULL THEN "
                  f"DELETE FROM kvctl_meta WHERE table_name = '{table}'; END IF; END $$", self.pg)

    def peer_table(self) -> None:
        self.psql(f"DROP TABLE IF EXISTS {PEER_TABLE}; CREATE TABLE {PEER_TABLE} (key bytea PRIMARY KEY, "
                  "value bytea NOT NULL, expires_at bigint, version bigint); "
                  f"CREATE INDEX ON {PEER_TABLE} (version); "
                  f"CREATE INDEX ON {PEER_TABLE} (expires_at) WHERE expires_at IS NOT NULL")

    def redis_clear(self, prefix: str) -> None:
        import redis

        r = redis.Redis.from_url(self.redis)
        try:
            batch = []
            for key in r.scan_iter(match=prefix + "*", count=5000):
                batch.append(key)
                if len(batch) >= 5000:
                    r.unlink(*batch)
                    batch = []
            if batch:
                r.unlink(*batch)
            settled(r)
        finally:
            r.close()

    def rm(self, *paths: Path) -> None:
        for p in paths:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
            for extra in (Path(f"{p}-wal"), Path(f"{p}-shm"), Path(f"{p}-journal")):
                if extra.exists():
                    extra.unlink()

    def rm_and_mkdir(self, path: Path) -> None:
        self.rm(path)
        path.mkdir()

    def measure(self, plan: Plan) -> Row:
        row, stdin, (kprep, kcmd), (pprep, pcmd) = plan.row, plan.stdin, plan.kvctl, plan.peer
        row.kvctl_cmd = kcmd if isinstance(kcmd, str) else shlex.join(kcmd)
        row.peer_cmd = pcmd if isinstance(pcmd, str) else shlex.join(pcmd)
        sides = [(kprep, kcmd, row.kvctl, None), (pprep, pcmd, row.peers, stdin)]
        with plan.around():
            try:
                for i in range(self.rounds):
                    # who goes first alternates, so a drift in the machine's load hits both sides alike
                    for prep, cmd, runs, inp in sides if i % 2 == 0 else sides[::-1]:
                        prep()
                        runs.append(timed(cmd, stdin=inp))
                    print(f"  {row.path}: round {i + 1}: kvctl {row.kvctl[-1].seconds:.2f} s, "
                          f"peer {row.peers[-1].seconds:.2f} s", file=sys.stderr)
            except RuntimeError as exc:
                row.error = str(exc).strip().splitlines()[-1][:300]
        return row

    # -- set-up once --------------------------------------------------------------------------
    def compile_kvctl(self) -> None:
        """Byte-compile kvctl and its plugins as ``pip install`` does: an editable checkout run with
        PYTHONDONTWRITEBYTECODE set would otherwise compile every module again at each start."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        code = ("import compileall, os, kvctl, plugins\n"
                "for m in (kvctl, plugins):\n"
                "    compileall.compile_dir(os.path.dirname(m.__file__), quiet=1)")
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env)

    def setup(self, only: list[str], *, peers: bool = True, scale_peers: bool = False) -> None:
        """Make the data set and the sources; without ``peers`` (a scale run), only what kvctl's
        side of the rows in ``only`` reads, and with ``scale_peers`` what their peers read too
        (``SCALE_PEERS``)."""
        t = self.tmp
        needs = SOURCES if peers else set().union(*(KVCTL_READS.get(name, set()) for name in only))
        if scale_peers:
            needs |= set().union(*(SCALE_PEERS.get(name, set()) for name in only))
        self.compile_kvctl()
        print(f"making {self.n:,} keys in {t}", file=sys.stderr)
        make_data(t, self.n, self.prefix, csv=peers, resp=bool(needs & {"redis", "cluster", "set.resp"}))
        self.psql(f"CREATE DATABASE {self.db}", self.pg_admin)
        if peers or "peer_db" in needs:
            self.psql(f"CREATE DATABASE {self.db}_peer", self.pg_admin)
        if peers:  # a scale run loads a Redis source only while its row runs (``source_for``)
            self.load_redis_source()
        src = f"sqlite://{t}/src.db"
        if needs & {"src.db", "src.kvs"}:
            subprocess.run([*self.kvctl, "-u", src, "import", str(t / "data.jsonl")], check=True,
                           capture_output=True)
        if "src.kvs" in needs:
            subprocess.run([*self.kvctl, "snapshot", "create", src, "-o", str(t / "src.kvs")], check=True,
                           capture_output=True)
        if any("cluster" in name for name in only):
            if not self.cluster:
                raise SystemExit("the cluster rows need KVCTL_TEST_REDIS_CLUSTER_URL (tests/services.sh start)")
            self.setup_cluster(split="cluster" in needs, load=peers)
        if not peers:
            return
        subprocess.run([*self.kvctl, "snapshot", "restore", str(t / "src.kvs"), f"lmdb://{t}/lmdb-src"], check=True,
                       capture_output=True)
        subprocess.run(["mdb_dump", "-a", "-f", str(t / "lmdb.dump"), str(t / "lmdb-src")], check=True)
        self.peer_table()
        subprocess.run(["psql", self.peer_pg, "-qX", "-c",
                        f"\\copy {PEER_TABLE} (key, value) FROM '{t}/data.csv' WITH (FORMAT csv)"],
                       check=True, capture_output=True)
        subprocess.run(["pg_dump", "-Fc", "-t", PEER_TABLE, "-f", str(t / "peer.dump"), self.peer_pg], check=True)

    def load_redis_source(self) -> None:
        with open(self.tmp / "set.resp", "rb") as commands:
            subprocess.run([*redis_cli_args(self.redis), "--pipe"], stdin=commands, check=True, capture_output=True)

    @contextlib.contextmanager
    def source_for(self, name: str) -> Iterator[None]:
        """The Redis or cluster source row ``name`` reads, there only while the block runs (a scale
        run: a namespace is read by a SCAN of the whole database, so another size's keys in it would
        weigh on this size's time); the source's prefix and the destinations emptied after the block."""
        reads = KVCTL_READS.get(name, set())
        if "redis" in reads:
            self.load_redis_source()
        if "cluster" in reads:
            subprocess.run(["bash", "-c", self.cluster_pipe()], check=True, capture_output=True)
        try:
            yield
        finally:
            # the source, and what a peer wrote under the source's prefix (redis-cli --pipe)
            self.redis_clear(self.prefix)
            if self.masters:
                self.cluster_clear(self.prefix)
            self.clear_destinations()

    def teardown(self) -> None:
        for db in (self.db, self.db + "_peer"):
            subprocess.run(["psql", self.pg_admin, "-qX", "-c", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"],
                           capture_output=True)
        for prefix in (self.prefix, "b" + self.prefix, "c" + self.prefix):
            self.redis_clear(prefix)
        if self.masters:
            for prefix in (self.prefix, "b" + self.prefix):
                self.cluster_clear(prefix)

    # -- the rows -----------------------------------------------------------------------------
    # One method per row, listed in ROWS below (id -> method): a row is added by adding a method
    # and a line to the table, and --rows picks some of them by id.
    TABLE = "kv_bulk"

    @property
    def PG_SYNC(self) -> str:
        """The durability both PostgreSQL sides get: the server's own settings, read once."""
        if not hasattr(self, "_pg_sync"):
            shown = subprocess.run(["psql", self.pg_admin, "-qXAt", "-c", "SHOW synchronous_commit",
                                    "-c", "SHOW fsync"], check=True, capture_output=True, text=True).stdout.split()
            commit, fsync = [*shown, "?", "?"][:2]
            flush = "a WAL flush per commit" if (commit, fsync) == ("on", "on") else "no WAL flush waited for"
            self._pg_sync = f"the server's synchronous_commit={commit}, fsync={fsync}: {flush}"
        return self._pg_sync
    REDIS_PERSIST = "the server's (tests/services.sh: no RDB/AOF)"

    @property
    def pg_dst(self) -> str:
        return f"{self.pg}?table={self.TABLE}"

    @property
    def redis_src(self) -> str:
        return f"{self.redis}?namespace={self.prefix}"

    @property
    def redis_dst(self) -> str:
        return f"{self.redis}?namespace=b{self.prefix}"

    def new_table(self) -> None:
        self.drop_kvctl_table(self.TABLE)

    def row_json_pg(self) -> Plan:
        t, pg = self.tmp, self.peer_pg
        return Plan(
            Row("import JSON lines -> PostgreSQL (new table)", "psql \\copy (CSV)",
                f"{self.PG_SYNC}; one transaction (a load into the table it creates, down one COPY); change feed on",
                f"{self.PG_SYNC}; one commit"),
            (self.new_table, [*self.kvctl, "-u", self.pg_dst, "import", str(t / "data.jsonl")]),
            (self.peer_table, ["psql", pg, "-qX", "-c",
                               f"\\copy {PEER_TABLE} (key, value) FROM '{t}/data.csv' WITH (FORMAT csv)"]))

    def row_redis_pg(self) -> Plan:
        def peer_drop() -> None:
            self.psql(f"DROP TABLE IF EXISTS {PEER_TABLE}_r")

        return Plan(
            Row("migrate Redis -> PostgreSQL", "redis-py SCAN + MGET -> asyncpg COPY script (no TTLs)",
                f"{self.PG_SYNC}; a commit per batch; TTLs and versions carried", f"{self.PG_SYNC}; one commit"),
            (self.new_table, [*self.kvctl, "migrate", self.redis_src, self.pg_dst]),
            (peer_drop, [sys.executable, __file__, "--child", "redis_to_pg",
                         json.dumps([self.redis, self.prefix, self.peer_pg, f"{PEER_TABLE}_r"])]))

    def row_sqlite_pg(self) -> Plan:
        t = self.tmp
        load = t / "pgloader.load"
        load.write_text(f"LOAD DATABASE FROM sqlite://{t}/src.db INTO {self.peer_pg}\n"
                        "WITH include drop, create tables, create indexes, reset sequences\n"
                        "INCLUDING ONLY TABLE NAMES LIKE 'kv';\n")

        def pgloader_prep() -> None:
            self.psql("DROP TABLE IF EXISTS kv")

        return Plan(
            Row("migrate SQLite -> PostgreSQL", "pgloader", f"{self.PG_SYNC}; a commit per batch",
                f"{self.PG_SYNC}; pgloader's batches"),
            (self.new_table, [*self.kvctl, "migrate", f"sqlite://{t}/src.db", self.pg_dst]),
            (pgloader_prep, ["pgloader", "--quiet", str(load)]))

    def row_restore_pg(self) -> Plan:
        t = self.tmp
        return Plan(
            Row("snapshot restore -> PostgreSQL (new table)", "pg_restore of pg_dump -Fc -t",
                f"{self.PG_SYNC}; one transaction, the file checked as it is read; change feed on",
                f"{self.PG_SYNC}; one COPY"),
            (self.new_table, [*self.kvctl, "snapshot", "restore", str(t / "src.kvs"), self.pg_dst]),
            (lambda: self.psql(f"DROP TABLE IF EXISTS {PEER_TABLE}"),
             ["pg_restore", "-d", self.peer_pg, str(t / "peer.dump")]))

    def row_upsert_pg(self) -> Plan:
        t, pg = self.tmp, self.peer_pg
        copy_csv = f"\\copy {{table}} (key, value) FROM '{t}/data.csv' WITH (FORMAT csv)"
        src = f"sqlite://{t}/src.db"

        def kvctl_prep() -> None:  # the table holds every key, at the source's versions
            self.new_table()
            subprocess.run([*self.kvctl, "migrate", src, self.pg_dst], check=True, capture_output=True)

        def peer_prep() -> None:
            self.peer_table()
            subprocess.run(["psql", pg, "-qX", "-c", copy_csv.format(table=PEER_TABLE)], check=True,
                           capture_output=True)

        upsert = (f"INSERT INTO {PEER_TABLE} SELECT * FROM s ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
                  f"expires_at = EXCLUDED.expires_at, version = EXCLUDED.version "
                  f"WHERE {PEER_TABLE}.version IS DISTINCT FROM EXCLUDED.version")
        return Plan(
            Row("upsert into a PostgreSQL table holding the keys (--on-conflict newer)",
                "psql: \\copy into a temporary table, INSERT ... ON CONFLICT DO UPDATE WHERE the version differs",
                f"{self.PG_SYNC}; a commit per batch; versions compared on the server",
                f"{self.PG_SYNC}; one commit"),
            (kvctl_prep, [*self.kvctl, "migrate", "--on-conflict", "newer", src, self.pg_dst]),
            (peer_prep, ["psql", pg, "-qX", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE TEMP TABLE s (LIKE {PEER_TABLE})",
                         "-c", copy_csv.format(table="s"), "-c", upsert]))

    def row_json_redis(self) -> Plan:
        t = self.tmp
        return Plan(
            Row("import JSON lines -> Redis", "redis-cli --pipe", self.REDIS_PERSIST, self.REDIS_PERSIST),
            (lambda: self.redis_clear("b" + self.prefix),
             [*self.kvctl, "-u", self.redis_dst, "import", str(t / "data.jsonl")]),
            (lambda: self.redis_clear(self.prefix), [*redis_cli_args(self.redis), "--pipe"]),
            stdin=t / "set.resp")

    def row_restore_redis(self) -> Plan:
        t = self.tmp
        return Plan(
            Row("snapshot restore -> Redis", "redis-cli --pipe", self.REDIS_PERSIST, self.REDIS_PERSIST),
            (lambda: self.redis_clear("b" + self.prefix),
             [*self.kvctl, "snapshot", "restore", str(t / "src.kvs"), self.redis_dst]),
            (lambda: self.redis_clear(self.prefix), [*redis_cli_args(self.redis), "--pipe"]),
            stdin=t / "set.resp")

    def row_snapshot_redis(self) -> Plan:
        t = self.tmp
        return Plan(
            Row("snapshot create of Redis", "redis-cli --rdb (the whole server)",
                "the file fsynced on close", "written as received"),
            (lambda: self.rm(t / "redis.kvs"),
             [*self.kvctl, "snapshot", "create", self.redis_src, "-o", str(t / "redis.kvs")]),
            (lambda: self.rm(t / "redis.rdb"), [*redis_cli_args(self.redis), "--rdb", str(t / "redis.rdb")]),
            around=self.redis_no_sync_delay)

    @contextlib.contextmanager
    def redis_no_sync_delay(self) -> Iterator[None]:
        """``repl-diskless-sync-delay`` 0 for ``redis-cli --rdb`` (it waits out the delay otherwise), put back after."""
        old_delay = self.redis_config("repl-diskless-sync-delay")
        self.redis_config("repl-diskless-sync-delay", "0")
        try:
            yield
        finally:
            self.redis_config("repl-diskless-sync-delay", old_delay)

    def row_sqlite_sqlite(self) -> Plan:
        t = self.tmp
        return Plan(
            Row("migrate SQLite -> SQLite (new file)", "sqlite3 src.db .dump \\| sqlite3 new.db",
                "kvctl's sqlite default (WAL, synchronous per its docs)", "sqlite3's default (rollback journal, FULL)"),
            (lambda: self.rm(t / "dst.db"), [*self.kvctl, "migrate", f"sqlite://{t}/src.db", f"sqlite://{t}/dst.db"]),
            (lambda: self.rm(t / "peer.db"), f"sqlite3 {t}/src.db .dump | sqlite3 {t}/peer.db"))

    def row_restore_lmdb(self) -> Plan:
        t = self.tmp
        return Plan(
            Row("snapshot restore -> LMDB", "mdb_load", "fsync per commit (lmdb default); the file verified first",
                "one commit, fsynced"),
            (lambda: self.rm(t / "lmdb-dst"),
             [*self.kvctl, "snapshot", "restore", str(t / "src.kvs"), f"lmdb://{t}/lmdb-dst"]),
            (lambda: self.rm_and_mkdir(t / "lmdb-peer"),
             ["mdb_load", "-f", str(t / "lmdb.dump"), str(t / "lmdb-peer")]))

    # -- Redis Cluster rows -------------------------------------------------------------------
    def setup_cluster(self, *, split: bool = True, load: bool = True) -> None:
        """The masters; with ``split``, the SET commands split by master (the peer's input), and
        with ``load`` too, the source loaded through them."""
        self.masters = cluster_masters(self.cluster)
        self.node_files = [self.tmp / f"set-{port}.resp" for _, port, _ in self.masters]
        if split:
            split_by_node(self.tmp / "set.resp", self.masters, self.node_files)
        if split and load:
            subprocess.run(["bash", "-c", self.cluster_pipe()], check=True, capture_output=True)

    def cluster_pipe(self) -> str:
        """The peer of a bulk load into the cluster: one ``redis-cli --pipe`` per master, at once."""
        runs = [f"redis-cli -h {h} -p {p} --pipe < {shlex.quote(str(f))} > /dev/null & pids+=($!)"
                for (h, p, _), f in zip(self.masters, self.node_files, strict=True)]
        return "pids=(); " + "; ".join(runs) + '; for p in "${pids[@]}"; do wait "$p" || exit 1; done'

    def cluster_rdb(self) -> str:
        """The peer of a snapshot of the cluster: ``redis-cli --rdb`` of every master, at once."""
        runs = [f"redis-cli -h {h} -p {p} --rdb {shlex.quote(str(self.tmp / f'cluster-{p}.rdb'))} > /dev/null & "
                "pids+=($!)" for h, p, _ in self.masters]
        return "pids=(); " + "; ".join(runs) + '; for p in "${pids[@]}"; do wait "$p" || exit 1; done'

    def cluster_clear(self, prefix: str) -> None:
        import redis

        for host, port, _ in self.masters:
            r = redis.Redis(host=host, port=port)
            try:
                batch = []
                for key in r.scan_iter(match=prefix + "*", count=5000):
                    batch.append(key)
                    if len(batch) >= 5000:
                        self._unlink_each(r, batch)
                        batch = []
                self._unlink_each(r, batch)
                settled(r)
            finally:
                r.close()

    @staticmethod
    def _unlink_each(r: Any, keys: list[bytes]) -> None:
        pipe = r.pipeline(transaction=False)  # keys of several slots: one UNLINK each
        for key in keys:
            pipe.unlink(key)
        pipe.execute()

    def cluster_config(self, name: str, values: list[str] | None = None) -> list[str]:
        """``name`` on every master; with ``values``, first set to them (one per master)."""
        import redis

        out = []
        for i, (host, port, _) in enumerate(self.masters):
            r = redis.Redis(host=host, port=port)
            try:
                if values is not None:
                    r.config_set(name, values[i])
                out.append(str(r.config_get(name).get(name, "5")))
            finally:
                r.close()
        return out

    def cluster_urls(self) -> tuple[str, str]:
        sep = "&" if "?" in self.cluster else "?"
        return f"{self.cluster}{sep}namespace={self.prefix}", f"{self.cluster}{sep}namespace=b{self.prefix}"

    CLUSTER_PERSIST = "the servers' (tests/services.sh: no RDB/AOF)"
    CLUSTER_PEER = "redis-cli --pipe, one per master at once"

    def row_json_cluster(self) -> Plan:
        t, (_src, dst) = self.tmp, self.cluster_urls()
        return Plan(
            Row("import JSON lines -> Redis Cluster (3 masters)", self.CLUSTER_PEER, self.CLUSTER_PERSIST,
                self.CLUSTER_PERSIST),
            (lambda: self.cluster_clear("b" + self.prefix), [*self.kvctl, "-u", dst, "import", str(t / "data.jsonl")]),
            (lambda: self.cluster_clear(self.prefix), self.cluster_pipe()))

    def row_restore_cluster(self) -> Plan:
        t, (_src, dst) = self.tmp, self.cluster_urls()
        return Plan(
            Row("snapshot restore -> Redis Cluster (3 masters)", self.CLUSTER_PEER, self.CLUSTER_PERSIST,
                self.CLUSTER_PERSIST),
            (lambda: self.cluster_clear("b" + self.prefix),
             [*self.kvctl, "snapshot", "restore", str(t / "src.kvs"), dst]),
            (lambda: self.cluster_clear(self.prefix), self.cluster_pipe()))

    def row_cluster_pg(self) -> Plan:
        src, _dst = self.cluster_urls()

        def peer_drop() -> None:
            self.psql(f"DROP TABLE IF EXISTS {PEER_TABLE}_c")

        masters = [[host, port] for host, port, _ in self.masters]
        return Plan(
            Row("migrate Redis Cluster (3 masters) -> PostgreSQL",
                "redis-py SCAN + pipelined GET per master -> asyncpg COPY script (no TTLs)",
                f"{self.PG_SYNC}; a commit per batch; TTLs and versions carried", f"{self.PG_SYNC}; one commit"),
            (self.new_table, [*self.kvctl, "migrate", src, self.pg_dst]),
            (peer_drop, [sys.executable, __file__, "--child", "cluster_to_pg",
                         json.dumps([masters, self.prefix, self.peer_pg, f"{PEER_TABLE}_c"])]))

    def row_snapshot_cluster(self) -> Plan:
        t, (src, _dst) = self.tmp, self.cluster_urls()
        return Plan(
            Row("snapshot create of Redis Cluster (3 masters)", "redis-cli --rdb of every master at once "
                "(the whole servers)", "the file fsynced on close", "written as received"),
            (lambda: self.rm(t / "cluster.kvs"),
             [*self.kvctl, "snapshot", "create", src, "-o", str(t / "cluster.kvs")]),
            (lambda: self.rm(*(t / f"cluster-{p}.rdb" for _, p, _ in self.masters)), self.cluster_rdb()),
            around=self.cluster_no_sync_delay)

    @contextlib.contextmanager
    def cluster_no_sync_delay(self) -> Iterator[None]:
        """``redis_no_sync_delay`` on every master."""
        old_delays = self.cluster_config("repl-diskless-sync-delay")
        self.cluster_config("repl-diskless-sync-delay", ["0"] * len(self.masters))
        try:
            yield
        finally:
            self.cluster_config("repl-diskless-sync-delay", old_delays)

    def rows(self, only: list[str]) -> list[Row]:
        out = []
        for name in only:
            self.clear_destinations()
            out.append(self.measure(ROWS[name](self)))
        return out

    def clear_destinations(self) -> None:
        """Empty kvctl's Redis and cluster destinations (the ``b`` namespace) left by an earlier
        row, so a row that reads a Redis source finds the source's keys alone: kvctl's SCAN walks
        no other keys, and ``redis-cli --rdb``, which dumps the whole server, dumps the source
        only."""
        self.redis_clear("b" + self.prefix)
        if self.masters:
            self.cluster_clear("b" + self.prefix)

    def redis_config(self, name: str, value: str | None = None) -> str:
        import redis

        r = redis.Redis.from_url(self.redis)
        try:
            if value is None:
                return str(r.config_get(name).get(name, "5"))
            r.config_set(name, value)
            return value
        finally:
            r.close()


# What kvctl's side of a row reads besides data.jsonl (a scale run makes only these): the keys
# under the run's prefix in Redis or in the cluster, the SQLite store, the snapshot made from it.
KVCTL_READS: dict[str, set[str]] = {
    "redis-pg": {"redis"}, "sqlite-pg": {"src.db"}, "restore-pg": {"src.kvs"}, "upsert-pg": {"src.db"},
    "restore-redis": {"src.kvs"}, "snapshot-redis": {"redis"}, "sqlite-sqlite": {"src.db"},
    "restore-lmdb": {"src.kvs"}, "restore-cluster": {"src.kvs"}, "snapshot-cluster": {"cluster"},
    "cluster-pg": {"cluster"},
}
SOURCES = {"redis", "cluster", "src.db", "src.kvs"}
# The rows whose peer a scale run can time too (``--with-peers``), and what the peer reads or
# writes besides kvctl's side: the SET commands, a PostgreSQL database of its own.
SCALE_PEERS: dict[str, set[str]] = {
    "redis-pg": {"peer_db"}, "json-redis": {"set.resp"}, "restore-redis": {"set.resp"},
    "snapshot-redis": set(), "cluster-pg": {"peer_db"},
}  # with the peers: every source, whatever the rows

# The rows, in the order of the report: id (for --rows) -> the method that plans it.
ROWS: dict[str, Callable[[Bench], Plan]] = {
    "json-pg": Bench.row_json_pg,
    "redis-pg": Bench.row_redis_pg,
    "sqlite-pg": Bench.row_sqlite_pg,
    "restore-pg": Bench.row_restore_pg,
    "upsert-pg": Bench.row_upsert_pg,
    "json-redis": Bench.row_json_redis,
    "restore-redis": Bench.row_restore_redis,
    "snapshot-redis": Bench.row_snapshot_redis,
    "sqlite-sqlite": Bench.row_sqlite_sqlite,
    "restore-lmdb": Bench.row_restore_lmdb,
    "json-cluster": Bench.row_json_cluster,
    "restore-cluster": Bench.row_restore_cluster,
    "snapshot-cluster": Bench.row_snapshot_cluster,
    "cluster-pg": Bench.row_cluster_pg,
}


def report(rows: list[Row], n: int, rounds: int, argv: list[str], load: tuple[float, float]) -> str:
    lines = [
        "# bulk data movement: kvctl against the peer tools", "",
        "```", "python " + shlex.join(["bench/bulk_bench.py", *argv]), "```", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end. {n:,} keys `key:%08d`, values of {VALUE_BYTES} "
        f"bytes; {rounds} rounds, each side a fresh destination every round, wall time from process start to "
        "exit (start-up included); peak RSS of the client process and its children (the servers' memory is "
        "not counted).", "",
        "| path | peer | kvctl (median s) | peer (median s) | kvctl / peer | kvctl keys/s | kvctl peak RSS | "
        "peer peak RSS |", "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.error or not r.kvctl or not r.peers:
            lines.append(f"| {r.path} | {r.peer} | failed: {r.error} | | | | | |")
            continue
        k, p = median(r.kvctl), median(r.peers)
        lines.append(f"| {r.path} | {r.peer} | {k.seconds:.2f} | {p.seconds:.2f} | **{k.seconds / p.seconds:.2f}** | "
                     f"{fmt_rate(n / k.seconds)} | {k.rss_mb:.0f} MiB | {p.rss_mb:.0f} MiB |")
    lines += ["", "## durability and commands", ""]
    for r in rows:
        lines += [f"**{r.path}**", "", f"- kvctl: {r.kvctl_durability}", f"  `{r.kvctl_cmd}`",
                  f"- {r.peer}: {r.peer_durability}", f"  `{r.peer_cmd}`", ""]
    lines += ["## about these figures", "",
              "Every figure is a median of whole-process runs on a shared 2-CPU machine: compare the two columns of "
              "a row (measured back to back, round after round), not rows of different runs. `redis-cli --rdb` "
              "transfers the whole server (every database and every other client's keys), kvctl's snapshot only "
              "its namespace; here each row starts with kvctl's Redis destinations emptied, so the servers "
              "hold the source's keys alone and both sides read the same keys. The data set has no expiries, "
              "so a standalone Redis source database holds no key with a TTL and kvctl's snapshot reads each "
              "page by MGET (any key with a TTL in that database switches it to GET + PEXPIRETIME per key; see "
              "the README). The PostgreSQL peers write a table without kvctl's change feed, tombstones or "
              "versions.", ""]
    return "\n".join(lines)


# -- scale: kvctl alone at several sizes --------------------------------------------------------
RSS_LIMIT_MB = 100  # the bound on peak memory, at every size
LINEAR_SLACK = 1.1  # "10x the keys in no more than ~10x the time": up to 10% over proportional


@dataclass
class ScaleRow:
    """A row's kvctl side at every size of a scale run (key count -> its runs)."""

    path: str
    cmd: str  # as run at the largest size
    runs: dict[int, list[Run]]
    load: float = 0.0  # the highest 1-minute load average seen as one of its runs started
    error: str | None = None
    peer: str = ""  # the peer's name, when it ran too (--with-peers)
    peer_runs: dict[int, list[Run]] = field(default_factory=dict)

    def seconds(self, n: int) -> float:
        return statistics.median(r.seconds for r in self.runs[n])

    def peer_seconds(self, n: int) -> float:
        return statistics.median(r.seconds for r in self.peer_runs[n])

    def cpu(self, n: int) -> float:
        return statistics.median(r.cpu for r in self.runs[n])

    def rss_mb(self, n: int) -> float:
        return max(r.rss_mb for r in self.runs[n])

    def verdict(self) -> str:
        """``met``, or what broke the bounds: the largest size's time over the smallest's beyond
        the key ratio (with ``LINEAR_SLACK``), a peak RSS at or over ``RSS_LIMIT_MB``."""
        small, big = min(self.runs), max(self.runs)
        bound = LINEAR_SLACK * big / small
        broken = [f"time x{self.seconds(big) / self.seconds(small):.1f} > x{bound:.0f}"] \
            if self.seconds(big) / self.seconds(small) > bound else []
        broken += [f"{self.rss_mb(n):.0f} MiB at {size_label(n)}" for n in sorted(self.runs)
                   if self.rss_mb(n) >= RSS_LIMIT_MB]
        return "met" if not broken else "NOT met: " + "; ".join(broken)


def size_label(n: int) -> str:
    """1000000 -> 1M, 200000 -> 200k; other counts as they are."""
    for unit, name in ((1_000_000, "M"), (1_000, "k")):
        if n % unit == 0:
            return f"{n // unit}{name}"
    return str(n)


def scale_rows(benches: list[Bench], only: list[str], rounds: int, *, peers: bool = False) -> list[ScaleRow]:
    """Each row's kvctl side on each bench's data set (one per size), a fresh destination every
    run, the sizes interleaved round by round (smallest first in even rounds, largest in odd ones),
    so a change in the machine's load hits every size alike; in Redis, only the running size's
    source and destination (see ``Bench.source_for``).  With ``peers``, each run of kvctl is
    followed by one of the row's peer on the same source (kvctl first in even rounds)."""
    out = []
    for name in only:
        plans = [(bench, ROWS[name](bench)) for bench in benches]
        last = plans[-1][1].kvctl[1]
        row = ScaleRow(plans[0][1].row.path, last if isinstance(last, str) else shlex.join(last),
                       {bench.n: [] for bench in benches})
        if peers and name in SCALE_PEERS:
            row.peer, row.peer_runs = plans[0][1].row.peer, {bench.n: [] for bench in benches}
        try:
            for i in range(rounds):
                for bench, plan in plans if i % 2 == 0 else plans[::-1]:
                    sides: list[tuple[tuple[Callable[[], None], list[str] | str], list[Run], Path | None]] = [
                        (plan.kvctl, row.runs[bench.n], None)]
                    if row.peer_runs:
                        sides.append((plan.peer, row.peer_runs[bench.n], plan.stdin))
                    with bench.source_for(name), plan.around():
                        for (prepare, cmd), runs, stdin in sides if i % 2 == 0 else sides[::-1]:
                            prepare()
                            row.load = max(row.load, os.getloadavg()[0])
                            runs.append(timed(cmd, stdin=stdin))
                done = (f"{size_label(n)} {runs[-1].seconds:.2f} s {runs[-1].rss_mb:.0f} MiB"
                        for n, runs in row.runs.items())
                print(f"  {row.path}: round {i + 1}: " + ", ".join(done), file=sys.stderr)
        except RuntimeError as exc:
            row.error = str(exc).strip().splitlines()[-1][:300]
        out.append(row)
    return out


def scale_report(rows: list[ScaleRow], sizes: list[int], rounds: int, argv: list[str],
                 load: tuple[float, float]) -> str:
    small, big = sizes[0], sizes[-1]
    labels = [size_label(n) for n in sizes]
    ratio = f"{size_label(big)} / {size_label(small)}"
    lines = [
        "# bulk data movement at scale: kvctl" + (", and the peers of the Redis rows," if any(r.peer_runs for r in rows)
                                                   else " alone") + " at " + " and ".join(f"{n:,}" for n in sizes)
        + " keys", "",
        "```", "python " + shlex.join(["bench/bulk_bench.py", *argv]), "```", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end. Keys `key:%08d`, values of {VALUE_BYTES} bytes, "
        f"a data set of each size; {rounds} round(s), each size a fresh destination every round, the sizes "
        "interleaved round by round. Wall time from process start to exit (start-up included); CPU is the "
        "kvctl process's user + system time (the servers' work is not in it); peak RSS of the kvctl process "
        "and its children (the servers' memory is not counted).", "",
        f"Bounds (issue #12): peak RSS under {RSS_LIMIT_MB} MiB at every size; {size_label(big)} keys in no more "
        f"than ~{big // small}x the time of {size_label(small)} (met up to x{LINEAR_SLACK * big / small:.0f}).", "",
        "| path | " + " | ".join(f"s at {label}" for label in labels) + f" | time {ratio} | CPU {ratio} | "
        + " | ".join(f"keys/s at {label}" for label in labels) + " | "
        + " | ".join(f"peak RSS at {label}" for label in labels) + " | load (max) | verdict |",
        "|---|" + "---:|" * (3 * len(sizes) + 3) + "---|",
    ]
    for r in rows:
        if r.error or any(not runs for runs in r.runs.values()):
            lines.append(f"| {r.path} | failed: {r.error} |" + " |" * (3 * len(sizes) + 3))
            continue
        lines.append(
            f"| {r.path} | " + " | ".join(f"{r.seconds(n):.2f}" for n in sizes)
            + f" | **{r.seconds(big) / r.seconds(small):.2f}** | {r.cpu(big) / max(r.cpu(small), 1e-9):.2f} | "
            + " | ".join(fmt_rate(n / r.seconds(n)) for n in sizes) + " | "
            + " | ".join(f"{r.rss_mb(n):.0f} MiB" for n in sizes) + f" | {r.load:.1f} | {r.verdict()} |")
    lines += peers_at_scale([r for r in rows if r.peer_runs and not r.error
                         and all(r.peer_runs.values()) and all(r.runs.values())], small, big)
    lines += ["", f"## commands (at {big:,} keys)", ""]
    lines += [f"- {r.path}: `{r.cmd}`" for r in rows]
    lines += ["", "## about these figures", "",
              "The machine is shared (2 CPUs, other work running): wall times carry its load, the `load (max)` "
              "column shows the highest 1-minute load average seen as one of the row's runs started. The CPU "
              "ratio is the steadier measure of the client's own linearity; the wall-time ratio also carries "
              "the servers' share. Peak RSS does not depend on the load.", ""]
    return "\n".join(lines)


def peers_at_scale(rows: list[ScaleRow], small: int, big: int) -> list[str]:
    """The peers timed at the same sizes (``--with-peers``): whether the store's own cost per key
    grows with the data set, which no client of it escapes."""
    if not rows:
        return []
    ratio = f"{size_label(big)} / {size_label(small)}"
    lines = ["", "## the peers at the same sizes", "",
             "Each row's peer, run right after (or before) kvctl on the same source, at each size: when the "
             "peer's own time grows faster than its keys, the store's cost per key grows with the data set.", "",
             f"| path | peer | peer s at {size_label(small)} | peer s at {size_label(big)} | peer time {ratio} "
             f"| kvctl time {ratio} | kvctl / peer at {size_label(small)} | kvctl / peer at {size_label(big)} |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r.path} | {r.peer} | {r.peer_seconds(small):.2f} | {r.peer_seconds(big):.2f} "
            f"| **{r.peer_seconds(big) / r.peer_seconds(small):.2f}** | {r.seconds(big) / r.seconds(small):.2f} "
            f"| {r.seconds(small) / r.peer_seconds(small):.2f} | {r.seconds(big) / r.peer_seconds(big):.2f} |")
    return lines


def parse_sizes(text: str) -> list[int]:
    """``1000000,10000000`` -> the distinct key counts, ascending (at least two, each above 0)."""
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of key counts: {text!r}") from None
    if len(sizes) < 2 or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"two key counts or more, each above 0: {text!r}")
    return sizes


def main() -> None:
    global QUIET_LIMIT_S
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, help="the data set's size (default 1000000)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=parse_sizes, metavar="N,N",
                    help="instead of the peers: kvctl alone at each of these key counts (e.g. 1000000,10000000), "
                         "each size's time, keys/s and peak RSS, the time ratio largest/smallest and a verdict "
                         f"against the bounds (RSS under {RSS_LIMIT_MB} MiB; time at most ~proportional)")
    ap.add_argument("--with-peers", action="store_true",
                    help=f"with --scale: time the peers of the rows {', '.join(SCALE_PEERS)} at every size too "
                         "(the other rows run kvctl alone)")
    ap.add_argument("--settle", type=float, default=QUIET_LIMIT_S, metavar="SECONDS",
                    help=f"before each timed command, wait up to this long for the CPUs to be {QUIET_IDLE:.0%} idle "
                         f"(default {QUIET_LIMIT_S:.0f}; 0: no wait, e.g. for a smoke run beside other work)")
    ap.add_argument("--write", type=Path, metavar="FILE",
                    help="the report (default bench/results/bulk_RESULTS.md, with --scale bulk_scale_RESULTS.md)")
    ap.add_argument("--rows", default=",".join(ROWS),
                    help=f"the rows to run, by id, comma-separated (default all: {','.join(ROWS)})")
    ap.add_argument("--only", choices=["redis"], help="only the Redis rows (standalone and cluster)")
    ap.add_argument("--child")
    ap.add_argument("args", nargs="?")
    opts = ap.parse_args()
    if opts.child:
        CHILDREN[opts.child](*json.loads(opts.args))
        return
    only = [r.strip() for r in opts.rows.split(",") if r.strip()]
    if opts.only == "redis":  # the Redis rows, standalone and cluster
        only = [name for name in ROWS if "redis" in name or "cluster" in name]
    unknown = [r for r in only if r not in ROWS]
    if unknown:
        ap.error(f"unknown row {unknown[0]!r} (rows: {', '.join(ROWS)})")
    if opts.scale and opts.keys is not None:
        ap.error("--scale gives the key counts: drop --keys")
    if opts.with_peers and not opts.scale:
        ap.error("--with-peers goes with --scale (a run at one size always times the peers)")
    QUIET_LIMIT_S = opts.settle
    # a kill (timeout, kill PID) still drops the run's database and Redis keys
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if opts.scale:
        text = run_scale(opts.scale, only, opts.rounds, peers=opts.with_peers)
        write = opts.write or HERE / "results" / "bulk_scale_RESULTS.md"
    else:
        text = run_peers(opts.keys or 1_000_000, only, opts.rounds)
        write = opts.write or HERE / "results" / "bulk_RESULTS.md"
    write.write_text(text)
    print(text)


def run_peers(n: int, only: list[str], rounds: int) -> str:
    """kvctl and its peer, row by row, on one data set of ``n`` keys: the report."""
    tmp = Path(tempfile.mkdtemp(prefix="kvctl-bulk-bench-"))
    bench = Bench(n, rounds, tmp)
    start = os.getloadavg()[0]
    try:
        bench.setup(only)
        rows = bench.rows(only)
    finally:
        bench.teardown()
        shutil.rmtree(tmp, ignore_errors=True)
    return report(rows, n, rounds, sys.argv[1:], (start, os.getloadavg()[0]))


def run_scale(sizes: list[int], only: list[str], rounds: int, *, peers: bool = False) -> str:
    """kvctl alone, row by row, on one data set per size (made first, removed at the end): the report."""
    tmp = Path(tempfile.mkdtemp(prefix="kvctl-bulk-scale-"))
    benches = [Bench(n, rounds, tmp / str(n), tag=f"_{n}") for n in sizes]
    start = os.getloadavg()[0]
    try:
        for bench in benches:
            bench.tmp.mkdir()
            bench.setup(only, peers=False, scale_peers=peers)
        rows = scale_rows(benches, only, rounds, peers=peers)
    finally:
        for bench in benches:
            bench.teardown()
        shutil.rmtree(tmp, ignore_errors=True)
    return scale_report(rows, sizes, rounds, sys.argv[1:], (start, os.getloadavg()[0]))


if __name__ == "__main__":
    main()

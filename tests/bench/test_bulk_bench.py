"""bench/bulk_bench.py's scale mode: the sizes it reads, its verdict against the bounds, the
files it makes for the rows asked for, and a real run at two tiny sizes (its report and what it
leaves behind).  No timing is asserted: the figures are the benchmark's, not the tests'."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import service_url

BULK = Path(__file__).resolve().parents[2] / "bench" / "bulk_bench.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bulk_bench", BULK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bulk_bench"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bulk = load()


def test_sizes_are_read_sorted_and_checked() -> None:
    assert bulk.parse_sizes("10000000,1000000,1000000") == [1_000_000, 10_000_000]
    for bad in ("1000000", "0,10", "1M,10M", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            bulk.parse_sizes(bad)
    assert [bulk.size_label(n) for n in (1_000_000, 10_000_000, 200_000, 1234)] == ["1M", "10M", "200k", "1234"]


def scale_row(small: tuple[float, float], big: tuple[float, float]) -> Any:
    run = bulk.Run
    return bulk.ScaleRow("p", "cmd", {1000: [run(small[0], small[1])], 10_000: [run(big[0], big[1])]})


def test_verdict_holds_time_to_the_key_ratio_and_memory_under_100_mib() -> None:
    assert scale_row((1.0, 50), (10.9, 99.9)).verdict() == "met"
    assert scale_row((1.0, 50), (11.5, 60)).verdict() == "NOT met: time x11.5 > x11"
    assert scale_row((1.0, 100), (12.0, 140)).verdict() == "NOT met: time x12.0 > x11; 100 MiB at 1k; 140 MiB at 10k"


def test_a_scale_set_up_makes_only_what_the_rows_read(tmp_path: Path) -> None:
    service_url("KVCTL_TEST_POSTGRES_URL")
    service_url("KVCTL_TEST_REDIS_URL")
    bench = bulk.Bench(50, 1, tmp_path, tag="_t")
    try:
        bench.setup(["json-redis", "restore-lmdb"], peers=False)
        # the snapshot is made from the SQLite store; no CSV, no SET commands, no peer files
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "src.db", "src.kvs"]
        assert len((tmp_path / "data.jsonl").read_bytes().splitlines()) == 50
    finally:
        bench.teardown()


def test_a_scale_run_reports_every_row_at_every_size_and_cleans_up(tmp_path: Path) -> None:
    import redis

    redis_url = service_url("KVCTL_TEST_REDIS_URL")
    service_url("KVCTL_TEST_POSTGRES_URL")
    out = tmp_path / "scale.md"
    done = subprocess.run([sys.executable, str(BULK), "--scale", "3000,300", "--rounds", "2", "--settle", "0",
                           "--rows", "json-redis,snapshot-redis,sqlite-sqlite", "--write", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith("# bulk data movement at scale: kvctl alone at 300 and 3,000 keys")
    argv = f"--scale 3000,300 --rounds 2 --settle 0 --rows json-redis,snapshot-redis,sqlite-sqlite --write {out}"
    assert argv in text
    rows = [line for line in text.splitlines() if line.startswith(("| import", "| snapshot", "| migrate"))]
    assert [row.split(" | ")[0] for row in rows] == ["| import JSON lines -> Redis", "| snapshot create of Redis",
                                                     "| migrate SQLite -> SQLite (new file)"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        # seconds and keys/s at 300 and 3000 keys, the two ratios, the peak RSS at each size, a verdict
        assert all(float(c.strip("*")) > 0 for c in (*cells[1:3], *cells[3:5]))
        assert all(re.fullmatch(r"\d+ MiB", c) for c in cells[7:9]), cells
        assert cells[-1] == "met" or cells[-1].startswith("NOT met: ")
    # the data sets are gone, and so are the keys of the run's Redis prefixes (the snapshot's source
    # was loaded for its runs only)
    namespace = re.search(r"namespace=(bkvctl-bulk-\d+_3000:)", text)
    scratch = re.search(r"import (/tmp/kvctl-bulk-scale-[^/]+)/", text)
    assert namespace and scratch
    assert not Path(scratch[1]).exists()
    r = redis.Redis.from_url(redis_url)
    try:
        assert not list(r.scan_iter(match=namespace[1] + "*", count=1000))
        assert not list(r.scan_iter(match=namespace[1][1:] + "*", count=1000))
    finally:
        r.close()


def test_a_scale_run_with_peers_times_them_at_every_size(tmp_path: Path) -> None:
    import redis

    redis_url = service_url("KVCTL_TEST_REDIS_URL")
    service_url("KVCTL_TEST_POSTGRES_URL")
    out = tmp_path / "scale.md"
    done = subprocess.run([sys.executable, str(BULK), "--scale", "200,2000", "--rounds", "1", "--with-peers",
                           "--settle", "0", "--rows", "json-redis,snapshot-redis,sqlite-sqlite", "--write", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith("# bulk data movement at scale: kvctl, and the peers of the Redis rows, at 200 and")
    peers = text.split("## the peers at the same sizes", 1)[1].split("## commands", 1)[0]
    rows = [line for line in peers.splitlines() if line.startswith(("| import", "| snapshot"))]
    assert [row.split(" | ")[1] for row in rows] == ["redis-cli --pipe", "redis-cli --rdb (the whole server)"]
    for row in rows:
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
        assert all(float(c) > 0 for c in cells[2:]), cells
    # the peer wrote under the source's prefix: gone with the rest
    prefix = re.search(r"namespace=b(kvctl-bulk-\d+_2000:)", text)
    assert prefix
    r = redis.Redis.from_url(redis_url)
    try:
        assert not list(r.scan_iter(match=prefix[1] + "*", count=1000))
    finally:
        r.close()


def test_with_peers_needs_scale() -> None:
    done = subprocess.run([sys.executable, str(BULK), "--with-peers"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--with-peers" in done.stderr.splitlines()[-1]


def test_quiet_returns_once_the_cpus_are_idle_and_gives_up_at_its_limit() -> None:
    import time

    t0 = time.monotonic()
    bulk.quiet(idle=0.0)  # always idle enough: one second's sample
    assert time.monotonic() - t0 < 3
    t0 = time.monotonic()
    bulk.quiet(idle=1.01, limit_s=1.5)  # never idle enough: stops at its limit
    assert 1.5 <= time.monotonic() - t0 < 4


def test_the_cluster_peer_script_copies_every_key_of_every_master(tmp_path: Path) -> None:
    """The hand-written cluster -> PostgreSQL peer is only a fair comparison if it copies it all."""
    import asyncio

    import asyncpg
    import redis

    cluster_url = service_url("KVCTL_TEST_REDIS_CLUSTER_URL")
    pg_url = service_url("KVCTL_TEST_POSTGRES_URL")
    masters = bulk.cluster_masters(cluster_url)
    assert len(masters) >= 2
    prefix, table = f"peer{tmp_path.name[-12:]}:", f"peer_c_{abs(hash(tmp_path)) % 10**8}"
    clients = {(h, p): redis.Redis(host=h, port=p) for h, p, _ in masters}
    want = {b"%skey:%05d" % (prefix.encode(), i): b"v%d" % i for i in range(3000)}
    by_node: dict[tuple[str, int], list[bytes]] = {}
    for key in want:
        slot = redis.crc.key_slot(key)
        node = next((h, p) for h, p, ranges in masters if any(a <= slot <= b for a, b in ranges))
        by_node.setdefault(node, []).append(key)
    assert len(by_node) == len(masters)  # every master holds some of them
    for node, keys in by_node.items():
        pipe = clients[node].pipeline(transaction=False)  # keys of many slots: a SET each
        for key in keys:
            pipe.set(key, want[key])
        pipe.execute()

    async def copied() -> dict[bytes, bytes]:
        con = await asyncpg.connect(pg_url)
        try:
            return {bytes(k): bytes(v) for k, v in await con.fetch(f"SELECT key, value FROM {table}")}
        finally:
            await con.execute(f"DROP TABLE IF EXISTS {table}")
            await con.close()

    try:
        bulk.child_cluster_to_pg([[h, p] for h, p, _ in masters], prefix, pg_url, table)
        assert asyncio.run(copied()) == want
    finally:
        for node, keys in by_node.items():
            pipe = clients[node].pipeline(transaction=False)
            for key in keys:
                pipe.unlink(key)
            pipe.execute()
            clients[node].close()


def test_each_row_starts_with_kvctl_destinations_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row reading a Redis source must find the source's keys alone: an earlier row's destination
    keys would make kvctl's SCAN walk them and ``redis-cli --rdb`` (the whole server) dump them."""
    import redis

    redis_url = service_url("KVCTL_TEST_REDIS_URL")
    bench = bulk.Bench(10, 1, tmp_path, tag="_d")
    r = redis.Redis.from_url(redis_url)
    left: list[int] = []

    def measure(plan: Any) -> Any:
        left.append(sum(1 for _ in r.scan_iter(match="b" + bench.prefix + "*", count=1000)))
        r.set(("b" + bench.prefix + "k").encode(), b"v")  # this row's destination, left behind
        return plan.row

    try:
        r.set(("b" + bench.prefix + "old").encode(), b"v")
        monkeypatch.setattr(bench, "measure", measure)
        bench.rows(["json-redis", "snapshot-redis"])
        assert left == [0, 0]
    finally:
        r.delete(("b" + bench.prefix + "k").encode(), ("b" + bench.prefix + "old").encode())
        r.close()

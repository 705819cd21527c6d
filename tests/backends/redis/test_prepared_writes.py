"""set_many split in two (kvctl.abilities.PreparedWrites) on real Redis servers: a prepared batch
lands exactly as set_many's; preparing reaches no server; and the import and restore that
prepare the next batch while one is written still stop exactly: a write refused mid-way (a
server out of memory) stops the import before the next batch is written, an interrupted
import and restore resume to the same end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvctl_plugins.redis.limits import FLOOR

from kvctl.abilities import PreparedWrites
from kvctl.errors import UnavailableError
from kvctl.registry import open_url
from kvctl.store import Record, Store, now_ms
from kvctl.testing import open_sync
from kvctl.testing.cli import run_kvctl
from tests.backends.redis.support import Server, with_options
from tests.conftest import service_url
from tests.engines.support import subprocess_env

HOUR_MS = 3_600_000
pytestmark = pytest.mark.server


@pytest.fixture(params=["standalone", "cluster"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    base = service_url("KVCTL_TEST_REDIS_URL" if request.param == "standalone" else "KVCTL_TEST_REDIS_CLUSTER_URL")
    with open_sync(with_options(base, namespace=f"prep-{uuid.uuid4().hex[:8]}:")) as opened:
        try:
            yield opened
        finally:
            opened.clear()


def test_a_prepared_batch_lands_as_set_many_s(store: Store) -> None:
    assert isinstance(store, PreparedWrites)
    later = now_ms() + HOUR_MS
    records = [Record(b"k\x00\xff%05d" % i, os.urandom(i % 200), later + i if i % 3 == 0 else None)
               for i in range(2_500)]
    # the last record of a key wins, with or without an expiry
    records += [Record(b"k\x00\xff%05d" % 1, b"last", later), Record(b"k\x00\xff%05d" % 3, b"last")]
    store.write_prepared(store.prepare_many(records))
    latest = {r.key: r for r in records}
    assert store.get_many(list(latest)) == list(latest.values())


@pytest.mark.parametrize("kind", ["standalone", "cluster"])
def test_a_key_written_twice_in_a_batch_keeps_its_last_record(kind: str) -> None:
    """Batches whose records all lack an expiry, all hold one, or mix both, each with keys
    written twice, under a namespace with and without a hash tag (the cluster routes those
    keys by the tag): every key ends with its last record."""
    base = service_url("KVCTL_TEST_REDIS_URL" if kind == "standalone" else "KVCTL_TEST_REDIS_CLUSTER_URL")
    later = now_ms() + HOUR_MS
    tag = uuid.uuid4().hex[:8]
    for namespace in (f"dup-{tag}:", f"{{dup-{tag}}}:"):
        with open_sync(with_options(base, namespace=namespace)) as store:
            assert isinstance(store, PreparedWrites)
            try:
                for expiry in ([None] * 3, [later] * 3, [None, later, None], [later, None, later]):
                    records = [Record(b"d%04d" % i, b"first%d" % i, expiry[0]) for i in range(1_500)]
                    records += [Record(b"d%04d" % i, b"second%d" % i, expiry[1]) for i in range(0, 1_500, 2)]
                    records += [Record(b"d%04d" % i, b"third%d" % i, expiry[2]) for i in range(0, 1_500, 6)]
                    store.write_prepared(store.prepare_many(records))
                    latest = {r.key: r for r in records}
                    got = store.get_many(list(latest))
                    assert [r.value if r else None for r in got] == [r.value for r in latest.values()]
                    assert [r.expires_at_ms is None if r else None for r in got] == [
                        r.expires_at_ms is None for r in latest.values()]
            finally:
                store.clear()


def test_a_batch_with_a_string_over_the_floor_is_left_whole_for_the_write(store: Store) -> None:
    assert isinstance(store, PreparedWrites)
    big = Record(b"big", os.urandom(FLOOR + 10))
    store.write_prepared(store.prepare_many([big, Record(b"small", b"v")]))
    assert store.get_many([b"big", b"small"]) == [big, Record(b"small", b"v")]


def test_preparing_reaches_no_server(servers: list[Server], tmp_path: Path) -> None:
    server = Server(tmp_path)
    servers.append(server)
    with open_url(f"redis://127.0.0.1:{server.port}/0") as opened:
        opened.set(b"warm", b"up")  # a pooled connection, then no server behind it
        server.kill()
        assert isinstance(opened, PreparedWrites)
        prepared = opened.prepare_many([Record(b"k%d" % i, b"v") for i in range(3_000)])
        with pytest.raises(UnavailableError):
            opened.write_prepared(prepared)


def value(i: int) -> str:
    return f"v{i}".ljust(100, "x")


def dump(path: Path, n: int) -> None:
    path.write_text("".join(json.dumps({"key": f"k:{i:06d}", "value": value(i)}) + "\n" for i in range(n)))


def test_an_import_refused_mid_way_stops_before_the_next_batch(servers: list[Server], tmp_path: Path) -> None:
    """The server runs out of memory part-way: the import stops there (exit 74, the store is
    full; no record is set aside as over a limit while the rest goes on), the batch after it is
    never written, and the import resumed from the line it names ends equal."""
    n, batch = 60_000, 1_000
    server = Server(tmp_path, "--maxmemory", "8mb", "--maxmemory-policy", "noeviction")
    servers.append(server)
    url = f"redis://127.0.0.1:{server.port}/0"
    path = tmp_path / "in.jsonl"
    dump(path, n)
    env = subprocess_env(tmp_path)
    out = run_kvctl(env, "-u", url, "import", str(path), "--batch-size", str(batch))
    assert out.returncode == 74, out.stderr
    m = re.search(r"out of memory .* through line ([\d,]+) of .* resume with --from-line (\d+)\)$", out.stderr.strip())
    assert m is not None, out.stderr
    through, resume = int(m.group(1).replace(",", "")), int(m.group(2))
    assert resume == through + 1 and through % batch == 0 and 0 < through < n - batch, out.stderr
    client = server.client()
    held = sorted(int(k[2:]) for k in client.scan_iter(count=10_000))
    seen = f"{len(held)} keys held, through line {through}: {out.stderr.strip()}"
    # every line before the resume line, nothing of the refused batch (one MSET: all or nothing)
    # nor of any after it
    assert held == list(range(through)), seen
    client.config_set("maxmemory", "0")
    out = run_kvctl(env, "-u", url, "import", str(path), "--from-line", str(resume))
    assert out.returncode == 0, out.stderr
    assert client.dbsize() == n
    assert client.mget([b"k:000000", b"k:%06d" % (n - 1)]) == [value(0).encode(), value(n - 1).encode()]


def stop_once_written(env: dict[str, str], server: Server, *args: str) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "kvctl", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    client = server.client()
    deadline = time.monotonic() + 120
    while client.dbsize() == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "finished before the signal: make the input larger"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_an_interrupted_import_and_restore_resume_to_the_same_end(servers: list[Server], tmp_path: Path) -> None:
    n = 300_000
    server = Server(tmp_path)
    servers.append(server)
    url = f"redis://127.0.0.1:{server.port}/0"
    env = subprocess_env(tmp_path)
    path = tmp_path / "in.jsonl"
    dump(path, n)
    rc, err = stop_once_written(env, server, "-u", url, "import", str(path), "--batch-size", "1000")
    assert rc == 130, err
    m = re.fullmatch(r"kvctl: warning: stopped with every record through line ([\d,]+) of .* done, at least "
                     r"([\d,]+) written; resume with --from-line (\d+)\n", err)
    assert m is not None, err
    through, written, resume = (int(g.replace(",", "")) for g in m.groups())
    client = server.client()
    held = client.dbsize()
    # counted batches are in; at most the one batch in flight landed beside them
    assert written == through and through <= held <= through + 1000 and resume == through + 1
    out = run_kvctl(env, "-u", url, "import", str(path), "--from-line", str(resume))
    assert out.returncode == 0, out.stderr
    assert client.dbsize() == n

    snap = tmp_path / "s.kvs"
    assert run_kvctl(env, "snapshot", "create", url, "-o", str(snap)).returncode == 0
    client.flushall()
    rc, err = stop_once_written(env, server, "snapshot", "restore", str(snap), url, "--batch-size", "1000")
    assert rc == 130, err
    m = re.fullmatch(r"kvctl: warning: stopped after at least ([\d,]+) records written; rerun the same restore "
                     r"to finish\n", err)
    assert m is not None, err
    assert 0 < int(m.group(1).replace(",", "")) <= client.dbsize() < n
    assert run_kvctl(env, "snapshot", "restore", str(snap), url).returncode == 0
    assert client.dbsize() == n
    assert client.mget([b"k:000000", b"k:%06d" % (n - 1)]) == [value(0).encode(), value(n - 1).encode()]

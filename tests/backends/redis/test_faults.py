"""Faults against real Redis servers that each test starts and kills itself (never the shared
ones): nothing listening, a wrong password, a server dying mid-command, a cluster node going
away, TLS.  Every failure is one kvctl error naming the redacted URL; no partial write is
reported as success.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis as redispy
from kvctl_plugins.redis.cluster import RedisClusterStore

from kvctl.errors import AuthError, KvctlError, LimitError, UnavailableError
from kvctl.registry import open_url
from kvctl.store import Record
from kvctl.testing.cli import run_kvctl
from tests.backends.redis.support import Server, free_port, wait

# Skipped without redis-server, unless the servers are required (then a missing one is a failure).
_NO_SERVER = shutil.which("redis-server") is None and os.environ.get("KVCTL_SERVICES") != "required"
pytestmark = [pytest.mark.server,
              pytest.mark.skipif(_NO_SERVER, reason="redis-server is not installed (tests/services.sh installs it)")]


def assert_one_line(exc: KvctlError, url: str, secret: str | None = None) -> None:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text
    assert url.split("?")[0].split("@")[-1] in text  # names the store
    if secret:
        assert secret not in text


def test_nothing_listening_is_unavailable() -> None:
    url = f"redis://user:topsecret@127.0.0.1:{free_port()}/0"
    with open_url(url) as store, pytest.raises(UnavailableError) as info:
        store.get(b"k")
    assert_one_line(info.value, url, "topsecret")
    assert "***" in str(info.value)
    assert info.value.exit_code == 69


def test_wrong_password_is_an_auth_error(servers: list[Server], tmp_path: Path) -> None:
    server = Server(tmp_path, "--requirepass", "right-pw", ping=False)
    servers.append(server)
    wait(lambda: server.client(password="right-pw").ping())
    for url in (f"redis://:wrong-pw@127.0.0.1:{server.port}/0",
                f"redis://127.0.0.1:{server.port}/0",  # none given
                f"redis://bob:wrong-pw@127.0.0.1:{server.port}/0"):
        with open_url(url) as store, pytest.raises(AuthError) as info:
            store.set(b"k", b"v")
        assert_one_line(info.value, url, "wrong-pw")
        assert info.value.exit_code == 77
        # none given: said so in a few words, not the server's HELLO text
        assert ("requires a password (NOAUTH)" in str(info.value)) == ("wrong-pw" not in url)
        assert "HELLO" not in str(info.value)
    with open_url(f"redis://:right-pw@127.0.0.1:{server.port}/0") as store:
        store.set(b"k", b"v")
        assert store.get(b"k").value == b"v"


def test_wrong_password_on_a_cluster_is_an_auth_error(servers: list[Server], tmp_path: Path) -> None:
    """redis-py wraps the cluster's WRONGPASS in a RedisClusterException ("cannot be connected"):
    still a wrong password, exit 77, not an unreachable server."""
    nodes = start_cluster(tmp_path, servers)
    url = cluster_url(nodes).replace("redis+cluster://", "redis+cluster://bob:wrong-pw@")
    with open_url(url) as store, pytest.raises(AuthError) as info:
        store.get(b"k")
    assert_one_line(info.value, url, "wrong-pw")
    assert info.value.exit_code == 77


def test_acl_user_and_permissions(servers: list[Server], tmp_path: Path) -> None:
    server = Server(tmp_path)
    servers.append(server)
    admin = server.client()
    admin.acl_setuser("reader", enabled=True, passwords=["+read-pw"], keys=["*"], commands=["+@read", "+@connection"])
    with open_url(f"redis://reader:read-pw@127.0.0.1:{server.port}/0") as store:
        assert store.get(b"k") is None
        with pytest.raises(AuthError, match=r"NOPERM|permission"):
            store.set(b"k", b"v")


def test_server_dying_mid_command_is_reported_not_hidden(servers: list[Server], tmp_path: Path) -> None:
    server = Server(tmp_path)
    servers.append(server)
    url = f"redis://127.0.0.1:{server.port}/0"
    server.client().execute_command("CLIENT", "PAUSE", "5000", "WRITE")  # writes now hang...
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            with open_url(url) as store:
                store.set_many([Record(b"k%d" % i, b"v") for i in range(1000)])
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=write)
    worker.start()
    time.sleep(0.3)
    server.kill()  # ...and the server dies while our batch is in flight
    worker.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], UnavailableError), outcome
    assert_one_line(outcome[0], url)


def test_server_gone_between_calls(servers: list[Server], tmp_path: Path) -> None:
    server = Server(tmp_path)
    servers.append(server)
    url = f"redis://127.0.0.1:{server.port}/0"
    with open_url(url) as store:
        store.set(b"k", b"v")
        server.kill()
        for call in (lambda: store.get(b"k"), lambda: store.set_many([Record(b"a", b"b")]),
                     lambda: store.delete_many([b"k"]), lambda: list(store.scan())):
            with pytest.raises(UnavailableError) as info:
                call()
            assert_one_line(info.value, url)


def start_cluster(tmp_path: Path, servers: list[Server]) -> list[Server]:
    nodes = [Server(tmp_path, "--cluster-enabled", "yes", "--cluster-node-timeout", "1000",
                    "--cluster-config-file", f"nodes-{i}.conf") for i in range(3)]
    servers.extend(nodes)
    addrs = [f"127.0.0.1:{n.port}" for n in nodes]
    subprocess.run(["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
                   check=True, capture_output=True, timeout=60)
    for n in nodes:
        wait(lambda n=n: b"cluster_state:ok" in n.client().execute_command("CLUSTER", "INFO"))
    return nodes


def test_tls_cluster(servers: list[Server], tmp_path: Path) -> None:
    """rediss+cluster:// against a real 3-master cluster that speaks TLS only, its bus included."""
    certs = make_cert(tmp_path)
    cert = str(certs / "cert.pem")
    tls = ["--tls-cert-file", cert, "--tls-key-file", str(certs / "key.pem"), "--tls-ca-cert-file", cert,
           "--tls-auth-clients", "no", "--tls-cluster", "yes"]
    nodes = []
    for i in range(3):
        port = free_port()
        node = Server(tmp_path, "--port", "0", "--tls-port", str(port), *tls, "--cluster-enabled", "yes",
                      "--cluster-node-timeout", "1000", "--cluster-config-file", f"nodes-{i}.conf", ping=False)
        node.port = port
        nodes.append(node)
        servers.append(node)

    def client(node: Server) -> redispy.Redis:
        return redispy.Redis(host="127.0.0.1", port=node.port, ssl=True, ssl_ca_certs=cert, socket_timeout=2)

    for n in nodes:
        wait(lambda n=n: client(n).ping())
    addrs = [f"127.0.0.1:{n.port}" for n in nodes]
    subprocess.run(["redis-cli", "--tls", "--cacert", cert, "--cluster", "create", *addrs,
                    "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
    for n in nodes:
        wait(lambda n=n: b"cluster_state:ok" in client(n).execute_command("CLUSTER", "INFO"))
    base = f"rediss+cluster://{addrs[0]}?seeds={addrs[1]},{addrs[2]}"
    records = [Record(b"tls-%d" % i, b"\x00secure-%d" % i) for i in range(200)]
    with open_url(f"{base}&ssl_ca_certs={cert}") as store:
        store.set_many(records)
        assert [r.value for r in store.get_many([r.key for r in records])] == [r.value for r in records]
        assert store.count() == len(records)
        assert sorted(r.key for p in store.scan() for r in p.records) == sorted(r.key for r in records)
    assert all(client(n).dbsize() > 0 for n in nodes)  # the keys went to every master, over TLS
    with open_url(base) as store, pytest.raises(UnavailableError, match="certificate"):
        store.get(b"tls-0")  # a self-signed certificate is refused without its CA


def cluster_url(nodes: list[Server]) -> str:
    return f"redis+cluster://127.0.0.1:{nodes[0].port}?seeds=127.0.0.1:{nodes[1].port},127.0.0.1:{nodes[2].port}"


def slot_of_t(nodes: list[Server]) -> tuple[int, dict[int, str], Server, Server]:
    """The slot of hash tag ``{t}``, each node's id by port, the node serving it and another."""
    slot = int(nodes[0].client().execute_command("CLUSTER", "KEYSLOT", "{t}"))
    ids = {n.port: n.client().execute_command("CLUSTER", "MYID").decode() for n in nodes}
    owner = next(n for n in nodes if any(
        a <= slot <= b for a, b, *_ in n.client().execute_command("CLUSTER", "SLOTS")
        if int(_[0][1]) == n.port))
    return slot, ids, owner, next(n for n in nodes if n is not owner)


def count_slow_path(store: Any) -> list[int]:
    """The size of each batch the store sends through redis-py's cluster pipeline from now on."""
    slow_path: list[int] = []
    pipeline = store._pipeline

    def counting(commands: list) -> list:
        slow_path.append(len(commands))
        return pipeline(commands)

    store._pipeline = counting
    return slow_path


def test_cluster_moved_ask_and_lost_scripts(servers: list[Server], tmp_path: Path) -> None:
    nodes = start_cluster(tmp_path, servers)
    url = cluster_url(nodes)
    with open_url(url) as store:
        keys = [b"{t}a", b"{t}b", b"{t}c"] + [b"key-%d" % i for i in range(100)]
        store.set_many([Record(k, k) for k in keys])
        assert [r.value for r in store.get_many(keys)] == keys
        # Scripts flushed (a restart, a failover): NOSCRIPT, load, go on.
        for n in nodes:
            n.client().script_flush()
        assert [r.value for r in store.get_many(keys)] == keys

        # ASK: slot of {t} half-way through a migration to another node; the store's map is stale.
        slot, ids, owner, target = slot_of_t(nodes)
        target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner.port])
        owner.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target.port])
        owner.client().execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", "{t}a")
        slow_path = count_slow_path(store)
        assert [r.value for r in store.get_many(keys)] == keys
        assert slow_path  # the node refused the script; redis-py's pipeline followed the ASK
        store.set_many([Record(b"{t}a", b"new-a"), Record(b"{t}b", b"new-b")])
        assert store.get(b"{t}a").value == b"new-a"

        # MOVED: finish the migration; the store still routes {t} to the old owner.
        owner.client().execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", "{t}b", "{t}c")
        for n in nodes:
            n.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target.port])
        assert [r.value for r in store.get_many([b"{t}a", b"{t}b", b"{t}c"])] == [
            b"new-a", b"new-b", b"{t}c"]
        assert store.delete_many([b"{t}a", b"{t}b", b"nope"]) == 2
        assert store.count() == len(keys) - 2


def test_cluster_prepared_batch_after_its_slot_moved(servers: list[Server], tmp_path: Path) -> None:
    """A batch routed and packed by prepare_many, then written after its slot moved (MOVED) or
    after the store reloaded its slot map, lands whole, the last record of a key winning."""
    nodes = start_cluster(tmp_path, servers)
    with open_url(cluster_url(nodes)) as store:
        assert isinstance(store, RedisClusterStore)  # PreparedWrites, through RedisStoreBase
        # before the slot map is loaded nothing is routed: preparing reaches no server
        assert store.prepare_many([Record(b"k", b"v")]).packed is None
        store.set_many([Record(b"warm", b"up")])
        later = int(time.time() * 1000) + 3_600_000
        keys = [b"{t}%d" % i for i in range(50)] + [b"key-%d" % i for i in range(500)]
        records = [Record(k, b"old-" + k, later if i % 2 else None) for i, k in enumerate(keys)]
        records += [Record(b"{t}1", b"last"), Record(b"key-2", b"last", later)]
        prepared = store.prepare_many(records)
        assert prepared.packed is not None  # routed and packed ahead of the write

        slot, ids, _, target = slot_of_t(nodes)
        for n in (target, *(n for n in nodes if n is not target)):
            n.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target.port])
        slow_path = count_slow_path(store)
        store.write_prepared(prepared)  # the old owner answers MOVED for the {t} keys
        # the old owner's slice (the {t} keys among it) redone through redis-py's pipeline
        assert len(slow_path) == 1 and 50 <= slow_path[0] < len(keys)
        latest = {r.key: r for r in records}
        assert store.get_many(list(latest)) == list(latest.values())
        assert target.client().get(b"{t}1") == b"last"

        prepared = store.prepare_many([Record(k, b"new") for k in keys])
        store._refresh()  # a reload between prepare and write: the batch is routed again
        store.write_prepared(prepared)
        assert [r.value for r in store.get_many(keys)] == [b"new"] * len(keys)
        assert store.count() == len(keys) + 1


def test_cluster_node_going_away(servers: list[Server], tmp_path: Path) -> None:
    nodes = start_cluster(tmp_path, servers)
    url = cluster_url(nodes)
    with open_url(url) as store:
        keys = [b"key-%d" % i for i in range(200)]
        store.set_many([Record(k, b"v") for k in keys])
        assert all(r is not None for r in store.get_many(keys))
        nodes[2].kill()
        started = time.monotonic()
        with pytest.raises(UnavailableError) as info:
            store.get_many(keys)
        assert time.monotonic() - started < 30
        assert_one_line(info.value, url)
        with pytest.raises(UnavailableError):
            store.set_many([Record(k, b"w") for k in keys])


def test_lost_scripts_standalone(servers: list[Server], tmp_path: Path) -> None:
    server = Server(tmp_path)
    servers.append(server)
    deadline = int(time.time() * 1000) + 60_000
    with open_url(f"redis://127.0.0.1:{server.port}/0") as store:
        store.set_many([Record(b"a", b"1", deadline), Record(b"b", b"2")])
        server.client().script_flush()
        assert [r.expires_at_ms for r in store.get_many([b"a", b"b"])] == [deadline, None]
        server.client().script_flush()
        store.set_many([Record(b"c", b"3", deadline), Record(b"d", b"4")])  # EVAL inside MULTI: no NOSCRIPT
        assert store.count() == 4


def make_cert(tmp_path: Path) -> Path:
    """A self-signed certificate for 127.0.0.1: ``cert.pem`` and ``key.pem`` in the returned directory."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    certs = tmp_path / "tls"
    certs.mkdir()
    subj = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(certs / "key.pem"), "-out", str(certs / "cert.pem"), *subj],
                   check=True, capture_output=True)
    return certs


def test_tls(servers: list[Server], tmp_path: Path) -> None:
    certs = make_cert(tmp_path)
    port = free_port()
    server = Server(tmp_path, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(certs / "cert.pem"),
                    "--tls-key-file", str(certs / "key.pem"), "--tls-auth-clients", "no", ping=False)
    server.port = port
    servers.append(server)
    base = f"rediss://127.0.0.1:{port}/0"
    wait(lambda: redispy.Redis(host="127.0.0.1", port=port, ssl=True, ssl_cert_reqs="none").ping())
    with open_url(f"{base}?ssl_ca_certs={certs / 'cert.pem'}") as store:
        store.set(b"tls", b"\x00secure")
        assert store.get(b"tls").value == b"\x00secure"
    with open_url(base) as store, pytest.raises(UnavailableError, match="certificate"):
        store.get(b"tls")  # a self-signed certificate is refused without its CA
    plain = f"redis://127.0.0.1:{port}/0"
    with open_url(plain + "?timeout=2s") as store, pytest.raises(UnavailableError):
        store.get(b"tls")


@pytest.mark.parametrize("scheme", ["rediss", "rediss+cluster"])
def test_tls_url_to_a_plain_server_fails_fast(servers: list[Server], tmp_path: Path, scheme: str) -> None:
    """A plain server never answers a TLS handshake; rather than time out after connect_timeout,
    kvctl finds it speaking plain Redis and says the handshake failed."""
    server = Server(tmp_path, "--requirepass", "pw", ping=False)  # a password: the probe needs none
    servers.append(server)
    wait(lambda: server.client(password="pw").ping())
    url = f"{scheme}://:pw@127.0.0.1:{server.port}?connect_timeout=20s"
    started = time.monotonic()
    with open_url(url) as store, pytest.raises(UnavailableError, match="TLS handshake failed") as info:
        store.get(b"k")
    assert time.monotonic() - started < 10  # the probe, not the 20 s connect timeout
    assert_one_line(info.value, url, "pw@")
    assert "plain Redis" in str(info.value) and info.value.exit_code == 69


def test_unix_socket_with_password(servers: list[Server], tmp_path: Path) -> None:
    sock = tmp_path / "r.sock"
    server = Server(tmp_path, "--unixsocket", str(sock), "--requirepass", "pw", ping=False)
    servers.append(server)
    wait(lambda: sock.exists() and server.client(password="pw").ping())
    with open_url(f"unix://:pw@{sock}?db=2") as store:
        store.set(b"u", b"v")
        assert server.client(password="pw", db=2).get(b"u") == b"v"
    with open_url(f"unix://{sock}?password=bad") as store, pytest.raises(AuthError) as info:
        store.get(b"u")
    assert "bad" not in str(info.value).replace("badly", "")



# -- strings over the server's proto-max-bulk-len ------------------------------------------------
@pytest.mark.parametrize("config", ["readable", "renamed"])
def test_value_over_the_servers_bulk_limit_is_a_limit_error(
        servers: list[Server], tmp_path: Path, env: dict[str, str], config: str) -> None:
    """Redis answers an over-long string with "invalid bulk length" and drops the connection
    (the client sees a reset): reported as LimitError (exit 5) naming the key and its size, and
    the limit when CONFIG GET may read it; nothing of the batch is written."""
    extra = ["--rename-command", "CONFIG", ""] if config == "renamed" else []
    server = Server(tmp_path, "--proto-max-bulk-len", "1mb", *extra)
    servers.append(server)
    url = f"redis://127.0.0.1:{server.port}/0"
    big = os.urandom(2_000_000)
    limit = "of 1,048,576 bytes" if config == "readable" else "(it closed the connection)"
    with open_url(url) as store:
        with pytest.raises(LimitError) as info:
            store.set(b"big2m", big)
        assert_one_line(info.value, url)
        assert "key big2m is" in str(info.value) and "2,000,000 bytes" in str(info.value) and limit in str(info.value)
        assert info.value.exit_code == 5
        with pytest.raises(LimitError, match="big2m"):
            store.set_many([Record(b"small", b"v"), Record(b"big2m", big, None)])
        store.set(b"fits", os.urandom(1_000_000))  # under the limit: written, on a working connection
    client = server.client()
    assert client.exists(b"big2m", b"small") == 0 and len(client.get(b"fits") or b"") == 1_000_000

    source = tmp_path / "src.db"
    with open_url(f"sqlite://{source}") as src:
        src.set_many([Record(b"a-small", b"v"), Record(b"z-big", os.urandom(3_000_000))])
    blob = tmp_path / "blob.bin"
    blob.write_bytes(big)
    # a set is refused (5); a copy skips and lists what the destination cannot hold, like every backend (8)
    for args, named, code in ((["-u", url, "set", "cli-big", "--file", str(blob)], "key cli-big is 2,000,000 bytes", 5),
                              (["migrate", f"sqlite://{source}", url, "--no-progress"], "key z-big is 3,000,000 bytes",
                               8)):
        proc = run_kvctl(env, *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == code, proc.stderr
        assert lines[-1].startswith("kvctl: error: ") and "Traceback" not in proc.stderr
        assert named in lines[-1] and limit in lines[-1]
    assert client.get(b"a-small") == b"v"  # the rest of the copy landed


def test_a_user_refused_getkeysinslot_scans_by_scan(servers: list[Server], tmp_path: Path) -> None:
    """An ACL that grants reads but not CLUSTER GETKEYSINSLOT: a snapshot-style scan of values
    keeps to SCAN + MGET and reads every key, instead of failing on the slot-by-slot reader."""
    nodes = start_cluster(tmp_path, servers)
    with open_url(cluster_url(nodes)) as admin:
        admin.set_many(Record(b"k%04d" % i, b"v%d" % i) for i in range(500))
    for n in nodes:
        n.client().execute_command("ACL", "SETUSER", "reader", "on", ">read-pw", "~*", "+@read", "+@connection",
                                   "+cluster|slots", "+cluster|shards", "+cluster|info", "+command", "+info",
                                   "+multi", "+exec")
    url = cluster_url(nodes).replace("redis+cluster://", "redis+cluster://reader:read-pw@")
    with open_url(url) as store:
        assert not store._by_slot(b"")
        pages = list(store.scan(batch_size=100))
        assert pages[0].cursor.startswith("m:")
        assert {r.key: r.value for p in pages for r in p.records} == {b"k%04d" % i: b"v%d" % i for i in range(500)}
    with open_url(cluster_url(nodes)) as admin:
        admin.set_many(Record(b"m%06d" % i, b"v") for i in range(70_000))
        assert admin._by_slot(b"")  # the default user may, in a cluster this size: slot by slot


def test_a_user_limited_to_some_keys_scans_by_scan(servers: list[Server], tmp_path: Path) -> None:
    """An ACL that allows every command on ``app:*`` keys only: CLUSTER GETKEYSINSLOT (which
    names no key) passes, the slot reader's probe of a slot (a key outside ``app:``) does not,
    so a scan of values keeps to SCAN and reads every key, in a cluster big enough for slots."""
    nodes = start_cluster(tmp_path, servers)
    with open_url(cluster_url(nodes) + "&namespace=app:") as admin:
        admin.set_many(Record(b"%06d" % i, b"v") for i in range(70_000))
        assert admin._by_slot(admin.ns)  # the default user: slot by slot
    for n in nodes:
        n.client().execute_command("ACL", "SETUSER", "app", "on", ">app-pw", "~app:*", "+@all")
    url = cluster_url(nodes).replace("redis+cluster://", "redis+cluster://app:app-pw@") + "&namespace=app:"
    with open_url(url) as store:
        assert not store._by_slot(store.ns)
        pages = list(store.scan(batch_size=5000))
        assert pages[0].cursor.startswith("m:")
        assert sum(len(p.records) for p in pages) == 70_000

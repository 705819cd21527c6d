"""PostgreSQL is never altered by a command that only reads, nor a database kvctl did not create.

The catalog of the database (relations, columns, constraints, indexes, triggers, rules, policies,
functions, types, schemas, extensions, publications, settings, kvctl_meta's rows, and a digest of
every table's rows) is snapshotted before and after every read command, run as the CLI runs it,
on a database that holds only another program's tables (Gorkflow's schema) and on a missing kvctl
table; and before and after every write command on the former without ``?create=true``.  A role with
SELECT only reads a kvctl table, change feed included.

Commands refused with an error run through kvctl's ``main`` in this process (the same code as the
command line, without a second's interpreter start per command); the reads that succeed on a kvctl
table run as real processes, so whatever a process does until it exits is inside the check too.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvctl.testing.cli import read_commands as all_read_commands
from kvctl.testing.cli import run_kvctl, write_commands, write_inputs
from tests.backends.postgres.support import catalog, sql
from tests.cli.test_json import in_process
from tests.conftest import service_url

pytestmark = pytest.mark.server

TAG = f"kvctl_ro{os.getpid()}_{uuid.uuid4().hex[:6]}"
GORKFLOW_DDL = (Path(__file__).parent / "gorkflow.sql").read_text()
GORKFLOW_TABLES = ["step_executions", "step_outputs", "workflow_runs", "workflow_state"]

Kvctl = Callable[..., "subprocess.CompletedProcess[str]"]


def on_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


def as_role(url: str, role: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{role}@{rest.partition('@')[2]}"


@pytest.fixture(scope="module")
def pg_url() -> str:
    return service_url("KVCTL_TEST_POSTGRES_URL")


@pytest.fixture
def gorkflow(pg_url: str) -> Iterator[str]:
    """A database holding Gorkflow's tables (and a row in each of two) and nothing of kvctl's."""
    name = f"{TAG}_gork_{uuid.uuid4().hex[:6]}"
    sql(pg_url, f'CREATE DATABASE "{name}"')
    url = on_database(pg_url, name)
    try:
        sql(url, GORKFLOW_DDL)
        yield url
    finally:
        sql(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def kvctl_db(pg_url: str) -> Iterator[str]:
    """A database of kvctl's own: a table written by kvctl (feed on), and a read-only role."""
    name = f"{TAG}_kv"
    sql(pg_url, f'CREATE DATABASE "{name}"', f'CREATE ROLE "{TAG}_ro" LOGIN', f'CREATE ROLE "{TAG}_sel" LOGIN')
    url = on_database(pg_url, name)
    try:
        yield url
    finally:
        sql(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{TAG}_ro"',
            f'DROP ROLE IF EXISTS "{TAG}_sel"')


@pytest.fixture
def kvctl(env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Kvctl:
    """``kvctl(*args)``: the command run by kvctl's ``main`` in this process, in ``env``."""
    run = in_process(env, capsys, monkeypatch)

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        code, out, err = run(*args)
        return subprocess.CompletedProcess(list(args), code, out, err)

    return call


def read_commands(url: str, tmp: Path, kvctl: Kvctl) -> list[list[str]]:
    """Every command that only reads ``url`` (kvctl.testing's list), beside an existing SQLite store."""
    other = f"sqlite://{tmp / 'other.db'}"
    assert kvctl("-u", other, "set", "other", "1").returncode == 0
    return all_read_commands(url, other, tmp)


def test_reads_of_a_database_of_another_program_change_nothing(gorkflow: str, env: dict[str, str],
                                                                 tmp_path: Path, kvctl: Kvctl) -> None:
    before = catalog(gorkflow)
    assert any(r[0] == "rel" and r[2] == "workflow_state" for r in before)
    # ?create=true is a write's opt-in: a read with it is refused the same
    for url in (gorkflow, f"{gorkflow}?table=workflow_state", f"{gorkflow}?create=true"):
        for args in read_commands(url, tmp_path, kvctl)[:None if url == gorkflow else 3]:
            proc = kvctl(*args)
            assert proc.returncode == 2, (args, proc.stderr)
            assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("kvctl: error: "), proc.stderr
            assert "holds 4 tables, none of kvctl's" in proc.stderr
            assert "each URL reads that table" in proc.stderr and "table=*" in proc.stderr
            assert all(table in proc.stderr for table in GORKFLOW_TABLES)
            assert f"?table={GORKFLOW_TABLES[0]}" in proc.stderr
            assert "?table=workflow_state&key=run_id,key&value=*)" in proc.stderr  # a URL that reads it
            assert catalog(gorkflow) == before, args


def test_a_write_on_a_database_of_another_program_needs_create(gorkflow: str, env: dict[str, str],
                                                                tmp_path: Path, kvctl: Kvctl) -> None:
    before = catalog(gorkflow)
    source = f"sqlite://{tmp_path / 'src.db'}"
    assert run_kvctl(env, "-u", source, "set", "k", "v").returncode == 0
    write_inputs(env, source, tmp_path)
    for args in write_commands(gorkflow, source, tmp_path):
        proc = kvctl(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "holds 4 tables, none of kvctl's" in proc.stderr, proc.stderr
        assert "?create=true" in proc.stderr and f"?table={GORKFLOW_TABLES[0]}" in proc.stderr
        assert catalog(gorkflow) == before, args
    # With the opt-in, kvctl's table goes beside the application's, which keep their rows.
    url = f"{gorkflow}?create=true"
    assert run_kvctl(env, "-u", url, "set", "k", "v").returncode == 0
    assert run_kvctl(env, "-u", gorkflow, "get", "k").stdout == "v"
    assert sql(gorkflow, "SELECT count(*) FROM workflow_state")[0][0] == 1
    # kvctl is now present there: another kvctl table is created on a write as usual
    assert run_kvctl(env, "-u", f"{gorkflow}?table=more", "set", "k", "v").returncode == 0
    assert {r[2] for r in before if r[0] == "rel"} < {r[2] for r in catalog(gorkflow) if r[0] == "rel"}


def test_reads_of_a_missing_table_change_nothing(kvctl_db: str, env: dict[str, str], tmp_path: Path,
                                                  kvctl: Kvctl) -> None:
    assert run_kvctl(env, "-u", f"{kvctl_db}?table=present", "set", "k", "v").returncode == 0  # kvctl is there
    for url in (f"{kvctl_db}?table=missing", f"{kvctl_db}?table=missing&schema=nowhere"):
        before = catalog(kvctl_db)
        for args in read_commands(url, tmp_path, kvctl):
            proc = kvctl(*args)
            assert proc.returncode == 2, (args, proc.stderr)
            assert proc.stderr.count("\n") == 1 and "no table" in proc.stderr and "missing" in proc.stderr
            assert "nothing was created" in proc.stderr
            assert catalog(kvctl_db) == before, args


def test_reads_of_an_empty_database_create_nothing_and_a_write_does(pg_url: str, env: dict[str, str],
                                                                      tmp_path: Path, kvctl: Kvctl) -> None:
    name = f"{TAG}_empty"
    sql(pg_url, f'CREATE DATABASE "{name}"')
    url = on_database(pg_url, name)
    try:
        before = catalog(url)
        for args in read_commands(url, tmp_path, kvctl):
            proc = kvctl(*args)
            assert proc.returncode == 2 and "no table kv" in proc.stderr, (args, proc.stderr)
        assert catalog(url) == before
        assert run_kvctl(env, "-u", url, "set", "k", "v").returncode == 0
        assert run_kvctl(env, "-u", url, "count").stdout == "1\n"
    finally:
        sql(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_reads_of_a_kvctl_table_change_nothing_and_need_select_only(kvctl_db: str, env: dict[str, str],
                                                                     tmp_path: Path, kvctl: Kvctl) -> None:
    url = f"{kvctl_db}?table=fid"
    for key in ("a", "b", "c"):
        assert kvctl("-u", url, "set", key, f"value of {key}").returncode == 0
    assert kvctl("-u", url, "del", "c").returncode == 0  # a tombstone and a feed entry
    sql(kvctl_db, f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{TAG}_ro"',
        f'GRANT SELECT ON fid TO "{TAG}_sel"')
    before = catalog(kvctl_db)
    for args in read_commands(url, tmp_path, kvctl):
        assert kvctl(*args).returncode in (0, 1), args  # 1: get/ttl of a missing key, diff differs
        assert catalog(kvctl_db) == before, args
    # A role with SELECT on kvctl's tables (not on the feed's sequence) reads everything, and the
    # change feed: the snapshot records a cursor an incremental snapshot then starts from.  These
    # reads run as real processes, checked against the catalog too.
    ro = as_role(url, f"{TAG}_ro")
    full = tmp_path / "ro-full.kvs"
    proc = run_kvctl(env, "snapshot", "create", ro, "-o", str(full))
    assert proc.returncode == 0, proc.stderr
    assert catalog(kvctl_db) == before
    assert kvctl("-u", url, "set", "d", "later").returncode == 0
    before = catalog(kvctl_db)
    proc = run_kvctl(env, "snapshot", "create", ro, "--since", str(full), "-o", str(tmp_path / "ro-inc.kvs"))
    assert proc.returncode == 0, proc.stderr
    restored = f"sqlite://{tmp_path / 'restored.db'}"
    proc = kvctl("snapshot", "restore", str(full), str(tmp_path / "ro-inc.kvs"), restored)
    assert proc.returncode == 0, proc.stderr
    assert kvctl("-u", restored, "scan", "--keys-only").stdout.split() == ["a", "b", "d"]
    for args in (["get", "a"], ["count"], ["scan"], ["stats"]):
        proc = run_kvctl(env, "-u", ro, *args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert args != ["get", "a"] or proc.stdout == "value of a"
    # SELECT on the table alone (not kvctl_meta): its columns show it is kvctl's, and it reads
    sel = as_role(url, f"{TAG}_sel")
    assert run_kvctl(env, "-u", sel, "get", "b").stdout == "value of b"
    assert run_kvctl(env, "-u", sel, "count").stdout == "3\n"
    assert catalog(kvctl_db) == before


def test_a_version_1_table_is_read_without_an_upgrade(kvctl_db: str, env: dict[str, str]) -> None:
    sql(kvctl_db, 'CREATE SCHEMA v1',
        "CREATE TABLE v1.kvctl_meta (table_name text PRIMARY KEY, schema_version integer NOT NULL, "
        "created_at timestamptz NOT NULL DEFAULT now())",
        "CREATE TABLE v1.kv (key bytea PRIMARY KEY, value bytea NOT NULL, expires_at bigint, version bigint NOT NULL)",
        "INSERT INTO v1.kv VALUES ('k'::bytea, 'old'::bytea, NULL, 7)",
        "INSERT INTO v1.kvctl_meta (table_name, schema_version) VALUES ('v1.kv', 1)")
    url = f"{kvctl_db}?schema=v1"
    before = catalog(kvctl_db)
    assert run_kvctl(env, "-u", url, "get", "k").stdout == "old"
    assert run_kvctl(env, "-u", url, "count").stdout == "1\n"
    assert run_kvctl(env, "-u", url, "stats").returncode == 0
    assert catalog(kvctl_db) == before


def test_a_store_opened_to_read_refuses_writes_before_sending_them(kvctl_db: str, env: dict[str, str]) -> None:
    from kvctl.adapt import to_sync
    from kvctl.errors import UsageError
    from kvctl.registry import open_url

    url = f"{kvctl_db}?table=guarded"
    assert run_kvctl(env, "-u", url, "set", "k", "v").returncode == 0
    before = catalog(kvctl_db)
    store = to_sync(open_url(url, access="read"))
    try:
        assert store.get(b"k").value == b"v"  # type: ignore[union-attr]
        for write in (lambda: store.set(b"k", b"w"), lambda: store.delete(b"k"), store.clear):
            with pytest.raises(UsageError, match="opened to read only"):
                write()
    finally:
        store.close()
    assert catalog(kvctl_db) == before
    assert run_kvctl(env, "-u", url, "get", "k").stdout == "v"


def test_a_database_whose_tables_live_outside_public_is_refused(pg_url: str, env: dict[str, str],
                                                                 tmp_path: Path, kvctl: Kvctl) -> None:
    """An application that keeps its tables in a schema of its own: the plain URL (schema public,
    empty) is refused too, naming each table with a URL that has its schema."""
    name = f"{TAG}_app_{uuid.uuid4().hex[:6]}"
    sql(pg_url, f'CREATE DATABASE "{name}"')
    url = on_database(pg_url, name)
    try:
        sql(url, "CREATE SCHEMA app; SET search_path TO app;\n" + GORKFLOW_DDL)
        before = catalog(url)
        source = f"sqlite://{tmp_path / 'src.db'}"
        assert run_kvctl(env, "-u", source, "set", "k", "v").returncode == 0
        write_inputs(env, source, tmp_path)
        for args in [*read_commands(url, tmp_path, kvctl), *write_commands(url, source, tmp_path)]:
            proc = kvctl(*args)
            assert proc.returncode == 2, (args, proc.stderr)
            assert proc.stderr.count("\n") == 1 and f"database {name} holds 4 tables, none of kvctl's" in proc.stderr
            assert all(f"app.{t} ({url}?schema=app&table={t})" in proc.stderr for t in GORKFLOW_TABLES), proc.stderr
            assert "write with ?create=true" in proc.stderr, args
            assert catalog(url) == before, args
        assert run_kvctl(env, "-u", f"{url}?create=true", "set", "k", "v").returncode == 0
        assert run_kvctl(env, "-u", url, "get", "k").stdout == "v"
        assert sql(url, "SELECT count(*) FROM app.workflow_state")[0][0] == 1
    finally:
        sql(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

"""A libSQL server's database that holds other programs' tables and none of kvctl's: every read
and every write without ``?create=true`` is refused, listing the tables with a URL for each, and
the database (its schema, pragmas and rows, read over Hrana as another program would) is left
as it was.  The server is one of this test's own, so no other test's kvctl tables are in it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvctl.testing.cli import read_commands, run_kvctl, write_commands, write_inputs
from tests.backends.libsql.sqld import hrana, private_sqld
from tests.backends.sqlite.test_reads import GORKFLOW_DDL, GORKFLOW_TABLES

pytestmark = pytest.mark.server


@pytest.fixture
def app_server(tmp_path: Path) -> Iterator[int]:
    """A sqld whose only database holds Gorkflow's SQLite tables (and a row of workflow_state)."""
    with private_sqld(tmp_path) as port:
        hrana(port, *(stmt for stmt in GORKFLOW_DDL.split(";") if stmt.strip()))
        yield port


def database(port: int) -> list[list[list[Any]]]:
    """The schema, the pragmas kvctl could switch, and every row of the application's tables."""
    return hrana(port, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name",
                 "PRAGMA user_version", "PRAGMA journal_mode",
                 *(f"SELECT * FROM {table} ORDER BY rowid" for table in GORKFLOW_TABLES))


def test_reads_and_writes_are_refused_and_change_nothing(app_server: int, env: dict[str, str],
                                                         tmp_path: Path) -> None:
    url = f"libsql://127.0.0.1:{app_server}?tls=0"
    out = tmp_path / "out"
    out.mkdir()
    source = f"sqlite://{tmp_path / 'source.db'}"
    assert run_kvctl(env, "-u", source, "set", "k", "from the source").returncode == 0
    write_inputs(env, source, out)
    before = database(app_server)
    tables = {row[1] for row in before[0] if row[0] == "table"}
    assert tables == set(GORKFLOW_TABLES) and len(before[-1]) == 1  # workflow_state's row
    reads, writes = read_commands(url, "memory://", out), write_commands(url, source, out)
    for args in [*reads, ["-u", f"{url}&create=true", "get", "k"], *writes]:
        done = run_kvctl(env, *args)
        assert done.returncode == 2, (args, done.stderr)
        line = done.stderr
        assert line.startswith(f"kvctl: error: {url}"), line
        assert " holds other programs' tables and none of kvctl's: " in line
        assert line.count("\n") == 1 and "nothing was changed" in line
        for table in GORKFLOW_TABLES:
            assert f"{table} ({url}&table={table}&key=" in line, line  # a URL that maps the table
        assert ("add create=true" in line) == (args in writes), args
        assert database(app_server) == before, f"{args} changed the application's database"


def test_a_write_with_create_true_adds_kvctl_table_beside_them(app_server: int, env: dict[str, str]) -> None:
    url = f"libsql://127.0.0.1:{app_server}?tls=0"
    rows = database(app_server)[3:]
    done = run_kvctl(env, "-u", f"{url}&create=true", "set", "k", "v")
    assert done.returncode == 0, done.stderr
    assert run_kvctl(env, "-u", url, "get", "k").stdout == "v"  # now kvctl's too: plain URLs work
    after = database(app_server)
    assert after[3:] == rows and ["table", "kv", "kv"] in [row[:3] for row in after[0]]

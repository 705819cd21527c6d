"""A read never changes a SQLite or libSQL file, and a database kvctl did not create is never altered.

Every read command runs through the real CLI on (a) a missing path, (b) a kvctl store and (c) a
database holding only another program's tables (Gorkflow's SQLite schema); the file's bytes and
the presence of its ``-wal``/``-shm`` siblings are compared before and after.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Gorkflow's SQLite/libSQL layout (store/libsql_schema.go, see app-tables.md section 1.1).
GORKFLOW_DDL = """
CREATE TABLE IF NOT EXISTS workflow_runs (run_id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL,
    status TEXT NOT NULL, created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL,
    resource_id TEXT, data TEXT);
CREATE TABLE IF NOT EXISTS step_executions (run_id TEXT NOT NULL, step_id TEXT NOT NULL,
    execution_index INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, created_at DATETIME NOT NULL,
    started_at DATETIME, completed_at DATETIME, error TEXT, data TEXT, PRIMARY KEY (run_id, step_id));
CREATE TABLE IF NOT EXISTS step_outputs (run_id TEXT NOT NULL, step_id TEXT NOT NULL, output_data BLOB,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (run_id, step_id));
CREATE TABLE IF NOT EXISTS workflow_state (run_id TEXT NOT NULL, key TEXT NOT NULL, value BLOB,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (run_id, key));
INSERT INTO workflow_state(run_id, key, value) VALUES ('6f1c2e9a', 'approval', CAST('"yes"' AS BLOB));
"""
GORKFLOW_TABLES = ("workflow_runs", "step_executions", "step_outputs", "workflow_state")
SCHEMES = ("sqlite", "libsql")


def kv(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kvctl", *args], env=env, capture_output=True, timeout=120)


def read_commands(url: str, tmp: Path) -> list[list[str]]:
    """Every command that only reads the store at ``url``."""
    return [
        ["-u", url, "get", "k"],
        ["-u", url, "scan"],
        ["-u", url, "count"],
        ["-u", url, "ttl", "k"],
        ["-u", url, "stats"],
        ["export", url, "-o", str(tmp / "out.jsonl")],
        ["snapshot", "create", url, "-o", str(tmp / "out.kvs")],
        ["diff", url, "memory://"],
        ["migrate", url, "memory://", "--no-progress"],
    ]


def state(path: Path) -> tuple[str | None, list[str]]:
    """The file's digest (None: absent) and which of it and its siblings exist in its directory."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return digest, sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))


def gorkflow_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(GORKFLOW_DDL)
    conn.close()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_reads_of_a_missing_file_create_nothing(scheme: str, env: dict[str, str], tmp_path: Path) -> None:
    for target in (tmp_path / "typo.db", tmp_path / "no" / "such" / "dir.db"):
        url = f"{scheme}://{target}"
        for args in read_commands(url, tmp_path):
            done = kv(env, *args)
            assert done.returncode == 2, (args, done.stderr)
            assert done.stderr.startswith(b"kvctl: error: no such store: ") and done.stderr.count(b"\n") == 1, \
                (args, done.stderr)
            assert b"nothing was created" in done.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == [], "a read created something"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_reads_of_a_kvctl_store_change_no_byte(scheme: str, env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    url = f"{scheme}://{db}"
    for args in (["set", "k", "v"], ["set", "other", "w", "--ttl", "1h"]):
        assert kv(env, "-u", url, *args).returncode == 0
    before = state(db)
    assert before[1] == ["store.db"]  # the writer closed cleanly: no -wal/-shm left
    out = tmp_path / "out"
    out.mkdir()
    for args in read_commands(url, out):
        done = kv(env, *args)
        assert done.returncode in (0, 1), (args, done.stderr)  # diff/migrate --verify-free: 1 = differ
        assert state(db) == before, f"{args} changed the store"
    assert kv(env, "-u", url, "get", "k").stdout == b"v"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_database_of_other_tables_is_refused_and_left_as_it_was(
        scheme: str, env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    gorkflow_db(db)
    url = f"{scheme}://{db}"
    before = state(db)
    out = tmp_path / "out"
    out.mkdir()
    for args in [*read_commands(url, out), ["-u", url, "set", "k", "v"], ["-u", url, "del", "k"]]:
        done = kv(env, *args)
        assert done.returncode == 2, (args, done.stderr)
        line = done.stderr.decode()
        assert line.startswith(f"kvctl: error: {url} holds other programs' tables and none of kvctl's: ")
        assert line.count("\n") == 1 and "nothing was changed" in line
        assert "cannot map other programs' tables yet" in line
        for table in GORKFLOW_TABLES:
            assert f"{table} ({url}?table={table})" in line
        assert ("create=true" in line) == (args[2] in ("set", "del")), args
        assert state(db) == before, f"{args} changed the application's database"
    # one of its tables named outright: refused as well, honestly, nothing changed
    for args in (["get", "x"], ["set", "x", "y"]):
        done = kv(env, "-u", f"{url}?table=workflow_state", *args)
        assert done.returncode == 2 and b"table workflow_state is not a kvctl table" in done.stderr
        assert b"cannot map other programs' tables yet" in done.stderr and done.stderr.count(b"\n") == 1
    assert state(db) == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_create_true_adds_kvctl_table_beside_other_tables(scheme: str, env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    gorkflow_db(db)
    url = f"{scheme}://{db}"
    assert kv(env, "-u", f"{url}?create=true", "get", "k").returncode == 2  # a read creates nothing, even so
    assert kv(env, "-u", f"{url}?create=true", "set", "k", "v").returncode == 0
    assert kv(env, "-u", url, "get", "k").stdout == b"v"  # now a kvctl database: plain URLs work
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert set(GORKFLOW_TABLES) < tables and "kv" in tables
        assert conn.execute("SELECT value FROM workflow_state").fetchone()[0] == b'"yes"'


def test_reads_of_the_embedded_default_store_create_nothing(env: dict[str, str], tmp_path: Path) -> None:
    """On a fresh machine the default store reads as empty: ``get`` is not found, ``count`` is 0."""
    done = kv(env, "get", "x")
    assert done.returncode == 1 and b"key x not found" in done.stderr
    done = kv(env, "count")
    assert (done.returncode, done.stdout.strip()) == (0, b"0")
    assert kv(env, "scan").stdout == b""
    assert kv(env, "export", "-o", str(tmp_path / "e.jsonl")).returncode == 0
    assert not (tmp_path / "data").exists(), "a read created the data directory"
    assert kv(env, "set", "x", "1").returncode == 0  # the first write makes it, directory and all
    assert kv(env, "get", "x").stdout == b"1"
    assert (tmp_path / "data" / "kvctl" / "default.db").exists()


@pytest.fixture
def media(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs, to be remounted read-only as a CD or a read-only snapshot mount is."""
    mount = tmp_path / "media"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_store_on_read_only_media_is_readable(media: Path, env: dict[str, str], tmp_path: Path) -> None:
    wal, rollback = f"sqlite://{media}/wal.db", f"sqlite://{media}/rollback.db"
    assert kv(env, "-u", wal, "set", "k", "v").returncode == 0
    assert kv(env, "-u", f"{rollback}?journal_mode=delete", "set", "k", "v").returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(media)], check=True)
    listing = sorted(p.name for p in media.iterdir())
    for url in (wal, f"{wal}?readonly=true", rollback, f"{rollback}?readonly=true"):
        done = kv(env, "-u", url, "get", "k")
        assert (done.returncode, done.stdout) == (0, b"v"), (url, done.stderr)
    done = kv(env, "snapshot", "create", wal, "-o", str(tmp_path / "ro.kvs"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in media.iterdir()) == listing

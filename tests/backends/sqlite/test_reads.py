"""A read never changes a SQLite or libSQL file, and a database kvctl did not create is never altered.

Every read command runs through the real CLI on (a) a missing path, (b) a kvctl store and (c) a
database holding only another program's tables (Gorkflow's SQLite schema), and so does every
write command on (c) without ``?create=true``; the file's bytes and the presence of its
``-wal``/``-shm``/``-journal`` siblings are compared before and after.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvctl.testing.cli import read_commands, run_kvctl, write_commands, write_inputs

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
GORKFLOW_KEYS = {"workflow_runs": "run_id", "step_executions": "run_id,step_id", "step_outputs": "run_id,step_id",
                 "workflow_state": "run_id,key"}
GORKFLOW_TABLES = tuple(GORKFLOW_KEYS)
SCHEMES = ("sqlite", "libsql")


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
        for args in read_commands(url, "memory://", tmp_path):
            done = run_kvctl(env, *args, binary=True)
            assert done.returncode == 2, (args, done.stderr)
            assert done.stderr.startswith(b"kvctl: error: no such store: ") and done.stderr.count(b"\n") == 1, \
                (args, done.stderr)
            assert b"nothing was created" in done.stderr
        # sync's own state directory (XDG_STATE_HOME, under tmp_path here) is kvctl's, not the store's
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "state") == [], "a read created something"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_reads_of_a_kvctl_store_change_no_byte(scheme: str, env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    url = f"{scheme}://{db}"
    for args in (["set", "k", "v"], ["set", "other", "w", "--ttl", "1h"]):
        assert run_kvctl(env, "-u", url, *args, binary=True).returncode == 0
    before = state(db)
    assert before[1] == ["store.db"]  # the writer closed cleanly: no -wal/-shm left
    out = tmp_path / "out"
    out.mkdir()
    for args in read_commands(url, "memory://", out):
        done = run_kvctl(env, *args, binary=True)
        assert done.returncode in (0, 1), (args, done.stderr)  # diff/migrate --verify-free: 1 = differ
        assert state(db) == before, f"{args} changed the store"
    assert run_kvctl(env, "-u", url, "get", "k", binary=True).stdout == b"v"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_database_of_other_tables_is_refused_and_left_as_it_was(
        scheme: str, env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    gorkflow_db(db)
    url = f"{scheme}://{db}"
    out = tmp_path / "out"
    out.mkdir()
    source = kvctl_source(env, tmp_path, out)
    before = state(db)
    reads, writes = read_commands(url, "memory://", out), write_commands(url, source, out)
    for args in [*reads, *writes]:
        done = run_kvctl(env, *args, binary=True)
        assert done.returncode == 2, (args, done.stderr)
        line = done.stderr.decode()
        assert line.startswith(f"kvctl: error: {url} holds other programs' tables and none of kvctl's: ")
        assert line.count("\n") == 1 and "nothing was changed" in line
        assert "each URL reads that table's rows" in line
        for table, key in GORKFLOW_KEYS.items():
            assert f"{table} ({url}?table={table}&key={key}&value=*)" in line
        assert ("create=true" in line) == (args in writes), args
        assert state(db) == before, f"{args} changed the application's database"
    # one of its tables named outright: refused as well, honestly, nothing changed
    for args in (["get", "x"], ["set", "x", "y"]):
        done = run_kvctl(env, "-u", f"{url}?table=workflow_state", *args, binary=True)
        assert done.returncode == 2 and b"table workflow_state is not a kvctl table" in done.stderr
        assert b"add key=COLUMNS" in done.stderr and done.stderr.count(b"\n") == 1
    assert state(db) == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def kvctl_source(env: dict[str, str], tmp_path: Path, out: Path) -> str:
    """A kvctl store to copy, sync, export and snapshot from, and the files made of it."""
    source = f"sqlite://{tmp_path / 'source.db'}"
    assert run_kvctl(env, "-u", source, "set", "k", "from the source", binary=True).returncode == 0
    write_inputs(env, source, out)
    return source


def app_rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return [(table, *row) for table in GORKFLOW_TABLES
                for row in conn.execute(f"SELECT * FROM {table} ORDER BY rowid")]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_write_with_create_true_keeps_the_application_tables(
        scheme: str, env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    source = kvctl_source(env, tmp_path, out)
    for i in range(len(write_commands("", source, out))):
        db = tmp_path / f"app{i}.db"
        gorkflow_db(db)
        rows = app_rows(db)
        args = write_commands(f"{scheme}://{db}?create=true", source, out)[i]
        done = run_kvctl(env, *args, binary=True)
        missing = args[2:3] in (["expire"], ["persist"], ["del"]) and b"not found" in done.stderr  # exit 1
        assert done.returncode == 0 or (done.returncode == 1 and missing), (args, done.stderr)
        assert app_rows(db) == rows, args
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'kv'").fetchone() == (1,), args


def crashed_writer(db: Path, script: str) -> None:
    """Run ``script`` on ``db`` in WAL mode, without checkpoints, in a process that then dies
    without closing: the -wal keeps commits the file does not hold yet."""
    code = (f"import os, sqlite3\nc = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "c.execute('PRAGMA journal_mode = wal')\nc.execute('PRAGMA wal_autocheckpoint = 0')\n"
            f"c.executescript({script!r})\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def with_wal(db: Path) -> tuple[tuple[str | None, list[str]], bytes]:
    return state(db), (db.parent / f"{db.name}-wal").read_bytes()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_reads_leave_a_crashed_writers_wal_alone(scheme: str, env: dict[str, str], tmp_path: Path) -> None:
    """Closing the last connection checkpoints a -wal into the file and deletes it: a read must
    not be that connection, for an application's database nor for a kvctl store."""
    out = tmp_path / "out"
    out.mkdir()
    app, store = tmp_path / "app.db", tmp_path / "store.db"
    crashed_writer(app, GORKFLOW_DDL)
    assert run_kvctl(env, "-u", f"{scheme}://{store}", "set", "k", "v", binary=True).returncode == 0
    crashed_writer(store, "CREATE TABLE notes (n); INSERT INTO notes VALUES (1);")
    for db, codes in ((app, (2,)), (store, (0, 1))):
        before = with_wal(db)
        assert before[0][1] == [db.name, f"{db.name}-shm", f"{db.name}-wal"] and before[1]
        for args in read_commands(f"{scheme}://{db}", "memory://", out):
            done = run_kvctl(env, *args, binary=True)
            assert done.returncode in codes, (args, done.stderr)
            assert with_wal(db) == before, f"{args} changed {db.name} or its -wal"


def crashed_rollback_writer(db: Path) -> None:
    """Die in the middle of a rollback-journal transaction that has already overwritten pages of
    the file: what is left is a hot -journal that the next writer must roll back."""
    code = (f"import os, sqlite3\nc = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "c.execute('PRAGMA journal_mode = delete')\nc.execute('PRAGMA cache_size = 1')\n"
            "c.execute('BEGIN IMMEDIATE')\nc.execute(\"UPDATE kv SET value = CAST('lost' AS BLOB)\")\n"
            "c.execute('CREATE TABLE junk (x)')\n"
            "c.executemany('INSERT INTO junk VALUES (randomblob(1000))', [()] * 500)\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_reads_of_a_file_with_a_hot_journal_say_how_to_recover(
        scheme: str, env: dict[str, str], tmp_path: Path) -> None:
    db, journal = tmp_path / "store.db", tmp_path / "store.db-journal"
    url = f"{scheme}://{db}"
    assert run_kvctl(env, "-u", f"{url}?journal_mode=delete", "set", "k", "v", binary=True).returncode == 0
    crashed_rollback_writer(db)
    before = (db.read_bytes(), journal.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    for args in read_commands(url, "memory://", out):
        done = run_kvctl(env, *args, binary=True)
        assert done.returncode == 74, (args, done.stderr)
        line = done.stderr.decode()
        assert line.startswith(f"kvctl: error: {url}: an interrupted write left a hot journal ({journal}), which a "
                               "writer must roll back before the file can be read; nothing was changed (open it "
                               f"once for writing, e.g. sqlite3 {db} 'PRAGMA integrity_check'"), args
        assert line.count("\n") == 1, args
        assert (db.read_bytes(), journal.read_bytes()) == before, f"{args} changed the file or its journal"
        assert state(db)[1] == ["store.db", "store.db-journal"]
    # the advice works: a writer rolls the interrupted transaction back, and reads see the last commit
    assert run_kvctl(env, "-u", url, "set", "k2", "w", binary=True).returncode == 0
    assert not journal.exists()
    assert run_kvctl(env, "-u", url, "get", "k", binary=True).stdout == b"v"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_create_true_adds_kvctl_table_beside_other_tables(scheme: str, env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    gorkflow_db(db)
    url = f"{scheme}://{db}"
    # a read creates nothing, even so
    assert run_kvctl(env, "-u", f"{url}?create=true", "get", "k", binary=True).returncode == 2
    assert run_kvctl(env, "-u", f"{url}?create=true", "set", "k", "v", binary=True).returncode == 0
    assert run_kvctl(env, "-u", url, "get", "k", binary=True).stdout == b"v"  # now a kvctl database: plain URLs work
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert set(GORKFLOW_KEYS) < tables and "kv" in tables
        assert conn.execute("SELECT value FROM workflow_state").fetchone()[0] == b'"yes"'


def test_reads_of_the_embedded_default_store_create_nothing(env: dict[str, str], tmp_path: Path) -> None:
    """On a fresh machine the default store reads as empty: ``get`` is not found, ``count`` is 0."""
    done = run_kvctl(env, "get", "x", binary=True)
    assert done.returncode == 1 and b"key x not found" in done.stderr
    done = run_kvctl(env, "count", binary=True)
    assert (done.returncode, done.stdout.strip()) == (0, b"0")
    assert run_kvctl(env, "scan", binary=True).stdout == b""
    assert run_kvctl(env, "export", "-o", str(tmp_path / "e.jsonl"), binary=True).returncode == 0
    assert not (tmp_path / "data").exists(), "a read created the data directory"
    assert run_kvctl(env, "set", "x", "1", binary=True).returncode == 0  # the first write makes it, directory and all
    assert run_kvctl(env, "get", "x", binary=True).stdout == b"1"
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
    assert run_kvctl(env, "-u", wal, "set", "k", "v", binary=True).returncode == 0
    assert run_kvctl(env, "-u", f"{rollback}?journal_mode=delete", "set", "k", "v", binary=True).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(media)], check=True)
    listing = sorted(p.name for p in media.iterdir())
    for url in (wal, f"{wal}?readonly=true", rollback, f"{rollback}?readonly=true"):
        done = run_kvctl(env, "-u", url, "get", "k", binary=True)
        assert (done.returncode, done.stdout) == (0, b"v"), (url, done.stderr)
    done = run_kvctl(env, "snapshot", "create", wal, "-o", str(tmp_path / "ro.kvs"), binary=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in media.iterdir()) == listing


@pytest.mark.parametrize("scheme", SCHEMES)
def test_mapped_reads_of_a_file_with_a_hot_journal_change_nothing(
        scheme: str, env: dict[str, str], tmp_path: Path) -> None:
    """The same through a mapped-table URL: its catalog read and its reads open read-only."""
    db, journal = tmp_path / "store.db", tmp_path / "store.db-journal"
    assert run_kvctl(env, "-u", f"{scheme}://{db}?journal_mode=delete", "set", "k", "v", binary=True).returncode == 0
    crashed_rollback_writer(db)
    before = (db.read_bytes(), journal.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    for url in (f"{scheme}://{db}?table=kv&key=key", f"{scheme}://{db}?table=*"):
        for args in read_commands(url, "memory://", out):
            done = run_kvctl(env, *args, binary=True)
            assert done.returncode == 74, (args, done.stderr)
            assert done.stderr.decode().count("\n") == 1, (args, done.stderr)
            assert (db.read_bytes(), journal.read_bytes()) == before, f"{args} changed the file or its journal"

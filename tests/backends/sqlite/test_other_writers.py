"""Rows other programs write into kvctl's SQLite table with plain SQL are first-class.

The writers here are the real ``sqlite3`` shell (Debian package sqlite3), writing the way a
person at its prompt does: TEXT literals for keys and values.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from kvctl.registry import open_url
from kvctl.store import Record
from kvctl.testing.cli import run_kvctl


def shell(db: Path, sql: str) -> str:
    exe = shutil.which("sqlite3")
    assert exe, "the sqlite3 shell is needed (apt-get install -y sqlite3)"
    return subprocess.run([exe, str(db), sql], capture_output=True, check=True, text=True).stdout


def test_text_keys_and_values_from_the_sqlite3_shell(env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    url = f"sqlite://{db}"
    assert run_kvctl(env, "-u", url, "set", "a", "1", binary=True).returncode == 0
    shell(db, "INSERT INTO kv(key, value) VALUES ('user:1', 'ann')")
    shell(db, "INSERT INTO kv(key, value) VALUES (CAST('user:2' AS BLOB), 'bob')")
    shell(db, "INSERT INTO kv(key, value) VALUES (7, 'seven')")
    assert shell(db, "SELECT count(*) FROM kv").strip() == "4"

    count = run_kvctl(env, "-u", url, "count", binary=True)
    assert (count.returncode, count.stdout.strip()) == (0, b"4")
    for key, value in (("user:1", b"ann"), ("user:2", b"bob"), ("7", b"seven")):
        done = run_kvctl(env, "-u", url, "get", key, binary=True)
        assert (done.returncode, done.stdout) == (0, value), done.stderr
    scan = run_kvctl(env, "-u", url, "scan", "--keys-only", binary=True)
    assert scan.stdout.split() == [b"7", b"a", b"user:1", b"user:2"]  # byte order

    out = tmp_path / "out.jsonl"
    assert run_kvctl(env, "export", url, "-o", str(out), binary=True).returncode == 0
    exported = {json.loads(line)["key"]: json.loads(line)["value"] for line in out.read_text().splitlines()}
    assert exported == {"a": "1", "user:1": "ann", "user:2": "bob", "7": "seven"}
    assert run_kvctl(env, "snapshot", "create", url, "-o", str(tmp_path / "s.kvs"), binary=True).returncode == 0
    copy = f"sqlite://{tmp_path / 'copy.db'}"
    done = run_kvctl(env, "migrate", url, copy, "--no-progress", "--verify", binary=True)
    assert done.returncode == 0, done.stderr
    assert run_kvctl(env, "diff", url, copy, binary=True).returncode == 0
    assert run_kvctl(env, "sync", url, f"file://{tmp_path / 'fs'}", binary=True).returncode == 0

    # kvctl's write of the same key updates the shell's row: one row per key
    assert run_kvctl(env, "-u", url, "set", "user:1", "changed", binary=True).returncode == 0
    rows = shell(db, "SELECT typeof(key), CAST(key AS TEXT), CAST(value AS TEXT) FROM kv ORDER BY key")
    assert rows.splitlines() == ["blob|7|seven", "blob|a|1", "blob|user:1|changed", "blob|user:2|bob"]
    # and the shell's upsert / REPLACE of a key kvctl wrote updates kvctl's row
    shell(db, "INSERT INTO kv(key, value) VALUES ('a', 'two') ON CONFLICT(key) DO UPDATE SET value = excluded.value")
    shell(db, "INSERT OR REPLACE INTO kv(key, value) VALUES ('user:2', 'bobby')")
    shell(db, "UPDATE kv SET value = 'text again' WHERE key = CAST('7' AS BLOB)")
    assert shell(db, "SELECT count(*) FROM kv").strip() == "4"
    for key, value in (("a", b"two"), ("user:2", b"bobby"), ("7", b"text again")):
        assert run_kvctl(env, "-u", url, "get", key, binary=True).stdout == value


def test_a_write_open_upgrades_an_older_file_keeping_the_newer_of_two_rows(tmp_path: Path) -> None:
    """A version 3 file (before the coerce trigger) that already holds TEXT rows: the first
    read-write open rewrites them as BLOBs; a key in both forms keeps its newer row."""
    db = tmp_path / "old.db"
    url = f"sqlite://{db}"
    with open_url(url) as store:
        store.set(b"both-old-blob", b"kvctl, older")
        store.set(b"both-new-blob", b"kvctl, newer")  # written after the TEXT twin below
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute('DROP TRIGGER "kv__kvctl_coerce"')  # what a version 3 file has
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO kv(key, value, version) VALUES ('both-old-blob', 'shell, newer', 1 << 62)")
    conn.execute("INSERT INTO kv(key, value, version) VALUES ('both-new-blob', 'shell, older', 1)")
    conn.execute("INSERT INTO kv(key, value) VALUES ('text-only', 'shell')")
    conn.close()
    with open_url(url, access="read") as store:  # a read leaves the old file as it is
        assert store.get(b"both-new-blob").value == b"kvctl, newer"
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 3
    with open_url(url) as store:
        assert {r.key: r.value for page in store.scan() for r in page.records} == {
            b"both-old-blob": b"shell, newer", b"both-new-blob": b"kvctl, newer", b"text-only": b"shell"}
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM kv WHERE typeof(key) <> 'blob' OR typeof(value) <> 'blob'"
                        ).fetchone()[0] == 0
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 5


@pytest.mark.parametrize("value_sql", ["'ann'", "42", "4.5"])
def test_non_blob_values_read_as_their_text(value_sql: str, tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    with open_url(f"sqlite://{db}") as store:
        store.set(b"k", b"v")
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE kv SET value = {value_sql} WHERE key = x'6b'")
    text = value_sql.strip("'").encode()
    with open_url(f"sqlite://{db}", access="read") as store:
        assert store.get(b"k").value == text
        assert [r.value for page in store.scan() for r in page.records] == [text]
        assert [r.value for r in store.get_many([b"k", b"k"])] == [text, text]


def older_file_with_other_keys(db: Path) -> dict[bytes, bytes]:
    """A version 3 file (no coerce trigger) where the sqlite3 shell wrote TEXT and number keys,
    one of them also present as kvctl's BLOB; what every read must see."""
    with open_url(f"sqlite://{db}") as store:
        store.set_many([Record(b"b%03d" % i, b"blob %d" % i) for i in range(0, 40, 2)])
        store.set(b"twin", b"kvctl, older")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute('DROP TRIGGER "kv__kvctl_coerce"')
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    texts = ", ".join(f"('b{i:03d}', 'text {i}')" for i in range(1, 40, 2))
    shell(db, f"INSERT INTO kv(key, value) VALUES {texts}, ('twin', 'shell, newer'), (7, 'seven'), "
              "(12, 'twelve'), ('ключ', 'значение')")
    expected = {b"b%03d" % i: (b"blob %d" if i % 2 == 0 else b"text %d") % i for i in range(40)}
    expected.update({b"twin": b"shell, newer", b"7": b"seven", b"12": b"twelve",
                     "ключ".encode(): "значение".encode()})
    return dict(sorted(expected.items()))


def test_reads_of_an_older_file_see_other_programs_keys_in_byte_order(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    expected = older_file_with_other_keys(db)
    before = db.read_bytes()
    with open_url(f"sqlite://{db}", access="read") as store:
        for batch in (1, 3, 1000):
            pages = list(store.scan(batch_size=batch))
            assert [(r.key, r.value) for p in pages for r in p.records] == list(expected.items())
            assert all(len(p.records) <= batch for p in pages)
        # a page cursor resumes where the page ended, whatever the key's type
        first = next(store.scan(batch_size=5))
        rest = [r.key for p in store.scan(cursor=first.cursor) for r in p.records]
        assert [r.key for r in first.records] + rest == list(expected)
        assert [r.key for p in store.scan(b"b01") for r in p.records] == [b"b%03d" % i for i in range(10, 20)]
        assert store.count() == len(expected) and store.count(b"b01") == 10
        assert store.get(b"twin").value == b"shell, newer"
        assert store.get(b"7").value == b"seven"
        assert [r and r.value for r in store.get_many([b"b001", b"b002", b"nope"])] == [b"text 1", b"blob 2", None]
    assert db.read_bytes() == before


def test_cli_reads_of_an_older_file_see_other_programs_keys(env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    expected = older_file_with_other_keys(db)
    url = f"sqlite://{db}"
    assert run_kvctl(env, "-u", url, "count", binary=True).stdout.strip() == str(len(expected)).encode()
    assert run_kvctl(env, "-u", url, "get", "b001", binary=True).stdout == b"text 1"
    out = tmp_path / "out.jsonl"
    assert run_kvctl(env, "export", url, "-o", str(out), binary=True).returncode == 0
    assert [json.loads(line)["key"].encode() for line in out.read_text().splitlines()] == list(expected)
    copy = f"sqlite://{tmp_path / 'copy.db'}"
    done = run_kvctl(env, "migrate", url, copy, "--no-progress", "--verify", binary=True)
    assert done.returncode == 0, done.stderr
    assert run_kvctl(env, "diff", url, copy, binary=True).returncode == 0

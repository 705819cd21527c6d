"""Dry runs from the command line: `migrate`, `snapshot restore` and `sync` with --dry-run say what
they would do (--json: which keys) and change nothing: no store byte, no state file, no directory.
And a sync that fails (a missing source) creates no state directory either."""

from __future__ import annotations

import json
from pathlib import Path

from kvctl.testing.cli import run_kvctl


def _stores(env: dict[str, str], tmp_path: Path) -> tuple[str, str]:
    src, dst = f"sqlite://{tmp_path / 'a.db'}", f"sqlite://{tmp_path / 'b.db'}"
    for url, key, value in ((src, "new", "1"), (src, "both", "2"), (dst, "both", "old"), (dst, "extra", "9")):
        assert run_kvctl(env, "-u", url, "set", key, value).returncode == 0
    return src, dst


def _snapshot_of(tmp_path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}


def test_migrate_dry_run_json_lists_the_keys_and_writes_nothing(env: dict[str, str], tmp_path: Path) -> None:
    src, dst = _stores(env, tmp_path)
    before = _snapshot_of(tmp_path)
    out = run_kvctl(env, "migrate", src, dst, "--dry-run", "--delete-extra", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["would_create"]["keys"], doc["would_overwrite"]["keys"], doc["would_delete"]["keys"]) == (
        [{"key": "new"}], [{"key": "both"}], [{"key": "extra"}])
    text = run_kvctl(env, "migrate", src, dst, "-n")
    assert "1 new, 1 overwritten" in text.stdout
    assert _snapshot_of(tmp_path) == before
    assert not (tmp_path / "state").exists()  # no checkpoint directory


def test_restore_dry_run_counts_what_replace_would_delete(env: dict[str, str], tmp_path: Path) -> None:
    src, dst = _stores(env, tmp_path)
    snap = tmp_path / "s.kvs"
    assert run_kvctl(env, "snapshot", "create", src, "-o", str(snap)).returncode == 0
    before = _snapshot_of(tmp_path)
    out = run_kvctl(env, "snapshot", "restore", str(snap), dst, "--replace", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "would create 1 keys, overwrite 1 and delete 1" in out.stdout and "nothing was written" in out.stdout
    doc = json.loads(run_kvctl(env, "snapshot", "restore", str(snap), dst, "--replace", "-n", "--json").stdout)
    assert doc["would_delete"] == {"count": 1, "keys": [{"key": "extra"}], "truncated": False}
    missing = tmp_path / "new.db"
    assert run_kvctl(env, "snapshot", "restore", str(snap), f"sqlite://{missing}", "-n").returncode == 0
    assert _snapshot_of(tmp_path) == before and not missing.exists()


def test_sync_dry_run_touches_neither_store_nor_the_state(env: dict[str, str], tmp_path: Path) -> None:
    src, dst = _stores(env, tmp_path)
    before = _snapshot_of(tmp_path)
    out = run_kvctl(env, "sync", src, dst, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("dry run: diff sync: 1 would apply to destination")
    assert "2 kept as newer at the destination" in out.stdout  # "both" was written there later, "extra" too
    doc = json.loads(run_kvctl(env, "sync", src, dst, "-n", "--two-way", "--json").stdout)
    assert doc["dry_run"] is True and doc["applied_to_src"] == 2  # "both" and "extra" would go back
    assert _snapshot_of(tmp_path) == before
    assert not (tmp_path / "state").exists()
    refused = run_kvctl(env, "sync", src, dst, "-n", "--watch")
    assert refused.returncode == 2 and "do not go together" in refused.stderr


def test_a_sync_from_a_missing_source_creates_no_state_directory(env: dict[str, str], tmp_path: Path) -> None:
    out = run_kvctl(env, "sync", f"sqlite://{tmp_path / 'nope.db'}", f"sqlite://{tmp_path / 'b.db'}")
    assert out.returncode == 2 and "no such store" in out.stderr
    assert not (tmp_path / "state").exists() and not (tmp_path / "b.db").exists()


def test_import_dry_run_into_a_missing_store_creates_nothing(env: dict[str, str], tmp_path: Path) -> None:
    dump = tmp_path / "d.jsonl"
    dump.write_text('{"key": "a", "value": "1"}\n{"key": "b", "value": "2"}\n')
    before = sorted(p.name for p in tmp_path.iterdir())
    out = run_kvctl(env, "-u", f"sqlite://{tmp_path / 'new.db'}", "import", str(dump), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "would import 2 records" in out.stdout and "does not exist yet" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no new.db, no journal

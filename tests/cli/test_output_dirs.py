"""An output file named with -o goes into a directory that exists: kvctl never creates the
directories of a mistyped path (``export -o``, ``snapshot create -o``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvctl.testing.cli import run_kvctl


@pytest.mark.parametrize("command", [["export"], ["snapshot", "create"]])
def test_a_missing_output_directory_is_refused_and_not_created(command: list[str], env: dict[str, str],
                                                               tmp_path: Path) -> None:
    src = f"sqlite://{tmp_path / 'src.db'}"
    assert run_kvctl(env, "-u", src, "set", "k", "v").returncode == 0
    target = tmp_path / "typo" / "deeper" / "out.kvs"
    proc = run_kvctl(env, *command, src, "-o", str(target))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"kvctl: error: cannot write {target}: no such directory {target.parent}\n"
    assert not (tmp_path / "typo").exists()
    # into a directory that exists, the file is written
    assert run_kvctl(env, *command, src, "-o", str(tmp_path / "out.kvs")).returncode == 0
    assert (tmp_path / "out.kvs").stat().st_size > 0

"""`--executor dask://local` starts its own cluster quietly: no dashboard, no HTTP port that
another cluster (or any program) may hold, and none of Dask's start-up warnings in kvctl's output."""

from __future__ import annotations

import contextlib
import errno
import socket
from pathlib import Path

import pytest

from kvctl.store import Record
from kvctl.testing.cli import run_kvctl
from tests.engines.support import read_all, subprocess_env, write

pytest.importorskip("distributed")  # the test extra installs it: CI runs these

DASK_HTTP_PORT = 8787  # where Dask's scheduler serves HTTP unless told otherwise


def test_a_local_cluster_says_nothing_when_dask_s_port_is_taken(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        holder = stack.enter_context(socket.socket())
        try:
            holder.bind(("127.0.0.1", DASK_HTTP_PORT))
            holder.listen()
        except OSError as exc:  # another program holds it already: the same situation
            assert exc.errno == errno.EADDRINUSE
        src, dst = f"sqlite://{tmp_path / 'src.db'}", f"sqlite://{tmp_path / 'dst.db'}"
        write(src, [Record(b"k%d" % i, b"v") for i in range(100)])
        done = run_kvctl(subprocess_env(tmp_path), "migrate", src, dst, "--executor", "dask://local",
                         "--workers", "2", "--shared-fs", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert len(read_all(dst)) == 100

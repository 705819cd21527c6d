"""A notice when kvctl changes a server setting: the Redis change feed turning on keyspace
notifications says, once on stderr, what notify-keyspace-events was and became, and how to
revert it; nothing under --quiet, and nothing when the setting was already enough."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvctl.testing.cli import run_kvctl

redispy = pytest.importorskip("redis")

from tests.backends.redis.support import Server, with_options  # noqa: E402  (skipped above without the driver)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = Server(tmp_path, "--notify-keyspace-events", "")
    yield started
    started.kill()


def _url(server: Server) -> str:
    return with_options(f"redis://127.0.0.1:{server.port}/0", feed="notify")


def _flags(server: Server) -> str:
    client = redispy.Redis(port=server.port, decode_responses=True)
    return str(client.config_get("notify-keyspace-events")["notify-keyspace-events"])


def test_turning_on_keyspace_notifications_is_announced(env: dict[str, str], tmp_path: Path,
                                                        server: Server) -> None:
    quiet = run_kvctl(env, "sync", _url(server), f"sqlite://{tmp_path / 'q.db'}", "-q")
    assert quiet.returncode == 0 and "notify-keyspace-events" not in quiet.stderr, quiet.stderr
    redispy.Redis(port=server.port).config_set("notify-keyspace-events", "")
    out = run_kvctl(env, "sync", _url(server), f"sqlite://{tmp_path / 'a.db'}")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if "notify-keyspace-events" in line]
    assert len(lines) == 1 and lines[0].startswith("kvctl: warning: "), out.stderr
    now = _flags(server)
    assert f"from '' to '{now}'" in lines[0] or "from ''" in lines[0], lines[0]
    assert "to revert: redis-cli CONFIG SET notify-keyspace-events ''" in lines[0]
    again = run_kvctl(env, "sync", _url(server), f"sqlite://{tmp_path / 'b.db'}")
    assert again.returncode == 0 and "notify-keyspace-events" not in again.stderr  # already set: no change

"""Redis passwords from the environment, as redis-cli and psql take them: ``?password_env=NAME``
and ``$REDISCLI_AUTH``, so the password is in neither the URL nor ``ps``.  Against the real
server, with a user of its own (ACL SETUSER), removed afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kvctl.testing.cli import run_kvctl
from kvctl.url import StoreURL
from tests.conftest import service_url

PASSWORD = "cli-env-secret-" + str(os.getpid())


@pytest.fixture
def user_url() -> Iterator[str]:
    redis = pytest.importorskip("redis")
    url = service_url("KVCTL_TEST_REDIS_URL")
    parsed = StoreURL.parse(url)
    user = f"kvctl-cli-env-{os.getpid()}"
    admin = redis.Redis(host=parsed.host, port=parsed.port, password=parsed.password)
    admin.execute_command("ACL", "SETUSER", user, "on", f">{PASSWORD}", "~kvctl-cli-env:*", "+@all")
    try:
        yield f"redis://{user}@{parsed.host}:{parsed.port}/0"
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()


def test_password_from_the_environment(env: dict[str, str], user_url: str) -> None:
    assert run_kvctl(env, "-u", user_url, "ping", "-c", "1").returncode == 77  # no password anywhere
    with_var = {**env, "APP_REDIS_PASSWORD": PASSWORD}
    ok = run_kvctl(with_var, "-u", user_url + "?password_env=APP_REDIS_PASSWORD", "set", "kvctl-cli-env:k", "v")
    assert ok.returncode == 0, ok.stderr
    got = run_kvctl({**env, "REDISCLI_AUTH": PASSWORD}, "-u", user_url, "get", "kvctl-cli-env:k")
    assert (got.returncode, got.stdout) == (0, "v"), got.stderr
    assert run_kvctl({**env, "REDISCLI_AUTH": PASSWORD}, "-u", user_url, "del", "kvctl-cli-env:k").stdout == "1\n"
    unset = run_kvctl(env, "-u", user_url + "?password_env=NOT_SET_ANYWHERE", "ping", "-c", "1")
    assert unset.returncode == 2 and "NOT_SET_ANYWHERE is not set" in unset.stderr
    assert PASSWORD not in unset.stderr

"""A store is named exactly, or the command refuses: empty URLs, repeated URL options, one store
named twice as source and destination, and a restore whose store argument was forgotten."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvctl.errors import BadURLError, UsageError
from kvctl.registry import open_url
from kvctl.testing.cli import run_kvctl
from kvctl.url import StoreURL


def refused(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("kvctl: error: "), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


# -- empty URLs -------------------------------------------------------------------------------------
def test_an_empty_url_is_refused_never_the_default_store(env: dict[str, str], tmp_path: Path) -> None:
    other = f"sqlite://{tmp_path / 'other.db'}"
    for args in (["-u", "", "set", "k", "v"], ["-u", " ", "get", "k"], ["export", ""], ["migrate", "", other],
                 ["migrate", other, ""], ["sync", "", other], ["diff", other, ""]):
        refused(run_kvctl(env, *args), "empty store URL")
    refused(run_kvctl({**env, "KVCTL_URL": ""}, "set", "k", "v"), "empty store URL in $KVCTL_URL")
    assert not (tmp_path / "data").exists()  # the embedded default store was never created
    assert not (tmp_path / "other.db").exists()
    with pytest.raises(BadURLError, match="empty store URL"):
        StoreURL.parse("")


# -- repeated options -------------------------------------------------------------------------------
def test_a_repeated_url_option_is_refused_naming_it(env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    refused(run_kvctl(env, "-u", f"sqlite://{db}?table=kv&table=other", "set", "k", "v"), "option table",
            "more than once")
    assert not db.exists()
    with pytest.raises(UsageError, match="option timeout is given more than once"):
        open_url("memory://?timeout=1&timeout=2")


# -- empty options ---------------------------------------------------------------------------------
def empty_table_refused(env: dict[str, str], url: str) -> None:
    """``url`` (which has other options, or none) with ``table=`` empty is refused, for a read and
    a write, and not read as the default table."""
    bad = f"{url}{'&' if '?' in url else '?'}table="
    for args in (["-u", bad, "set", "k", "v"], ["-u", bad, "get", "k"], ["migrate", "memory://", bad]):
        refused(run_kvctl(env, *args), f"option table= in {bad} is empty (name one, or leave the option out")


def test_an_empty_table_option_is_refused_on_every_file_backend_that_takes_one(
        env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    for url in (f"sqlite://{db}", f"sqlite://{db}?create=true", f"libsql://{db}", f"sqlite://{db}?key=id"):
        empty_table_refused(env, url)
    assert not db.exists()
    with pytest.raises(BadURLError, match=r"option table= in x://y\?table= is empty"):
        StoreURL.parse("x://y?table=").name_option("table", "kv")
    assert StoreURL.parse("x://y").name_option("table", "kv") == "kv"


@pytest.mark.server
@pytest.mark.parametrize("var", ["KVCTL_TEST_POSTGRES_URL", "KVCTL_TEST_LIBSQL_URL"])
def test_an_empty_table_option_is_refused_on_every_server_backend_that_takes_one(
        env: dict[str, str], var: str) -> None:
    from tests.conftest import service_url

    empty_table_refused(env, service_url(var))


def test_a_plugin_s_list_options_may_repeat(tmp_path: Path) -> None:
    url = "shard://?child=memory://a&weight=1&child=memory://b&weight=2"
    with open_url(url) as store:
        store.set(b"k", b"v")
        assert store.get(b"k").value == b"v"


# -- one store named twice --------------------------------------------------------------------------
def test_one_store_named_twice_is_refused_by_every_copy(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    os.symlink(tmp_path / "x", tmp_path / "link")
    url = f"sqlite://{tmp_path}/x/f.db"
    assert run_kvctl(env, "-u", url, "set", "k", "v").returncode == 0
    for other in (url, f"sqlite://{tmp_path}/x/../x/f.db", f"sqlite://{tmp_path}/link/f.db"):
        for args in (["migrate", url, other, "--no-progress"], ["migrate", url, other, "--no-progress", "-w", "2"],
                     ["sync", url, other], ["sync", "--two-way", other, url]):
            refused(run_kvctl(env, *args), "source and destination are the same store")
    # two profiles of one store
    for name, target in (("a", url), ("b", f"sqlite://{tmp_path}/link/f.db")):
        assert run_kvctl(env, "config", "set", name, target).returncode == 0
    refused(run_kvctl(env, "sync", "a", "b"), "same store")
    refused(run_kvctl(env, "migrate", "a", "b", "--no-progress"), "same store")
    assert run_kvctl(env, "-u", url, "get", "k").stdout == "v"
    # a relative spelling of the same file, from its directory
    relative = subprocess.run([sys.executable, "-m", "kvctl", "migrate", url, "sqlite:f.db", "--no-progress"],
                              env=env, capture_output=True, text=True, cwd=tmp_path / "x", timeout=120)
    refused(relative, "same store")
    # two tables of one file are two stores
    assert run_kvctl(env, "migrate", url, f"{url}?table=copy", "--no-progress").returncode == 0


def test_store_identity_resolves_paths_and_keeps_what_names_a_store(tmp_path: Path) -> None:
    from kvctl.registry import store_identity

    assert store_identity(f"sqlite://{tmp_path}/a/../f.db") == store_identity(f"sqlite://{tmp_path}/f.db")
    assert store_identity(f"sqlite://{tmp_path}/f.db") != store_identity(f"sqlite://{tmp_path}/f.db?table=t")
    assert store_identity("redis://Host:6379/0") == store_identity("redis://host:6379/0")
    assert store_identity("redis://host:6379/0") != store_identity("redis://host:6379/1")
    assert store_identity("redis://u:secret@host:6379/0") == store_identity("redis://:other@Host:6379/0")
    assert store_identity("redis+cluster://h:1,h:2") != store_identity("redis+cluster://h:3,h:4")
    assert (store_identity("shard://?child=memory://a&child=memory://b")
            != store_identity("shard://?child=memory://a&child=memory://c"))
    assert store_identity("redis://h/0?timeout=1&namespace=a") == store_identity("redis://h/0?namespace=a&timeout=1")


# -- snapshot restore: the store argument -----------------------------------------------------------
def test_a_restore_without_its_store_argument_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    src = f"sqlite://{tmp_path / 'src.db'}"
    assert run_kvctl(env, "-u", src, "set", "k", "v").returncode == 0
    full = tmp_path / "full.kvs"
    assert run_kvctl(env, "snapshot", "create", src, "-o", str(full)).returncode == 0
    more = tmp_path / "more.kvs"
    assert run_kvctl(env, "snapshot", "create", src, "--since", str(full), "-o", str(more)).returncode == 0
    refused(run_kvctl(env, "snapshot", "restore", str(full), str(more)), "name the store to restore into")
    refused(run_kvctl(env, "snapshot", "restore", str(full)), "name the store to restore into")
    refused(run_kvctl(env, "snapshot", "restore", str(full), str(tmp_path / "moer.kvs")),
            f"no such file or profile: {tmp_path / 'moer.kvs'}")
    assert not (tmp_path / "data").exists()  # nothing went to the embedded default store
    dst = f"sqlite://{tmp_path / 'dst.db'}"
    assert run_kvctl(env, "snapshot", "restore", str(full), str(more), dst).returncode == 0
    assert run_kvctl(env, "config", "set", "dst2", f"sqlite://{tmp_path / 'dst2.db'}").returncode == 0
    assert run_kvctl(env, "snapshot", "restore", str(full), "dst2").returncode == 0
    assert run_kvctl(env, "-u", "dst2", "get", "k").stdout == "v"


@pytest.mark.server
def test_one_postgres_table_named_twice_is_refused(env: dict[str, str]) -> None:
    from tests.conftest import service_url

    url = service_url("KVCTL_TEST_POSTGRES_URL")
    table = f"kvctl_naming{os.getpid()}"
    scheme, _, rest = url.partition("://")
    other = "postgres" if scheme == "postgresql" else "postgresql"
    for twin in (f"{other}://{rest}?table={table}&connect_timeout=5s", f"{url}?command_timeout=9s&table={table}"):
        refused(run_kvctl(env, "sync", f"{url}?table={table}", twin), "same store")
    from kvctl.registry import store_identity

    assert store_identity(f"{url}?table={table}") != store_identity(f"{url}?table={table}&schema=other")

"""Plugin discovery through entry points, load errors, and the outside plugin package."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kvctl.errors import BadURLError, PluginLoadError, UnknownSchemeError
from kvctl.registry import load, open_url, schemes
from kvctl.testing import StoreConformance

OUTSIDE_DIST = "kvctl-outside-example"


def test_builtin_schemes_are_registered_by_entry_point() -> None:
    found = schemes()
    for scheme in ("memory", "sqlite", "lmdb", "file", "redis", "postgres"):
        assert found[scheme].distribution == "kvctl"


def test_outside_plugin_is_discovered_and_usable() -> None:
    info = schemes()["outside"]
    assert (info.distribution, info.version) == (OUTSIDE_DIST, "1.2.3")
    store = open_url("outside://reg")
    store.set(b"k", b"\x00v")
    assert store.get(b"k").value == b"\x00v"


class TestOutsidePluginConformance(StoreConformance):
    @pytest.fixture
    def store_url(self) -> str:
        return "outside://suite"


def test_every_registered_builtin_plugin_loads() -> None:
    broken = [s for s, i in schemes().items() if i.distribution != OUTSIDE_DIST and not _loads(s)]
    assert broken == []


def _loads(scheme: str) -> bool:
    try:
        load(scheme)
        return True
    except PluginLoadError:
        return False


def test_broken_plugin_is_a_clear_error() -> None:
    with pytest.raises(PluginLoadError, match="kvctl_nonexistent_driver"):
        load("broken")


def test_unknown_scheme_names_the_installed_ones() -> None:
    with pytest.raises(UnknownSchemeError, match=r"installed: .*memory.*sqlite"):
        open_url("nosuch://x")


def test_malformed_url() -> None:
    with pytest.raises(BadURLError):
        open_url("just-a-path")
    with pytest.raises(BadURLError, match="port"):
        open_url("redis://:secret@host:notaport/0")


def test_unknown_option_is_refused() -> None:
    with pytest.raises(BadURLError, match="unknown option"):
        open_url("memory://?colour=blue")


def test_plugins_listing_survives_a_broken_plugin() -> None:
    out = subprocess.run([sys.executable, "-m", "kvctl", "plugins", "--json"], capture_output=True, check=True)
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["broken"]["error"] and "kvctl_nonexistent_driver" in rows["broken"]["error"]
    assert rows["memory"]["capabilities"]["ttl"] is True
    assert rows["outside"]["version"] == "1.2.3"
    text = subprocess.run([sys.executable, "-m", "kvctl", "plugins"], capture_output=True, text=True, check=True)
    assert "memory" in text.stdout and "broken: broken:// (kvctl-outside-example 1.2.3): not installed" in text.stdout


def test_help_imports_no_driver() -> None:
    code = (
        "import sys; from kvctl.cli.app import app; import typer.testing as t;"
        "r = t.CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output;"
        "bad = [m for m in ('redis', 'asyncpg', 'lmdb', 'libsql_client', 'rocksdict', 'cryptography', 'asyncio')"
        " if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_driver_names_the_extra_that_installs_it() -> None:
    from kvctl.registry import _install_hint

    assert _install_hint("redis", "redis") == "install its driver: pip install 'kvctl[redis]'"
    assert _install_hint("postgres", "asyncpg") == "install its driver: pip install 'kvctl[postgres]'"
    assert _install_hint("broken", "kvctl_nonexistent_driver") == "install the Python module 'kvctl_nonexistent_driver'"

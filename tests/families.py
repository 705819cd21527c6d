"""Fresh test URLs for every backend family, for the engine and CLI tests.

``FACTORIES`` maps a backend family (the plugin's ``name``) to a function of a temporary
directory that returns a URL of an empty store of that family.  Server families take their
server from tests/services.sh (via ``conftest.service_url``) and get a fresh namespace (table,
database) where the backend has one; engine tests clear a store before using it.

``families()`` lists every registered backend whose plugin loads; one without a factory here
is a test failure, so a new backend joins the engine tests by registering and adding a line.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from kvctl.errors import PluginLoadError
from kvctl.registry import load, schemes
from tests.browser import fresh_indexeddb_url
from tests.conftest import service_url


def _unique() -> str:
    return uuid.uuid4().hex[:10]


FACTORIES: dict[str, Callable[[Path], str]] = {
    "memory": lambda tmp: f"memory://m{_unique()}",
    "sqlite": lambda tmp: f"sqlite://{tmp / ('s' + _unique() + '.db')}",
    "lmdb": lambda tmp: f"lmdb://{tmp / ('l' + _unique())}",
    "file": lambda tmp: f"file://{tmp / ('f' + _unique())}",
    # a namespace per store: clear() then removes only that store's keys, never a shared database
    "redis": lambda tmp: _with_option(service_url("KVCTL_TEST_REDIS_URL"), f"namespace=t{_unique()}:"),
    "redis+cluster": lambda tmp: _with_option(service_url("KVCTL_TEST_REDIS_CLUSTER_URL"), f"namespace=t{_unique()}:"),
    "postgres": lambda tmp: _with_option(service_url("KVCTL_TEST_POSTGRES_URL"), f"table=t_{_unique()}"),
    "libsql": lambda tmp: f"libsql://{tmp / ('b' + _unique() + '.db')}",
    "indexeddb": lambda tmp: fresh_indexeddb_url(),
    "outside": lambda tmp: f"outside://o{_unique()}",  # tests/outside_plugin, installed by tests/run.sh
    "probe": lambda tmp: f"probe://p{_unique()}",  # tests/bench_plugin (the gate's probe), installed by tests/run.sh
    # tests/outside_plugin's latency wrapper (for executor tests), here with no delay around SQLite
    "slow": lambda tmp: f"slow://?delay_ms=0&of=sqlite://{tmp / ('w' + _unique() + '.db')}",
    # cookie: the secret comes from a file written beside the store (never from the URL itself)
    "cookie": lambda tmp: (
        lambda secret: (
            tmp.mkdir(parents=True, exist_ok=True),  # type: ignore[func-returns-value]
            secret.write_text("kvctl engine-test cookie secret, 32+ bytes"),
            f"cookie://{tmp / ('c' + _unique() + '.txt')}?secret_file={secret}",
        )[-1]
    )(tmp / ("cookie-secret-" + _unique())),
    "cache": lambda tmp: f"cache://c{_unique()}?max_bytes=64MiB",  # named: shared by every open
    "rocksdb": lambda tmp: f"rocksdb://{tmp / ('r' + _unique())}",
    "shard": lambda tmp: (
        f"shard://?child=memory%3A%2F%2Fsa{_unique()}&weight=1&child=memory%3A%2F%2Fsb{_unique()}&weight=2"
    ),
}


def _with_option(url: str, option: str) -> str:
    return url + ("&" if "?" in url else "?") + option


def families() -> list[str]:
    """Backend families (plugin names) that are registered and load in this environment."""
    names: dict[str, None] = {}
    for scheme in sorted(schemes()):
        try:
            cls = load(scheme)
        except PluginLoadError:
            continue  # tests/core/test_registry.py fails on any registered plugin that does not load
        names.setdefault(getattr(cls, "name", scheme))
    return list(names)


def url_for(family: str, tmp: Path) -> str:
    factory = FACTORIES.get(family)
    if factory is None:
        raise AssertionError(f"backend {family!r} is registered but tests/families.py has no URL factory for it")
    return factory(tmp)

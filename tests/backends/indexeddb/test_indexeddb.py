"""The indexeddb backend against a real headless Chromium (tests/browser.py).

Conformance on an object store an application page created; the page's own data read back
exactly through kvctl; kvctl's writes read back by the page's own code, type by type; the
listing; databases never created by accident and upgrades never blocked; big batches; errors;
and IndexedDB -> SQLite -> IndexedDB with the migrate and diff commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvctl.errors import (
    BadURLError,
    ConflictError,
    LimitError,
    LockedError,
    UnavailableError,
    UnsupportedError,
    UsageError,
)
from kvctl.store import Record, Store
from kvctl.testing import StoreConformance, open_sync
from kvctl.testing.cli import run_kvctl
from tests.browser import OFFLINE_ORIGIN, AppTab, Browser, fresh_indexeddb_url, shared_app, shared_browser


@pytest.fixture(scope="session")
def browser() -> Browser:
    return shared_browser()


@pytest.fixture(scope="session")
def app(browser: Browser) -> Iterator[AppTab]:
    """The application page, open in a normal tab: it has created and seeded "appdb"."""
    tab = AppTab(browser, shared_app().origin + "/app.html")
    yield tab
    tab.close()


@pytest.fixture
def url_of(browser: Browser, app: AppTab):
    def make(store: str | None, database: str | None = "appdb", **options: str) -> str:
        return browser.url(shared_app().origin, database, store, **options)
    return make


@pytest.fixture
def open_store(url_of: Any) -> Iterator[Any]:
    opened: list[Store] = []

    def make(store: str | None, database: str | None = "appdb", **options: str) -> Store:
        s = open_sync(url_of(store, database, **options))
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def everything(store: Store, prefix: bytes = b"", batch_size: int = 1000) -> dict[bytes, bytes]:
    return {r.key: r.value for p in store.scan(prefix, batch_size=batch_size) for r in p.records}


@pytest.mark.filterwarnings("ignore:coroutine 'IndexedDBStore.close' was never awaited")
class TestIndexedDBConformance(StoreConformance):
    @pytest.fixture
    def store_url(self, url_of: Any) -> str:
        return str(url_of("conformance"))


# -- the application's data through kvctl ---------------------------------------------------------
APP_KV = {
    b"greeting": b"hello",
    b"unicode": "ünïcødé ✓ 😀".encode(),
    b"empty-string": b"",
    b"u8": b"\x00\x01\x02\xff",
    b"buffer": b"\x00\xff\x01",
    b"u16": b"\x01\x00\x00\x01",  # the typed array's bytes (little-endian)
    b"object": b'{"name":"agent-1","tags":["a","b"],"n":1.5,"ok":true,"nested":{"x":null}}',
    b"number": b"42",
    b"array-value": b'[1,"two",{"three":3}]',
    b"date-value": b'"2024-01-01T00:00:00.000Z"',
    b"undefined-value": b"null",
    b"blob": b"blob bytes",
    b"\xffn7": b"by number",
    b"\xffn-0.25": b"by float",
    b"\xffd1704067200000": b"by date",
    b"\xffa4:user,3:\xffn7,": b"by array",
    b"\xff\x00": b"by binary",
    b"\xffbab": b"by utf-8 binary",
}


def test_app_data_reads_back_exactly(open_store: Any) -> None:
    kv = open_store("kv")
    assert everything(kv) == APP_KV
    assert everything(kv, batch_size=3) == APP_KV
    got = kv.get_many([*APP_KV, b"missing", b"\xffn8"])
    assert [r.value if r else None for r in got] == [*APP_KV.values(), None, None]
    assert kv.count() == len(APP_KV)
    assert everything(kv, b"\xffn") == {b"\xffn7": b"by number", b"\xffn-0.25": b"by float"}
    assert everything(kv, b"u") == {k: v for k, v in APP_KV.items() if k.startswith(b"u")}


def test_app_stores_with_key_paths_and_generators(open_store: Any) -> None:
    agents = everything(open_store("agents"))
    assert {k: json.loads(v) for k, v in agents.items()} == {
        b"a1": {"id": "a1", "name": "alpha", "skills": ["plan"]},
        b"a2": {"id": "a2", "name": "beta", "skills": []},
    }
    assert everything(open_store("events")) == {b"\xffn1": b'{"type":"start"}', b"\xffn2": b'{"type":"stop"}'}


def test_listing_without_a_store(open_store: Any, url_of: Any) -> None:
    listing = everything(open_store(None, None))
    assert {b"appdb/kv", b"appdb/agents", b"appdb/events", b"appdb/conformance"} <= set(listing)
    agents = json.loads(listing[b"appdb/agents"])
    assert agents["keyPath"] == "id" and agents["autoIncrement"] is False and agents["entries"] == 2
    assert agents["indexes"] == [{"name": "byName", "keyPath": "name", "unique": True, "multiEntry": False}]
    assert json.loads(listing[b"appdb/events"])["autoIncrement"] is True
    # The URL given for a store opens it.
    again = open_sync(agents["url"])
    try:
        assert again.count() == 2
    finally:
        again.close()
    one_db = open_store(None, "appdb")
    assert set(everything(one_db)) == {k for k in listing if k.startswith(b"appdb/")}
    with pytest.raises(UnsupportedError):
        one_db.set(b"x", b"y")


# -- kvctl's writes through the application's eyes ------------------------------------------------
def test_page_reads_what_kvctl_writes(open_store: Any, app: AppTab) -> None:
    store = open_store("roundtrip")
    store.clear()
    store.set_many([
        Record(b"text", "héllo ✓".encode()),
        Record(b"bom", "\ufeffbom".encode()),
        Record(b"bin", b"\x00\xff"),
        Record(b"empty", b""),
        Record(b"\xffn5", b"five"),
        Record(b"\xffd0", b"epoch"),
        Record(b"\xff\x01", b"binary key"),
        Record(b"\xffbab", b"utf-8 binary key"),
        Record(b"\xffa1:a,3:\xffn1,", b"compound"),
    ])
    dump = app.dump("roundtrip")
    assert dump == [
        [["number", "5"], ["string", "five"]],
        [["Date", 0], ["string", "epoch"]],
        [["string", "bin"], ["Uint8Array", [0, 255]]],
        [["string", "bom"], ["string", "\ufeffbom"]],
        [["string", "empty"], ["string", ""]],
        [["string", "text"], ["string", "héllo ✓"]],
        [["ArrayBuffer", [97, 98]], ["string", "utf-8 binary key"]],
        [["ArrayBuffer", [255, 1]], ["string", "binary key"]],
        [["Array", [["string", "a"], ["number", "1"]]], ["string", "compound"]],
    ]


def test_value_modes_bytes_and_json(open_store: Any, app: AppTab) -> None:
    open_store("roundtrip").clear()
    open_store("roundtrip", values="bytes").set(b"k1", b"abc")
    open_store("roundtrip", values="json").set_many([Record(b"k2", b'{"a":[1,2]}'), Record(b"k3", b"not json")])
    assert app.dump("roundtrip") == [
        [["string", "k1"], ["Uint8Array", [97, 98, 99]]],
        [["string", "k2"], ["object", '{"a":[1,2]}']],
        [["string", "k3"], ["string", "not json"]],
    ]
    assert everything(open_store("roundtrip")) == {b"k1": b"abc", b"k2": b'{"a":[1,2]}', b"k3": b"not json"}


def test_in_line_keys_take_json_objects_and_refuse_a_wrong_key(open_store: Any, app: AppTab) -> None:
    agents = open_store("agents")
    agents.set(b"a3", b'{"id":"a3","name":"gamma"}')
    assert json.loads(agents.get(b"a3").value) == {"id": "a3", "name": "gamma"}
    with pytest.raises(UsageError):  # the batch is refused whole: a3 stays, a4 is not written
        agents.set_many([Record(b"a4", b'{"id":"a4","name":"delta"}'), Record(b"a5", b'{"id":"other"}')])
    with pytest.raises(UsageError):
        agents.set(b"a6", b"\xff binary")
    with pytest.raises(ConflictError):  # the application's unique index on "name"
        agents.set(b"a7", b'{"id":"a7","name":"alpha"}')
    assert agents.get(b"a7") is None
    assert agents.get(b"a4") is None
    assert agents.delete(b"a3") is True
    assert [k for k, _ in app.dump("agents")] == [["string", "a1"], ["string", "a2"]]


def test_big_batches_go_in_parts_and_apply_whole(open_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shrink the per-message budgets so a few small records take the multi-part paths (a real
    # multi-megabyte batch takes the same path, only slower: DevTools moves ~30 MB/s).
    from kvctl_plugins.indexeddb import store as module

    monkeypatch.setattr(module, "PART_BUDGET", 50_000)
    monkeypatch.setattr(module, "READ_BUDGET", 50_000)
    scratch = open_store("scratch")
    scratch.clear()
    big = [Record(b"big%d" % i, bytes([i]) * 30_000) for i in range(7)]
    scratch.set_many(big)  # one part per record: six staged in the tab, applied with the last
    assert [r.value for r in scratch.get_many([r.key for r in big])] == [r.value for r in big]
    pages = [p.records for p in scratch.scan(batch_size=1000)]
    assert len(pages) > 1 and {r.key: r.value for p in pages for r in p} == {r.key: r.value for r in big}
    assert scratch.delete_many([r.key for r in big] + [b"nope"]) == 7
    agents = open_store("agents")
    batch = [Record(b"b%d" % i, json.dumps({"id": f"b{i}", "blob": "x" * 30_000}).encode()) for i in range(4)]
    with pytest.raises(UsageError):  # fails in the last part: the staged parts are not applied
        agents.set_many([*batch, Record(b"b9", b'{"id":"wrong"}')])
    assert agents.get_many([r.key for r in batch]) == [None] * 4
    with pytest.raises(LimitError):
        scratch.set(b"huge", b"x" * ((64 << 20) + 1))
    with pytest.raises(LimitError):
        scratch.set(b"k" * ((1 << 20) + 1), b"v")


def test_mixed_key_types_scan_with_prefixes_and_cursors(open_store: Any) -> None:
    store = open_store("mixed")
    store.clear()
    keys = [b"a", b"ab", b"abc", b"b", "ключ".encode(), "ключи".encode(), b"\xffn1", b"\xffn2.5", b"\xffd5",
            b"\xffa1:a,", b"\xff\x01", b"\xff", b"\x80", b"\x80\x81", b"a\xff", b"\xffbab", b"\xffs\xed\xa0\x80"]
    store.set_many(Record(k, k) for k in keys)
    assert everything(store) == {k: k for k in keys}
    for prefix in [b"a", b"ab", "ключ".encode()[:3], b"\xff", b"\xffn", b"\x80", b"a\xff", b"zz"]:
        assert sorted(everything(store, prefix, batch_size=2)) == sorted(k for k in keys if k.startswith(prefix))
        assert store.count(prefix) == sum(k.startswith(prefix) for k in keys)
    pages = store.scan(batch_size=4)
    first = next(pages)
    seen = [r.key for r in first.records]
    seen += [r.key for p in store.scan(cursor=first.cursor, batch_size=4) for r in p.records]
    assert sorted(seen) == sorted(keys)
    with pytest.raises(UnsupportedError):
        next(store.scan(start_after=b"a"))
    with pytest.raises(UsageError):
        next(store.scan(cursor="k:00"))


# -- never create, never block ---------------------------------------------------------------------
def test_missing_database_or_store_is_an_error_and_nothing_is_created(open_store: Any, app: AppTab) -> None:
    with pytest.raises(UsageError, match="no database"):
        open_store("kv", "nope").get(b"x")
    with pytest.raises(UsageError, match="no object store"):
        open_store("nope").get(b"x")
    with pytest.raises(UsageError, match="no database"):
        open_store(None, "nope").count()
    names = app.evaluate("indexedDB.databases().then(ds => ds.map(d => d.name))")
    assert "nope" not in names
    assert app.evaluate("new Promise(ok => { const r = indexedDB.open('appdb'); "
                        "r.onsuccess = () => { ok(r.result.version); r.result.close(); }; })") == 1


def test_kvctl_never_blocks_an_upgrade(open_store: Any, app: AppTab) -> None:
    store = open_store("kv", "upgradable", create="true")
    store.set(b"k", b"v")
    assert app.evaluate("appUpgrade('upgradable', 7)") == "upgraded"
    assert store.get(b"k").value == b"v"  # still readable after the application's upgrade  # type: ignore[union-attr]


def test_no_site_code_runs_in_kvctls_tab(url_of: Any, app: AppTab) -> None:
    """Even a service worker that answers every navigation of the origin is bypassed."""
    assert app.evaluate("appServiceWorker('/__kvctl__')") == "activated"
    store = open_sync(url_of("kv"))
    try:
        assert store.count() == len(APP_KV)
        title = store._run(store.inner._tab.evaluate("document.title"))  # type: ignore[attr-defined]
        assert title == "kvctl"
    finally:
        store.close()


def test_a_blocked_upgrade_is_a_locked_error_and_changes_nothing(open_store: Any, app: AppTab) -> None:
    assert app.evaluate("appHold('held')") == "held"
    with pytest.raises(LockedError, match="blocked"):
        open_store("new", "held", create="true").set(b"k", b"v")
    assert app.evaluate("appRelease('held')") == "released"
    # The upgrade kvctl gave up on runs now, and is aborted: no new store, same version.
    version = "new Promise(ok => { const r = indexedDB.open('held'); r.onsuccess = () => { " \
              "const d = r.result; ok([d.version, Array.from(d.objectStoreNames)]); d.close(); }; })"
    assert app.evaluate(version) == [1, ["a"]]


def test_works_when_the_site_is_down(browser: Browser) -> None:
    """A fresh store (as the engine tests get them) on an origin with no server at all."""
    store = open_sync(fresh_indexeddb_url())
    try:
        assert store.count() == 0
        store.set(b"k", b"v")
        assert store.get(b"k").value == b"v"  # type: ignore[union-attr]
        stats = store.stats()
        assert stats["keys"] == 1 and stats["origin"] == OFFLINE_ORIGIN and stats["key_path"] is None
    finally:
        store.close()


def test_a_reloaded_or_moved_tab_recovers(open_store: Any) -> None:
    store = open_store("kv")
    assert store.count() == len(APP_KV)
    tab = store.inner._tab
    with contextlib.suppress(Exception):  # the reply may be lost in the navigation
        store._run(tab.evaluate("location.reload()"))
    assert store.count() == len(APP_KV)  # the helper is installed again, in the same tab
    assert store.inner._tab is tab
    with contextlib.suppress(Exception):
        store._run(tab.evaluate("location.href = 'http://elsewhere.invalid/'"))
    # setting location.href only starts the navigation: wait until the tab has left the origin
    deadline = time.monotonic() + 30
    while _origin_of(store, tab) == tab.origin:
        assert time.monotonic() < deadline, "the tab never navigated away"
        time.sleep(0.02)
    assert store.count() == len(APP_KV)  # a new tab on the right origin
    assert store.inner._tab is not tab


def _origin_of(store: Any, tab: Any) -> str | None:
    """The tab's current origin, None while it cannot answer (mid-navigation)."""
    try:
        return store._run(tab.evaluate("location.origin"))
    except Exception:
        return None


def test_a_closed_tab_is_reopened(open_store: Any, app: AppTab) -> None:
    store = open_store("kv")
    assert store.count() == len(APP_KV)
    tab = store.inner._tab
    # The application's connection closes kvctl's tab, as a user closing it would.
    app._runner.run(app.conn.send("Target.closeTarget", {"targetId": tab.target_id}))
    assert store.count() == len(APP_KV)  # in a new tab
    assert not tab.usable and store.inner._tab is not tab


# -- errors --------------------------------------------------------------------------------------
def test_unreachable_devtools_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"indexeddb://127.0.0.1:{port}/http%3A%2F%2Fa.test/db/kv?timeout=2s"
    with open_sync(url) as store, pytest.raises(UnavailableError, match="cannot reach"):
        store.get(b"k")


@pytest.mark.parametrize("url", [
    "indexeddb://127.0.0.1:9222/",
    "indexeddb://127.0.0.1:9222/ftp%3A%2F%2Fa.test/db/kv",
    "indexeddb://127.0.0.1:9222/http%3A%2F%2Fa.test%2Fpath/db/kv",
    "indexeddb://127.0.0.1:9222/http%3A%2F%2Fa.test/db/kv/extra",
    "indexeddb://127.0.0.1:9222/http%3A%2F%2Fa.test/db/kv?nope=1",
    "indexeddb://127.0.0.1:9222/http%3A%2F%2Fa.test/db/kv?values=text",
])
def test_bad_urls(url: str) -> None:
    with pytest.raises(BadURLError):
        open_sync(url)


def test_origin_forms() -> None:
    from kvctl_plugins.indexeddb.location import parse_location

    from kvctl.url import StoreURL

    for text in ["indexeddb://h:1/http%3A%2F%2FApp.Test%3A80/d%2F1/s%20t",
                 "indexeddb://h:1/http://app.test:80/d%2F1/s%20t"]:
        where = parse_location(StoreURL.parse(text))
        assert (where.origin, where.database, where.store) == ("http://app.test", "d/1", "s t")
    where = parse_location(StoreURL.parse("indexeddb:///https%3A%2F%2Fa.test%3A8443"))
    assert (where.host, where.port, where.origin, where.database) == ("127.0.0.1", 9222, "https://a.test:8443", None)


def test_ttl_is_refused_before_writing(open_store: Any) -> None:
    store = open_store("scratch")
    with pytest.raises(UnsupportedError):
        store.set_many([Record(b"ok", b"v"), Record(b"t", b"v", 10**13)])
    assert store.get(b"ok") is None


# -- migrate to SQLite and back ----------------------------------------------------------------------
def test_migrate_to_sqlite_and_back(url_of: Any, open_store: Any, tmp_path: Path) -> None:
    source, back = url_of("kv"), url_of("scratch")
    open_store("scratch").clear()
    sqlite = f"sqlite://{tmp_path / 'copy.db'}"
    env = os.environ | {"NO_COLOR": "1"}
    done = run_kvctl(env, "migrate", source, sqlite, "--verify")
    assert done.returncode == 0, done.stderr
    done = run_kvctl(env, "migrate", sqlite, back, "--verify")
    assert done.returncode == 0, done.stderr
    done = run_kvctl(env, "diff", source, back)
    assert done.returncode == 0, done.stdout + done.stderr
    assert everything(open_store("scratch")) == APP_KV
    open_store("scratch").clear()

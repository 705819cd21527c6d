"""The postgres backend on the real server started by tests/services.sh.

Each test module uses its own tables (names with the pid and a random suffix), so concurrent runs
against one server do not collide; the tables are dropped at the end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import asyncpg
import pytest
from kvctl_plugins.postgres.store import COPY_MIN_ROWS

from kvctl.adapt import to_sync
from kvctl.errors import BadURLError, LimitError, StoreIOError, UnavailableError, UsageError
from kvctl.registry import open_url
from kvctl.store import Record, Store, StoreURL
from kvctl.testing import StoreConformance, open_sync
from tests.backends.postgres.support import sql
from tests.backends.support import versions_seeded_on_reopen
from tests.conftest import SERVICES_DIR

pytestmark = pytest.mark.server

PREFIX = f"kvctl_t{os.getpid()}_{uuid.uuid4().hex[:6]}"


def _run(coro):
    return asyncio.run(coro)


def url_of(store: Store) -> StoreURL:
    return store.url  # type: ignore[attr-defined]


def table_url(base: str, name: str, **options: str) -> str:
    extra = "".join(f"&{k}={v}" for k, v in options.items())
    return f"{base}?table={PREFIX}_{name}{extra}"


@pytest.mark.filterwarnings("ignore:coroutine 'PostgresStore.close' was never awaited")
class TestPostgresConformance(StoreConformance):
    @pytest.fixture
    def store_url(self, pg_url: str) -> str:
        return table_url(pg_url, "conf")

@pytest.fixture
def store(pg_url: str, request: pytest.FixtureRequest) -> Iterator[Store]:
    s = open_sync(table_url(pg_url, uuid.uuid4().hex[:8]))
    s.clear()
    yield s
    s.close()


def test_capabilities_are_declared() -> None:
    from kvctl_plugins.postgres import PostgresStore

    caps = PostgresStore.capabilities
    assert caps.persistent and caps.ttl and caps.ordered_scan and caps.versions and caps.atomic_batch
    assert caps.max_key_size == 2692 and caps.max_value_size is not None


def test_long_key_is_refused_before_writing_and_the_limit_is_real(store: Store, pg_url: str) -> None:
    limit = store.capabilities.max_key_size
    assert limit is not None
    at_limit = os.urandom(limit)  # random bytes do not compress: the worst case for the btree
    store.set(at_limit, b"fits")
    assert store.get(at_limit).value == b"fits"  # type: ignore[union-attr]
    with pytest.raises(LimitError):
        store.set(os.urandom(limit + 1), b"v")
    with pytest.raises(LimitError):
        store.set_many([Record(b"ok", b"v"), Record(os.urandom(limit + 1), b"v")])
    assert store.get(b"ok") is None

    # The server really refuses one more byte (which is why the limit is declared), and if such a
    # key ever reached it, the refusal would still be a LimitError, not a crash.
    async def raw() -> str:
        con = await asyncpg.connect(pg_url)
        try:
            await con.execute("CREATE TEMP TABLE t (key bytea PRIMARY KEY)")
            await con.execute("INSERT INTO t VALUES ($1)", os.urandom(limit + 20))
            return "accepted"
        except asyncpg.ProgramLimitExceededError as exc:
            return str(exc)
        finally:
            await con.close()

    assert "exceeds btree" in _run(raw())


def test_batches_large_and_small_paths(store: Store) -> None:
    # 1 row: single upsert; 10: one unnest() statement; COPY_MIN_ROWS: COPY + merge.
    for n in (1, 10, COPY_MIN_ROWS):
        records = [Record(b"p%05d" % i, b"v%d" % (i * n)) for i in range(n)]
        store.set_many(records)
        got = store.get_many([r.key for r in records])
        assert [g.value for g in got] == [r.value for r in records]  # type: ignore[union-attr]
    assert store.count() == COPY_MIN_ROWS


def test_duplicate_keys_in_one_batch_last_wins(store: Store) -> None:
    for n in (3, COPY_MIN_ROWS):
        records = [Record(b"dup", b"first")] + [Record(b"x%d" % i, b"") for i in range(n)]
        store.set_many([*records, Record(b"dup", b"last")])
        assert store.get(b"dup").value == b"last"  # type: ignore[union-attr]


def test_batch_refused_by_the_server_writes_nothing(store: Store, pg_url: str) -> None:
    # A CHECK constraint makes the server itself refuse the last row of a batch: the whole batch
    # must be rolled back, on both batch paths (unnest and COPY + merge).
    table = url_of(store).options["table"]
    store.set(b"keep", b"old")

    sql(pg_url, f'ALTER TABLE "{table}" ADD CONSTRAINT no_bad CHECK (value <> \'bad\')')
    for n in (5, COPY_MIN_ROWS):
        batch = [Record(b"new%d" % i, b"v") for i in range(n)] + [Record(b"keep", b"bad")]
        with pytest.raises(StoreIOError, match="no_bad"):
            store.set_many(batch)
        assert store.get(b"keep").value == b"old"  # type: ignore[union-attr]
        assert store.get(b"new0") is None
    assert store.count() == 1


def test_version_out_of_range_is_refused_before_writing(store: Store) -> None:
    with pytest.raises(UsageError):
        store.set_many([Record(b"a", b"v"), Record(b"b", b"v", None, 1 << 63)])
    assert store.get(b"a") is None
    store.set(b"c", b"v")  # the clock was not poisoned by the refused version
    version = store.get(b"c").version  # type: ignore[union-attr]
    assert version is not None and version < (1 << 63)


def test_versions_seeded_from_table_on_reopen(pg_url: str) -> None:
    versions_seeded_on_reopen(table_url(pg_url, "seed"))


def test_expired_rows_are_hidden_then_purged(store: Store) -> None:
    past = 1_000  # 1970: long expired
    store.set_many([Record(b"gone%d" % i, b"v", past) for i in range(5)] + [Record(b"live", b"v")])
    assert store.get(b"gone1") is None
    assert store.count() == 1
    assert store.delete(b"gone2") is False
    assert store.delete_many([b"gone3", b"live"]) == 1
    stats = store.stats()
    assert stats["keys"] == 0
    # A new store purges on its first write.
    inner = open_url(url_of(store).raw)
    fresh = to_sync(inner)
    try:
        fresh.set(b"x", b"y")
        assert fresh.stats()["expired_not_purged"] == 0
    finally:
        fresh.close()


def test_stats(store: Store) -> None:
    store.set_many(Record(b"s%d" % i, b"v" * 100) for i in range(20))
    stats = store.stats()
    assert stats["keys"] == 20 and stats["table_bytes"] > 0
    assert stats["server_version"].startswith("15") or stats["server_version"][0].isdigit()
    assert stats["schema_version"] == 2


def test_table_name_is_quoted_safely(pg_url: str) -> None:
    name = f'{PREFIX}_we"ird; DROP TABLE x--'
    from urllib.parse import quote

    with open_sync(f"{pg_url}?table={quote(name)}") as s:
        s.set(b"k", b"v")
        assert s.get(b"k").value == b"v"  # type: ignore[union-attr]

    assert sql(pg_url, ("SELECT count(*) FROM pg_tables WHERE tablename = $1", (name,)))[0][0] == 1


def test_schema_version_is_recorded(store: Store, pg_url: str) -> None:
    table = url_of(store).options["table"]

    store.set(b"k", b"v")
    assert sql(pg_url, ("SELECT schema_version FROM kvctl_meta WHERE table_name = $1", (table,)))[0][0] == 2


def test_newer_schema_version_is_refused(store: Store, pg_url: str) -> None:
    store.set(b"k", b"v")
    table = url_of(store).options["table"]

    sql(pg_url, ("UPDATE kvctl_meta SET schema_version = 3 WHERE table_name = $1", (table,)))
    with open_sync(url_of(store).raw) as later, pytest.raises(UsageError, match="schema version 3"):
        later.get(b"k")


def test_foreign_table_is_refused(pg_url: str) -> None:
    name = f"{PREFIX}_foreign"

    sql(pg_url, f'CREATE TABLE "{name}" (id int PRIMARY KEY, payload text)')
    with open_sync(f"{pg_url}?table={name}") as s, pytest.raises(UsageError, match="not a kvctl table"):
        s.get(b"k")


def test_unix_socket_url(pg_url: str) -> None:
    port = urlsplit(pg_url).port
    sock = SERVICES_DIR / "postgres" / "sock"
    if not (sock / f".s.PGSQL.{port}").exists():
        pytest.fail(f"no socket in {sock}")
    with open_sync(f"postgresql:///kvctl_test?host={sock}&port={port}&user=postgres&table={PREFIX}_unix") as s:
        s.set(b"over", b"socket")
        assert s.get(b"over").value == b"socket"  # type: ignore[union-attr]


def test_sslmode_prefer_and_disable_connect(pg_url: str) -> None:
    # The test server has no TLS: prefer falls back to plain, disable never tries.
    for mode in ("prefer", "disable"):
        with open_sync(table_url(pg_url, "ssl", sslmode=mode)) as s:
            s.set(b"k", mode.encode())
            assert s.get(b"k").value == mode.encode()  # type: ignore[union-attr]


def test_sslmode_require_reaches_the_driver(pg_url: str) -> None:
    # The test server has no TLS: require must fail (cleanly), which shows the mode is applied.
    url = table_url(pg_url, "ssl", sslmode="require")
    with open_sync(url) as s, pytest.raises(UnavailableError, match="SSL"):
        s.get(b"k")


def test_concurrent_first_use_of_one_table(pg_url: str) -> None:
    # Several processes' first use of a new table at once: the setup is serialized, none fails.
    url = table_url(pg_url, "race")

    def first_use(i: int) -> None:
        with open_sync(url) as s:
            s.set(b"k%d" % i, b"v")

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(first_use, range(6)))
    with open_sync(url) as s:
        assert s.count() == 6


@pytest.mark.parametrize("bad", ["table=", "nosuch=1", "sslmode=bogus", "table=" + "x" * 64,
                                 "connect_timeout=soon"])
def test_bad_options_are_refused(bad: str) -> None:
    with pytest.raises(BadURLError):
        open_url(f"postgresql://u@127.0.0.1:1/db?{bad}")


def test_password_never_in_errors_or_repr() -> None:
    url = "postgresql://bob:s3cr3t-pw@127.0.0.1:1/db?table=t&connect_timeout=2s"
    store = open_url(url)
    assert "s3cr3t" not in repr(store)
    s = to_sync(store)
    try:
        with pytest.raises(Exception) as info:
            s.get(b"k")
        assert "s3cr3t" not in str(info.value)
    finally:
        s.close()

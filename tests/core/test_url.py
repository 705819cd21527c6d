from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvctl.errors import BadURLError
from kvctl.url import StoreURL, parse_duration_ms, parse_size, redact


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://app:s3cr%40t@db/app?sslmode=require", "postgresql://app:***@db/app?sslmode=require"),
        ("libsql://x.turso.io?authToken=abc.def", "libsql://x.turso.io?authToken=***"),
        ("cookie:///t.txt?secret_env=MY_SECRET", "cookie:///t.txt?secret_env=MY_SECRET"),
        ("sqlite:///a.db?max_key_size=10", "sqlite:///a.db?max_key_size=10"),
        ("redis://user@h/0", "redis://user@h/0"),
    ],
)
def test_redaction(raw: str, shown: str) -> None:
    assert redact(raw) == shown
    assert StoreURL.parse(raw).redacted() == shown


def test_parse_parts_and_options() -> None:
    url = StoreURL.parse("redis://bob:p%40ss@127.0.0.1:6380/2?local_cache=100&cache_ttl=30s")
    assert (url.scheme, url.username, url.password, url.host, url.port, url.path) == (
        "redis", "bob", "p@ss", "127.0.0.1", 6380, "/2")
    assert url.int_option("local_cache", 0) == 100
    assert url.duration_option_ms("cache_ttl", None) == 30_000
    assert "p@ss" not in repr(url)


@pytest.mark.parametrize(
    ("raw", "path"),
    [("sqlite:///abs/x.db", "/abs/x.db"), ("sqlite://rel/x.db", "rel/x.db"), ("sqlite:rel.db", "rel.db"),
     ("lmdb:///d%20ir?map_size=1GiB", "/d ir"),
     # SQLAlchemy's four slashes (and sqlite:///$DIR/f with an absolute $DIR): the same absolute path
     ("sqlite:////abs/x.db", "/abs/x.db"), ("lmdb://///abs/d", "/abs/d"), ("file:////abs/d?x=1", "/abs/d")],
)
def test_local_path(raw: str, path: str) -> None:
    assert StoreURL.parse(raw).local_path() == path


def test_bad_option_values_name_the_redacted_url() -> None:
    url = StoreURL.parse("redis://:pw@h/0?local_cache=lots")
    with pytest.raises(BadURLError) as exc:
        url.int_option("local_cache", 0)
    assert "pw" not in str(exc.value) and "***" in str(exc.value)


def test_units() -> None:
    assert parse_duration_ms("500ms") == 500
    assert parse_duration_ms("2h") == 7_200_000
    assert parse_duration_ms("1.5s") == 1500
    assert parse_duration_ms("10") == 10_000
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("1kb") == 1000
    with pytest.raises(BadURLError):
        parse_duration_ms("soon")
    with pytest.raises(BadURLError):
        parse_size("big")


def test_compound_durations_and_no_guessing_of_capital_m() -> None:
    assert parse_duration_ms("1h30m") == 5_400_000
    assert parse_duration_ms("1h 30m 15s") == 5_415_000
    assert parse_duration_ms("5min") == parse_duration_ms("5m") == 300_000
    for text in ("5M", "1h30", "1h-30m", "m"):
        with pytest.raises(BadURLError, match="ambiguous" if "M" in text else "not a duration"):
            parse_duration_ms(text)


def test_several_hosts() -> None:
    url = StoreURL.parse("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002/?x=1")
    assert url.port is None
    assert url.hosts() == [("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002)]
    assert url.redacted() == "redis+cluster://:***@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002/?x=1"
    assert StoreURL.parse("redis://h:6379/0").hosts() == [("h", 6379)]


def test_urls_nested_in_options_are_redacted() -> None:
    from urllib.parse import quote

    child = "redis://:topsecret@h:6379/0?authToken=tok"
    outer = f"cache://?max_bytes=1MiB&backend={quote(child, safe='')}&child={child}"
    shown = redact(outer)
    assert "topsecret" not in shown and "tok" not in shown.replace("authToken", "")
    assert "max_bytes=1MiB" in shown


def test_urls_inside_messages_are_redacted_and_the_message_kept() -> None:
    msg = "cannot reach libsql://h.turso.io?authToken=abc.def: connection refused (try 'redis://:pw@h/0')"
    assert redact(msg) == ("cannot reach libsql://h.turso.io?authToken=***: connection refused "
                           "(try 'redis://:***@h/0')")


def test_sync_adapter_closes_once() -> None:
    from kvctl.adapt import SyncAdapter
    from kvctl.plugin_kit import AsyncStoreBase

    store = SyncAdapter(AsyncStoreBase())
    store.close()
    store.close()


@pytest.mark.parametrize("scheme", ["sqlite", "libsql", "lmdb", "file", "rocksdb"])
def test_four_slashes_name_the_absolute_path_on_every_path_backend(
        scheme: str, env: dict[str, str], tmp_path: Path) -> None:
    """``sqlite:////abs/path`` as SQLAlchemy users write it (and as ``sqlite:///$DIR/x`` expands)."""
    target = tmp_path / "store"
    url = f"{scheme}:///{target}"  # tmp_path is absolute: four slashes
    assert url.startswith(f"{scheme}:////")
    for args in (["set", "k", "v"], ["get", "k"]):
        done = subprocess.run([sys.executable, "-m", "kvctl", "-u", url, *args], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr
    assert done.stdout == b"v"
    assert target.exists()

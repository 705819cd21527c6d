"""URL -> redis-py connection settings and kvctl's own Redis options.

    redis://[user:password@]host[:port][/db][?option=...]
    rediss://...                      the same over TLS
    unix://[user:password@]/path/to/redis.sock[?db=N&...]
    redis+cluster://host:port[,host:port...][?seeds=host:port,host:port&...]
    rediss+cluster://...              the same over TLS

Options (all optional): ``namespace`` (a key prefix this store lives under, hidden from its keys),
``timeout`` / ``connect_timeout`` (durations), ``client_name``, ``db``, ``username``/``password``
(for unix sockets), ``password_env`` (the name of an environment variable holding the password,
which then stays out of the URL, ``ps`` and shell history; without any password, redis-cli's
``REDISCLI_AUTH`` is used when it is set), TLS ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``
(none|optional|required), ``ssl_check_hostname``; the local cache: ``local_cache`` (entries,
0 = off), ``cache_ttl``, ``cache_channel``, ``cache_prefix``, ``node_id`` (see cache.py); and the
change feed: ``feed`` (``off`` or ``notify``: keyspace notifications, see feed.py) and
``feed_buffer`` (notifications kept for readers, default 1,000,000); and the value codec:
``codec=session`` (values as the Crystal Session library stores them: read as the session JSON,
written back the same way; see kvctl.plugin_kit.session_codec) with ``gzip`` (keep|always|never),
``secret_env`` / ``secret_file`` (else ``$KVCTL_COOKIE_SECRET``; never the secret itself),
``kdf``, ``kdf_salt``, ``kdf_iterations`` and ``digest_fallback``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from kvctl.errors import BadURLError
from kvctl.plugin_kit.session_codec import (
    GZIP_MODES,
    SECRET_OPTIONS,
    SessionCodec,
    open_sealer,
    read_secret,
    refuse_secret_in_url,
)
from kvctl.url import StoreURL

# Session's ("Clustered Redis") defaults: 10,000 entries, 30 s from write, this channel.
DEFAULT_CHANNEL = "session:cluster:invalidate"
DEFAULT_CACHE_TTL_MS = 30_000
DEFAULT_FEED_BUFFER = 1_000_000

CONNECTION_OPTIONS = {
    "timeout", "connect_timeout", "client_name", "db", "username", "password", "password_env",
    "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname",
}
STORE_OPTIONS = {"namespace", "local_cache", "cache_ttl", "cache_channel", "cache_prefix", "node_id",
                 "feed", "feed_buffer", "codec", "gzip", "secret", *SECRET_OPTIONS}
CLUSTER_OPTIONS = {"seeds"}


@dataclass(frozen=True)
class CacheSettings:
    entries: int
    ttl_ms: int
    channel: str
    prefix: bytes  # the part of a Redis key that Session leaves out of a message's session_id
    node_id: str | None


@dataclass
class RedisSettings:
    """What a store needs from its URL: redis-py keyword arguments plus kvctl's options."""

    connection: dict[str, Any] = field(default_factory=dict)
    namespace: bytes = b""
    cache: CacheSettings | None = None
    seeds: list[tuple[str, int]] = field(default_factory=list)
    db: int = 0
    feed: bool = False  # ?feed=notify: a change feed from keyspace notifications
    feed_buffer: int = DEFAULT_FEED_BUFFER
    codec: SessionCodec | None = None  # ?codec=session


def _password(url: StoreURL) -> str | None:
    """The password: in the URL, else ``?password=``, else the variable ``?password_env=`` names,
    else ``$REDISCLI_AUTH`` (as redis-cli reads it), else none."""
    import os

    if url.password is not None:
        return url.password
    if url.option("password") is not None:
        return url.option("password")
    name = url.option("password_env")
    if name:
        if name not in os.environ:
            raise BadURLError(f"password_env={name}: the environment variable {name} is not set "
                              f"(in {url.redacted()})")
        return os.environ[name]
    return os.environ.get("REDISCLI_AUTH") or None


def parse(url: StoreURL, *, cluster: bool) -> RedisSettings:
    url.check_options(CONNECTION_OPTIONS | STORE_OPTIONS | (CLUSTER_OPTIONS if cluster else set()))
    settings = RedisSettings()
    conn = settings.connection
    # Connect fast, but give a slow command (FLUSHDB of a big db, a 1 GiB batch) time to finish.
    conn["socket_connect_timeout"] = url.duration_option_ms("connect_timeout", 5_000) / 1000  # type: ignore[operator]
    timeout = url.duration_option_ms("timeout", 60_000)
    conn["socket_timeout"] = None if not timeout else timeout / 1000
    conn["username"] = url.username or url.option("username") or None
    conn["password"] = _password(url)
    if url.option("client_name"):
        conn["client_name"] = url.option("client_name")
    tls = url.scheme.startswith("rediss")
    if tls:
        conn["ssl"] = True
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if url.option(name):
                conn[name] = url.option(name)
        conn["ssl_cert_reqs"] = url.choice_option("ssl_cert_reqs", ("none", "optional", "required"), "required")
        conn["ssl_check_hostname"] = url.bool_option("ssl_check_hostname", conn["ssl_cert_reqs"] == "required")
    elif any(url.option(n) for n in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")):
        raise BadURLError(f"TLS options need the rediss:// scheme in {url.redacted()}")

    if cluster:
        settings.seeds = _seeds(url)
        if _db(url) != 0:
            raise BadURLError(f"a Redis Cluster has only database 0, not {_db(url)}, in {url.redacted()}")
    elif url.scheme == "unix":
        if not url.path:
            raise BadURLError(f"{url.redacted()} names no socket path (e.g. unix:///run/redis/redis.sock)")
        conn["unix_socket_path"] = url.path
        conn["db"] = settings.db = _db(url)
    else:
        if not url.host:
            raise BadURLError(f"{url.redacted()} names no host (e.g. {url.scheme}://127.0.0.1:6379/0)")
        conn["host"] = url.host
        conn["port"] = url.port or 6379
        conn["db"] = settings.db = _db(url)

    settings.namespace = (url.option("namespace") or "").encode()
    entries = url.int_option("local_cache", 0)
    if entries < 0:
        raise BadURLError(f"local_cache must be 0 (off) or a number of entries in {url.redacted()}")
    if entries:
        settings.cache = CacheSettings(
            entries=entries,
            ttl_ms=url.duration_option_ms("cache_ttl", DEFAULT_CACHE_TTL_MS) or DEFAULT_CACHE_TTL_MS,
            channel=url.option("cache_channel") or DEFAULT_CHANNEL,
            prefix=(url.option("cache_prefix") or "").encode(),
            node_id=url.option("node_id") or None,
        )
    elif any(url.option(n) for n in ("cache_ttl", "cache_channel", "cache_prefix", "node_id")):
        raise BadURLError(f"cache options need local_cache=ENTRIES in {url.redacted()}")
    settings.feed = url.choice_option("feed", ("off", "notify"), "off") == "notify"
    settings.feed_buffer = url.int_option("feed_buffer", DEFAULT_FEED_BUFFER)
    if settings.feed_buffer < 1:
        raise BadURLError(f"feed_buffer must be a positive number of notifications in {url.redacted()}")
    if url.option("feed_buffer") and not settings.feed:
        raise BadURLError(f"feed_buffer needs feed=notify in {url.redacted()}")
    settings.codec = _codec(url)
    return settings


def _codec(url: StoreURL) -> SessionCodec | None:
    refuse_secret_in_url(url)
    if url.choice_option("codec", ("none", "session"), "none") == "none":
        extra = sorted(n for n in ("gzip", *SECRET_OPTIONS) if url.option(n) is not None)
        if extra:
            raise BadURLError(f"{extra[0]} needs codec=session in {url.redacted()}")
        return None
    secret = read_secret(url, required=False)
    sealer = None if secret is None else open_sealer(url, secret, what="session value")
    return SessionCodec(sealer, gzip=url.choice_option("gzip", GZIP_MODES, "keep"), where=url.redacted())


def _db(url: StoreURL) -> int:
    path = url.path.strip("/") if url.scheme != "unix" else ""
    text = url.option("db") or path or "0"
    if path and url.option("db") and path != url.option("db"):
        raise BadURLError(f"two database numbers in {url.redacted()}")
    if not text.isdigit():
        raise BadURLError(f"database {text!r} in {url.redacted()} is not a number")
    return int(text)


def _seeds(url: StoreURL) -> list[tuple[str, int]]:
    """The seed nodes: the URL's host list (``h1:p1,h2:p2``) and then ``?seeds=``; port 6379 if none."""
    found = list(url.hosts())
    for text in filter(None, (url.option("seeds") or "").split(",")):
        host, sep, port = unquote(text).rpartition(":")
        if not sep or host.endswith(":"):  # no port, or a bare IPv6 address
            host, port = unquote(text), ""
        if not port.isdigit() and port:
            raise BadURLError(f"cluster seed {text!r} in {url.redacted()} is not HOST:PORT")
        found.append((host.strip("[]"), int(port) if port else None))
    seeds = [(host, port or 6379) for host, port in found if host]
    if len(seeds) < len(found) or not seeds:
        raise BadURLError(f"{url.redacted()} names no cluster node (e.g. {url.scheme}://127.0.0.1:7000)")
    return seeds

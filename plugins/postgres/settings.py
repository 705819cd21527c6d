"""A kvctl postgres URL -> the asyncpg DSN, the table it names and kvctl's own options.

``postgresql://user:pw@host:5432/db?sslmode=require&table=sessions`` and unix sockets
(``postgresql:///db?host=/run/postgresql``) are standard libpq DSNs; kvctl's options (``table``,
``schema``, ``connect_timeout``, ``command_timeout``, ``feed``, ``feed_retention``,
``tombstone_retention``, ``create``) are taken out before the rest is handed to asyncpg, which would otherwise
send unknown query options to the server as settings.

The change feed's options:

``feed=true|false``
    Turn the table's change feed on or off (DDL: the change table and the triggers are created or
    dropped).  Left out: the table keeps the mode it has; a new table gets a feed.
``feed_retention=1000000`` or ``feed_retention=7d``
    How much of the feed to keep: a bare integer is a number of changes, anything with a time
    unit an age.  Older changes are purged by writers; a sync cursor older than that is a gap.
``tombstone_retention=7d``
    How long a deleted key's tombstone is kept for last-writer-wins replication.

``create=true``
    Let a write add kvctl's table to a database (schema) that holds other programs' tables and
    none of kvctl's; without it such a database is refused, and a read never creates anything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from kvctl.errors import BadURLError
from kvctl.plugin_kit import TOMBSTONE_RETENTION_MS, ReplicationOptions
from kvctl.url import StoreURL

# Options asyncpg understands in a DSN (see asyncpg.connect_utils), plus application_name, which
# it passes through as a server setting.
DRIVER_OPTIONS = {
    "host", "port", "dbname", "database", "user", "password", "passfile", "service",
    "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslpassword", "sslnegotiation",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "target_session_attrs",
    "krbsrvname", "gsslib", "application_name",
}
KVCTL_OPTIONS = {"table", "schema", "connect_timeout", "command_timeout", "create", *ReplicationOptions.OPTIONS}
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

DEFAULT_TABLE = "kv"
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: longer names are silently truncated by the server
# Retention defaults.  The feed keeps a number of changes by default, so its size is bounded
# whatever the write rate (~1M rows of key, value and 40 bytes of bookkeeping); tombstones keep a
# week, long enough for every replica that syncs weekly to hear of a delete.
DEFAULT_FEED_RETENTION_CHANGES = 1_000_000


def quote_ident(name: str) -> str:
    """A safely quoted SQL identifier: any text, embedded quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def derived_name(table: str, suffix: str) -> str:
    """The name of an object kept beside ``table`` (``<table>__changes``...), within 63 bytes.

    A long table name is cut (on a character boundary) and given a hash of the full name, so two
    long names sharing a prefix still get different objects.
    """
    name = table + suffix
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    tag = "_" + hashlib.sha1(table.encode()).hexdigest()[:8]
    room = MAX_IDENTIFIER_BYTES - len((tag + suffix).encode())
    head = table.encode()[:room].decode(errors="ignore")
    return head + tag + suffix


def _identifier(url: StoreURL, option: str, value: str) -> str:
    if not value:
        raise BadURLError(f"option {option}= in {url.redacted()} is empty")
    if "\x00" in value:
        raise BadURLError(f"option {option}= in {url.redacted()} contains a NUL character")
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise BadURLError(
            f"option {option}={value!r} in {url.redacted()} is over PostgreSQL's "
            f"{MAX_IDENTIFIER_BYTES}-byte identifier limit"
        )
    return value


@dataclass(frozen=True)
class Settings:
    dsn: str  # what asyncpg connects with (kvctl's options removed); never print it
    table: str  # unquoted table name
    schema: str | None  # unquoted schema name, None: the connection's search_path
    connect_timeout_s: float
    command_timeout_s: float | None
    feed: bool | None = None  # None: keep the table's mode (a new table gets a feed)
    feed_retention_changes: int | None = DEFAULT_FEED_RETENTION_CHANGES  # one of these two is set
    feed_retention_ms: int | None = None
    tombstone_retention_ms: int = TOMBSTONE_RETENTION_MS
    create: bool = False  # a write may add kvctl's table to a schema that holds only other programs' tables

    @property
    def qualified_table(self) -> str:
        """The quoted, schema-qualified table name for SQL."""
        return self._qualify(self.table)

    @property
    def qualified_meta(self) -> str:
        return self._qualify("kvctl_meta")

    def qualified(self, suffix: str) -> str:
        """The quoted, schema-qualified name of the object ``<table><suffix>``."""
        return self._qualify(derived_name(self.table, suffix))

    @property
    def display_name(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table

    def _qualify(self, name: str) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(name)}" if self.schema else quote_ident(name)


def parse_settings(url: StoreURL) -> Settings:
    url.check_options(DRIVER_OPTIONS | KVCTL_OPTIONS)
    sslmode = url.option("sslmode")
    if sslmode is not None and sslmode not in SSLMODES:
        raise BadURLError(f"option sslmode={sslmode!r} in {url.redacted()} must be one of {', '.join(SSLMODES)}")
    table = _identifier(url, "table", url.name_option("table", DEFAULT_TABLE))
    schema_opt = url.option("schema")
    schema = _identifier(url, "schema", schema_opt) if schema_opt is not None else None
    connect_ms = url.duration_option_ms("connect_timeout", 10_000)
    command_ms = url.duration_option_ms("command_timeout", None)
    replication = ReplicationOptions.from_url(url, default_changes=DEFAULT_FEED_RETENTION_CHANGES)
    dsn = url.without_options(*KVCTL_OPTIONS)
    # asyncpg accepts postgres:// and postgresql:// only; the kvctl scheme is one of those.
    return Settings(
        dsn=dsn,
        table=table,
        schema=schema,
        connect_timeout_s=(connect_ms or 10_000) / 1000,
        command_timeout_s=None if command_ms is None else command_ms / 1000,
        feed=replication.feed,
        feed_retention_changes=replication.feed_retention_changes,
        feed_retention_ms=replication.feed_retention_ms,
        tombstone_retention_ms=replication.tombstone_retention_ms,
        create=url.bool_option("create", False),
    )


def table_identity(url: StoreURL, settings: Settings) -> str:
    """``host:port/database/schema.table`` of a URL, with libpq's defaults filled in; a schema left
    to the search path is ``?`` (it may or may not be the one named elsewhere)."""
    host = (url.option("host") or url.host or "localhost").lower()
    port = url.option("port") or str(url.port or 5432)
    user = url.option("user") or url.username or ""
    database = url.option("dbname") or url.option("database") or url.path.lstrip("/") or user
    return f"{host}:{port}/{database}/{settings.schema or '?'}.{settings.table}"

"""A kvctl postgres URL -> the asyncpg DSN, the table it names and kvctl's own options.

``postgresql://user:pw@host:5432/db?sslmode=require&table=sessions`` and unix sockets
(``postgresql:///db?host=/run/postgresql``) are standard libpq DSNs; kvctl's options (``table``,
``schema``, ``connect_timeout``, ``command_timeout``) are taken out before the rest is handed to
asyncpg, which would otherwise send unknown query options to the server as settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvctl.errors import BadURLError
from kvctl.url import StoreURL

# Options asyncpg understands in a DSN (see asyncpg.connect_utils), plus application_name, which
# it passes through as a server setting.
DRIVER_OPTIONS = {
    "host", "port", "dbname", "database", "user", "password", "passfile", "service",
    "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslpassword", "sslnegotiation",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "target_session_attrs",
    "krbsrvname", "gsslib", "application_name",
}
KVCTL_OPTIONS = {"table", "schema", "connect_timeout", "command_timeout"}
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

DEFAULT_TABLE = "kv"
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: longer names are silently truncated by the server


def quote_ident(name: str) -> str:
    """A safely quoted SQL identifier: any text, embedded quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


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

    @property
    def qualified_table(self) -> str:
        """The quoted, schema-qualified table name for SQL."""
        return self._qualify(self.table)

    @property
    def qualified_meta(self) -> str:
        return self._qualify("kvctl_meta")

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
    table = _identifier(url, "table", url.option("table", DEFAULT_TABLE) or "")
    schema_opt = url.option("schema")
    schema = _identifier(url, "schema", schema_opt) if schema_opt is not None else None
    connect_ms = url.duration_option_ms("connect_timeout", 10_000)
    command_ms = url.duration_option_ms("command_timeout", None)
    dsn = url.without_options(*KVCTL_OPTIONS)
    # asyncpg accepts postgres:// and postgresql:// only; the kvctl scheme is one of those.
    return Settings(
        dsn=dsn,
        table=table,
        schema=schema,
        connect_timeout_s=(connect_ms or 10_000) / 1000,
        command_timeout_s=None if command_ms is None else command_ms / 1000,
    )

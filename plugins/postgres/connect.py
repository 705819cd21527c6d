"""Opening a connection with a URL's settings: the one place asyncpg.connect is called."""

from __future__ import annotations

import asyncpg

from kvctl.errors import BadURLError

from .errors import translated
from .settings import Settings


async def connect(settings: Settings, where: str, *, read_only: bool | None = None) -> asyncpg.Connection:
    """A connection to the URL's server; its errors translated, a DSN option asyncpg refuses one
    clear line.  ``read_only`` True: every transaction of the session is read-only, so the server
    itself refuses any change; False: writable whatever the role's default; None: the default."""
    server_settings = None if read_only is None else {"default_transaction_read_only": "on" if read_only else "off"}
    with translated(where, "connect"):
        try:
            return await asyncpg.connect(settings.dsn, timeout=settings.connect_timeout_s,
                                         command_timeout=settings.command_timeout_s, server_settings=server_settings)
        except (ValueError, TypeError) as exc:  # asyncpg's verdict on a DSN option
            raise BadURLError(f"{where}: {exc}") from exc

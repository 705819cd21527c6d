"""Remote connections (Hrana over WebSocket): what libsql-client leaves to its caller."""

from __future__ import annotations

import asyncio
from typing import Any


async def hello_answered(client: Any) -> None:
    """Wait for the server's answer to a WebSocket client's hello (the token), and raise a
    refusal.  The first requests otherwise follow the hello unanswered: a server refusing it
    closes the socket, and a request written meanwhile fails as "closing transport" instead of
    saying why.  libsql-client marks the handshake finished before it records a refusal (while
    closing the socket), so a socket found closed means: wait for that record.  Costs one round
    trip at opening; an HTTP client (no ``wait_connected``) has nothing to wait for."""
    conn: Any = getattr(client, "_conn", None)
    wait_connected = getattr(conn, "wait_connected", None)
    if wait_connected is None:
        return
    await wait_connected()
    socket, receiving = getattr(conn, "_socket", None), getattr(conn, "_receive_task", None)
    if socket is not None and socket.closed and receiving is not None:
        await asyncio.wait([receiving])
        if conn.exception is not None:
            raise conn.exception

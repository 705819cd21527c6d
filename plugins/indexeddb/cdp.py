"""A minimal Chrome DevTools Protocol client over the ``websockets`` package.

One websocket to the *browser* endpoint carries every session ("flat" sessions: each message
names its ``sessionId``), so kvctl needs no second connection for its own tab.  Replies are
matched to requests by id; events go to listeners registered per (session, method).

Two settings matter for speed: compression is off (permessage-deflate of a multi-megabyte
base64 payload costs seconds on both ends) and the message size limit is raised (values are
shipped inside single JSON messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

# Chromium caps a DevTools message at 256 MiB; stay under it on our side as well.
MAX_MESSAGE = 256 * 1024 * 1024

Listener = Callable[[dict[str, Any]], Awaitable[None] | None]


class CDPError(Exception):
    """The browser answered a command with an error object."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: {message} ({code})")
        self.method = method
        self.code = code
        self.message = message


class CDPClosed(Exception):
    """The websocket went away (browser closed, network error)."""


async def browser_ws_url(host: str, port: int, timeout: float) -> str:
    """The browser's websocket URL, from ``GET /json/version`` (one small HTTP/1.1 exchange)."""
    async def fetch() -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            # Chromium's DevTools HTTP server answers HTTP/1.1 only (an HTTP/1.0 request gets nothing).
            writer.write(f"GET /json/version HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
                         .encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            body = await (reader.readexactly(int(length.group(1))) if length else reader.read())
            return head, body
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    try:
        head, body = await asyncio.wait_for(fetch(), timeout)
    except asyncio.IncompleteReadError:
        raise CDPClosed("the DevTools port closed the connection without an answer") from None
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 200 " not in status + " ":
        raise CDPClosed(f"GET /json/version answered {status!r}")
    try:
        url = json.loads(body)["webSocketDebuggerUrl"]
    except (ValueError, KeyError, TypeError):
        raise CDPClosed("GET /json/version did not return a DevTools endpoint") from None
    return str(url)


class Connection:
    """One DevTools websocket; ``send`` is safe to call from concurrent tasks."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, str | None, asyncio.Future[dict[str, Any]]]] = {}
        self._listeners: dict[tuple[str | None, str], Listener] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed: BaseException | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, ws_url: str, timeout: float) -> Connection:
        try:
            ws = await connect(
                ws_url, compression=None, max_size=MAX_MESSAGE, proxy=None, open_timeout=timeout,
                ping_interval=None, user_agent_header="kvctl", write_limit=1 << 20,
            )
        except (TimeoutError, OSError, InvalidHandshake, InvalidURI) as exc:
            raise CDPClosed(f"cannot open the DevTools websocket: {exc}") from None
        return cls(ws)

    def on(self, session_id: str | None, method: str, listener: Listener | None) -> None:
        """Call ``listener(params)`` for each ``method`` event of a session (None: remove)."""
        if listener is None:
            self._listeners.pop((session_id, method), None)
        else:
            self._listeners[(session_id, method)] = listener

    async def send(self, method: str, params: dict[str, Any] | None = None, *,
                   session_id: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        if self._closed is not None:
            raise CDPClosed(f"DevTools connection closed: {self._closed}")
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = (method, session_id, future)
        try:
            await self._ws.send(json.dumps(message, separators=(",", ":")))
            return await asyncio.wait_for(future, timeout) if timeout else await future
        except ConnectionClosed as exc:
            raise CDPClosed(f"DevTools connection closed: {exc}") from None
        finally:
            self._pending.pop(msg_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: never "Future exception was never retrieved"
            else:
                future.cancel()

    def fail_session(self, session_id: str, reason: str) -> None:
        """Fail every command still waiting on a session that went away (tab closed or crashed)."""
        for _method, sid, future in list(self._pending.values()):
            if sid == session_id and not future.done():
                future.set_exception(CDPClosed(reason))

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                msg = json.loads(raw)
                msg_id = msg.get("id")
                if msg_id is not None:
                    entry = self._pending.get(msg_id)
                    if entry is None or entry[2].done():
                        continue
                    method, _sid, future = entry
                    if "error" in msg:
                        err = msg["error"]
                        future.set_exception(CDPError(method, err.get("code", 0), err.get("message", "")))
                    else:
                        future.set_result(msg.get("result", {}))
                    continue
                listener = self._listeners.get((msg.get("sessionId"), msg.get("method", "")))
                if listener is not None:
                    result = listener(msg.get("params", {}))
                    if result is not None:  # run async listeners beside the reader, never inside it
                        task = asyncio.ensure_future(result)
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
        except ConnectionClosed as exc:
            self._closed = exc
        except Exception as exc:  # a broken frame must not leave callers waiting forever
            self._closed = exc
        else:
            self._closed = CDPClosed("the browser closed the connection")
        for _method, _sid, future in self._pending.values():
            if not future.done():
                future.set_exception(CDPClosed(f"DevTools connection closed: {self._closed}"))

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        for task in list(self._tasks):
            task.cancel()

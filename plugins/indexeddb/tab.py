"""kvctl's own hidden tab on the target origin, where its IndexedDB scripts run.

IndexedDB belongs to a document of the origin.  kvctl opens a hidden tab
(``Target.createTarget``), intercepts every request of that tab with the Fetch domain, and
navigates it to a path of the origin, answering the navigation itself with an empty page.  So
none of the site's code runs, nothing reaches the network (the site's server need not be up),
and service workers are bypassed.  The page then only holds kvctl's helper (:mod:`.scripts`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

from .cdp import CDPClosed, CDPError, Connection, browser_ws_url
from .scripts import HELPER, call_expression

EMPTY_PAGE = base64.b64encode(b"<!doctype html><meta charset=utf-8><title>kvctl</title>").decode()
OBJECT_GROUP = "kvctl"


class ScriptError(Exception):
    """The helper reported an error: ``name`` is the DOMException/Error name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class Tab:
    """One attached DevTools session on kvctl's tab; ``close`` closes the tab."""

    def __init__(self, conn: Connection, target_id: str, session_id: str, origin: str, timeout: float) -> None:
        self.conn = conn
        self.target_id = target_id
        self.session_id = session_id
        self.origin = origin
        self.timeout = timeout
        self.broken: str | None = None  # why the tab can no longer be used

    @property
    def usable(self) -> bool:
        return self.broken is None and not self.conn.closed

    def _lost(self, reason: str) -> None:
        self.broken = reason
        self.conn.fail_session(self.session_id, reason)

    @classmethod
    async def open(cls, host: str, port: int, origin: str, path: str, timeout: float) -> Tab:
        conn = await Connection.open(await browser_ws_url(host, port, timeout), timeout)
        try:
            target_id = await _create_target(conn, timeout)
            attached = await conn.send("Target.attachToTarget", {"targetId": target_id, "flatten": True},
                                       timeout=timeout)
            tab = cls(conn, target_id, attached["sessionId"], origin, timeout)
            try:
                await tab._load(path)
            except BaseException:
                await tab.close()
                raise
            return tab
        except BaseException:
            await conn.close()
            raise

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   timeout: float | None = None) -> dict[str, Any]:
        return await self.conn.send(method, params, session_id=self.session_id, timeout=timeout or self.timeout)

    async def _load(self, path: str) -> None:
        sid = self.session_id
        document_url = self.origin + path

        async def paused(params: dict[str, Any]) -> None:
            # Answer the navigation with an empty page; refuse anything else the tab might fetch.
            with contextlib.suppress(Exception):
                if params.get("resourceType") == "Document":
                    await self.send("Fetch.fulfillRequest", {
                        "requestId": params["requestId"], "responseCode": 200, "body": EMPTY_PAGE,
                        "responseHeaders": [{"name": "Content-Type", "value": "text/html; charset=utf-8"},
                                            {"name": "Cache-Control", "value": "no-store"}],
                    })
                else:
                    await self.send("Fetch.failRequest",
                                    {"requestId": params["requestId"], "errorReason": "BlockedByClient"})

        def detached(params: dict[str, Any]) -> None:
            if params.get("sessionId") == sid:
                self._lost("kvctl's tab was closed")

        loaded = asyncio.get_running_loop().create_future()
        self.conn.on(None, "Target.detachedFromTarget", detached)
        self.conn.on(sid, "Inspector.targetCrashed", lambda _p: self._lost("kvctl's tab crashed"))
        await self.send("Inspector.enable")
        self.conn.on(sid, "Fetch.requestPaused", paused)
        self.conn.on(sid, "Page.loadEventFired", lambda _p: _settle(loaded))
        await self.send("Network.enable", {"maxTotalBufferSize": 0, "maxResourceBufferSize": 0})
        await self.send("Network.setBypassServiceWorker", {"bypass": True})
        await self.send("Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]})
        await self.send("Page.enable")
        nav = await self.send("Page.navigate", {"url": document_url})
        if nav.get("errorText"):
            raise ScriptError("NavigationError", f"cannot open {document_url}: {nav['errorText']}")
        await asyncio.wait_for(loaded, self.timeout)
        self.conn.on(sid, "Page.loadEventFired", None)
        await self.send("Page.disable")
        # Network stays enabled (it holds the service-worker bypass) and so does Fetch: should the
        # tab ever load again, still nothing leaves it and no site code runs.
        await self._install()

    async def _install(self) -> None:
        origin = await self.evaluate("location.origin")
        if origin != self.origin:
            raise ScriptError("NavigationError", f"the tab is on {origin!r}, not {self.origin!r}")
        await self.evaluate(HELPER)

    async def evaluate(self, expression: str, timeout: float | None = None) -> Any:
        reply = await self.send("Runtime.evaluate", {
            "expression": expression, "awaitPromise": True, "returnByValue": True,
            "objectGroup": OBJECT_GROUP, "silent": True,
        }, timeout=timeout)
        details = reply.get("exceptionDetails")
        if details is not None:
            # The thrown object stays registered under our group until released.
            with contextlib.suppress(Exception):
                await self.send("Runtime.releaseObjectGroup", {"objectGroup": OBJECT_GROUP})
            exc = details.get("exception", {})
            raise ScriptError(exc.get("className") or "Error",
                              exc.get("description") or details.get("text") or "script failed")
        return reply.get("result", {}).get("value")

    async def call(self, name: str, args: dict[str, Any], timeout: float | None = None) -> Any:
        """Run one helper operation; raises :class:`ScriptError` with the browser's error name."""
        expression = call_expression(name, args)
        try:
            text = await self.evaluate(expression, timeout)
        except ScriptError as exc:
            # Nothing ran: the page lost the helper (reloaded by someone); install it again,
            # unless the tab is no longer on the origin: then it is of no use.
            if exc.name != "ReferenceError" or "__kvctl" not in exc.message:
                raise
            try:
                await self._install()
            except ScriptError as lost:
                self._lost(lost.message)
                raise CDPClosed(f"kvctl's tab was taken elsewhere: {lost.message}") from None
            text = await self.evaluate(expression, timeout)
        if not isinstance(text, str):
            raise ScriptError("ProtocolError", f"the helper answered {type(text).__name__}, not JSON text")
        answer = json.loads(text)
        if "error" in answer:
            raise ScriptError(*answer["error"])
        return answer["ok"]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.conn.send("Target.closeTarget", {"targetId": self.target_id}, timeout=self.timeout)
        await self.conn.close()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _create_target(conn: Connection, timeout: float) -> str:
    # ``hidden`` keeps the tab out of the tab strip (newer Chromium); older ones know ``background``.
    try:
        made = await conn.send("Target.createTarget", {"url": "about:blank", "hidden": True}, timeout=timeout)
    except CDPError:
        made = await conn.send("Target.createTarget", {"url": "about:blank", "background": True},
                               timeout=timeout)
    return str(made["targetId"])

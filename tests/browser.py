"""A headless Chromium and a tiny web application for the indexeddb tests.

``shared_browser()`` starts one Chromium per test process (a fresh ``--user-data-dir``,
``--remote-debugging-port=0``, the port read from ``DevToolsActivePort``) and stops it by its
own process group at exit.  ``shared_app()`` serves, on 127.0.0.1, a page whose JavaScript
creates IndexedDB data the way an application would (:data:`APP_HTML`) and can dump what a store
holds with its own code, type by type.  ``AppTab`` drives such a page through DevTools.

When Chromium is missing, a test that needs it fails if ``KVCTL_SERVICES=required`` (the
project's test command) and is skipped otherwise.  ``fresh_indexeddb_url()`` gives the engine and
CLI tests a new, empty object store (created on first use, ``create=true``, on an origin whose
server does not exist: kvctl answers its own tab's navigation).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
)
# An origin with no server behind it: kvctl's tab never asks the network anyway.
OFFLINE_ORIGIN = "http://kvctl-tests.invalid:8123"


def find_chromium() -> str | None:
    explicit = os.environ.get("KVCTL_CHROMIUM")
    if explicit:
        return explicit if shutil.which(explicit) else None
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    path = find_chromium()
    if path:
        return path
    message = "Chromium is not installed (Debian: apt-get install -y chromium)"
    if os.environ.get("KVCTL_SERVICES") == "required":
        pytest.fail(message)
    pytest.skip(message)


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when the test process dies, so a test run
    that is killed (no atexit, no fixture teardown) leaves no browser behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class Browser:
    """A headless Chromium in its own process group, with a throw-away profile."""

    def __init__(self, executable: str, startup_timeout: float = 60.0) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="kvctl-chromium-"))
        self.log_path = self.profile.parent / (self.profile.name + ".log")
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        try:
            self.port = self._wait_for_port(startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_for_port(self, timeout: float) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Chromium exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError, ValueError, IndexError):
                lines = marker.read_text().splitlines()
                if len(lines) >= 2:
                    return int(lines[0])
            time.sleep(0.05)
        raise RuntimeError(f"Chromium wrote no DevToolsActivePort within {timeout:g} s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    @property
    def devtools(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, origin: str, database: str | None = None, store: str | None = None, **options: str) -> str:
        parts = [quote(origin, safe="")] + [quote(p, safe="") for p in (database, store) if p is not None]
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"indexeddb://{self.devtools}/{'/'.join(parts)}" + (f"?{query}" if query else "")

    def stop(self) -> None:
        """Stop the whole process group (browser, zygotes, renderers), then drop the profile."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError):  # children left behind by the leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.log_path.unlink()


# -- the application -------------------------------------------------------------------------
APP_HTML = r"""<!doctype html>
<meta charset="utf-8"><title>kvctl test app</title>
<script>
"use strict";
// An application's own IndexedDB code: it owns "appdb" and writes every kind of value and key.
const done = (tx) => new Promise((ok, bad) => { tx.oncomplete = ok; tx.onabort = () => bad(tx.error); });
function openApp() {
  return new Promise((ok, bad) => {
    const r = indexedDB.open("appdb", 1);
    r.onupgradeneeded = () => {
      const d = r.result;
      for (const name of ["kv", "conformance", "roundtrip", "scratch", "mixed"]) d.createObjectStore(name);
      d.createObjectStore("agents", {keyPath: "id"}).createIndex("byName", "name", {unique: true});
      d.createObjectStore("events", {autoIncrement: true});
    };
    r.onsuccess = () => ok(r.result);
    r.onerror = () => bad(r.error);
  });
}
async function seed() {
  const db = await openApp();
  const tx = db.transaction(["kv", "agents", "events"], "readwrite");
  const kv = tx.objectStore("kv");
  kv.clear();
  kv.put("hello", "greeting");
  kv.put("ünïcødé ✓ 😀", "unicode");
  kv.put("", "empty-string");
  kv.put(new Uint8Array([0, 1, 2, 255]), "u8");
  kv.put(new Uint8Array([0, 255, 1]).buffer, "buffer");
  kv.put(new Uint16Array([1, 256]), "u16");
  kv.put({name: "agent-1", tags: ["a", "b"], n: 1.5, ok: true, nested: {x: null}}, "object");
  kv.put(42, "number");
  kv.put([1, "two", {three: 3}], "array-value");
  kv.put(new Date(Date.UTC(2024, 0, 1)), "date-value");
  kv.put(undefined, "undefined-value");
  kv.put(new Blob(["blob bytes"]), "blob");
  kv.put("by number", 7);
  kv.put("by float", -0.25);
  kv.put("by date", new Date(Date.UTC(2024, 0, 1)));
  kv.put("by array", ["user", 7]);
  kv.put("by binary", new Uint8Array([0xff, 0x00]));
  kv.put("by utf-8 binary", new Uint8Array([0x61, 0x62]));
  const agents = tx.objectStore("agents");
  agents.clear();
  agents.put({id: "a1", name: "alpha", skills: ["plan"]});
  agents.put({id: "a2", name: "beta", skills: []});
  const events = tx.objectStore("events");
  events.clear();
  events.add({type: "start"});
  events.add({type: "stop"});
  await done(tx);
  db.close();
  return "ready";
}
// Everything a store holds, with the types the application sees.
function typed(v) {
  if (typeof v === "string") return ["string", v];
  if (v instanceof Uint8Array) return ["Uint8Array", Array.from(v)];
  if (v instanceof ArrayBuffer) return ["ArrayBuffer", Array.from(new Uint8Array(v))];
  if (v instanceof Date) return ["Date", v.getTime()];
  if (typeof v === "number") return ["number", String(v)];
  if (Array.isArray(v)) return ["Array", v.map(typed)];
  if (v && typeof v === "object") return ["object", JSON.stringify(v)];
  return [typeof v, String(v)];
}
async function appDump(store) {
  const db = await openApp();
  const tx = db.transaction(store, "readonly");
  const out = [];
  tx.objectStore(store).openCursor().onsuccess = (e) => {
    const c = e.target.result;
    if (c) { out.push([typed(c.key), typed(c.value)]); c.continue(); }
  };
  await done(tx);
  db.close();
  return JSON.stringify(out);
}
async function appUpgrade(name, version) {
  return new Promise((ok, bad) => {
    const r = indexedDB.open(name, version);
    r.onupgradeneeded = () => { r.result.createObjectStore("v" + version); };
    r.onsuccess = () => { r.result.close(); ok("upgraded"); };
    r.onerror = () => bad(r.error);
    r.onblocked = () => ok("blocked");
  });
}
// An application that keeps a connection open and ignores "versionchange" (blocks upgrades).
const held = {};
function appHold(name) {
  return new Promise((ok, bad) => {
    const r = indexedDB.open(name, 1);
    r.onupgradeneeded = () => r.result.createObjectStore("a");
    r.onsuccess = () => { held[name] = r.result; ok("held"); };
    r.onerror = () => bad(r.error);
  });
}
function appRelease(name) { held[name].close(); delete held[name]; return "released"; }
async function appServiceWorker(scope) {
  const reg = await navigator.serviceWorker.register("/sw.js", {scope});
  const worker = reg.installing || reg.waiting || reg.active;
  if (worker.state !== "activated") {
    await new Promise((ok) => worker.addEventListener("statechange", () => {
      if (worker.state === "activated") ok();
    }));
  }
  return worker.state;
}
window.appReady = seed();
</script>
"""

# The site's service worker answers every navigation in its scope with its own page.
SERVICE_WORKER_JS = r"""
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (e) => {
  if (e.request.mode === "navigate") {
    e.respondWith(new Response("<title>service worker</title><script>document.title = 'site code ran'</script>",
                               {headers: {"Content-Type": "text/html"}}));
  }
});
"""


class _AppHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/app.html"):
            self._send(APP_HTML.encode(), "text/html; charset=utf-8")
        elif path == "/sw.js":
            self._send(SERVICE_WORKER_JS.encode(), "text/javascript")
        else:
            self.send_error(404)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


class AppServer:
    """The application's web server on 127.0.0.1 (a thread of the test process)."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _AppHandler)
        self.port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class AppTab:
    """A normal browser tab showing the application page, driven through DevTools."""

    def __init__(self, browser: Browser, url: str) -> None:
        from kvctl_plugins.indexeddb.cdp import Connection, browser_ws_url

        self._runner = asyncio.Runner()

        async def open_tab() -> tuple[Any, str, str]:
            conn = await Connection.open(await browser_ws_url("127.0.0.1", browser.port, 10), 10)
            target = (await conn.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
            session = (await conn.send("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
            await conn.send("Page.enable", session_id=session)
            loaded = asyncio.get_running_loop().create_future()
            conn.on(session, "Page.loadEventFired", lambda _p: None if loaded.done() else loaded.set_result(None))
            await conn.send("Page.navigate", {"url": url}, session_id=session)
            await asyncio.wait_for(loaded, 10)
            return conn, target, session

        self.conn, self.target, self.session = self._runner.run(open_tab())
        assert self.evaluate("appReady") == "ready"

    def evaluate(self, expression: str) -> Any:
        async def run() -> Any:
            reply = await self.conn.send("Runtime.evaluate", {
                "expression": expression, "awaitPromise": True, "returnByValue": True}, session_id=self.session)
            if "exceptionDetails" in reply:
                raise AssertionError(reply["exceptionDetails"].get("exception", {}).get("description"))
            return reply["result"].get("value")

        return self._runner.run(run())

    def dump(self, store: str) -> list[Any]:
        return list(json.loads(self.evaluate(f"appDump({json.dumps(store)})")))

    def close(self) -> None:
        async def shut() -> None:
            with contextlib.suppress(Exception):
                await self.conn.send("Target.closeTarget", {"targetId": self.target})
            await self.conn.close()

        self._runner.run(shut())
        self._runner.close()


# -- one browser and one app server per test process ----------------------------------------------
_shared: dict[str, Any] = {}
_lock = threading.Lock()


def shared_browser() -> Browser:
    """The test process's Chromium (started on first use, stopped at exit)."""
    executable = require_chromium()
    with _lock:
        if "browser" not in _shared:
            _shared["browser"] = Browser(executable)
            atexit.register(_shared["browser"].stop)
        return _shared["browser"]


def shared_app() -> AppServer:
    with _lock:
        if "app" not in _shared:
            _shared["app"] = AppServer()
            atexit.register(_shared["app"].stop)
        return _shared["app"]


def fresh_indexeddb_url() -> str:
    """A new, empty object store in the shared browser (for the engine and CLI tests)."""
    browser = shared_browser()
    return browser.url(OFFLINE_ORIGIN, "kvctl-" + uuid.uuid4().hex[:10], "kv", create="true")

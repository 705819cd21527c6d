"""What the Redis test modules share: URL options, and redis-server processes of a test's own (for
the faults, settings and cluster changes the shared servers must not see)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis as redispy

from kvctl.registry import open_url


def with_options(url: str, **options: object) -> str:
    """``url`` with ``options`` added to its query string."""
    extra = "&".join(f"{k}={v}" for k, v in options.items())
    return url + ("&" if "?" in url else "?") + extra


def clear_namespace(namespace: str, *variables: str) -> None:
    """Remove a module's keys under ``namespace`` from the shared servers named by ``variables``
    (those that are set): the servers outlive the tests."""
    for var in variables:
        url = os.environ.get(var)
        if url:
            with open_url(with_options(url, namespace=namespace)) as store:
                store.clear()


def free_port() -> int:
    """A free port on 127.0.0.1 with room above it for a cluster bus port (+10000)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 55000:
            return port


def wait(check: Callable[..., object], timeout: float = 15, what: str = "the server did not come up") -> None:
    """Retry ``check`` until it returns true; a server not answering yet is not a failure."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redispy.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.05)


class Server:
    """A redis-server of this test's own, in the foreground so its PID is ours to kill.

    ``auth`` is what a client gives to log in (for servers started with ACL users); ``ping`` False
    returns at once (for servers that refuse plain connections)."""

    def __init__(self, workdir: Path, *args: str, port: int | None = None, ping: bool = True,
                 auth: dict[str, str] | None = None) -> None:
        self.args = args
        self.auth = auth or {}
        # A port found free can be taken by another test worker before this server binds it: then
        # this server exits and the port answers for the other one. Try again on a new port.
        for _ in range(5):
            self.port = port or free_port()
            self.dir = workdir / f"redis-{self.port}"
            self.dir.mkdir(parents=True, exist_ok=True)
            if self.start(ping):
                return
            if port is not None:
                raise AssertionError(f"redis-server did not start on port {port} (see {self.dir / 'log'})")
        raise AssertionError("no free port kept long enough for a redis-server")

    def start(self, ping: bool = True) -> bool:
        """Start it (again: same port, same arguments) and wait until it answers PING as this
        process; False when it exited instead (its port was taken)."""
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "log"), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not ping:
            return True
        # generous: on a loaded 2-core runner a fresh redis-server can take seconds to answer
        wait(lambda: self.proc.poll() is not None or self._answers_as_itself(), timeout=60)
        return self.proc.poll() is None

    def _answers_as_itself(self) -> bool:
        client = self.client()
        try:
            return int(client.info("server")["process_id"]) == self.proc.pid
        except redispy.ResponseError:  # a user without INFO: an answer is all it can tell
            return bool(client.ping())

    def client(self, **kwargs: Any) -> redispy.Redis:
        return redispy.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, **{**self.auth, **kwargs})

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

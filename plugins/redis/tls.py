"""TLS connections that say at once when the server speaks plain Redis.

A plain Redis server never answers a TLS ClientHello: it reads it as the start of an inline
command and waits for the end of the line, so a ``rediss://`` URL pointing at it would only time
out after the connect timeout.  :class:`TLSConnection` watches the handshake: when it has not
finished after ``PROBE_AFTER_S``, a second, plain connection sends ``PING``; a RESP answer
aborts the handshake with "TLS handshake failed".  A slow TLS server loses nothing: its
handshake goes on, and the probe it received is a failed handshake in its log.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Any

import redis
from redis.connection import Connection

PROBE_AFTER_S = 0.5


def speaks_plain_redis(host: str, port: int, timeout: float) -> bool:
    """Does ``host:port`` answer a plain ``PING`` in RESP (``+PONG``, or ``-NOAUTH`` ...)?"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(1) in (b"+", b"-")
    except OSError:
        return False


class TLSConnection(redis.SSLConnection):
    """redis-py's TLS connection with the handshake watched (see the module docstring)."""

    def _connect(self) -> Any:
        wrap = getattr(self, "_wrap_socket_with_ssl", None)
        if wrap is None:  # a redis-py without a separate handshake step: its own behaviour
            return super()._connect()
        sock = Connection._connect(self)  # the TCP connection; the handshake follows
        # wrapping detaches ``sock`` from its descriptor: the watcher ends the handshake through a
        # duplicate (shutdown acts on the socket every descriptor of it shares)
        spare = socket.socket(fileno=os.dup(sock.fileno()))
        finished = threading.Event()
        plain = threading.Event()

        def watch() -> None:
            try:
                if finished.wait(PROBE_AFTER_S):
                    return
                if speaks_plain_redis(self.host, self.port, self.socket_connect_timeout or PROBE_AFTER_S * 4):
                    plain.set()
                    with contextlib.suppress(OSError):
                        spare.shutdown(socket.SHUT_RDWR)  # the waiting handshake ends now
            finally:
                spare.close()

        threading.Thread(target=watch, name="kvctl-tls-probe", daemon=True).start()
        try:
            return wrap(sock)
        except BaseException:
            sock.close()
            if plain.is_set():
                raise redis.ConnectionError(
                    f"TLS handshake failed: {self.host}:{self.port} answers in plain Redis, not TLS "
                    "(use redis:// rather than rediss://)") from None
            raise
        finally:
            finished.set()


def client(kwargs: dict[str, Any]) -> redis.Redis:
    """A redis-py client for connection ``kwargs``; over TLS with :class:`TLSConnection`
    (``redis.Redis(ssl=True)`` always picks redis-py's own class, so the pool is built here)."""
    if not kwargs.get("ssl"):
        return redis.Redis(**kwargs)
    pool_kwargs = {k: v for k, v in kwargs.items() if k != "ssl"}
    client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=TLSConnection, **pool_kwargs))
    client.auto_close_connection_pool = True  # the client owns this pool, as when redis-py builds it
    return client

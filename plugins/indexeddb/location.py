"""Where an ``indexeddb://`` URL points: DevTools endpoint, origin, database, object store.

    indexeddb://127.0.0.1:9222/<origin, URL-encoded>/<database>/<object store>[?options]

The host and port are Chromium's ``--remote-debugging-port``.  Each path segment is
percent-decoded on its own, so names may hold ``/`` and any character.  For convenience the
origin may also be written plainly (``indexeddb://127.0.0.1:9222/http://app.test:8080/db/store``).
Without a store (or without a database) the URL lists what the origin holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from kvctl.errors import BadURLError
from kvctl.url import StoreURL

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9222
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Location:
    host: str
    port: int
    origin: str
    database: str | None
    store: str | None

    def store_url(self, database: str, store: str) -> str:
        """The kvctl URL of one object store of this origin (shown by the listing)."""
        return (f"indexeddb://{self.host}:{self.port}/{quote(self.origin, safe='')}/"
                f"{quote(database, safe='')}/{quote(store, safe='')}")


def normalize_origin(text: str, url: StoreURL) -> str:
    """``scheme://host[:port]`` as browsers serialize an origin (lower case, default port dropped)."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise BadURLError(f"{text!r} in {url.redacted()} is not an origin") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise BadURLError(
            f"{text!r} in {url.redacted()} is not an origin",
            hint="expected http(s)://host[:port], URL-encoded as one path segment, e.g. http%3A%2F%2Flocalhost%3A8080",
        )
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def parse_location(url: StoreURL) -> Location:
    raw_path = urlsplit(url.raw).path  # not url.path: that one is already percent-decoded
    segments = raw_path.split("/")[1:]
    if segments and segments[-1] == "":
        segments.pop()
    if len(segments) >= 3 and segments[0] in ("http:", "https:") and segments[1] == "":
        segments = [segments[0] + "//" + segments[2], *segments[3:]]  # the origin written plainly
    if not segments or not segments[0]:
        raise BadURLError(
            f"{url.redacted()} names no origin",
            hint="use indexeddb://HOST:PORT/<origin URL-encoded>/<database>/<store>",
        )
    if len(segments) > 3:
        raise BadURLError(
            f"{url.redacted()} has {len(segments)} path segments; expected origin/database/store",
            hint="percent-encode '/' inside a name as %2F",
        )
    names = [unquote(s) for s in segments]
    return Location(
        host=url.host or DEFAULT_HOST,
        port=url.port or DEFAULT_PORT,
        origin=normalize_origin(names[0], url),
        database=names[1] if len(names) > 1 else None,
        store=names[2] if len(names) > 2 else None,
    )

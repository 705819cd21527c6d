"""The shard URL: its children, their weights and ids, read in order from the query string.

    shard://?child=<URL or profile>&weight=3&name=hot&child=<URL or profile>&weight=7

Each ``child=`` starts a child; the ``weight=`` (default 1) and ``name=`` after it belong to it.
A child URL must be percent-encoded (``sqlite%3A%2F%2F%2Fdata%2Fa.db``); a value without ``:`` is
a profile name from the config file, resolved with :func:`kvctl.config.resolve`.  A child's id,
which places keys and must stay the same when weights change, is its ``name``, else the profile
name, else the child URL in redacted form (so a password change does not move keys).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from kvctl.errors import BadURLError
from kvctl.url import StoreURL, redact

OPTIONS = {"child", "weight", "name", "fallback"}
_resolving = threading.local()  # profile names being opened on this thread: a cycle guard


@dataclass(frozen=True)
class ChildSpec:
    id: str
    url: str  # resolved: never a profile name; may hold a password, never print it
    weight: float
    profile: str | None = None

    @property
    def where(self) -> str:
        return self.profile if self.profile is not None else redact(self.url)


def parse_children(url: StoreURL) -> list[ChildSpec]:
    where = "the shard URL"  # never the URL itself: child URLs inside may hold passwords
    pairs = parse_qsl(urlsplit(url.raw).query, keep_blank_values=True)
    raw: list[dict[str, str]] = []
    for name, value in pairs:
        if name == "child":
            if not value:
                raise BadURLError(f"an empty child= in {where}")
            raw.append({"child": value})
        elif name in ("weight", "name"):
            if not raw:
                raise BadURLError(f"{name}= before any child= in {where} (it belongs to the child before it)")
            if name in raw[-1]:
                raise BadURLError(f"two {name}= for one child in {where}")
            raw[-1][name] = value
    if not raw:
        raise BadURLError(f"{where} names no children (shard://?child=URL&weight=N&child=URL&weight=N)")
    specs: list[ChildSpec] = []
    for item in raw:
        target = item["child"]
        profile = None if ":" in target else target
        resolved = _resolve_profile(target, where) if profile is not None else target
        try:
            weight = float(item.get("weight", "1"))
        except ValueError:
            raise BadURLError(f"weight={item['weight']!r} in {where} is not a number") from None
        if weight < 0 or not math.isfinite(weight):
            raise BadURLError(f"weight={item['weight']!r} in {where} must be a finite number >= 0")
        child_id = item.get("name") or profile or redact(resolved)
        specs.append(ChildSpec(child_id, resolved, weight, profile))
    ids = [s.id for s in specs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise BadURLError(f"children of {where} share an id ({', '.join(duplicates)}); give each a name=")
    if not any(s.weight > 0 for s in specs):
        raise BadURLError(f"every child of {where} has weight 0: nothing could own a key")
    return specs


def _resolve_profile(profile: str, where: str) -> str:
    # kvctl.config is imported here only: the shard plugin is the one plugin that reads profiles.
    from kvctl.config import resolve

    active: set[str] = getattr(_resolving, "names", set())
    if profile in active:
        raise BadURLError(f"profile {profile!r} includes itself through shard children ({where})")
    return resolve(profile)


class ResolvingGuard:
    """Marks profiles as being opened on this thread while their stores are built."""

    def __init__(self, names: list[str]) -> None:
        self.names = [n for n in names if n]

    def __enter__(self) -> None:
        active: set[str] = getattr(_resolving, "names", set())
        _resolving.names = active | set(self.names)
        self._before = active

    def __exit__(self, *exc: object) -> None:
        _resolving.names = self._before

"""URL scheme -> backend plugin, through the ``kvctl.backends`` entry-point group.

Entry-point *names* are read when first needed (cheap: no plugin module is imported); a plugin
module, and its driver, is imported only when a URL uses its scheme or ``kvctl plugins`` lists it.
A plugin that fails to import is reported as a load error, never as a crash of the CLI.
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass
from functools import cache
from typing import Any

from kvctl.errors import PluginLoadError, UnknownSchemeError
from kvctl.url import StoreURL

GROUP = "kvctl.backends"


@dataclass(frozen=True)
class PluginInfo:
    scheme: str
    target: str  # "module:attr"
    distribution: str
    version: str


@cache
def schemes() -> dict[str, PluginInfo]:
    """Every registered scheme.  The first registration of a scheme wins; duplicates are ignored."""
    found: dict[str, PluginInfo] = {}
    for ep in md.entry_points(group=GROUP):
        if ep.name in found:
            continue
        dist = ep.dist
        found[ep.name.lower()] = PluginInfo(
            scheme=ep.name.lower(),
            target=ep.value,
            distribution=dist.name if dist else "?",
            version=dist.version if dist else "?",
        )
    return found


def load(scheme: str) -> Any:
    """The store class registered for ``scheme``; raises a one-line error when there is none."""
    info = schemes().get(scheme.lower())
    if info is None:
        known = ", ".join(sorted(schemes())) or "none"
        raise UnknownSchemeError(f"no backend for scheme {scheme!r} (installed: {known})")
    return _load_target(info.target, scheme)


@cache
def _load_target(target: str, scheme: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = __import__(module_name, fromlist=["_"])
        return getattr(module, attr) if attr else module
    except Exception as exc:  # a broken plugin must never take the CLI down
        hint = "see `kvctl plugins`"
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            hint = _install_hint(scheme, exc.name.partition(".")[0])
        raise PluginLoadError(
            f"the {scheme} backend ({target}) could not be loaded: {type(exc).__name__}: {exc}", hint=hint
        ) from exc


def _install_hint(scheme: str, module: str) -> str:
    """Which extra of the plugin's distribution installs ``module`` (by its requirement names)."""
    info = schemes().get(scheme.lower())
    wanted = module.replace("_", "-").lower()
    try:
        requires = md.requires(info.distribution) if info else None
    except md.PackageNotFoundError:
        requires = None
    for req in requires or ():
        name = req.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        extra = req.partition("extra ==")[2].strip().strip("'\"")
        if extra and extra != "all" and name.replace("_", "-") == wanted:
            return f"install its driver: pip install '{info.distribution}[{extra}]'"  # type: ignore[union-attr]
    return f"install the Python module {module!r}"


def open_url(url: str | StoreURL, *, access: str = "write") -> Any:
    """Build a store (sync or async form, unopened connections are lazy) from a URL.

    ``access="read"`` promises the store will only be read: the plugin then creates and alters
    nothing, and a missing store is :class:`~kvctl.errors.NoSuchStoreError` (see
    :attr:`StoreURL.access`)."""
    parsed = url if isinstance(url, StoreURL) else StoreURL.parse(url)
    cls = load(parsed.scheme)
    parsed.check_repeats(getattr(cls, "list_options", frozenset()))
    return cls.from_url(parsed.for_access(access))


def store_identity(url: str | StoreURL) -> tuple[str, str]:
    """What names the store ``url`` opens: its plugin, and the plugin's ``identity(url)`` when it
    defines one, else :meth:`StoreURL.identity` (a resolved path, or a normalized address)."""
    parsed = url if isinstance(url, StoreURL) else StoreURL.parse(url)
    cls = load(parsed.scheme)
    own = getattr(cls, "identity", None)
    return f"{cls.__module__}.{cls.__qualname__}", own(parsed) if callable(own) else parsed.identity()

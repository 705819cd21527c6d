"""URL scheme -> backend plugin, through the ``kvctl.backends`` entry-point group.

Entry-point *names* are read when first needed (cheap: no plugin module is imported); a plugin
module, and its driver, is imported only when a URL uses its scheme or ``kvctl plugins`` lists it.
A plugin that fails to import is reported as a load error, never as a crash of the CLI.

:func:`open_sync` and :func:`open_async` are the one way to open a store; :func:`backends` is
what ``kvctl plugins`` lists.
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

from kvctl.adapt import to_async, to_sync
from kvctl.errors import PluginLoadError, UnknownSchemeError
from kvctl.store import AsyncStore, Store
from kvctl.url import StoreURL

__all__ = ["BackendInfo", "PluginInfo", "backends", "load", "open_async", "open_sync", "open_url", "schemes",
           "store_identity"]


GROUP = "kvctl.backends"


@dataclass(frozen=True)
class PluginInfo:
    scheme: str
    target: str  # "module:attr"
    entry_point: md.EntryPoint = field(repr=False, compare=False)

    # The distribution's name and version are read from its metadata only when shown: parsing
    # every plugin's METADATA cost each command a few hundredths of a second before its first row.
    @property
    def distribution(self) -> str:
        dist = self.entry_point.dist
        return dist.name if dist else "?"

    @property
    def version(self) -> str:
        dist = self.entry_point.dist
        return dist.version if dist else "?"


@cache
def schemes() -> dict[str, PluginInfo]:
    """Every registered scheme.  The first registration of a scheme wins; duplicates are ignored."""
    found: dict[str, PluginInfo] = {}
    for ep in md.entry_points(group=GROUP):
        found.setdefault(ep.name.lower(), PluginInfo(scheme=ep.name.lower(), target=ep.value, entry_point=ep))
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
    """Build a store in the form its plugin implements (sync or async; connections open lazily).

    ``access="read"`` promises the store will only be read: the plugin then creates and alters
    nothing, and a missing store is :class:`~kvctl.errors.NoSuchStoreError` (see
    :attr:`StoreURL.access`).  Most callers want :func:`open_sync` or :func:`open_async`; this
    untyped form stays for the tests and scripts that check which form a plugin implements."""
    parsed = url if isinstance(url, StoreURL) else StoreURL.parse(url)
    cls = load(parsed.scheme)
    parsed.check_repeats(getattr(cls, "list_options", frozenset()))
    return cls.from_url(parsed.for_access(access))


def open_sync(url: str | StoreURL, *, access: str = "write") -> Store:
    """The store at ``url`` in its sync form (an async store gets one event loop for its life)."""
    return to_sync(open_url(url, access=access))


def open_async(url: str | StoreURL, *, access: str = "write") -> AsyncStore:
    """The store at ``url`` in its async form (a sync store's blocking calls run on one thread)."""
    return to_async(open_url(url, access=access))


@dataclass(frozen=True)
class BackendInfo:
    """One backend class as ``kvctl plugins`` lists it, with every scheme that reaches it.
    ``capabilities`` is None and ``error`` says why when the plugin does not load."""

    schemes: list[str]
    target: str
    distribution: str
    version: str
    name: str
    description: str
    capabilities: dict[str, Any] | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def backends() -> list[BackendInfo]:
    """Every registered backend, loading each (a load failure is reported in its entry)."""
    by_target: dict[str, list[PluginInfo]] = {}
    for info in sorted(schemes().values(), key=lambda i: i.scheme):
        by_target.setdefault(info.target, []).append(info)
    found = []
    for target, infos in by_target.items():
        first = infos[0]
        name, description, caps, error = first.scheme, "", None, None
        try:
            cls = load(first.scheme)
            name, description = getattr(cls, "name", first.scheme), getattr(cls, "description", "")
            caps = cls.capabilities.flags()
        except PluginLoadError as exc:
            error = _load_problem(exc)
        found.append(BackendInfo([i.scheme for i in infos], target, first.distribution, first.version,
                                 name, description, caps, error))
    return found


def _load_problem(exc: Exception) -> str:
    """Why a backend did not load: a driver that is not installed is a state of the install, said
    as what to run ("not installed: pip install 'kvctl[redis]'"); anything else is an error."""
    if isinstance(exc.__cause__, ModuleNotFoundError):
        hint = getattr(exc, "hint", None) or ""
        return "not installed: " + hint.removeprefix("install its driver: ")
    return f"error: {exc}"


def store_identity(url: str | StoreURL) -> tuple[str, str]:
    """What names the store ``url`` opens: its plugin, and the plugin's ``identity(url)`` when it
    defines one, else :meth:`StoreURL.identity` (a resolved path, or a normalized address)."""
    parsed = url if isinstance(url, StoreURL) else StoreURL.parse(url)
    cls = load(parsed.scheme)
    own = getattr(cls, "identity", None)
    return f"{cls.__module__}.{cls.__qualname__}", own(parsed) if callable(own) else parsed.identity()

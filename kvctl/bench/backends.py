"""Which backends a run measures: the URLs given, or every embedded backend that is registered.

Nothing here names a backend.  A backend is *embedded* (in-process, no server) when its
capabilities say so (``Capabilities.embedded`` when the core has it), when it declares itself
not persistent, or when opening its scheme on a path in a scratch directory works and creates
that path (a file or a directory: an embedded database), and a URL given names a local path
rather than a server (``libsql://HOST:PORT`` is a server, ``libsql:///path.db`` a file).
Embedded backends get a fresh store per job in a temporary directory; the others are *network*
backends: their clients are asyncio tasks and their per-op tail latencies are recorded.

Each URL is probed once before any job runs (a read, with a time limit): an unreachable server's
rows say so and the rest of the run goes on.  The probe also notes which driver distributions
the plugin imports, for the "driver versions" recorded beside every result.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvctl.errors import KvctlError, PluginLoadError, UsageError, one_line

PROBE_TIMEOUT_S = 10.0
_LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass
class Backend:
    label: str                     # how results name it: the plugin name, or NAME=URL's NAME
    url: str                       # raw URL (may hold a password): never printed
    redacted: str
    scheme: str
    family: str = ""               # the plugin's ``name``
    durability: str = ""
    capabilities: Any = None
    embedded: bool = False
    fresh_dir: str | None = None   # for generated embedded stores: a fresh store per job here
    drivers: str = ""
    is_async: bool = False
    status: str = "ok"             # ok | unreachable | error
    reason: str = ""

    @property
    def network(self) -> bool:
        return not self.embedded

    def job_url(self, tag: str) -> str:
        """The URL a job uses: a fresh store per job for generated embedded stores."""
        if self.fresh_dir is None:
            return self.url
        return f"{self.scheme}://{self.fresh_dir}/{self.label}-{tag}"

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "url": self.redacted, "scheme": self.scheme, "family": self.family,
                "durability": self.durability, "embedded": self.embedded, "drivers": self.drivers,
                "async": self.is_async, "status": self.status, "reason": self.reason,
                "capabilities": _caps_json(self.capabilities)}


def _caps_json(caps: Any) -> dict[str, Any] | None:
    flags = getattr(caps, "flags", None)
    return flags() if callable(flags) else None


def split_label(arg: str) -> tuple[str | None, str]:
    """``NAME=URL`` -> (NAME, URL); a plain URL -> (None, URL)."""
    name, sep, rest = arg.partition("=")
    if sep and _LABEL.match(name) and "://" in rest:
        return name, rest
    return None, arg


# -- drivers ----------------------------------------------------------------------------------------

def driver_versions(cls: Any) -> str:
    """The libraries a plugin's modules use, with versions: "lmdb 1.4.1, SQLite 3.45.1".

    Read from the import statements of the plugin package's modules (lazy ones included), mapped
    to installed distributions (kvctl's own excluded); a standard-library driver reports the
    version of the library it binds when it exposes one (``sqlite_version``).
    """
    import importlib.metadata as md

    package = ".".join(cls.__module__.split(".")[:2])
    tops: set[str] = set()
    for name, module in list(sys.modules.items()):
        if module is None or not (name == package or name.startswith(package + ".")):
            continue
        tops |= _imported_tops(getattr(module, "__file__", None))
    mapping = md.packages_distributions()
    found: dict[str, str] = {}
    for top in sorted(tops):
        dists = [d for d in mapping.get(top, []) if not d.lower().startswith("kvctl")]
        if mapping.get(top) and not dists:
            continue
        for dist in dists:
            with contextlib.suppress(md.PackageNotFoundError):
                found.setdefault(dist, md.version(dist))
        if not dists and top in sys.stdlib_module_names and top in sys.modules:
            lib = getattr(sys.modules[top], "sqlite_version", None)
            if isinstance(lib, str):
                found.setdefault(top, f"(library {lib})")
    return ", ".join(f"{d} {v}" for d, v in sorted(found.items(), key=lambda kv: kv[0].lower()))


def _imported_tops(path: str | None) -> set[str]:
    import ast

    if not path or not path.endswith(".py"):
        return set()
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
    except (OSError, SyntaxError, ValueError):
        return set()
    tops: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops.update(a.name.partition(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.partition(".")[0])
    return tops


# -- probing ----------------------------------------------------------------------------------------

def _run_with_timeout(fn: Any, timeout: float) -> Any:
    """Call ``fn()`` in a daemon thread; a hung connect must not hang the whole run."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="kvctl-bench-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        from kvctl.errors import UnavailableError

        raise UnavailableError(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _open_and_touch(url: str, write: bool) -> tuple[Any, bool, str]:
    """Open ``url``, read (and for a scratch store write and delete) one key; return
    (store class, is_async, drivers)."""
    from kvctl.adapt import is_async, to_sync
    from kvctl.registry import load, open_url
    from kvctl.url import StoreURL

    parsed = StoreURL.parse(url)
    cls = load(parsed.scheme)
    store = open_url(parsed)
    async_form = is_async(store)
    with to_sync(store) as s:
        probe = b"kvctl-bench-probe-" + uuid.uuid4().hex[:8].encode()
        s.get(probe)
        if write:
            s.set(probe, b"1")
            s.delete(probe)
    return cls, async_form, driver_versions(cls)


def _classify(cls: Any, scheme: str, scratch: Path, cache: dict[str, bool]) -> bool:
    """Is ``scheme`` embedded?  Declared, not persistent, or it creates a local store on a path."""
    caps = getattr(cls, "capabilities", None)
    declared = getattr(caps, "embedded", None)
    if declared is not None:
        return bool(declared)
    if not getattr(caps, "persistent", False) and not getattr(caps, "multi_node", False):
        return True
    if scheme in cache:
        return cache[scheme]
    path = scratch / f"probe-{scheme.replace('+', '_')}-{uuid.uuid4().hex[:6]}"
    try:
        _run_with_timeout(lambda: _open_and_touch(f"{scheme}://{path}", True), PROBE_TIMEOUT_S)
        created = any(p.name.startswith(path.name) for p in scratch.iterdir())
    except Exception:
        created = False
    finally:
        for p in scratch.glob(path.name + "*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    cache[scheme] = created
    return created


def _names_local_store(url: Any) -> bool:
    """Does this URL of an embedded scheme open a local store?  A scheme may reach a server too
    (``libsql://HOST:PORT``): a URL with an authority is local only when the path it names
    (``x://rel/dir`` is a relative path) exists after the probe has opened it."""
    if url.host is None:
        return True
    try:
        return Path(url.local_path()).exists()
    except KvctlError:
        return False


def _describe(backend: Backend, cls: Any) -> None:
    caps = getattr(cls, "capabilities", None)
    backend.capabilities = caps
    backend.family = getattr(cls, "name", backend.scheme)
    backend.durability = getattr(caps, "durability", "") or ("persistent" if getattr(caps, "persistent", False)
                                                             else "none (in memory)")
    if not backend.label:
        backend.label = backend.family


def resolve(args: list[str], scratch: Path, *, embedded: bool = False) -> list[Backend]:
    """Backends for the URLs given (``[NAME=]URL``), after every registered embedded backend when
    ``embedded`` is set or no URL is given."""
    if not args:
        return default_embedded(scratch)
    from kvctl.url import StoreURL

    cache: dict[str, bool] = {}
    backends: list[Backend] = []
    for arg in args:
        label, url = split_label(arg)
        parsed = StoreURL.parse(url)  # a malformed URL is a usage error for the whole command
        backend = Backend(label=label or "", url=url, redacted=parsed.redacted(), scheme=parsed.scheme)
        try:
            cls, backend.is_async, backend.drivers = _run_with_timeout(
                lambda u=url: _open_and_touch(u, False), PROBE_TIMEOUT_S)
            _describe(backend, cls)
            backend.embedded = _classify(cls, parsed.scheme, scratch, cache) and _names_local_store(parsed)
        except (UsageError, PluginLoadError):
            raise
        except KvctlError as exc:
            _describe_unloaded(backend, parsed.scheme)
            backend.status, backend.reason = "unreachable", one_line(exc)
        except Exception as exc:
            _describe_unloaded(backend, parsed.scheme)
            backend.status, backend.reason = "error", f"{type(exc).__name__}: {one_line(exc)}"
        backends.append(backend)
    if embedded:
        backends = default_embedded(scratch) + backends
    _unique_labels(backends)
    return backends


def _describe_unloaded(backend: Backend, scheme: str) -> None:
    from kvctl.registry import load

    try:
        _describe(backend, load(scheme))
    except Exception:
        backend.label = backend.label or scheme


def default_embedded(scratch: Path) -> list[Backend]:
    """One generated store per registered embedded backend family, in ``scratch``."""
    from kvctl.registry import load, schemes

    by_class: dict[Any, str] = {}
    for scheme in sorted(schemes()):
        try:
            cls = load(scheme)
        except PluginLoadError:
            continue  # `kvctl plugins` reports it; a bench of the others goes on
        # the scheme named like the plugin reaches it most plainly (sqlite, not an alias)
        if cls not in by_class or scheme == getattr(cls, "name", None):
            by_class[cls] = scheme
    cache: dict[str, bool] = {}
    found: list[Backend] = []
    for cls, scheme in by_class.items():
        if not _classify(cls, scheme, scratch, cache):
            continue
        store_dir = scratch / "stores"
        store_dir.mkdir(exist_ok=True)
        backend = Backend(label="", url="", redacted="", scheme=scheme, embedded=True, fresh_dir=str(store_dir))
        _describe(backend, cls)
        backend.url = backend.job_url("probe")
        backend.redacted = f"{scheme}://<tmp>/{backend.label}-<job>"
        try:
            _, backend.is_async, backend.drivers = _run_with_timeout(
                lambda u=backend.url: _open_and_touch(u, True), PROBE_TIMEOUT_S)
        except Exception as exc:
            backend.status, backend.reason = "error", one_line(exc)
        found.append(backend)
    found.sort(key=lambda b: b.label)
    _unique_labels(found)
    return found


def _unique_labels(backends: list[Backend]) -> None:
    seen: dict[str, int] = {}
    for b in backends:
        n = seen.get(b.label, 0) + 1
        seen[b.label] = n
        if n > 1:
            b.label = f"{b.label}#{n}"


CLEANUP_TIMEOUT_S = 180.0


def _delete_prefix(url: str, prefix: bytes) -> int:
    """Delete every key under ``prefix``: one full scan collecting the keys, then deletes in
    batches (never under a live scan), repeated until a scan finds nothing."""
    from kvctl.registry import open_sync

    removed = 0
    with open_sync(url) as store:
        while True:
            keys = [r.key for page in store.scan(prefix, keys_only=True, batch_size=1000) for r in page.records]
            if not keys:
                return removed
            for i in range(0, len(keys), 1000):
                removed += store.delete_many(keys[i:i + 1000])


def cleanup(backends: list[Backend], prefix: str) -> list[str]:
    """Delete the keys a run wrote under ``prefix`` in stores it did not create; problems listed."""
    problems = []
    done: set[str] = set()
    for b in backends:
        if b.fresh_dir is not None or b.status != "ok" or not prefix or b.url in done:
            continue
        done.add(b.url)
        try:
            _run_with_timeout(lambda u=b.url: _delete_prefix(u, prefix.encode()),
                              CLEANUP_TIMEOUT_S)
        except Exception as exc:
            problems.append(f"{b.label}: the bench keys under {prefix!r} may be left in {b.redacted}: "
                            f"{one_line(exc)}")
    return problems


def scratch_dir() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="kvctl-bench-"))


def remove_scratch(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

"""Where the slices of a migrate or diff run: ``--executor local`` (this machine's process pool,
:mod:`kvctl.engines.migrate.parallel`) or a Dask cluster (:mod:`kvctl.engines.distributed`).

This module holds what every executor shares and needs no engine installed: parsing the
``--executor`` value, and the rules for what a store reference may be when workers open it
themselves (no secret in task arguments; no host-local store on other hosts unless the path is
shared).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvctl.errors import UsageError
from kvctl.store import AsyncStore
from kvctl.url import redact

EXECUTOR_HELP = ("Where the slices run: local (this machine's --workers processes), dask://HOST:PORT or "
                 "dask+tls://HOST:PORT (a Dask scheduler), dask://local (a Dask cluster of --workers "
                 "processes on this machine).")


@dataclass(frozen=True)
class ExecutorSpec:
    kind: str  # "local" or "dask"
    address: str | None = None  # the scheduler (tcp://h:p, tls://h:p); None: a cluster on this machine

    @property
    def remote(self) -> bool:
        """Workers may run on other hosts (a scheduler we did not start)."""
        return self.address is not None

    def describe(self) -> str:
        if self.kind == "local":
            return "local"
        return self.address or "dask://local"


@dataclass(frozen=True)
class Placement:
    """Where the slices of a migrate or diff run, and what its workers open."""

    spec: ExecutorSpec = field(default_factory=lambda: ExecutorSpec("local"))
    refs: tuple[str, str] | None = None  # the stores as the user named them (profiles stay names)
    slices: int | None = None  # None: a few per worker
    shared_fs: bool = False  # a file store's path is the same on every worker
    workers: int = 1  # processes of a cluster started here (dask://local)


def parse_executor(text: str) -> ExecutorSpec:
    """``local``, ``dask://local``, ``dask://HOST:PORT`` or ``dask+tls://HOST:PORT``."""
    value = text.strip()
    if value == "local":
        return ExecutorSpec("local")
    scheme, sep, rest = value.partition("://")
    if sep and scheme in ("dask", "dask+tls") and rest:
        if rest == "local" and scheme == "dask":
            return ExecutorSpec("dask")
        host, colon, port = rest.rstrip("/").rpartition(":")
        if colon and host and port.isdigit():
            return ExecutorSpec("dask", f"{'tls' if scheme == 'dask+tls' else 'tcp'}://{host}:{port}")
    raise UsageError(f"--executor: {redact(text)!r} is not local, dask://local, dask://HOST:PORT or "
                     "dask+tls://HOST:PORT")


def task_ref(arg: str, url: str) -> str:
    """What a worker is told to open for the store the user named ``arg`` (resolved to ``url``).

    A profile name is passed as is and resolved on the worker, so its secrets stay in the
    workers' configuration.  A URL is passed only when it holds no secret: task arguments are
    pickled, stored by the scheduler and shown by its dashboard.
    """
    if arg != url:  # a profile name
        return arg
    if redact(url) != url:
        raise UsageError(f"{redact(url)} holds a secret, which would travel in the task arguments",
                         hint="name a profile instead (configured on every worker), or put the secret "
                              "in an *_env option")
    return url


def check_reachable(store: AsyncStore, spec: ExecutorSpec, shared_fs: bool, role: str) -> None:
    """Refuse a store whose data is a path on this host when workers may run on other hosts."""
    if spec.remote and store.capabilities.host_local and not shared_fs:
        raise UsageError(f"the {role} is a {store.name} store on this host's filesystem; workers on other "
                         "hosts would each open a different one",
                         hint="give --shared-fs if the same path is shared with every worker "
                              "(e.g. NFS), or use --executor dask://local")

"""What every command shares: the global options, opening the chosen store, and scrubbing."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from kvctl.url import StoreURL, redact


@dataclass
class State:
    url: str | None = None
    key_encoding: str = "text"
    value_encoding: str = "raw"
    debug: bool = False
    quiet: bool = False  # -q/--quiet: no progress, no informational lines
    json: bool = False  # --json was given: results and errors go to stdout as JSON
    json_result: bool = False  # the command's JSON result is on stdout
    # every URL resolved during this command, so secrets in them can be scrubbed from any message
    seen_urls: list[str] = field(default_factory=list)


STATE = State()


def resolve_url(url_or_profile: str | None, *, access: str = "write") -> str:
    """The URL of a store named on the command line (:func:`kvctl.config.resolve`); ``None`` (not
    given): the --url option's.  ``access="read"`` for a store the command only reads, so that
    resolving it creates nothing."""
    from kvctl import config

    url = config.resolve(url_or_profile if url_or_profile is not None else STATE.url, access=access)
    STATE.seen_urls.append(url)
    return url


def open_store(url_or_profile: str | None = None, *, access: str = "write") -> Any:
    """The chosen store, in its sync form (one event loop for the command if it is async).

    Commands that only read pass ``access="read"``: the store is then neither created nor
    altered (:attr:`kvctl.url.StoreURL.access`)."""
    from kvctl.registry import open_sync

    url = resolve_url(url_or_profile, access=access)
    store = open_sync(url, access=access)
    if access == "write" and not store.capabilities.persistent:
        from kvctl.cli.output import warn

        # a store that lives in this process ends with it: say so rather than lose writes silently
        warn(f"{store_name(store)} is not persistent: what this command writes is gone when kvctl exits")
    return store


def input_file(path: Path) -> Path:
    """An input file named on the command line, checked before the command acts on it.

    The rule for every such file: one that cannot be opened (missing, a directory, no
    permission) is a usage error, exit 2, "cannot read PATH: why"; a failure while reading one
    that opened is an I/O error, exit 74."""
    from kvctl.errors import UsageError

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"cannot read {path}: {os.strerror(errno.EISDIR)}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"cannot read {path}: {os.strerror(errno.EACCES)}")
    return path


def open_input_file(path: Path) -> BinaryIO:
    """An input file named on the command line, opened for reading (the rule of
    :func:`input_file`: failing to open it is a usage error, exit 2)."""
    from kvctl.errors import UsageError

    try:
        return open(path, "rb")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def read_input_file(path: Path) -> bytes:
    """The bytes of an input file named on the command line (the rule of :func:`input_file`)."""
    from kvctl.errors import StoreIOError

    with open_input_file(path) as fh:
        try:
            return fh.read()
        except OSError as exc:
            raise StoreIOError(f"error reading {path}: {exc.strerror}") from None


def scrub(message: str) -> str:
    """Remove every secret of the URLs this command used from a message, whatever its origin."""
    message = redact(message)
    for url in STATE.seen_urls:
        try:
            parsed = StoreURL.parse(url)
        except Exception:
            continue
        secrets = [parsed.password] if parsed.password else []
        secrets += [v for k, v in parsed.options.items() if v and redact(f"x://h?{k}={v}").endswith("***")]
        for secret in secrets:
            if secret and len(secret) >= 3:
                message = message.replace(secret, "***")
        message = message.replace(url, parsed.redacted())
    return message


def store_name(store: Any) -> str:
    url = getattr(store, "url", None)
    return url.redacted() if url is not None else getattr(store, "name", "store")

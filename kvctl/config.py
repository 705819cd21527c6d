"""Profiles and paths.

Profiles live in a TOML file in the user's config directory (``$KVCTL_CONFIG``, else
``$XDG_CONFIG_HOME/kvctl/config.toml``, else ``~/.config/kvctl/config.toml``)::

    default = "prod"

    [profiles.prod]
    url = "postgresql://app:secret@db.internal/app"

The file is read with tomllib, written with tomli-w, created with mode 0600 because profiles
may hold passwords; kvctl warns when it finds the file readable by other users.

The store a command uses is, in order: ``--url/-u`` (a URL or a profile name), ``$KVCTL_URL``,
the config's default profile, else the embedded default store in the user's data directory
(``sqlite:///$XDG_DATA_HOME/kvctl/default.db``), so kvctl works with no server and no setup.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from kvctl.errors import BadURLError, CorruptError, StoreIOError, UsageError, filesystem
from kvctl.url import StoreURL, redact

DEFAULT_STORE = "default.db"  # the embedded default store's file, in data_dir()


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value and os.path.isabs(value) else Path.home() / fallback


def config_path() -> Path:
    explicit = os.environ.get("KVCTL_CONFIG")
    return Path(explicit) if explicit else _xdg("XDG_CONFIG_HOME", ".config") / "kvctl" / "config.toml"


def data_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "kvctl"


def state_dir() -> Path:
    """Checkpoints and sync cursors live here."""
    return _xdg("XDG_STATE_HOME", ".local/state") / "kvctl"


def default_store_url() -> str:
    """The embedded default store.  ``embedded=true``: its directory is made by the first write,
    and a read before that reads an empty store, creating nothing (see the sqlite plugin)."""
    return f"sqlite://{data_dir() / DEFAULT_STORE}?embedded=true"


@dataclass
class Config:
    path: Path
    default: str | None = None
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    def profile_url(self, name: str) -> str:
        profile = self.profiles.get(name)
        if profile is None:
            known = ", ".join(sorted(self.profiles)) or "none defined"
            raise BadURLError(f"no profile named {name!r} in {self.path} (profiles: {known})")
        url = profile.get("url")
        if not isinstance(url, str):
            raise BadURLError(f"profile {name!r} in {self.path} has no url")
        return with_profile_options(url, {k: v for k, v in profile.items() if k != "url"},
                                    f"profile {name!r} in {self.path}")

    def to_toml(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.default:
            doc["default"] = self.default
        doc["profiles"] = self.profiles
        return doc


def with_profile_options(url: str, options: dict[str, Any], where: str) -> str:
    """``url`` with a profile's other keys added as URL options: one code path for both ways of
    giving an option.  Lists are joined with commas, booleans written ``true``/``false``; an
    option given both in the URL and as a key is refused (which one was meant is a guess)."""
    if not options:
        return url
    present = {k for k, _ in parse_qsl(url.partition("?")[2], keep_blank_values=True)}
    parts = []
    for key, value in options.items():
        if key in present:
            raise BadURLError(f"{where} gives option {key} both in its url and as a key")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list) and all(isinstance(v, str | int) for v in value):
            text = ",".join(map(str, value))
        elif isinstance(value, str | int | float):
            text = str(value)
        else:
            raise BadURLError(f"{where}: option {key} must be a string, number, boolean or list of strings")
        parts.append(f"{quote(key, safe='')}={quote(text, safe=',*:')}")
    return url + ("&" if "?" in url else "?") + "&".join(parts)


def load(path: Path | None = None, *, warn: bool = True) -> Config:
    path = path or config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config(path)
    except OSError as exc:
        raise StoreIOError(f"cannot read config {path}: {exc.strerror}") from None
    if warn and sys.platform != "win32":
        mode = path.stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            print(
                f"kvctl: warning: {path} is readable by other users and may hold passwords "
                f"(chmod 600 {path})",
                file=sys.stderr,
            )
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CorruptError(f"config {path} is not valid TOML: {exc}") from None
    profiles = doc.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise CorruptError(f"config {path}: [profiles.NAME] tables expected")
    default = doc.get("default")
    return Config(path, default if isinstance(default, str) else None, profiles)


def save(config: Config) -> None:
    """Write atomically with mode 0600 (never briefly world-readable)."""
    import tomli_w

    config.path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=config.path.parent, prefix=".config-", suffix=".toml")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            tomli_w.dump(config.to_toml(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, config.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_url(text: str) -> bool:
    return ":" in text


def validate_profile_name(name: str) -> None:
    if not name or is_url(name) or any(c.isspace() for c in name) or "/" in name:
        raise UsageError(f"invalid profile name {name!r}: no ':', '/' or spaces")


def choose(url_or_profile: str | None) -> str:
    """The URL a command should use (see the module docstring for the order); changes nothing.

    ``None`` means "not given".  An empty URL or ``$KVCTL_URL`` set but empty is refused, never
    taken as "not given": it is what an unset shell variable expands to, and falling back to the
    default store would read or write the wrong data without a word."""
    chosen: str | None = url_or_profile
    if chosen is not None:
        if not chosen.strip():
            raise BadURLError("empty store URL (an unset shell variable?)")
    else:
        chosen = os.environ.get("KVCTL_URL")
        if chosen is not None and not chosen.strip():
            raise BadURLError("empty store URL in $KVCTL_URL (unset it to use the default store)")
    if chosen:
        if is_url(chosen):
            return chosen
        return load().profile_url(chosen)
    config = load()
    if config.default:
        return config.profile_url(config.default)
    return default_store_url()


def resolve(url_or_profile: str | None, *, access: str = "write") -> str:
    """:func:`choose`, made ready for a command that will ``access`` the store.

    The embedded default store's directory is created for a command that writes; a command
    that only reads creates nothing, and reads a default store not written yet as an empty one
    (the sqlite plugin's ``embedded=true``): it is kvctl's own store, not a mistyped path.  Any
    other URL is the plugin's to check."""
    url = choose(url_or_profile)
    if url != default_store_url() or access != "write":
        return url
    path = data_dir()
    with filesystem(f"cannot create the default store's directory {path}"):
        path.mkdir(parents=True, exist_ok=True)
    return url


def describe(url: str) -> str:
    return StoreURL.parse(url).redacted() if is_url(url) else redact(url)

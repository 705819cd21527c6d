"""Store URLs: parse, read options, redact.

A store URL picks a backend by its scheme (``sqlite:///data/app.db``, ``redis://:pw@host:6379/0``).
Options travel in the query string.  Anything secret (a password, or a query option whose name
says token/secret/password/key) is replaced by ``***`` in :meth:`StoreURL.redacted`, and every
message kvctl prints uses that form.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from kvctl.errors import BadURLError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
# Option names that carry a secret: authToken, password, sslpassword, api_key, secret, sig...
_SECRET_OPTION = re.compile(r"(pass|secret|token|credential|api_?key|^sig$|signature)", re.IGNORECASE)
REDACTED = "***"

# Byte sizes and durations in URL options and on the command line.
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4, "tib": 1024**4}
_TIME_UNITS = {"ms": 1, "s": 1000, "": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_DURATION = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*[A-Za-z]*\s*)+$")  # one or more NUMBER UNIT parts
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")


def parse_duration_ms(text: str) -> int:
    """``500ms``, ``30s``, ``2h``, ``1.5m``, ``7d``, ``1h30m``; a bare number is seconds.

    Units are case-insensitive except ``M``: it reads as months to some and as minutes to others,
    so it is refused rather than guessed (``m`` and ``min`` are minutes)."""
    parts = _DURATION_PART.findall(text) if _DURATION.match(text) else []
    if not parts:
        raise BadURLError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 5m, 2h, 1h30m, 7d)")
    total = 0.0
    for number, unit in parts:
        if unit == "M":
            raise BadURLError(f"ambiguous duration {text!r}: M could mean months or minutes "
                              "(write m or min for minutes, d for days)")
        if unit.lower() not in _TIME_UNITS or (not unit and len(parts) > 1):
            # a bare number inside a compound ("1h30") has no unit anyone agrees on
            raise BadURLError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 5m, 2h, 1h30m, 7d)")
        total += float(number) * _TIME_UNITS[unit.lower()]
    return int(total)


def parse_size(text: str) -> int:
    """``64MiB``, ``10k``, ``1GB``; a bare number is bytes."""
    match = _NUMBER_UNIT.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise BadURLError(f"not a size: {text!r} (use e.g. 4096, 64KiB, 10MB, 1GiB)")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL.  ``raw`` keeps the exact text; never print it, print ``redacted()``."""

    raw: str
    scheme: str
    username: str | None
    password: str | None
    host: str | None
    port: int | None
    path: str
    options: dict[str, str] = field(default_factory=dict)
    # What the command that opens the store will do with it; not part of the URL text.  "read":
    # the command only reads, so the plugin must create, alter and upgrade nothing (no file,
    # directory, table, trigger, pragma or journal mode) and raise NoSuchStoreError for a store
    # that does not exist.  "write" (the default) may create a missing store.
    access: str = "write"
    # Options the text gives more than once.  Only a plugin that declares list options (e.g.
    # shard's child=) reads them; for every other option a repeat is refused (check_repeats).
    repeated: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> StoreURL:
        if not text.strip():
            raise BadURLError("empty store URL (an unset shell variable?)")
        match = _SCHEME.match(text)
        if not match:
            raise BadURLError(
                f"not a store URL: {redact(text)!r} (expected SCHEME://..., e.g. sqlite:///path/to.db)"
            )
        try:
            parts = urlsplit(text)
            # several hosts (redis+cluster://h1:p1,h2:p2): no single port; plugins read ``hosts()``
            port = None if "," in parts.netloc.rpartition("@")[2] else parts.port
        except ValueError as exc:
            raise BadURLError(f"malformed store URL {redact(text)!r}: {exc}") from None
        options: dict[str, str] = {}
        repeated: list[str] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in options and name not in repeated:
                repeated.append(name)
            options.setdefault(name, value)
        return cls(
            raw=text,
            scheme=match.group(1).lower(),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            host=parts.hostname,
            port=port,
            path=unquote(parts.path),
            options=options,
            repeated=tuple(repeated),
        )

    @property
    def reads_only(self) -> bool:
        """True when the command that opens this store only reads it (see ``access``)."""
        return self.access == "read"

    def for_access(self, access: str) -> StoreURL:
        """This URL opened for ``access`` ("read" or "write")."""
        if access not in ("read", "write"):
            raise ValueError(f"access must be 'read' or 'write', not {access!r}")
        return self if access == self.access else replace(self, access=access)

    def hosts(self) -> list[tuple[str, int | None]]:
        """Every ``host[:port]`` of the URL's netloc, for URLs that name several (seed lists)."""
        netloc = urlsplit(self.raw).netloc.rpartition("@")[2]
        out: list[tuple[str, int | None]] = []
        for item in filter(None, netloc.split(",")):
            host, sep, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
            if not sep:
                host, port = item, ""
            try:
                out.append((host.strip("[]"), int(port) if port else None))
            except ValueError:
                raise BadURLError(f"malformed host {item!r} in {self.redacted()}") from None
        return out

    # -- options -----------------------------------------------------------------------------
    def option(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)

    def name_option(self, name: str, default: str) -> str:
        """An option that names something (``table=``): ``default`` when it is absent.  Given
        empty (``?table=``, often an unset shell variable) it is refused, not read as the
        default: the user named a table, and which one is a guess."""
        value = self.options.get(name)
        if value is None:
            return default
        if not value:
            raise BadURLError(f"option {name}= in {self.redacted()} is empty",
                              hint=f"name one, or leave the option out for the default, {default}")
        return value

    def int_option(self, name: str, default: int) -> int:
        value = self.options.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise BadURLError(f"option {name}={value!r} in {self.redacted()} is not an integer") from None

    def bool_option(self, name: str, default: bool) -> bool:
        value = self.options.get(name)
        if value is None or value == "":
            return default
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise BadURLError(f"option {name}={value!r} in {self.redacted()} is not a boolean (true/false)")

    def size_option(self, name: str, default: int) -> int:
        value = self.options.get(name)
        return default if not value else _with_url(parse_size, value, self)

    def duration_option_ms(self, name: str, default: int | None) -> int | None:
        value = self.options.get(name)
        return default if not value else _with_url(parse_duration_ms, value, self)

    def choice_option(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.options.get(name, default)
        if value not in choices:
            raise BadURLError(f"option {name}={value!r} in {self.redacted()} must be one of {', '.join(choices)}")
        return value

    def check_repeats(self, list_options: frozenset[str] = frozenset()) -> None:
        """Refuse an option given twice (``?table=kv&table=other``): which one was meant is a
        guess, so no value is taken.  ``list_options`` are the plugin's own repeatable ones."""
        twice = [name for name in self.repeated if name not in list_options]
        if twice:
            raise BadURLError(f"option {twice[0]} is given more than once in {self.redacted()}")

    def check_options(self, known: set[str]) -> None:
        """Refuse options a plugin does not understand: a typo must not be silently ignored."""
        unknown = sorted(set(self.options) - known)
        if unknown:
            allowed = ", ".join(sorted(known)) or "none"
            raise BadURLError(f"unknown option(s) {', '.join(unknown)} in {self.redacted()} (known: {allowed})")

    def local_path(self) -> str:
        """The filesystem path of a file URL: ``x:///abs``, ``x:////abs``, ``x://relative`` or
        ``x:relative``.

        ``x:////abs`` is how SQLAlchemy spells an absolute path (``sqlite:////var/app.db``), and
        what ``x:///$DIR/f`` gives for an absolute ``$DIR``: any run of leading slashes is one, the
        same absolute path, for every path-based backend alike."""
        rest = self.raw[len(self.scheme) + 1:].split("?", 1)[0]
        if rest.startswith("//"):
            rest = rest[2:]
            # x:///abs -> "/abs"; x://rel/dir -> "rel/dir"; x://localhost/abs -> "/abs"
            if rest.startswith("localhost/"):
                rest = rest[len("localhost"):]
        path = unquote(rest)
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        if not path:
            raise BadURLError(f"{self.redacted()} names no path (e.g. {self.scheme}:///var/lib/app.db)")
        return path

    def identity(self) -> str:
        """What store this URL names, for telling two URLs of one store apart from two stores.

        A URL without a host (``x:///abs``, ``x:rel``, ``x://localhost/abs``) names a filesystem
        path: it is resolved (``..``, symlinks, the working directory), so two spellings of one
        file compare equal.  Otherwise the host is compared without case and the path normalized.
        Options are kept (``?table=a`` and ``?table=b`` may be two stores in one file); a plugin
        that knows better defines ``identity(url)`` itself (see :func:`kvctl.registry.store_identity`).
        """
        parts = urlsplit(self.raw)
        netloc = parts.netloc
        if not netloc or netloc == "localhost" or not self.raw[len(self.scheme) + 1:].startswith("//"):
            try:
                where = os.path.realpath(self.local_path())
            except BadURLError:
                where = ""
        else:  # the whole host list (redis+cluster://h1:p1,h2:p2); who logs in does not change the store
            hosts = netloc.rpartition("@")[2].lower()
            where = f"//{hosts}{posixpath.normpath(self.path or '/')}"
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        # in any order, unless an option repeats (shard's child=, weight=): then their order counts
        return where + "?" + "&".join(f"{k}={v}" for k, v in (pairs if self.repeated else sorted(pairs)))

    def without_options(self, *names: str) -> str:
        """The URL's text without the options ``names`` (the rest of the text kept as written:
        urlunsplit would turn ``sqlite:///abs`` into ``sqlite:/abs``)."""
        base, _, query = self.raw.partition("?")
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in names]
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in kept)
        return f"{base}?{query}" if query else base

    def redacted(self) -> str:
        return redact(self.raw)

    def __repr__(self) -> str:
        return f"StoreURL({self.redacted()!r})"


def _with_url(parse, value: str, url: StoreURL):
    try:
        return parse(value)
    except BadURLError as exc:
        raise BadURLError(f"{exc.message} in {url.redacted()}") from None


_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@")


# A URL inside a message: scheme://, then up to whitespace or a closing quote or bracket.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>)\]]*")


def redact(text: str) -> str:
    """Hide passwords in userinfo and secret-looking query options of every URL in ``text``,
    also inside URLs that are themselves option values (``cache://?backend=redis%3A%2F%2F...``)."""
    def one(match: re.Match[str]) -> str:
        url = match.group()
        core = url.rstrip(".,:;!?")  # punctuation after a URL in prose is not part of it
        return _redact_url(core) + url[len(core):]

    return _URL_IN_TEXT.sub(one, text)


def _redact_url(url: str) -> str:
    out = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{REDACTED}@", url)
    if "?" in out:
        base, query = out.split("?", 1)
        pieces = []
        for piece in query.split("&"):
            name, sep, value = piece.partition("=")
            if sep and value and _SECRET_OPTION.search(name) and not name.endswith("_env"):
                value = REDACTED
            elif sep and "://" in unquote(value):
                inner = unquote(value)
                hidden = _redact_url(inner)
                if hidden != inner:
                    value = quote(hidden, safe="")
            pieces.append(f"{name}{sep}{value}")
        out = f"{base}?{'&'.join(pieces)}"
    return out

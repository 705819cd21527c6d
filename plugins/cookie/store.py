"""The CookieStore: a session cookie file (or stdin/stdout) as a kvctl store."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Self

from kvctl.errors import BadURLError, KvctlError, LimitError, StoreIOError, UnsupportedError
from kvctl.plugin_kit import ScanRange, StoreBase, deadline_ms
from kvctl.plugin_kit.sealer import Sealer
from kvctl.plugin_kit.session_codec import SECRET_ENV, SECRET_OPTIONS, open_sealer, read_secret
from kvctl.store import Capabilities, Page, Record, StoreURL, now_ms

from .session import SessionDoc, json_to_value, key_to_name, name_to_key, value_to_json

__all__ = ["COOKIE_LIMIT", "CookieStore"]

COOKIE_LIMIT = 4096  # bytes for name + value + attributes, per RFC 6265's minimum browsers honour
ATTRIBUTE_ALLOWANCE = 100  # Session's allowance for "; Path=/; HttpOnly; Secure; SameSite=..."
DEFAULT_TIMEOUT_MS = 3_600_000  # Session's default session timeout
# Ceilings for one key or value, refused up front; under them the whole-cookie check decides.
# Uncompressed, nothing over ~2 KiB fits once the fixed overhead is paid (the session envelope of
# ~140 B, IV and padding, the digest, and two base64 layers: x16/9).  With gzip, repetitive values
# can fit far past that, but not past deflate's ~1000:1 ratio over the ~2 KiB left.
MAX_ITEM_PLAIN = 2048
MAX_ITEM = 64 * 1024
_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # RFC 6265 token characters
_OPTIONS = {"name", "gzip", "timeout", "sliding", "include_expired", *SECRET_OPTIONS}


class CookieStore(StoreBase):
    name = "cookie"
    description = "One signed+encrypted Session cookie (AES-256-CBC + HMAC-SHA256) in a file or on stdin/stdout."
    capabilities = Capabilities(
        persistent=True, ordered_scan=True, atomic_batch=True, host_local=True,
        max_key_size=MAX_ITEM, max_value_size=MAX_ITEM,
        durability="fsync per write (file rewritten atomically)", blocking_io=True,
    )

    def __init__(self, url: StoreURL, path: str, sealer: Sealer, *, cookie_name: str, timeout_ms: int,
                 sliding: bool, include_expired: bool) -> None:
        self.url = url
        # How messages name this store: never the URL, whose options the CLI scrubs to the end.
        self.where = "cookie (stdin/stdout)" if path == "-" else f"cookie {path}"
        self.path = path
        self.sealer = sealer
        self.cookie_name = cookie_name
        self.timeout_ms = timeout_ms
        self.sliding = sliding
        self.include_expired = include_expired
        if sealer.gzip_on_write == "never":
            self.capabilities = replace(  # type: ignore[misc]
                type(self).capabilities, max_key_size=MAX_ITEM_PLAIN, max_value_size=MAX_ITEM_PLAIN)
        self._doc: SessionDoc | None = None
        self._values: dict[bytes, bytes] = {}
        self._names: dict[bytes, str] = {}
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) of the file we read
        self._dirty = False
        self.last_token: str | None = None  # the cookie as read or last written
        self._load()

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        if "secret" in url.options or url.password:
            raise BadURLError(
                f"a cookie secret never goes in the URL; set ${SECRET_ENV}, "
                "or name a variable (secret_env=NAME) or a file (secret_file=PATH)"
            )
        url.check_options(_OPTIONS)
        path = url.local_path()
        secret = read_secret(url)
        assert secret is not None  # required: read_secret refuses a missing one
        sealer = open_sealer(url, secret, gzip_on_write=url.choice_option("gzip", ("auto", "always", "never"), "auto"))
        timeout = url.duration_option_ms("timeout", DEFAULT_TIMEOUT_MS)
        return cls(url, path, sealer, cookie_name=url.option("name") or "session",
                   timeout_ms=timeout or DEFAULT_TIMEOUT_MS, sliding=url.bool_option("sliding", False),
                   include_expired=url.bool_option("include_expired", False))

    @property
    def _terminal(self) -> bool:
        return self.path == "-"

    def _load(self) -> None:
        token = self._read_token()
        self.last_token = token
        if token is None:
            self._doc = None
        else:
            try:
                self._doc = SessionDoc.from_json(self.sealer.open(token))
            except KvctlError as exc:  # name the store in the one-line message
                raise type(exc)(f"{self.where}: {exc.message}", hint=exc.hint) from None
        self._index()

    def _index(self) -> None:
        self._values = {}
        self._names = {}
        if self._doc is None:
            return
        for member, value in self._doc.members.items():
            key = name_to_key(member)
            self._values[key] = json_to_value(value)
            self._names[key] = member

    def _read_token(self) -> str | None:
        if self._terminal:
            text = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
        else:
            try:
                with open(self.path, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    raw = fh.read()
            except FileNotFoundError:
                self._seen = None
                return None
            except IsADirectoryError:
                raise StoreIOError(f"{self.where}: {self.path} is a directory, not a cookie file") from None
            except OSError as exc:
                raise StoreIOError(f"{self.where}: cannot read {self.path}: {exc.strerror}") from None
            self._seen = (st.st_ino, st.st_size, st.st_mtime_ns)
            text = raw.decode("ascii", "replace")
        return _cookie_value(text, self.cookie_name)

    # -- the session's expiry ----------------------------------------------------------------
    def _expired(self) -> bool:
        expires = None if self._doc is None else self._doc.expires_at_ms
        return expires is not None and expires <= now_ms()

    def _live(self) -> bool:
        return self.include_expired or not self._expired()

    def _visible(self) -> dict[bytes, bytes]:
        return self._values if self._live() else {}

    # -- reads -----------------------------------------------------------------------------
    def get(self, key: bytes) -> Record | None:
        value = self._visible().get(key)
        return None if value is None else Record(key, value)

    def get_many(self, keys: Sequence[bytes]) -> list[Record | None]:
        values = self._visible()
        return [None if (v := values.get(k)) is None else Record(k, v) for k in keys]

    def scan_range(self, span: ScanRange, keys_only: bool) -> Iterator[Page]:
        after, end = span.after, span.end
        values = self._visible()
        keys = sorted(k for k in values if k.startswith(span.prefix) and (after is None or k > after)
                      and (end is None or k < end))
        for i in range(0, len(keys), span.page):
            yield span.page_of([Record(k, b"" if keys_only else values[k]) for k in keys[i:i + span.page]])

    def count(self, prefix: bytes = b"") -> int:
        return sum(1 for k in self._visible() if k.startswith(prefix))

    # -- writes ----------------------------------------------------------------------------
    def set(self, key: bytes, value: bytes, *, ttl_ms: int | None = None) -> None:
        self.set_many([Record(key, value, deadline_ms(ttl_ms))])

    def set_many(self, records: Iterable[Record]) -> None:
        records = list(records)
        for rec in records:
            if rec.expires_at_ms is not None:
                raise UnsupportedError(
                    "the cookie backend does not support per-key TTLs (the session has one expiry: "
                    "see the timeout and sliding options)"
                )
            self._check(rec.key, rec.value)
        if not records:
            return

        def apply(doc: SessionDoc) -> None:
            for rec in records:
                member = self._names.get(rec.key) or key_to_name(rec.key)
                doc.members[member] = value_to_json(rec.value, doc.members.get(member))
        self._write(apply)

    def delete_many(self, keys: Sequence[bytes]) -> int:
        visible = self._visible()
        present = [k for k in dict.fromkeys(keys) if k in visible]
        if not present:
            return 0

        def apply(doc: SessionDoc) -> None:
            for key in present:
                doc.members.pop(self._names.get(key) or key_to_name(key), None)
        self._write(apply)
        return len(present)

    def clear(self) -> int:
        n = len(self._visible())
        if n:
            self._write(lambda doc: doc.members.clear())
        return n

    def _write(self, apply: Any) -> None:
        """Apply a change to a copy of the session, seal it, check the size, then commit it."""
        self._reload_if_changed()
        now = now_ms()
        if self._doc is None or not self._live():
            doc = SessionDoc.new(now, self.timeout_ms)  # like Session: an expired session starts anew
        else:
            doc = self._doc.copy()
            if self.sliding:
                doc.set_expiry(now + self.timeout_ms)
        apply(doc)
        token = self.sealer.seal(doc.to_json())
        self._check_size(token)  # nothing is written, and nothing changes here, when it is over
        if not self._terminal:
            self._write_file(token)
        self._doc = doc
        self.last_token = token
        self._dirty = True
        self._index()

    def _check_size(self, token: str) -> None:
        total = len(self.cookie_name.encode()) + len(token) + ATTRIBUTE_ALLOWANCE
        if total > COOKIE_LIMIT:
            raise LimitError(
                f"{self.where}: the cookie would be {total:,} bytes (name {len(self.cookie_name)} "
                f"+ value {len(token):,} + {ATTRIBUTE_ALLOWANCE} for attributes), over the "
                f"{COOKIE_LIMIT:,}-byte limit by {total - COOKIE_LIMIT:,} bytes; nothing was written"
            )

    def _reload_if_changed(self) -> None:
        """Another process rewrote the file since we read it: start from its version, not ours."""
        if self._terminal:
            return
        try:
            st = os.stat(self.path)
            seen: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            seen = None
        except OSError as exc:
            raise StoreIOError(f"{self.where}: cannot stat {self.path}: {exc.strerror}") from None
        if seen != self._seen:
            self._load()

    def _write_file(self, token: str) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".cookie-", suffix=".tmp")
        except OSError as exc:
            raise StoreIOError(f"{self.where}: cannot write in {directory}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(token.encode("ascii") + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            st = os.stat(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StoreIOError(f"{self.where}: cannot write {self.path}: {exc.strerror}") from None
        self._seen = (st.st_ino, st.st_size, st.st_mtime_ns)

    # -- admin -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        values = self._visible()
        out: dict[str, Any] = {"keys": len(values), "bytes": sum(len(k) + len(v) for k, v in values.items())}
        if self._doc is not None:
            token = self.last_token or ""
            out["cookie_bytes"] = len(self.cookie_name) + len(token) + ATTRIBUTE_ALLOWANCE
            out["cookie_limit"] = COOKIE_LIMIT
            out["session_id"] = self._doc.envelope.get("session_id")
            out["created_at"] = self._doc.envelope.get("created_at")
            out["expires_at"] = self._doc.envelope.get("expires_at")
            out["expired"] = self._expired()
            if out["expired"] and not self.include_expired:
                out["hint"] = f"the session expired; open with include_expired=true to see its {len(self._values)} keys"
        return out

    def token(self) -> str | None:
        """The current cookie value (what a browser would send), or None for an empty new store."""
        return self.last_token

    def close(self) -> None:
        if self._terminal and self._dirty and self.last_token is not None:
            sys.stdout.write(self.last_token + "\n")
            sys.stdout.flush()
            self._dirty = False


def _cookie_value(text: str, name: str) -> str | None:
    """The token in a file: a bare value, or a copied ``name=value; Path=/...`` line (any name)."""
    text = text.strip().split(";", 1)[0].strip()
    if text.startswith(name + "="):
        return text[len(name) + 1:].strip() or None
    prefix, sep, rest = text.partition("=")
    # Base64 has "=" only as trailing padding, followed by nothing, "=" or the legacy "--digest".
    if sep and _COOKIE_NAME.fullmatch(prefix) and rest and rest[0] not in "=-":
        text = rest.strip()
    return text or None

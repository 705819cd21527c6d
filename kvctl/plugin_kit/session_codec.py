"""Values as the Crystal Session library stores them outside a cookie (its Redis store), and the
secret both share.

Session writes a session as ``session.to_json``, then gzip when ``compress_data`` is on and the
JSON is at least ``compression_threshold`` bytes, then ``encrypt_and_sign`` (the cookie's token,
:mod:`.sealer`) when ``encrypt_redis_data`` is on; it detects gzip on read by its magic bytes.
:class:`SessionCodec` reads any of the four forms back to the session JSON and writes the JSON
again the way the value it replaces was written:

* read: a signed token is verified and decrypted with the secret; gzip is detected by ``1f 8b``
  (inside a token or not); the result must be a JSON object;
* write: the value must be a JSON object, written in the form of the value it replaces: sealed
  when that was sealed, gzipped when that was gzipped (``gzip=keep``, the default; ``always`` /
  ``never`` decide for every value).  A new key is sealed when a secret is given.  An app reads
  only the form its own settings write (Session decrypts every value when ``encrypt_redis_data``
  is on, and none when it is off), so an edit never changes the form; a sealed value is never
  written without the secret.

The secret is never read from a URL (it would show in ``ps`` and shell history): from
``$KVCTL_COOKIE_SECRET``, or the variable ``secret_env=NAME`` names, or the file
``secret_file=PATH`` names (one trailing newline stripped).
"""

from __future__ import annotations

import json
import os
import re
import zlib
from typing import TYPE_CHECKING

from kvctl.errors import BadURLError, CorruptError, KvctlError, UnsupportedError, UsageError
from kvctl.url import StoreURL

from .display import show_key

if TYPE_CHECKING:
    from .sealer import Sealer

__all__ = ["GZIP_MODES", "SECRET_ENV", "SECRET_OPTIONS", "SessionCodec", "open_sealer", "read_secret",
           "refuse_secret_in_url"]

SECRET_ENV = "KVCTL_COOKIE_SECRET"
# the options that say where the secret is and how Session derives its keys from it
SECRET_OPTIONS = frozenset({"secret_env", "secret_file", "kdf", "kdf_salt", "kdf_iterations", "digest_fallback"})
GZIP_MODES = ("keep", "always", "never")
GZIP_MAGIC = b"\x1f\x8b"
_TOKEN = re.compile(rb"[A-Za-z0-9+/=_-]+")  # base64 of either alphabet, and the legacy "data--digest"
HOW = f"${SECRET_ENV}, or secret_env=NAME / secret_file=PATH in the URL"


def refuse_secret_in_url(url: StoreURL) -> None:
    if "secret" in url.options:
        raise BadURLError(f"a Session secret never goes in the URL; set ${SECRET_ENV}, "
                          "or name a variable (secret_env=NAME) or a file (secret_file=PATH)")


def read_secret(url: StoreURL, *, required: bool = True) -> bytes | None:
    """The secret from the file or variable the URL names, else ``$KVCTL_COOKIE_SECRET``; None
    when none is set and it is not ``required`` (a variable or file the URL names must exist)."""
    refuse_secret_in_url(url)
    secret_file = url.option("secret_file")
    if secret_file:
        try:
            with open(os.path.expanduser(secret_file), "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise UsageError(f"cannot read the cookie secret file (secret_file=): {exc.strerror}") from None
        secret = raw[:-1] if raw.endswith(b"\n") else raw
        secret = secret[:-1] if secret.endswith(b"\r") else secret
        where = "the secret file"
    else:
        var = url.option("secret_env") or SECRET_ENV
        value = os.environ.get(var)
        secret = value.encode("utf-8") if value else b""
        where = f"${var}"
        required = required or bool(url.option("secret_env"))
    if not secret and (required or secret_file):
        raise UsageError(f"no cookie secret in {where} (set {HOW})")
    return secret or None


def open_sealer(url: StoreURL, secret: bytes, *, gzip_on_write: str = "never", what: str = "cookie") -> Sealer:
    """A sealer for ``secret`` with the URL's key-derivation options (``kdf=pbkdf2``,
    ``kdf_salt``, ``kdf_iterations``) and ``digest_fallback`` (accept legacy HMAC-SHA1)."""
    try:
        from .sealer import KDF_ITERATIONS, KDF_SALT, Sealer, derive_key
    except ImportError:
        raise UnsupportedError("Session's encryption needs the cryptography package: "
                               "pip install 'kvctl[cookie]'") from None
    kdf = url.choice_option("kdf", ("none", "pbkdf2"), "none") == "pbkdf2"
    iterations = url.int_option("kdf_iterations", KDF_ITERATIONS)
    if iterations < 1:
        raise BadURLError("the option kdf_iterations must be positive")
    key = derive_key(secret, kdf=kdf, salt=url.option("kdf_salt") or KDF_SALT, iterations=iterations)
    return Sealer(secret, key, gzip_on_write=gzip_on_write, accept_sha1=url.bool_option("digest_fallback", False),
                  what=what)


def _json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except (ValueError, UnicodeDecodeError):
        return False


class SessionCodec:
    """Session's stored value <-> the session JSON, for one store (``where`` names it)."""

    def __init__(self, sealer: Sealer | None, *, gzip: str = "keep", where: str = "") -> None:
        self.sealer = sealer
        self.gzip = gzip
        self.where = where

    def _fail(self, key: bytes, what: str) -> str:
        return f"{self.where}: key {show_key(key)}: {what}"

    def _unsealed(self, key: bytes, raw: bytes) -> tuple[bytes, bool]:
        """(the bytes inside the value's token, or the value itself; whether it was sealed)."""
        stripped = raw.strip()
        if raw[:2] == GZIP_MAGIC or stripped[:1] == b"{" or not _TOKEN.fullmatch(stripped):
            return raw, False
        if self.sealer is None:
            raise UsageError(self._fail(key, f"the Session value is encrypted: give Session's secret ({HOW})"))
        try:
            return self.sealer.unseal(stripped.decode("ascii")), True
        except KvctlError as exc:  # AuthError for a wrong secret, CorruptError for a damaged token
            raise type(exc)(self._fail(key, exc.message), hint=exc.hint) from None

    def decode(self, key: bytes, raw: bytes) -> bytes:
        """The session JSON of the stored value ``raw`` of ``key``."""
        inner, _ = self._unsealed(key, raw)
        plain = inner
        if inner[:2] == GZIP_MAGIC:
            try:
                plain = zlib.decompress(inner, 47)
            except zlib.error:
                raise CorruptError(self._fail(key, "the gzip-compressed Session value is damaged")) from None
        if not _json_object(plain):
            raise CorruptError(self._fail(key, "not a Session value (not a JSON object, gzip or a signed token)"))
        return plain

    def encode(self, key: bytes, plain: bytes, previous: bytes | None) -> bytes:
        """``plain`` (the session JSON) as stored, the way ``previous`` (the value it replaces,
        None for a new key) was."""
        if not _json_object(plain):
            raise UsageError(self._fail(key, "a Session value must be a JSON object; nothing was written"))
        seal, was_gzipped = self.sealer is not None, False
        if previous is not None:  # _unsealed refuses a sealed value without the secret
            inner, seal = self._unsealed(key, previous)
            was_gzipped = inner[:2] == GZIP_MAGIC
        body = plain
        if self.gzip == "always" or (self.gzip == "keep" and was_gzipped):
            packer = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip container, as Session writes
            body = packer.compress(plain) + packer.flush()
        if not seal or self.sealer is None:
            return body
        return self.sealer.seal(body).encode("ascii")

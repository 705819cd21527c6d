"""Session's signed and encrypted token, byte for byte: its cookie, and its Redis values when
``encrypt_redis_data`` is on (the same ``Message::Encryptor``).

    plain   = JSON of the session, optionally gzip-compressed (detected on read by its magic bytes)
    blob    = AES-256-CBC(plain, PKCS7 padding) || IV            (a random 16-byte IV, appended)
    data    = URL-safe base64(blob)
    digest  = URL-safe base64(HMAC-SHA256(secret, data as text))
    token   = URL-safe base64(JSON ["data","digest"])           (legacy form: "data--digest")

The AES key is the first 32 bytes of the secret, or PBKDF2-HMAC-SHA256(secret, salt, iterations)
when key derivation is on; the HMAC key is always the whole secret.  Base64 is written with
padding (as Session writes it) and read with or without it, in either alphabet.

The signature is checked (in constant time) before anything is decrypted, so a tampered token
never reaches the padding check; a token that verifies but does not decrypt was encrypted under
another key, which points at a key-derivation setting that differs.  Messages name the token as
the caller says (``what``: "cookie", "session value").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import zlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kvctl.errors import AuthError, CorruptError, UsageError

KEY_SIZE = 32
BLOCK = 16
GZIP_MAGIC = b"\x1f\x8b"
KDF_ITERATIONS = 100_000
KDF_SALT = "session_kdf_salt"
GZIP_WORTH = 200  # below this a gzip header and trailer (18 bytes) rarely pay for themselves
_TO_STD = bytes.maketrans(b"-_", b"+/")


def b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def b64decode(text: str | bytes) -> bytes:
    """Strict decode of either alphabet, padding optional: stray characters are an error."""
    raw = text.encode("ascii", "strict") if isinstance(text, str) else text
    raw = raw.translate(_TO_STD)
    if len(raw) % 4:
        raw += b"=" * (-len(raw) % 4)
    return binascii.a2b_base64(raw, strict_mode=True)


def derive_key(secret: bytes, *, kdf: bool, salt: str = KDF_SALT, iterations: int = KDF_ITERATIONS) -> bytes:
    """The AES-256 key Session uses for ``secret``."""
    if kdf:
        return hashlib.pbkdf2_hmac("sha256", secret, salt.encode("utf-8"), iterations, KEY_SIZE)
    if len(secret) < KEY_SIZE:
        raise UsageError(
            f"the cookie secret is {len(secret)} bytes; AES-256 needs at least {KEY_SIZE} "
            "(use a longer secret, or kdf=pbkdf2 to derive the key from a short one)"
        )
    return secret[:KEY_SIZE]  # OpenSSL (and so Session) reads the first 32 bytes of a longer key


class Sealer:
    """Seals session JSON into a token and opens tokens, for one secret and key setting."""

    def __init__(self, secret: bytes, key: bytes, *, gzip_on_write: str = "auto",
                 accept_sha1: bool = False, what: str = "cookie") -> None:
        self.what = what
        self._secret = secret
        self._aes = algorithms.AES(key)  # validated once; a Cipher per token needs only the IV
        self.gzip_on_write = gzip_on_write  # "auto" (when smaller), "always" or "never"
        self.accept_sha1 = accept_sha1  # Session's digest_fallback: verify legacy HMAC-SHA1 tokens

    # -- writing ---------------------------------------------------------------------------
    def seal(self, plain: bytes, *, iv: bytes | None = None) -> str:
        if self.gzip_on_write != "never" and (self.gzip_on_write == "always" or len(plain) > GZIP_WORTH):
            packer = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip container (magic 1f 8b)
            packed = packer.compress(plain) + packer.flush()
            if self.gzip_on_write == "always" or len(packed) < len(plain):
                plain = packed
        iv = os.urandom(BLOCK) if iv is None else iv
        pad = BLOCK - len(plain) % BLOCK
        encryptor = Cipher(self._aes, modes.CBC(iv)).encryptor()
        blob = encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize() + iv
        data = b64encode(blob)
        digest = b64encode(hmac.digest(self._secret, data.encode("ascii"), "sha256"))
        return b64encode(json.dumps([data, digest], separators=(",", ":")).encode("ascii"))

    # -- reading ---------------------------------------------------------------------------
    def open(self, token: str) -> bytes:
        """The session JSON inside ``token``; CorruptError or AuthError when it is not genuine."""
        return gunzip_if_gzip(self.unseal(token), f"the {self.what}'s")

    def unseal(self, token: str) -> bytes:
        """What was sealed in ``token``, still gzip-compressed if it was."""
        data, digest = split_token(token, self.what)
        self._verify(data, digest)
        try:
            blob = b64decode(data)
        except (binascii.Error, UnicodeEncodeError):
            raise CorruptError(f"the {self.what}'s signed data is not base64") from None
        if len(blob) < 2 * BLOCK or len(blob) % BLOCK:
            raise CorruptError(f"the {self.what}'s encrypted data is {len(blob)} bytes, not IV plus whole AES blocks")
        return self._decrypt(blob[:-BLOCK], blob[-BLOCK:])

    def _verify(self, data: str, digest: str) -> None:
        try:
            given = b64decode(digest)
        except (binascii.Error, UnicodeEncodeError):
            raise CorruptError(f"the {self.what}'s digest is not base64") from None
        signed = data.encode("utf-8", "surrogatepass")
        if hmac.compare_digest(given, hmac.digest(self._secret, signed, "sha256")):
            return
        if self.accept_sha1 and hmac.compare_digest(given, hmac.digest(self._secret, signed, "sha1")):
            return
        raise AuthError(f"the {self.what}'s signature does not verify: wrong secret, or the {self.what} was altered")

    def _decrypt(self, ciphertext: bytes, iv: bytes) -> bytes:
        decryptor = Cipher(self._aes, modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        pad = padded[-1]
        # Constant-time comparison of the padding bytes; the signature already proved authenticity.
        if not 1 <= pad <= BLOCK or not hmac.compare_digest(padded[-pad:], bytes([pad]) * pad):
            raise AuthError(
                f"the {self.what} is signed with this secret but does not decrypt with its key "
                "(a different key-derivation setting? check kdf, kdf_salt, kdf_iterations)"
            )
        return padded[:-pad]


def gunzip_if_gzip(data: bytes, whose: str) -> bytes:
    """``data`` decompressed when it starts with gzip's magic bytes (as Session reads), else as
    it is; CorruptError naming ``whose`` data when the gzip stream is damaged."""
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return zlib.decompress(data, 47)  # 47: gzip or zlib header, detected
    except zlib.error:
        raise CorruptError(f"{whose} gzip-compressed session is damaged") from None


def split_token(token: str, what: str = "cookie") -> tuple[str, str]:
    """``[data, digest]`` from the base64 JSON form, or from the legacy ``data--digest`` form."""
    token = token.strip()
    if not token:
        raise CorruptError(f"the {what} is empty")
    try:
        pair = json.loads(b64decode(token))
    except (binascii.Error, UnicodeError, ValueError):
        pair = None
    if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair):
        return pair[0], pair[1]
    # URL-safe base64 data may itself contain "--": the separator is the one followed by a digest
    # that decodes to an HMAC-SHA256 (32 bytes)
    at = token.rfind("--")
    while at > 0:
        data, digest = token[:at], token[at + 2:]
        try:
            if len(b64decode(digest)) == 32:
                return data, digest
        except (binascii.Error, ValueError):
            pass
        at = token.rfind("--", 0, at)
    raise CorruptError(
        f"not a Session {what} ({len(token)} characters): expected base64 of [data, digest] "
        "or data--digest (truncated or damaged?)"
    )

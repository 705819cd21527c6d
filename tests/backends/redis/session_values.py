"""Values exactly as the Crystal Session library's RedisStore writes them (azutoolkit/session
c3331ca), built here without kvctl's code so the codec is checked against Session, not itself.

``RedisStore#[]=``: ``SETEX "session:<id>" <timeout s> encrypt_if_enabled(session.to_json)``, where
``encrypt_if_enabled`` is ``Compression.compress_if_enabled`` (gzip when ``compress_data`` and the
JSON is at least ``compression_threshold``, 256 by default) and then, with ``encrypt_redis_data``,
``Message::Encryptor#encrypt_and_sign``: AES-256-CBC with the secret as key (OpenSSL takes its
first 32 bytes), PKCS7 padding, the IV appended; ``Verifier#generate``: data =
``Base64.urlsafe_encode`` (padded), digest = urlsafe base64 of HMAC-SHA256(secret, data), token =
urlsafe base64 of the JSON array ``["data","digest"]``.  ``Session::Base`` serializes its fields
in declaration order: ``session_id``, ``created_at``, ``expires_at``, then the subclass's.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SECRET = b"a-session-secret-of-at-least-32-bytes!!"
OTHER_SECRET = b"another-secret-also-over-32-bytes-long"
THRESHOLD = 256  # Session's default compression_threshold
IV = bytes(range(16))  # random in Session; fixed here so the fixture is stable


def session_json(session_id: str, *, user: str = "ada", padding: int = 0) -> bytes:
    """A ``UserSession < Session::Base`` (authenticated, username) as ``to_json`` writes it."""
    doc = {"session_id": session_id, "created_at": "2026-12-06T12:00:00.123456789Z",
           "expires_at": "2026-12-06T13:00:00.123456789Z", "authenticated": True, "username": user}
    if padding:
        doc["note"] = "x" * padding  # a field of the app's, to pass the compression threshold
    return json.dumps(doc, separators=(",", ":")).encode()


def compress_if_enabled(data: bytes, compress: bool) -> bytes:
    if not compress or len(data) < THRESHOLD:
        return data
    return gzip.compress(data, mtime=0)


def encrypt_and_sign(data: bytes, secret: bytes = SECRET, iv: bytes = IV) -> bytes:
    pad = 16 - len(data) % 16
    enc = Cipher(algorithms.AES(secret[:32]), modes.CBC(iv)).encryptor()
    blob = enc.update(data + bytes([pad]) * pad) + enc.finalize() + iv
    data64 = base64.urlsafe_b64encode(blob).decode()
    digest = base64.urlsafe_b64encode(hmac.new(secret, data64.encode(), hashlib.sha256).digest()).decode()
    return base64.urlsafe_b64encode(json.dumps([data64, digest], separators=(",", ":")).encode())


def stored(plain: bytes, *, compress: bool = False, encrypt: bool = False, secret: bytes = SECRET) -> bytes:
    """What Session's RedisStore SETEXes for the session JSON ``plain``."""
    body = compress_if_enabled(plain, compress)
    return encrypt_and_sign(body, secret) if encrypt else body


def unseal(raw: bytes, secret: bytes = SECRET) -> bytes:
    """``Encryptor#verify_and_decrypt``: what was sealed (still gzipped, if it was)."""
    data64, digest = json.loads(base64.urlsafe_b64decode(raw))
    expected = base64.urlsafe_b64encode(hmac.new(secret, data64.encode(), hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(digest, expected), "the signature does not verify"
    blob = base64.urlsafe_b64decode(data64)
    dec = Cipher(algorithms.AES(secret[:32]), modes.CBC(blob[-16:])).decryptor()
    padded = dec.update(blob[:-16]) + dec.finalize()
    return padded[: -padded[-1]]


def read_back(raw: bytes, *, encrypted: bool, secret: bytes = SECRET) -> bytes:
    """Session's ``decrypt_if_enabled``: unseal when encryption is on, then gunzip if gzip."""
    body = unseal(raw, secret) if encrypted else raw
    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body

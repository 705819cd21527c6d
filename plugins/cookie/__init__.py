"""``cookie:///path/token.txt``: the whole store is one signed and encrypted session cookie.

Compatible with the Crystal Session library's CookieStore (see :mod:`.sealer` for the token and
:mod:`.session` for how keys and values sit in the session JSON), so an operator can decode,
inspect, edit and re-sign a session cookie.  The file holds the cookie's value (a copied
``name=value; attrs`` line is read too); it is read when the store opens and rewritten
atomically (temporary file, fsync, rename) on every write.  ``cookie://-`` reads the cookie from
standard input when the store opens and prints the new cookie to standard output when a changed
store closes.

The secret is read from ``$KVCTL_COOKIE_SECRET``, or the variable named by ``secret_env``, or the
file named by ``secret_file`` (one trailing newline stripped); never from the URL.

Options: ``name`` (cookie name, default ``session``: counts toward the 4,096-byte limit),
``kdf=pbkdf2`` (+ ``kdf_salt``, ``kdf_iterations``), ``gzip=auto|always|never`` (compress on
write; ``auto``, the default, when that makes the cookie smaller: Session detects gzip on read,
as kvctl does), ``digest_fallback`` (also accept legacy HMAC-SHA1 signatures), ``timeout``
(lifetime of a new session, default 1h), ``sliding`` (every write moves the expiry to now +
timeout), ``include_expired`` (show an expired session's data instead of an empty store).
"""

from .store import COOKIE_LIMIT, CookieStore

__all__ = ["COOKIE_LIMIT", "CookieStore"]

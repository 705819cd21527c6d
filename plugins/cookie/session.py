"""The session JSON inside a cookie, and how kvctl's bytes keys and values map onto it.

Session serializes ``SessionId(T)`` as one JSON object::

    {"session_id": "<uuid>", "created_at": "<RFC 3339>", "data": {...}, "expires_at": "<RFC 3339>"}

kvctl's records are the members of ``data``: a member's name is the key, its value the value.
Every other top-level member is kept as found.  The mapping is reversible for any bytes:

* key: the member name's UTF-8 bytes.  A key that is not UTF-8, or that starts with ``$b64:``,
  is written as ``"$b64:" + base64url(key)``.
* value read: a JSON string gives its UTF-8 bytes; ``{"$b64": "..."}`` gives the decoded bytes;
  any other JSON value (number, boolean, null, array, object) gives its compact JSON text, so
  ``user_id: 42`` reads as ``42``.
* value written: kept as a JSON string when the member already is one (so editing a string field
  never turns it into a number); otherwise bytes that are exactly the compact JSON text of a
  non-string value are written as that value (``42``, ``true``, ``{"a":1}``); other UTF-8 text as
  a string; anything else as ``{"$b64": base64url(value)}``.  A written form is used only when
  reading it back yields the same bytes, so a round trip never changes a value.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from kvctl.errors import CorruptError
from kvctl.plugin_kit.sealer import b64decode, b64encode

KEY_ESCAPE = "$b64:"
VALUE_ESCAPE = "$b64"
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):?(\d{2}))$"
)


# -- keys ----------------------------------------------------------------------------------
def key_to_name(key: bytes) -> str:
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return KEY_ESCAPE + b64encode(key)
    return KEY_ESCAPE + b64encode(key) if text.startswith(KEY_ESCAPE) else text


def name_to_key(name: str) -> bytes:
    if name.startswith(KEY_ESCAPE):
        try:
            return b64decode(name[len(KEY_ESCAPE):])
        except ValueError:
            pass  # not one of ours: an application's member that happens to start with "$b64:"
    return name.encode("utf-8", "surrogatepass")


# -- values --------------------------------------------------------------------------------
def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


def json_to_value(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(VALUE_ESCAPE), str):
        try:
            return b64decode(value[VALUE_ESCAPE])
        except ValueError:
            pass
    return _compact(value)


def value_to_json(value: bytes, existing: Any = None) -> Any:
    """The JSON value to store for ``value``; ``existing`` is the member's current JSON value."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return {VALUE_ESCAPE: b64encode(value)}
    if not isinstance(existing, str) and text[:1] in '-0123456789tfn[{':
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        else:
            if not isinstance(parsed, str) and json_to_value(parsed) == value:
                return parsed
    return text


# -- times ---------------------------------------------------------------------------------
def format_time(ms: int) -> str:
    """Crystal's ``Time#to_json``: RFC 3339 with nanoseconds."""
    moment = datetime.fromtimestamp(ms // 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}000000Z"


def parse_time_ms(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    match = _RFC3339.match(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zulu, sign, off_h, off_m = match.groups()[6:]
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    if not zulu and sign:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        moment -= offset if sign == "+" else -offset
    millis = int((fraction or "0")[:3].ljust(3, "0"))
    return int(moment.timestamp()) * 1000 + millis


# -- the document --------------------------------------------------------------------------
class SessionDoc:
    """A decoded session: its ``data`` members (in order) and the other top-level members."""

    def __init__(self, envelope: dict[str, Any], members: dict[str, Any]) -> None:
        self.envelope = envelope
        self.members = members

    @classmethod
    def new(cls, now_ms: int, timeout_ms: int) -> SessionDoc:
        envelope = {
            "session_id": str(uuid.uuid4()),
            "created_at": format_time(now_ms),
            "expires_at": format_time(now_ms + timeout_ms),
        }
        return cls(envelope, {})

    @classmethod
    def from_json(cls, plain: bytes) -> SessionDoc:
        try:
            doc = json.loads(plain)
        except (ValueError, UnicodeDecodeError):
            raise CorruptError("the cookie decrypts but does not hold JSON") from None
        if not isinstance(doc, dict):
            raise CorruptError(f"the cookie holds JSON {type(doc).__name__}, not a session object")
        members = doc.pop("data", None)
        if members is None:
            members = {}
        if not isinstance(members, dict):
            raise CorruptError(f"the session's data is a JSON {type(members).__name__}, not an object")
        return cls(doc, members)

    def to_json(self) -> bytes:
        doc = dict(self.envelope)
        # Session writes data between created_at and expires_at; member order is not significant.
        doc["data"] = self.members
        if "expires_at" in doc:
            doc["expires_at"] = doc.pop("expires_at")
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")

    @property
    def expires_at_ms(self) -> int | None:
        return parse_time_ms(self.envelope.get("expires_at"))

    def set_expiry(self, ms: int) -> None:
        self.envelope["expires_at"] = format_time(ms)

    def copy(self) -> SessionDoc:
        return SessionDoc(dict(self.envelope), dict(self.members))

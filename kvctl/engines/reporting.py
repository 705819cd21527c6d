"""What an engine tells its caller while it runs, and what it hands back at the end.

Engines never print.  While one runs it tells a :class:`Reporter` what it is doing: progress
events (:class:`Progress`, often: a caller draws a bar from them or sends them down a pipe) and
notes (a line for the user, rare: "no checkpoint to resume", "stopped after ...").  The default
reporter ignores both, so an engine called from a test or a script says nothing.

When it is done it returns a result (:class:`Result`): ``to_dict()`` is what ``--json`` prints,
and ``check()`` raises the error whose exit code the command ends with, once the result has been
shown (a copy that left keys behind still prints its summary, then exits 8).  :class:`Counts`
and :class:`Problems` are the parts of a result every writing engine shares.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from kvctl.codec import show_key
from kvctl.errors import IncompleteError
from kvctl.plugin_kit import typedjson


def plural(count: int, noun: str) -> str:
    """``1 key``, ``2 keys``, ``600,000 keys``: how every count in a message is written."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"

MAX_NAMED = 1000  # keys named in a summary per kind of problem; the counts stay exact


@dataclass
class Counts:
    """What happened to the records an engine read.  Checkpoints persist exactly these fields."""

    read: int = 0  # records read from the source that matched the filters
    copied: int = 0  # written (or, in a dry run, that would be written)
    skipped: int = 0  # left alone by the conflict policy
    expired: int = 0  # already expired when about to be written
    failed: int = 0  # over a destination limit
    incomplete: int = 0  # typed values the destination cannot hold
    ttl_dropped: int = 0  # written without their expiry (--drop-ttl)
    bytes: int = 0  # key + value bytes written (or that would be)

    def add(self, other: Counts) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counts:
        return cls(**{k: int(v) for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Problems:
    """Keys that were not copied, by name (bounded), with the reason."""

    incomplete: list[tuple[bytes, str]] = field(default_factory=list)  # (key, kind)
    failed: list[tuple[bytes, str]] = field(default_factory=list)  # (key, reason)

    def note_incomplete(self, key: bytes, kind: str) -> None:
        if len(self.incomplete) < MAX_NAMED:
            self.incomplete.append((key, kind))

    def note_failed(self, key: bytes, reason: str) -> None:
        if len(self.failed) < MAX_NAMED:
            self.failed.append((key, reason))

    def to_dict(self) -> dict[str, list[list[str]]]:
        return {"incomplete": [[k.hex(), why] for k, why in self.incomplete],
                "failed": [[k.hex(), why] for k, why in self.failed]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problems:
        return cls([(bytes.fromhex(k), why) for k, why in data.get("incomplete", [])],
                   [(bytes.fromhex(k), why) for k, why in data.get("failed", [])])

    def extend(self, other: Problems) -> None:
        self.incomplete.extend(other.incomplete[: MAX_NAMED - len(self.incomplete)])
        self.failed.extend(other.failed[: MAX_NAMED - len(self.failed)])

    def check(self, what: str, incomplete: int, failed: int) -> None:
        """Raise :class:`IncompleteError` (exit 8) when records were left behind, naming the first
        of each kind: the one rule for migrate, import, export and restore (``what``: "copy"...)."""
        parts = []
        if incomplete:
            first = self.incomplete[:1]
            parts.append(f"{plural(incomplete, 'typed key')} could not be carried" + (
                f" (first: {show_key(first[0][0])}, a {first[0][1]})" if first else ""))
        if failed:
            first_f = self.failed[:1]
            parts.append(f"{plural(failed, 'key')} failed" + (
                f" (first: {show_key(first_f[0][0])}: {first_f[0][1]})" if first_f else ""))
        if parts:
            shaped = any(kind in typedjson.KINDS for _, kind in self.incomplete)
            raise IncompleteError(f"{what} incomplete: {'; '.join(parts)}", hint=(
                "--types json carries hashes, lists, sets, sorted sets and streams as JSON documents"
                if shaped and what in ("copy", "export") else None))


@dataclass
class Progress:
    """One progress event.  ``phase`` names the step ("copy", "delete-extra", "verify", "diff",
    "export", "import", "sync"); ``counts.read`` is how far it got, out of ``total`` when an
    estimate is known."""

    phase: str
    counts: Counts
    total: int | None = None
    elapsed: float = 0.0  # seconds since the engine started
    lag_ms: int | None = None  # sync: how far behind its source the last change applied was


class Reporter:
    """Whom an engine tells what it is doing.  Every method may be called from the engine's event
    loop and must return quickly; the defaults ignore everything, so subclass what you need."""

    def progress(self, event: Progress) -> None:
        """A progress event: cheap to ignore, sent up to once per batch."""

    def note(self, message: str) -> None:
        """One line for the user (without the ``kvctl:`` prefix)."""


class Once(Reporter):
    """Passes progress on, and each distinct note once (workers of one run often say the same)."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self.said: set[str] = set()

    def progress(self, event: Progress) -> None:
        self.inner.progress(event)

    def note(self, message: str) -> None:
        if message not in self.said:
            self.said.add(message)
            self.inner.note(message)


@runtime_checkable
class Result(Protocol):
    """What every engine's ``run`` returns."""

    def to_dict(self) -> dict[str, Any]:
        """The result as ``--json`` prints it (keys as ``key``/``key_b64``)."""
        ...

    def check(self) -> None:
        """Raise the :class:`~kvctl.errors.KvctlError` the exit status must report, if any."""
        ...

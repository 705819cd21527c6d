"""The replication conformance suites: what a backend with a versioned change feed promises.

``ReplicationConformance`` drives one store in process: its feed lists every write once and in
order, page cursors resume, deletes are tombstones with versions, and ``apply_many`` is
last-writer-wins (stale writes, replays and ties).  ``SyncConformance`` drives ``kvctl sync``
between two stores of the backend in separate processes, as users run it: random writes converge,
the second run reads the feed, a stale delete never removes a newer value, two-way sync converges,
and a sync killed half-way converges when run again.  Usage::

    class TestMyReplication(ReplicationConformance):
        @pytest.fixture
        def new_url(self, tmp_path):
            return lambda name: f"mystore://{tmp_path}/{name}"

A backend whose data other programs write too overrides :meth:`SyncConformance.other_program`
so those writes are among the random ones.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kvctl.errors import FeedGapError, NoSuchStoreError, UsageError
from kvctl.hlc import make_version
from kvctl.registry import open_sync
from kvctl.store import TOMBSTONE, Record, Store, now_ms
from kvctl.testing.cli import clean_env, interrupt, run_kvctl, start_kvctl

HOUR_MS = 3_600_000
BASE = 5_000_000_000_000_000_000  # versions far above any clock's: the apply rules alone decide


def changes(store: Store, cursor: str, batch_size: int = 1000) -> list[Record]:
    """Every change the store's feed lists after ``cursor``."""
    return [r for p in store.changes(cursor, batch_size=batch_size) for r in p.records]  # type: ignore[attr-defined]


def contents(url: str) -> dict[bytes, tuple[bytes, int | None, int | None]]:
    """Every live record with its expiry and version (replicas hold the same writes, versions too),
    leaving out what expires within two seconds: two stores are read one after the other."""
    soon = now_ms() + 2000
    with open_sync(url) as store:
        return {r.key: (r.value, r.expires_at_ms, r.version) for p in store.scan() for r in p.records
                if r.expires_at_ms is None or r.expires_at_ms > soon}


def sync_json(env: dict[str, str], a: str, b: str, *extra: str) -> dict[str, Any]:
    """Run ``kvctl sync a b --json *extra`` in a process of its own; its result, once it succeeded."""
    out = run_kvctl(env, "sync", a, b, "--json", *extra)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def scribble(url: str, rng: random.Random, n: int, keys: int = 60, ttls: tuple[int, ...] = (1, 60_000),
             other: Callable[[str, bytes, bytes | None], None] | None = None) -> None:
    """``n`` random writes: kvctl's sets, expiries (in one of ``ttls`` ms), deletes and batches, and,
    given ``other`` (url, key, value or None to delete), a quarter by another program, with kvctl's
    store closed meanwhile (some backends admit one writer at a time)."""
    store: Store | None = None
    try:
        for _ in range(n):
            key = b"k%03d" % rng.randrange(keys)
            roll = rng.random()
            if other is not None:
                if roll >= 0.75:
                    if store is not None:
                        store.close()
                        store = None
                    other(url, key, rng.randbytes(8) if roll < 0.88 else None)
                    continue
                roll /= 0.75  # kvctl's own writes keep their shares among themselves
            store = store or open_sync(url)
            if roll < 0.45:
                store.set(key, rng.randbytes(rng.randint(0, 40)))
            elif roll < 0.55:
                store.set(key, b"short-lived", ttl_ms=rng.choice(ttls))
            elif roll < 0.8:
                store.delete(key)
            else:
                store.set_many([Record(key, b"batch"), Record(key + b"x", rng.randbytes(300))])
    finally:
        if store is not None:
            store.close()


class _Stores:
    """Fixtures shared by both suites: ``new_url(name)`` makes a new, empty store with a feed."""

    @pytest.fixture
    def new_url(self, tmp_path: Path) -> Callable[[str], str]:
        raise NotImplementedError("override the new_url fixture: name -> URL of a new store with a change feed")

    @pytest.fixture
    def store(self, new_url: Callable[[str], str]) -> Iterator[Store]:
        store = open_sync(new_url("a"))
        store.clear()
        try:
            if not (store.capabilities.change_feed and store.capabilities.versions and hasattr(store, "apply_many")):
                pytest.fail(f"{store.name}: the replication suites need a versioned change feed and apply_many")
            yield store
        finally:
            store.close()


class ReplicationConformance(_Stores):
    """One store in process: its change feed, tombstones, versions and ``apply_many``."""

    #: Whether a cursor names its store, so another store's cursor is a gap.  A store that lives
    #: and dies with its process (memory) may use bare positions.
    cursors_name_their_store: ClassVar[bool] = True

    def test_every_write_is_listed_once_in_order(self, store: Store) -> None:
        start = store.feed_cursor()  # type: ignore[attr-defined]
        store.set(b"a", b"1")
        store.set(b"a", b"2", ttl_ms=HOUR_MS)
        store.set_many([Record(b"b", b"x"), Record(b"a", b"3")])
        store.delete_many([b"b", b"nope"])
        store.delete(b"a")
        got = changes(store, start)
        assert [(r.key, r.kind, r.value) for r in got] == [
            (b"a", None, b"1"), (b"a", None, b"2"), (b"b", None, b"x"), (b"a", None, b"3"),
            (b"b", TOMBSTONE, b""), (b"a", TOMBSTONE, b"")]
        assert got[1].expires_at_ms is not None and got[0].expires_at_ms is None
        versions = [r.version for r in got]
        assert None not in versions and versions == sorted(versions)  # type: ignore[type-var]

    def test_pages_resume_from_their_cursor_and_the_end_is_empty(self, store: Store) -> None:
        start = store.feed_cursor()  # type: ignore[attr-defined]
        for i in range(50):
            store.set(b"p%02d" % i, b"v")
        seen, cursor = [], start
        for _ in range(50):
            page = next(iter(store.changes(cursor, batch_size=7)), None)  # type: ignore[attr-defined]
            if page is None or not page.records:
                break
            seen += [r.key for r in page.records]
            cursor = page.cursor
        assert seen == [b"p%02d" % i for i in range(50)]
        assert changes(store, cursor) == []

    def test_a_cursor_of_another_store_is_a_gap_and_junk_is_refused(self, store: Store,
                                                                     new_url: Callable[[str], str]) -> None:
        with open_sync(new_url("other")) as other:
            other.set(b"k", b"v")
            foreign = other.feed_cursor()  # type: ignore[attr-defined]
            other.set(b"k2", b"v")
        store.set(b"mine", b"v")
        if self.cursors_name_their_store:
            with pytest.raises(FeedGapError):
                changes(store, foreign)
        with pytest.raises((FeedGapError, UsageError)):
            changes(store, "not a cursor")

    def test_a_delete_is_a_tombstone_newer_than_the_value(self, store: Store) -> None:
        store.set(b"k", b"v")
        version = store.get(b"k").version  # type: ignore[union-attr]
        start = store.feed_cursor()  # type: ignore[attr-defined]
        store.delete(b"k")
        (gone,) = changes(store, start)
        assert (gone.key, gone.kind) == (b"k", TOMBSTONE) and gone.version > version  # type: ignore[operator]
        assert store.apply_many([Record(b"k", b"stale", None, version)]) == 0  # type: ignore[attr-defined]
        assert store.get(b"k") is None

    def test_apply_many_mixed_batch_is_in_the_feed_and_counted(self, store: Store) -> None:
        store.apply_many([Record(b"live", b"here", None, BASE)])  # type: ignore[attr-defined]
        start = store.feed_cursor()  # type: ignore[attr-defined]
        batch = [
            Record(b"new", b"n", None, BASE + 1),
            Record(b"live", b"", None, BASE + 2, TOMBSTONE),  # deletes a row
            Record(b"never", b"", None, BASE + 3, TOMBSTONE),  # a tombstone for a key never seen
            Record(b"new", b"n2", HOUR_MS + now_ms(), BASE + 4),  # the same key again, newer
            Record(b"new", b"n-stale", None, BASE + 1),  # and an older one: no effect
        ]
        # three keys changed; "new"'s first upsert, superseded within the batch, may count or not
        assert store.apply_many(batch) in (3, 4)  # type: ignore[attr-defined]
        got = changes(store, start)
        assert {(r.key, r.kind, r.version) for r in got} >= {
            (b"new", None, BASE + 4), (b"live", TOMBSTONE, BASE + 2), (b"never", TOMBSTONE, BASE + 3)}
        rec = store.get(b"new")
        assert rec is not None and rec.value == b"n2" and rec.expires_at_ms is not None and rec.version == BASE + 4
        assert store.get(b"live") is None and store.get(b"never") is None
        assert store.apply_many(batch) == 0  # type: ignore[attr-defined]  # replayed: nothing
        assert store.apply_many([Record(b"live", b"back", None, BASE)]) == 0  # type: ignore[attr-defined]
        assert store.apply_many([Record(b"never", b"", None, BASE + 3, TOMBSTONE)]) == 0  # type: ignore[attr-defined]
        # a tie between a value and a tombstone: the value wins, and the feed lists it
        assert store.apply_many([Record(b"never", b"born", None, BASE + 3)]) == 1  # type: ignore[attr-defined]
        assert changes(store, start)[-1] == Record(b"never", b"born", None, BASE + 3)

    def test_apply_many_equal_versions_break_ties_by_content(self, store: Store) -> None:
        apply = store.apply_many  # type: ignore[attr-defined]
        assert apply([Record(b"k", b"bbb", None, BASE)]) == 1
        assert apply([Record(b"k", b"bbb", None, BASE)]) == 0  # the same write twice
        assert apply([Record(b"k", b"aaa", None, BASE)]) == 0  # smaller content loses
        assert apply([Record(b"k", b"", None, BASE, TOMBSTONE)]) == 0  # a tombstone loses a tie
        assert apply([Record(b"k", b"ccc", None, BASE)]) == 1  # bigger content wins
        assert store.get(b"k").value == b"ccc"  # type: ignore[union-attr]

    def test_apply_many_observes_versions(self, store: Store) -> None:
        future = make_version(now_ms() + HOUR_MS)
        assert store.apply_many([Record(b"far", b"", None, future, TOMBSTONE)]) == 1  # type: ignore[attr-defined]
        store.set(b"mine", b"v")
        assert store.get(b"mine").version > future  # type: ignore[union-attr,operator]


class SyncConformance(_Stores):
    """``kvctl sync`` between two stores of the backend, each run a separate process."""

    #: Records in the larger runs; a slow backend lowers them.
    sync_records: ClassVar[int] = 2000
    kill_rounds: ClassVar[int] = 30

    def other_program(self, url: str, key: bytes, value: bytes | None) -> None:
        """Write ``value`` at ``key`` (delete it when None) as a program other than kvctl would;
        by default through kvctl, for backends no other program writes."""
        with open_sync(url) as store:
            store.set(key, value) if value is not None else store.delete(key)

    @pytest.fixture
    def pair(self, new_url: Callable[[str], str]) -> tuple[str, str]:
        a, b = new_url("a"), new_url("b")
        for url in (a, b):  # a sync only reads its source: the stores must exist
            with open_sync(url) as store:
                store.clear()
        return a, b

    @pytest.fixture
    def env(self, tmp_path: Path) -> dict[str, str]:
        return clean_env(tmp_path)

    sync = staticmethod(sync_json)

    def scribble(self, url: str, rng: random.Random, n: int, keys: int = 60) -> None:
        scribble(url, rng, n, keys, other=self.other_program)

    @pytest.mark.parametrize("seed", range(2))
    def test_random_writes_converge(self, pair: tuple[str, str], env: dict[str, str], seed: int) -> None:
        a, b = pair
        rng = random.Random(seed)
        modes = []
        for _ in range(4):
            self.scribble(a, rng, rng.randint(0, 120))
            result = self.sync(env, a, b)
            assert result["converged"]
            modes.append(result["mode"])
        assert modes[0] == "diff" and modes[1:] == ["feed"] * 3, modes
        assert contents(a) == contents(b)

    def test_watch_copies_what_another_program_writes_after_it_started(
            self, pair: tuple[str, str], env: dict[str, str]) -> None:
        """A long-lived ``sync --watch`` sees writes made after it opened its source."""
        a, b = pair
        self.other_program(a, b"before", b"1")
        watch = start_kvctl(env, "sync", a, b, "--watch", "--interval", "50ms")
        try:
            self._wait_for(watch, b, b"before", b"1")
            self.other_program(a, b"after", b"\x00\xff")
            self._wait_for(watch, b, b"after", b"\x00\xff")
            self.other_program(a, b"before", None)
            self._wait_for(watch, b, b"before", None)
        finally:
            code, _out, err = interrupt(watch)
        assert code == 0, err

    @staticmethod
    def _wait_for(watch: subprocess.Popen[Any], url: str, key: bytes, value: bytes | None) -> None:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(NoSuchStoreError), open_sync(url, access="read") as store:
                found = store.get(key)
                if (found.value if found is not None else None) == value:
                    return
            assert watch.poll() is None, watch.communicate()
            assert time.monotonic() < deadline, f"the watch did not copy {key!r} = {value!r}"
            time.sleep(0.05)

    def test_second_sync_reads_the_feed(self, pair: tuple[str, str], env: dict[str, str]) -> None:
        a, b = pair
        n = self.sync_records
        with open_sync(a) as src:
            src.set_many([Record(b"k%04d" % i, b"v%d" % i) for i in range(n)])
        first = self.sync(env, a, b)
        assert (first["mode"], first["applied_to_dst"], first["converged"]) == ("diff", n, True)
        with open_sync(a) as src:
            src.set(b"k0001", b"changed")
            src.delete_many([b"k0002", b"k0003"])
        self.other_program(a, b"k0004", b"\x00")
        second = self.sync(env, a, b)
        assert (second["mode"], second["fallback"], second["applied_to_dst"], second["deleted"]) == ("feed", None, 2, 2)
        assert run_kvctl(env, "diff", a, b).returncode == 0
        third = self.sync(env, a, b)
        assert (third["mode"], third["applied_to_dst"]) == ("feed", 0)

    def test_a_stale_replayed_delete_does_not_remove_a_newer_value(self, pair: tuple[str, str],
                                                                   env: dict[str, str]) -> None:
        a, b = pair
        self.sync(env, a, b)
        with open_sync(a) as src:
            src.set(b"k", b"v1")
        self.other_program(a, b"k", None)
        time.sleep(0.005)
        self.other_program(b, b"k", b"written later at the destination")
        result = self.sync(env, a, b)
        assert result["mode"] == "feed" and result["stale_skipped"] >= 1
        with open_sync(b) as dst:
            assert dst.get(b"k").value == b"written later at the destination"  # type: ignore[union-attr]

    def test_two_way_converges_and_the_later_write_wins(self, pair: tuple[str, str], env: dict[str, str]) -> None:
        a, b = pair
        with open_sync(a) as left:
            left.set_many([Record(b"x", b"1"), Record(b"y", b"2")])
        self.sync(env, a, b, "--two-way")
        self.other_program(a, b"x", None)
        self.other_program(a, b"shared", b"left")
        time.sleep(0.005)
        with open_sync(b) as right:
            right.delete(b"y")
            right.set(b"shared", b"right, later")
        result = self.sync(env, a, b, "--two-way")
        assert result["mode"] == "feed"
        assert contents(a) == contents(b)
        assert {k: v[0] for k, v in contents(a).items()} == {b"shared": b"right, later"}
        again = self.sync(env, a, b, "--two-way")
        assert (again["applied_to_dst"], again["applied_to_src"], again["conflicts"]) == (0, 0, [])

    def test_versions_are_seeded_on_reopen(self, pair: tuple[str, str]) -> None:
        a, _ = pair
        future = make_version(now_ms() + HOUR_MS)
        with open_sync(a) as store:
            store.apply_many([Record(b"remote", b"v", None, future)])  # type: ignore[attr-defined]
        with open_sync(a) as store:  # a new process's clock starts from what the store holds
            store.set(b"local", b"v")
            assert store.get(b"local").version > future  # type: ignore[union-attr,operator]

    def test_sigkill_during_sync_then_sync_again_converges(self, pair: tuple[str, str], env: dict[str, str],
                                                            tmp_path: Path) -> None:
        a, b = pair
        with open_sync(a) as src:
            src.set_many([Record(b"k%05d" % i, b"base") for i in range(3000)])
        self.sync(env, a, b)
        rng = random.Random(3)
        with open_sync(a) as src:  # many pages of 20
            for round_ in range(self.kill_rounds):
                src.set_many([Record(b"k%05d" % rng.randrange(4000), b"r%d" % round_ * rng.randint(1, 9))
                              for _ in range(900)])
                src.delete_many([b"k%05d" % rng.randrange(4000) for _ in range(100)])
        sigkill_mid_sync(env, tmp_path / "state", a, b)
        assert run_kvctl(env, "diff", a, b).returncode == 1  # killed half-way: not converged yet
        resumed = self.sync(env, a, b)
        assert resumed["mode"] == "feed" and resumed["converged"]
        diff = run_kvctl(env, "diff", a, b)
        assert diff.returncode == 0, diff.stdout
        assert contents(a) == contents(b)  # versions too: every change applied once, as written
        assert self.sync(env, a, b)["applied_to_dst"] == 0


def _saved(state_dir: Path) -> dict[Path, int]:
    saved = {}
    for path in state_dir.rglob("*.json"):
        with contextlib.suppress(FileNotFoundError):  # replaced by its new version meanwhile
            saved[path] = path.stat().st_mtime_ns
    return saved


def sigkill_mid_sync(env: dict[str, str], state_dir: Path, a: str, b: str) -> None:
    """Start ``kvctl sync a b`` in small batches and SIGKILL it once it has saved some progress
    (a state file under ``state_dir``, the XDG_STATE_HOME of ``env``, changed)."""
    before = _saved(state_dir)
    proc = start_kvctl(env, "sync", a, b, "--batch-size", "20", stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _saved(state_dir) == before:  # the first pages were applied and saved
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.002)
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

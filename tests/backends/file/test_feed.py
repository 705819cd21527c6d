"""The file backend's change feed, tombstones and apply_many, beyond the conformance suite:
segment rollover, compaction (retained tail, gaps), tombstone retention, identity across reopen,
read-only readers, and all-or-nothing apply_many under SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvctl.errors import FeedGapError, LimitError, UnsupportedError, UsageError
from kvctl.hlc import MAX_NODE, make_version
from kvctl.registry import open_url
from kvctl.store import TOMBSTONE, Record, now_ms
from kvctl.testing import StoreConformance


class TestFileConformanceTinyFeed(StoreConformance):
    """The suite (feed and apply_many included) with segments that roll over every few writes and
    automatic compaction running under the feed."""

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return (f"file://{tmp_path}/db?segment_size=4KiB&feed_retention=8KiB&compact_min=4KiB"
                "&compact_ratio=0.3&inline_max=32&fsync=never")


def changes(store, cursor, batch_size: int = 1000) -> list[Record]:
    return [r for p in store.changes(cursor, batch_size=batch_size) for r in p.records]


def summary(recs: list[Record]) -> list[tuple[bytes, bytes | None]]:
    """(key, value) per change, None for a deletion."""
    return [(r.key, None if r.kind == TOMBSTONE else r.value) for r in recs]


def make_history(store, rng: random.Random, n: int) -> list[tuple[bytes, bytes | None]]:
    """Random writes of every kind; returns the changes they make, in order."""
    out: list[tuple[bytes, bytes | None]] = []
    for i in range(n):
        roll = rng.random()
        key = b"k%03d" % rng.randrange(60)
        if roll < 0.4:
            value = b"s%d" % i * rng.randint(1, 30)
            store.set(key, value)
            out.append((key, value))
        elif roll < 0.7:
            batch = [Record(b"k%03d" % rng.randrange(60), b"b%d." % i * rng.randint(1, 80))
                     for _ in range(rng.randint(1, 30))]
            store.set_many(batch)
            out += [(r.key, r.value) for r in batch]
        else:
            keys = list(dict.fromkeys(b"k%03d" % rng.randrange(60) for _ in range(rng.randint(1, 4))))
            present = [k for k in keys if store.get(k) is not None]
            store.delete_many(keys)
            out += [(k, None) for k in present]
    return out


# == rollover and paging =======================================================================
@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_feed_lists_every_change_across_segment_rollovers(tmp_path: Path, batch_size: int) -> None:
    url = f"file://{tmp_path}/db?segment_size=4KiB&compact_ratio=0&fsync=never&inline_max=40"
    with open_url(url) as store:
        start = store.feed_cursor()
        expected = make_history(store, random.Random(batch_size), 300)
        assert store.stats()["segments"] > 10
        got = changes(store, start, batch_size)
        assert summary(got) == expected
        versions = [r.version for r in got]
        assert all(v is not None for v in versions)
        # resume from every page cursor: the rest of the feed, nothing repeated, nothing skipped
        pages = list(store.changes(start, batch_size=batch_size))
        done = 0
        for page in pages[:: max(1, len(pages) // 9)]:
            done = sum(len(p.records) for p in pages[: pages.index(page) + 1])
            assert summary(changes(store, page.cursor, 13)) == expected[done:]
        assert changes(store, store.feed_cursor()) == []


def test_page_may_end_inside_a_frame_and_resume_there(tmp_path: Path) -> None:
    with open_url(f"file://{tmp_path}/db") as store:
        start = store.feed_cursor()
        store.set_many([Record(b"k%04d" % i, b"v%d" % i) for i in range(2500)])  # one frame
        first = next(iter(store.changes(start, batch_size=1000)))
        assert first.cursor is not None and first.cursor.endswith(":1000")
        rest = changes(store, first.cursor, 600)
        assert [r.key for r in first.records + rest] == [b"k%04d" % i for i in range(2500)]


def test_pages_of_big_values_are_bounded_in_bytes(tmp_path: Path) -> None:
    from kvctl_plugins.file import feed

    with open_url(f"file://{tmp_path}/db?inline_max=0") as store:
        start = store.feed_cursor()
        store.set_many([Record(b"big%d" % i, bytes([i]) * 3_000_000) for i in range(12)])
        pages = list(store.changes(start, batch_size=1000))
        assert len(pages) > 1 and all(sum(len(r.value) for r in p.records) <= feed.PAGE_BYTES + 3_000_000
                                      for p in pages)
        assert [r.key for p in pages for r in p.records] == [b"big%d" % i for i in range(12)]


def test_feed_survives_reopen_and_carries_expiry(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db"
    deadline = now_ms() + 3_600_000
    with open_url(url) as store:
        start = store.feed_cursor()
        store.set_many([Record(b"a", b"1", deadline), Record(b"b", b"2")])
        store.set(b"gone", b"soon", ttl_ms=1)  # expired by the time it is read: still a change
    time.sleep(0.01)
    with open_url(url) as store:
        got = changes(store, start)
        assert [(r.key, r.expires_at_ms) for r in got[:2]] == [(b"a", deadline), (b"b", None)]
        assert got[2].key == b"gone" and got[2].expires_at_ms is not None


# == compaction: retained tail and gaps ===========================================================
def test_explicit_compaction_passing_the_cursor_is_a_gap(tmp_path: Path) -> None:
    with open_url(f"file://{tmp_path}/db?segment_size=4KiB") as store:
        store.set_many([Record(b"k%d" % i, b"v" * 100) for i in range(100)])
        cursor = store.feed_cursor()
        store.set(b"after", b"cursor")
        store.compact()
        with pytest.raises(FeedGapError, match="no longer reaches"):
            changes(store, cursor)
        fresh = store.feed_cursor()
        store.delete(b"after")
        assert summary(changes(store, fresh)) == [(b"after", None)]


def test_automatic_compaction_keeps_the_retained_tail_for_the_feed(tmp_path: Path) -> None:
    url = (f"file://{tmp_path}/db?segment_size=8KiB&feed_retention=32KiB&compact_min=16KiB"
           "&compact_ratio=0.3&fsync=never")
    with open_url(url) as store:
        old_cursor = store.feed_cursor()
        expected: list[tuple[bytes, bytes | None]] = []
        cursor = None
        for i in range(3000):
            key, value = b"k%02d" % (i % 40), b"v%d" % i * 10
            store.set(key, value)
            if i == 2900:
                cursor = store.feed_cursor()
            if i >= 2900:
                expected.append((key, value))
        deadline = time.monotonic() + 10
        while (store.stats()["compactions"] == 0 or store.stats()["compacting"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = store.stats()
        assert stats["compactions"] >= 1
        assert stats["file_bytes"] < 140_000  # less than half of what was written: garbage reclaimed...
        sizes = [size for _, size in sorted(stats["segment_files"].items())]
        assert sum(sizes[1:]) >= 32 * 1024  # ...but the newest 32 KiB of log are not compacted
        assert summary(changes(store, cursor)) == expected[1:]  # the feed after the cursor, whole
        with pytest.raises(FeedGapError):
            changes(store, old_cursor)


def test_a_page_ending_at_a_sealed_segment_end_points_at_the_next_segment(tmp_path: Path) -> None:
    with open_url(f"file://{tmp_path}/db?segment_size=4KiB&compact_ratio=0") as store:
        start = store.feed_cursor()
        store.set_many([Record(b"k%d" % i, b"v" * 200) for i in range(40)])
        store.set(b"next", b"segment")  # rolls over: the batch above sealed its segment
        pages = list(store.changes(start, batch_size=40))
        # the first page ends exactly at the sealed segment's end: its cursor names the next one
        assert [len(p.records) for p in pages] == [40, 1]
        assert pages[0].cursor is not None and ":2:" in pages[0].cursor


def test_foreign_and_malformed_cursors(tmp_path: Path) -> None:
    with open_url(f"file://{tmp_path}/a") as a, open_url(f"file://{tmp_path}/b") as b:
        a.set(b"k", b"v")
        with pytest.raises(FeedGapError, match="another file store"):
            changes(b, a.feed_cursor())
        for bad in ("m:3", "f:zz", "f:" + "0" * 16 + ":1:0:x:0", "k:00"):
            with pytest.raises(UsageError):
                changes(a, bad)
        cursor = a.feed_cursor()
        head, _, _ = cursor.rpartition(":")
        store_id, seg, floor, offset = head[2:].split(":")
        with pytest.raises(FeedGapError, match="past the end"):
            changes(a, f"f:{store_id}:{seg}:{floor}:{int(offset) + 100}:0")
        with pytest.raises(FeedGapError, match="no valid change"):  # not a frame start
            changes(a, f"f:{store_id}:{seg}:{floor}:{int(offset) - 3}:0")


def test_clear_is_a_gap_and_leaves_tombstones(tmp_path: Path) -> None:
    with open_url(f"file://{tmp_path}/db") as store:
        store.set_many([Record(b"x", b"1"), Record(b"y", b"2")])
        cursor = store.feed_cursor()
        version = store.get(b"x").version
        assert store.clear() == 2
        with pytest.raises(FeedGapError):
            changes(store, cursor)
        assert store.stats()["tombstones"] == 2
        assert store.apply_many([Record(b"x", b"stale", None, version)]) == 0  # no resurrection
    with open_url(f"file://{tmp_path}/db") as store:
        assert store.stats()["tombstones"] == 2
        assert store.apply_many([Record(b"y", b"stale", None, version)]) == 0


# == tombstones and apply_many ===================================================================
def test_tombstones_survive_compaction_and_reopen_within_retention(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db?compact_ratio=0"
    with open_url(url) as store:
        store.set(b"k", b"v")
        stale = store.get(b"k").version
        store.delete(b"k")
        store.compact()
        assert store.stats()["tombstones"] == 1
        assert store.apply_many([Record(b"k", b"stale", None, stale)]) == 0
    with open_url(url) as store:
        assert store.stats()["tombstones"] == 1
        assert store.apply_many([Record(b"k", b"stale", None, stale)]) == 0
        assert store.get(b"k") is None
        # a newer write wins over the tombstone and clears it from memory
        assert store.apply_many([Record(b"k", b"new", None, make_version(now_ms() + 1000))]) == 1
        store.compact()
        assert store.stats()["tombstones"] == 0


def test_tombstones_are_purged_after_their_retention(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db?compact_ratio=0&tombstone_retention=150ms"
    with open_url(url) as store:
        store.set_many([Record(b"a", b"1"), Record(b"b", b"2")])
        stale = store.get(b"a").version
        store.delete_many([b"a", b"b"])
        assert store.apply_many([Record(b"a", b"stale", None, stale)]) == 0
        time.sleep(0.2)
        summary_ = store.compact()
        assert summary_["tombstones_kept"] == 0
        assert store.stats()["tombstones"] == 0
        # past retention a stale write is no longer known to be stale: it applies
        assert store.apply_many([Record(b"a", b"late", None, stale)]) == 1
    with open_url(url) as store:  # and the compacted log holds no tombstone that comes back
        assert store.stats()["tombstones"] == 0
        assert store.get(b"a").value == b"late"


def test_expired_tombstones_leave_memory_without_a_compaction(tmp_path: Path) -> None:
    with open_url(f"file://{tmp_path}/db?compact_ratio=0&tombstone_retention=50ms&fsync=never") as store:
        store.set_many([Record(b"k%d" % i, b"v") for i in range(2500)])
        store.delete_many([b"k%d" % i for i in range(1100)])
        time.sleep(0.08)
        store.delete_many([b"k%d" % i for i in range(1100, 2300)])  # doubles the count: a purge
        assert store.stats()["tombstones"] == 1200


def test_apply_many_mixes_upserts_and_deletes_in_one_batch(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db?inline_max=8"
    base = make_version(now_ms())
    with open_url(url) as store:
        start = store.feed_cursor()
        store.set_many([Record(b"d%d" % i, b"old") for i in range(3)])
        applied = store.apply_many(
            [Record(b"u%d" % i, b"big value %d" % i, None, base + 1000 + i) for i in range(3)]
            + [Record(b"d%d" % i, b"", None, make_version(now_ms() + 10_000), TOMBSTONE) for i in range(3)]
            + [Record(b"u0", b"older", None, base)]  # loses to the upsert earlier in the same call
        )
        assert applied == 6
        assert store.get(b"u0").value == b"big value 0"  # on disk (over inline_max)
        assert [store.get(b"d%d" % i) for i in range(3)] == [None] * 3
        got = changes(store, start)
        assert summary(got)[-6:] == [(b"u%d" % i, b"big value %d" % i) for i in range(3)] + \
            [(b"d%d" % i, None) for i in range(3)]
        assert [r.version for r in got[-6:-3]] == [base + 1000 + i for i in range(3)]  # versions kept
    with open_url(url) as store:
        assert store.get(b"u2").value == b"big value 2" and store.get(b"d1") is None


def test_apply_many_equal_versions_compare_content_of_on_disk_values(tmp_path: Path) -> None:
    with open_url(f"file://{tmp_path}/db?inline_max=4") as store:
        v = make_version(now_ms())
        assert store.apply_many([Record(b"k", b"bbbbbbbb", None, v)]) == 1
        assert store.apply_many([Record(b"k", b"bbbbbbbb", None, v)]) == 0  # the same write twice
        assert store.apply_many([Record(b"k", b"aaaaaaaa", None, v)]) == 0  # smaller content loses
        assert store.apply_many([Record(b"k", b"cccccccc", None, v)]) == 1
        assert store.get(b"k").value == b"cccccccc"


def test_apply_many_refuses_a_bad_batch_before_writing(tmp_path: Path) -> None:
    with open_url(f"file://{tmp_path}/db") as store:
        v = make_version(now_ms())
        size = store.stats()["file_bytes"]
        with pytest.raises(LimitError):
            store.apply_many([Record(b"ok", b"v", None, v), Record(b"x" * 70_000, b"", None, v, TOMBSTONE)])
        with pytest.raises(UnsupportedError):
            store.apply_many([Record(b"ok", b"v", None, v), Record(b"h", b"", None, v, "hash")])
        assert store.stats()["file_bytes"] == size and store.get(b"ok") is None


def test_apply_many_observes_versions_and_readonly_refuses(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db"
    future = make_version(now_ms() + 3_600_000)
    with open_url(url) as store:
        assert store.apply_many([Record(b"far", b"", None, future, TOMBSTONE)]) == 1  # no such key: kept
        store.set(b"local", b"v")
        assert store.get(b"local").version > future
    with open_url(url + "?readonly=true") as reader, pytest.raises(UnsupportedError):
        reader.apply_many([Record(b"x", b"v", None, future + 1)])


# == identity ===================================================================================
def test_node_id_and_store_id_persist_and_mark_versions(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/a"
    with open_url(url) as store:
        node = store.stats()["node_id"]
        store.set(b"k", b"v")
        assert store.get(b"k").version & MAX_NODE == node
        cursor = store.feed_cursor()
    meta = json.loads((tmp_path / "a" / "META").read_text())
    assert meta["node"] == node
    with open_url(url) as store:
        assert store.stats()["node_id"] == node
        store.set(b"k", b"again")
        assert store.get(b"k").version & MAX_NODE == node
        assert summary(changes(store, cursor)) == [(b"k", b"again")]  # the store id is the same
    with open_url(f"file://{tmp_path}/b") as other:
        assert json.loads((tmp_path / "b" / "META").read_text())["store_id"] != meta["store_id"]
        del other


def test_damaged_meta_is_replaced_and_old_cursors_become_gaps(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db"
    with open_url(url) as store:
        store.set(b"k", b"v")
        cursor = store.feed_cursor()
    (tmp_path / "db" / "META").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable store identity"), open_url(url) as store:
        assert store.get(b"k").value == b"v"
        with pytest.raises(FeedGapError):
            changes(store, cursor)


def test_readonly_reader_follows_the_writer(tmp_path: Path) -> None:
    """A long-lived reader (sync --watch's source) sees what a writer commits after its open:
    appends, sealed and new segments, and a compaction."""
    url = f"file://{tmp_path}/db?segment_size=4KiB&fsync=never"
    with open_url(url) as writer:
        start = writer.feed_cursor()
        writer.set_many([Record(b"k%03d" % i, b"v" * 100) for i in range(100)])
        with open_url(url + "&readonly=true") as reader:
            assert [r.key for r in changes(reader, start, 30)] == [b"k%03d" % i for i in range(100)]
            mid = reader.feed_cursor()
            assert changes(reader, mid) == []
            writer.set(b"after", b"the reader opened")
            writer.delete(b"k000")
            writer.set_many([Record(b"n%03d" % i, b"w" * 300, now_ms() + 60_000) for i in range(40)])  # new segments
            seen = changes(reader, mid, 7)
            assert summary(seen) == [(b"after", b"the reader opened"), (b"k000", None)] + [
                (b"n%03d" % i, b"w" * 300) for i in range(40)]
            assert seen[-1].expires_at_ms is not None
            assert reader.get(b"after").value == b"the reader opened" and reader.get(b"k000") is None
            assert reader.count() == 140
            end = reader.feed_cursor()
            assert changes(reader, end) == []
            writer.compact()
            writer.set(b"last", b"1")
            # the compaction replaced the segments under the reader; its cursor, at the end of a
            # sealed segment, still points into the log
            assert summary(changes(reader, end)) == [(b"last", b"1")]
            assert reader.get(b"last").value == b"1" and reader.count() == 141
            assert summary(changes(reader, reader.feed_cursor())) == []


WRITER = """
import sys
from kvctl.registry import open_url
from kvctl.store import Record
import time
store = open_url(sys.argv[1])
print("READY", flush=True)
for n in range(1, 80):
    store.set_many([Record(b"t%06d-%02d" % (n, i), b"x" * 22_000) for i in range(50)])  # 2 frames
    time.sleep(0.01)
time.sleep(60)
"""


def test_readonly_reader_in_another_process_never_sees_part_of_a_batch(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/db?fsync=never&compact_ratio=0&segment_size=4MiB"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        cursor = None
        seen: dict[bytes, int] = {}
        for _ in range(15):
            with open_url(url + "&readonly=true") as reader:  # a new snapshot each time
                for page in reader.changes(cursor, batch_size=37):
                    for rec in page.records:
                        tag = rec.key.split(b"-")[0]
                        seen[tag] = seen.get(tag, 0) + 1
                cursor = reader.feed_cursor()  # the next reader goes on from here
            time.sleep(0.03)
        assert len(seen) > 3
        assert set(seen.values()) == {50}, {t: c for t, c in seen.items() if c != 50}
    finally:
        proc.kill()
        proc.wait()


# == crash: SIGKILL inside apply_many ===========================================================
APPLY_KEYS = 400


def batch_state(n: int) -> dict[str, str | None]:
    """What the store holds after apply batch ``n``: every key written with tag n, or deleted."""
    return {f"k{i:04d}": (None if (i + n) % 5 == 0 else f"{n}:" + "x" * 4000) for i in range(APPLY_KEYS)}


def apply_writer(directory: str, torn_at: int | None) -> None:
    """Apply batches 1, 2, 3... forever (each ~1.3 MB in several frames); ``torn_at``: on that
    batch, write only its first frames and die."""
    from kvctl.hlc import make_version as mv

    store = open_url(f"file://{directory}?fsync=always&segment_size=64MiB")
    if torn_at is not None:
        real = os.writev

        def torn(fd: int, chunks: list[bytes]) -> int:
            if len(chunks) >= 4:  # a multi-frame batch: write half its frames, then die
                half = chunks[: len(chunks) // 2]
                real(fd, half)
                print("TORN", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return real(fd, chunks)

    n = 0
    base = mv(now_ms())
    print("READY", flush=True)
    while True:
        n += 1
        if torn_at is not None and n == torn_at:
            os.writev = torn  # type: ignore[assignment]
        recs = [Record(k.encode(), b"" if v is None else v.encode(), None, base + n * 1000 + i,
                       TOMBSTONE if v is None else None) for i, (k, v) in enumerate(batch_state(n).items())]
        store.apply_many(recs)
        print(f"A {n}", flush=True)


def read_state(directory: Path) -> dict[str, str | None]:
    with open_url(f"file://{directory}") as store:
        got: dict[str, str | None] = {k: None for k in batch_state(0)}
        for page in store.scan():
            for r in page.records:
                got[r.key.decode()] = r.value.decode()
        return got


def run_apply_writer(tmp_path: Path, directory: Path, torn_at: int | None, delay: float) -> list[str]:
    log_path = tmp_path / "writer.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, __file__, str(directory), str(torn_at or 0)], stdout=log,
                                stderr=subprocess.PIPE)
    try:
        started = time.monotonic()
        while not log_path.read_text().startswith("READY"):
            assert proc.poll() is None and time.monotonic() - started < 30, proc.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.005)
        if torn_at is None:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return log_path.read_text().splitlines()


@pytest.mark.filterwarnings("ignore::UserWarning")  # the torn tail is reported on reopen
@pytest.mark.parametrize("kill", ["torn:3", "random:0.15", "random:0.4"])
def test_sigkill_during_apply_many_is_all_or_nothing(tmp_path: Path, kill: str) -> None:
    directory = tmp_path / "db"
    how, _, arg = kill.partition(":")
    lines = run_apply_writer(tmp_path, directory, int(arg) if how == "torn" else None,
                             float(arg) if how == "random" else 0)
    acknowledged = max([int(line.split()[1]) for line in lines if line.startswith("A ")], default=0)
    state = read_state(directory)
    matches = [n for n in (acknowledged, acknowledged + 1) if state == batch_state(n)]
    if acknowledged == 0 and not matches:
        matches = [0] if all(v is None for v in state.values()) else []
    assert matches, f"the store holds a mix of batches (last acknowledged: {acknowledged})"
    if how == "torn":
        assert "TORN" in lines and matches == [2]  # the torn batch 3 left nothing behind


if __name__ == "__main__":
    apply_writer(sys.argv[1], int(sys.argv[2]) or None)

"""A read-only file store that follows its writers.

A store opened read-only is the snapshot of what was committed when it opened.  A long-lived
reader -- the source of ``kvctl sync --watch`` -- must also see what other processes commit
after that, or their writes never reach the replica.  :meth:`FollowingStore._follow` brings the
snapshot up to date before the change feed is read: when the newest segment only grew (and the
writer maybe sealed it and started newer ones), just the new committed frames are replayed into
the index; when a compaction or ``clear()`` replaced the segments, the directory is replayed
again from scratch.  A reader never writes a file either way.
"""

from __future__ import annotations

import os

from kvctl.store import now_ms

from .compacting import CompactingStore
from .format import SEG_REPLACES_EARLIER, parse_segment_name, segment_name
from .index import KeyIndex, load_frames
from .log import Segment
from .recovery import Loaded, _scan, load_directory, read_header


class FollowingStore(CompactingStore):
    """Open-time replay, and a reader's catching up with the writers since (module docstring)."""

    def _replay(self, index: KeyIndex) -> Loaded:
        """Replay the whole directory into ``index``."""
        opts = self._opts
        for attempt in range(10):
            try:
                return load_directory(self._dir, index, writer=not opts.readonly, repair=opts.repair,
                                      inline_max=self._inline_max, report=self._report)
            except FileNotFoundError:
                # A reader raced a writer's compaction, which deleted a segment it had listed:
                # list again (the writer's files are always a consistent set).
                if not opts.readonly or attempt == 9:
                    raise
        raise AssertionError("unreachable")

    def _adopt(self, index: KeyIndex, loaded: Loaded) -> None:
        """Make ``index`` and ``loaded`` (the segments replayed into it) the store's own."""
        self._index = index
        self._map, self._tombs = index.map, index.tombs
        self._segs = loaded.segments
        self._active = self._segs[max(self._segs)] if self._segs else None
        self._total = sum(s.size for s in self._segs.values())
        self._recovered_tail = loaded.recovered_tail
        self._repaired = loaded.repaired
        self._unread_tail = loaded.unread_tail
        if self._opts.readonly and self._active is not None:
            self._reader_end = (self._active.id, self._active.size - loaded.unread_tail)
        index.finish_load(now_ms(), self._tomb_horizon())
        self._clock.observe(loaded.max_version)

    def _follow(self) -> None:
        """A reader: take in what writers committed since the open (under the lock)."""
        if not self._opts.readonly or self._closed:
            return
        ids = sorted(i for i in map(parse_segment_name, os.listdir(self._dir)) if i is not None)
        active = self._active
        newer = [i for i in ids if active is None or i > active.id]
        if active is not None and not newer and os.fstat(active.fd).st_size == active.size:
            return  # nothing was appended
        if active is None or active.id not in ids or self._reader_end is None or any(
                read_header(self._dir, i)[1] & SEG_REPLACES_EARLIER for i in newer):
            self._replay_again()
            return
        self._take_new_frames(active, newer)

    def _take_new_frames(self, active: Segment, newer: list[int]) -> None:
        assert self._reader_end is not None
        index, opts = self._index, self._opts
        before = index.expiring
        start = self._reader_end[1]  # frames before it were replayed at the open or the last follow
        last, data = active, active.reread()
        segs = [(active, data)]
        try:
            for seg_id in newer:
                seg, seg_data = Segment.open(os.path.join(self._dir, segment_name(seg_id)), writable=False)
                segs.append((seg, seg_data))
                if seg.flags & SEG_REPLACES_EARLIER:  # renamed in by a compaction since the listing
                    raise FileNotFoundError
        except FileNotFoundError:  # a compaction deleted what was listed: start again from its result
            for seg, _ in segs[1:]:
                seg.close()
            self._replay_again()
            return
        max_version = 0
        for pos, (seg, seg_data) in enumerate(segs):
            seg_data, scan = _scan(seg, seg_data, is_last=pos == len(segs) - 1, repair=opts.repair, writer=False)
            frames = [f for f in scan.frames if f[0] >= start] if seg is active else scan.frames
            max_version = max(max_version, seg.floor,
                              load_frames(seg_data, frames, seg.id, index, self._inline_max, seg.path))
            self._segs[seg.id] = seg
            last = seg
            self._reader_end = (seg.id, scan.valid_end)
            self._unread_tail = scan.tail_bytes
        self._active = last
        self._total = sum(s.size for s in self._segs.values())
        index.finish_load(now_ms(), self._tomb_horizon())
        # finish_load counts only the keys this replay gave an expiry; a count too high only makes
        # count() look at expiries, one too low would count expired keys
        index.expiring += before
        self._clock.observe(max_version or None)

    def _replay_again(self) -> None:
        old = self._segs
        index = KeyIndex()
        self._adopt(index, self._replay(index))  # the old snapshot stays whole if this fails
        for seg in old.values():
            seg.close()

"""Compaction scheduling for a file store: when to compact (garbage ratio, the change feed's
retained tail), the background thread, and the swap of the compacted segment in under the
store's lock.  The long part, writing the new segment off the lock, is :mod:`.compact`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

from kvctl.errors import (
    KvctlError,
)
from kvctl.store import now_ms

from .base import FileStoreBase, log
from .compact import CompactionAborted, write_compacted
from .format import (
    SEG_REPLACES_EARLIER,
    segment_name,
)
from .index import Ref
from .log import Segment, fsync_dir


class CompactingStore(FileStoreBase):
    """A file store's compaction (see the module docstring)."""

    # == compaction ===========================================================================
    def garbage(self) -> tuple[int, float]:
        """Bytes on disk that are not live records, and their share of the files."""
        garbage = max(0, self._total - self._index.live_bytes)
        return garbage, (garbage / self._total if self._total else 0.0)

    def _maybe_compact(self) -> None:
        ratio = self._opts.compact_ratio
        if not ratio or self._compacting:
            return
        garbage = self._total - self._index.live_bytes
        if garbage < self._opts.compact_min or garbage < ratio * self._total:
            return
        if self._total < self._compact_recheck_at:
            return
        # Only the segments behind the feed's retained tail are compacted, and retained
        # tombstones are rewritten: count what compaction would surely reclaim (a lower bound,
        # so a compaction never leaves enough behind to trigger itself again).
        target = self._compaction_target()
        compactable = sum(seg.size for i, seg in self._segs.items() if i <= target) if target is not None else 0
        reclaimable = compactable - self._index.live_bytes - self._index.tomb_bytes
        if reclaimable < self._opts.compact_min:
            self._compact_recheck_at = self._total + max(64 * 1024, self._opts.compact_min // 8)
            return
        self._compacting = True
        thread = threading.Thread(target=self._background_compact, name="kvctl-file-compact", daemon=True)
        self._compact_thread = thread
        thread.start()

    def _compaction_target(self) -> int | None:
        """The newest sealed segment automatic compaction may replace, or None.

        The feed keeps the newest log: a sealed segment is retained while the segments after it
        (the active one included) hold fewer than ``feed_retention`` bytes.
        """
        active = self._active
        assert active is not None
        keep = self._opts.feed_retention_bytes
        after = active.size
        for seg_id in sorted(self._segs, reverse=True):
            if seg_id == active.id:
                continue
            if after >= keep:
                return seg_id
            after += self._segs[seg_id].size
        return None

    def _background_compact(self) -> None:
        try:
            self._run_compaction(keep_feed=True)
        except CompactionAborted:
            pass
        except (KvctlError, OSError) as exc:
            self._last_compaction = {"error": str(exc)}
            log.warning("%s: background compaction failed: %s", self._where, exc)

    def compact(self) -> dict[str, Any]:
        """Compact now, in this thread (after any background compaction finishes).

        Everything up to the newest write is compacted, so change-feed cursors taken before the
        call become gaps (a sync then compares the stores once); automatic compaction leaves the
        newest ``feed_retention`` bytes alone.  Reads and writes from other threads go on
        meanwhile.  Returns a summary.
        """
        while True:
            thread = self._compact_thread
            if thread is not None:
                thread.join()
            with self._lock:
                self._writable(rotate=False)
                if not self._compacting:
                    self._compacting = True
                    break
            time.sleep(0.01)  # another thread's explicit compact() is running
        try:
            return self._run_compaction()
        except CompactionAborted:
            return {"aborted": True}
        except OSError as exc:
            raise self._write_error(exc, "compaction", "the store is unchanged") from None

    def _run_compaction(self, keep_feed: bool = False) -> dict[str, Any]:
        """Seal, snapshot, write the compacted segment off-lock, then swap it in.

        ``keep_feed``: replace only the segments behind the feed's retained tail (automatic
        compaction); otherwise seal the active segment and replace every segment.  The caller has
        set ``_compacting``; this clears it.
        """
        try:
            with self._lock:
                self._check_open()
                if keep_feed:
                    found = self._compaction_target()
                    if found is None:
                        raise CompactionAborted
                    target = found
                else:
                    # Seal the active segment: every sealed segment is covered, writes go on in the new one.
                    target = self._rotate().id - 1
                replaced = [i for i in self._segs if i <= target]
                keys = list(self._map)
                entries = list(self._map.values())
                horizon = self._tomb_horizon()
                m = self._map
                tombstones = [(k, v) for k, v in self._tombs.items() if v >= horizon and k not in m]
                floor = self._clock.now()
                epoch = self._epoch
                before = sum(self._segs[i].size for i in replaced)

            def read_ref(ref: Ref) -> bytes:
                with self._lock:
                    if self._epoch != epoch or self._closed:
                        raise CompactionAborted
                    return self._segs[ref.seg].pread(ref.offset, ref.vlen)

            def cancelled() -> bool:
                return self._epoch != epoch or self._closed

            out = write_compacted(self._dir, target, floor, keys, entries, now_ms(), read_ref, cancelled,
                                  tombstones)
            del keys, entries
            path = os.path.join(self._dir, segment_name(target))
            with self._lock:
                if cancelled():
                    os.unlink(out.tmp_path)
                    raise CompactionAborted
                # The commit point: the rename makes the new segment, which replaces every earlier
                # one, visible in one step; the directory sync makes that durable.
                os.rename(out.tmp_path, path)
                fsync_dir(self._dir)
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                for key, old_ref, new_ref in out.moved:
                    self._index.replace_if_same(key, old_ref, new_ref)
                for key, old_entry in out.expired:
                    self._index.replace_if_same(key, old_entry, None)
                self._index.purge_tombs(horizon)  # what the new segment no longer holds
                self._compact_recheck_at = 0
                old = [self._segs.pop(i) for i in replaced]
                self._segs[target] = Segment(path, target, fd, out.size, SEG_REPLACES_EARLIER, floor)
                self._segs = dict(sorted(self._segs.items()))
                self._total += out.size - before
                for seg in old:
                    seg.close()
                self._compactions += 1
                summary = {"segments_replaced": len(replaced), "bytes_before": before,
                           "bytes_after": out.size, "records": out.records - len(tombstones),
                           "tombstones_kept": len(tombstones)}
                self._last_compaction = summary
            self._unlink_segments([s for s in old if s.id != target])
            return summary
        finally:
            with self._lock:
                self._compacting = False

    def _unlink_segments(self, segments: list[Segment]) -> None:
        """Delete obsolete segment files (already replaced: a crash here only leaves leftovers)."""
        for seg in segments:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(seg.path)
        if segments:
            fsync_dir(self._dir)

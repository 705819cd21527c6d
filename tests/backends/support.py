"""Checks that several backend modules make the same way, beyond what StoreConformance covers:
processes writing one store at once, the async adapter over a sync store, the version clock, a
sync across a gap in the change feed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from kvctl.adapt import to_async
from kvctl.engines.replicate import SyncPlan, sync
from kvctl.registry import open_url
from kvctl.store import Record
from kvctl.testing import open_sync
from kvctl.testing.replication import contents

# Each writer sets 150 keys of its own, deletes every tenth, and overwrites 50 shared keys as it goes.
WRITER = textwrap.dedent("""
    import os, sys, time
    from kvctl.registry import open_url
    from kvctl.store import Record
    url, me, go = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
    while not os.path.exists(go):
        time.sleep(0.001)
    with open_url(url) as store:
        for i in range(150):
            store.set(b"%s-%d" % (me, i), b"single")
            if i % 10 == 0:
                store.set_many([Record(b"shared-%d" % j, me) for j in range(50)])
                store.delete_many([b"%s-%d" % (me, i)])
""")


def two_processes_write(url: str, tmp_path: Path) -> None:
    """Two processes write the store at ``url`` at the same moment; every write of both is there."""
    open_url(url).close()
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, name, str(go)], stderr=subprocess.PIPE)
             for name in ("p0", "p1")]
    time.sleep(0.3)  # both are importing and waiting: start them together
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    with open_url(url) as store:
        for me in (b"p0", b"p1"):
            got = store.get_many([b"%s-%d" % (me, i) for i in range(150)])
            assert [g is None for g in got] == [i % 10 == 0 for i in range(150)]
        shared = store.get_many([b"shared-%d" % j for j in range(50)])
        assert all(r is not None and r.value in (b"p0", b"p1") for r in shared)
        assert store.count() == 2 * 135 + 50


def async_adapter_works(url: str) -> None:
    """The async adapter over the sync store at ``url`` writes, reads and scans in pages."""
    async def main() -> list[bytes]:
        store = to_async(open_url(url))
        try:
            await store.set_many([Record(b"a%d" % i, b"v") for i in range(10)])
            assert (await store.get(b"a3")).value == b"v"  # type: ignore[union-attr]
            return [r.key async for page in store.scan(b"a", batch_size=4) for r in page.records]
        finally:
            await store.close()

    assert asyncio.run(main()) == [b"a%d" % i for i in range(10)]


def versions_seeded_on_reopen(url: str) -> None:
    """A store holding a version far ahead of this machine's clock, reopened, versions its next write
    above it: the clock is seeded from the store, not only from the time."""
    future = (1 << 62) + 12345
    with open_sync(url) as s:
        s.clear()
        s.set_many([Record(b"a", b"v", None, future)])
    with open_sync(url) as again:
        again.set(b"b", b"v")
        version = again.get(b"b").version  # type: ignore[union-attr]
        assert version is not None and version > future


def gap_falls_back_then_feed_resumes(plan: SyncPlan) -> None:
    """Once the source's feed no longer covers the pair's saved cursor, the next sync is a diff that
    says so, and after one more write the feed serves the sync again; both converge."""
    result = asyncio.run(sync(plan))
    assert result.mode == "diff" and "gap" in (result.fallback or "")
    assert contents(plan.src_url) == contents(plan.dst_url)
    with open_url(plan.src_url) as src:
        src.set(b"after-the-gap", b"v")
    assert asyncio.run(sync(plan)).mode == "feed"
    assert contents(plan.src_url) == contents(plan.dst_url)

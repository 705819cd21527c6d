"""Every pair of available backend families: migrate, diff, and a snapshot round trip.

The pairs come from ``tests.families.families()`` at collection time, so a backend that lands
(or a server that is started with tests/services.sh) joins the cross product by itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvctl.engines import migrate, snapshot
from tests.engines.support import all_families, caps_of, dataset, diff_urls, fresh_url, read_all, state_dir, write

__all__ = ["state_dir"]

FAMILIES = all_families()
PAIRS = [(a, b) for a in FAMILIES for b in FAMILIES]


@pytest.mark.parametrize(("src_family", "dst_family"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_pair_migrates_and_round_trips_a_snapshot(src_family: str, dst_family: str, tmp_path: Path,
                                                   state_dir: Path) -> None:
    src_url = fresh_url(src_family, tmp_path)
    dst_url = fresh_url(dst_family, tmp_path)
    restored_url = fresh_url(dst_family, tmp_path)
    records = dataset(src_family, dst_family, tmp_path)
    write(src_url, records)
    write(dst_url, [])
    write(restored_url, [])
    sc, dc = caps_of(src_family), caps_of(dst_family)
    drop_ttl = sc.ttl and not dc.ttl

    summary = migrate.run(src_url, dst_url, migrate.Plan(batch_size=8, verify=True, drop_ttl=drop_ttl))
    summary.check()
    assert summary.verify is not None and summary.verify.equal, summary.verify.to_dict()  # type: ignore[union-attr]
    assert summary.counts.copied == len(records) and summary.counts.expired == 0

    copied = read_all(dst_url)
    assert {k: r.value for k, r in copied.items()} == {r.key: r.value for r in records}
    source = read_all(src_url)
    if sc.versions and dc.versions:
        assert {k: r.version for k, r in copied.items()} == {k: r.version for k, r in source.items()}
    if sc.ttl and dc.ttl:
        for rec in records:
            if rec.expires_at_ms is not None:
                got = copied[rec.key].expires_at_ms
                assert got is not None and abs(got - rec.expires_at_ms) <= 1000, rec.key

    # a snapshot of the source, restored into a fresh store of the destination family
    file = tmp_path / "pair.kvs"
    created = snapshot.create(src_url, file, block_size=512)
    created.check()
    assert created.records == len(records)
    snapshot.verify(file)
    restored = snapshot.restore(file, restored_url, drop_ttl=drop_ttl)
    restored.check()
    result = diff_urls(src_url, restored_url, ignore_expiry=drop_ttl)
    assert result.equal, result.to_dict()
    if sc.versions and dc.versions:
        assert {k: r.version for k, r in read_all(restored_url).items()} == \
            {k: r.version for k, r in source.items()}

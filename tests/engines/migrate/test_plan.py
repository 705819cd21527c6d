"""`migrate --plan-out` then `migrate --plan --slice K/N`: slices run as separate commands (as a
Kubernetes indexed job or a Slurm array would) copy every key once; a plan is never run against
other stores or options, and bad slice numbers are usage errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

from kvctl.store import Record
from kvctl.testing.cli import run_kvctl
from tests.engines.support import diff_urls, subprocess_env, write


def test_every_slice_of_a_plan_copies_its_share_and_together_everything(tmp_path: Path) -> None:
    src, dst = f"sqlite://{tmp_path / 'src.db'}", f"sqlite://{tmp_path / 'dst.db'}"
    n = 5000
    write(src, [Record(b"%x:%05d" % (i % 16, i), b"v%d" % i) for i in range(n)])
    env = subprocess_env(tmp_path)
    plan = tmp_path / "plan.json"
    made = run_kvctl(env, "migrate", src, dst, "--plan-out", str(plan), "--slices", "6")
    assert made.returncode == 0, made.stderr
    count = len(json.loads(plan.read_bytes())["slices"])
    assert 2 <= count <= 6 and f"--slice K/{count}" in made.stderr
    assert "src.db" in plan.read_text() and not (tmp_path / "dst.db").exists()  # nothing copied yet
    copied = 0
    for k in range(count):
        done = run_kvctl(env, "migrate", src, dst, "--plan", str(plan), "--slice", f"{k}/{count}", "--json")
        assert done.returncode == 0, done.stderr
        part = json.loads(done.stdout)["copied"]
        assert 0 < part < n
        copied += part
    assert copied == n
    assert diff_urls(src, dst, ignore_expiry=False).equal


def test_a_plan_is_refused_for_other_options_and_bad_slices(tmp_path: Path) -> None:
    src, dst = f"sqlite://{tmp_path / 'src.db'}", f"sqlite://{tmp_path / 'dst.db'}"
    write(src, [Record(b"k%03d" % i, b"v") for i in range(300)])
    env = subprocess_env(tmp_path)
    plan = tmp_path / "plan.json"
    assert run_kvctl(env, "migrate", src, dst, "--plan-out", str(plan), "--slices", "2").returncode == 0
    count = len(json.loads(plan.read_bytes())["slices"])
    cases = {
        ("--prefix", "k1", "--plan", str(plan), "--slice", f"0/{count}"): "a plan for other stores or options",
        ("--plan", str(plan), "--slice", f"{count}/{count}"): "is not K/N",
        ("--plan", str(plan), "--slice", f"0/{count + 1}"): f"has {count} slices",
        ("--plan", str(plan)): "--plan and --slice go together",
        ("--plan", str(plan), "--slice", f"0/{count}", "--verify"): "need every slice",
    }
    for args, message in cases.items():
        done = run_kvctl(env, "migrate", src, dst, *args)
        err = done.stderr
        assert done.returncode == 2 and message in err and "Traceback" not in err, (args, err)
    garbage = run_kvctl(env, "migrate", src, dst, "--plan", str(tmp_path / "src.db"), "--slice", "0/2")
    assert garbage.returncode == 65 and "not a readable plan file" in garbage.stderr


def test_a_redis_cluster_is_split_into_slot_ranges_and_each_key_read_once(tmp_path: Path) -> None:
    import asyncio

    from kvctl.engines._stores import open_async
    from kvctl.engines.migrate import Plan, source_pages
    from kvctl.engines.migrate.split import plan_slices, slice_plan
    from tests.conftest import service_url

    url = f"{service_url('KVCTL_TEST_REDIS_CLUSTER_URL')}&namespace=part{time.monotonic_ns()}:"
    keys = {b"c%04d" % i for i in range(2000)}
    write(url, [Record(k, b"v") for k in keys])

    async def split_and_read() -> tuple[list[dict[str, object]], list[list[bytes]]]:
        store = open_async(url, access="read")
        try:
            plan = Plan(batch_size=300)
            masters = await plan_slices(store, plan, 3)
            assert sorted(s["partition"] for s in masters) == sorted(await store.partitions())  # type: ignore[attr-defined]
            slices = await plan_slices(store, plan, 16)
            parts = []
            for i, spec in enumerate(slices):
                one = slice_plan(plan, spec, i)
                parts.append([r.key async for page in source_pages(store, one.key_filter, one, None)
                              for r in page.records])
            return slices, parts
        finally:
            await store.close()

    try:
        slices, parts = asyncio.run(split_and_read())
    finally:
        write(url, [])
    # 16 runs of slots, each within one of the 3 masters, not 16 scans of everything
    assert len(slices) == 16 and len({str(s["partition"]).partition("/")[0] for s in slices}) == 3
    seen = [k for part in parts for k in part]
    assert sorted(seen) == sorted(keys) and all(parts)

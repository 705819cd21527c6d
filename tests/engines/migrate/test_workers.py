"""`migrate --workers N`: key-range and hash-slice splits cover every key exactly once; a killed
parallel run resumes to the same end result."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kvctl.adapt import to_async
from kvctl.engines.migrate import Plan, source_pages
from kvctl.engines.migrate.parallel import run as run_parallel
from kvctl.engines.migrate.split import key_range_split, ranges_from
from kvctl.errors import UsageError
from kvctl.registry import open_url
from kvctl.store import Capabilities, Record
from kvctl.testing.cli import run_kvctl, start_kvctl
from tests.engines.support import DictStore, all_families, diff_urls, fresh_url, state_dir, subprocess_env, write

__all__ = ["state_dir"]

SHAPES = {
    "decimal": [b"key-%06d" % i for i in range(3000)],
    "prefixed": [b"user:%d" % i for i in range(500)] + [b"session:%x" % i for i in range(2500)],
    "binary": [bytes([i % 256, (i * 7) % 256, i // 256]) for i in range(3000)],
    "tiny": [b"a", b"b"],
    "nested": [b"p", b"p\x00", b"p\xff", b"p\xff\xff", b"pa", b"pz" * 40],
}


async def _covered(store: DictStore, plan: Plan) -> list[bytes]:
    return [r.key async for page in source_pages(store, plan.key_filter, plan, None) for r in page.records]


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("workers", [2, 3, 8])
def test_key_ranges_cover_every_key_exactly_once(shape: str, workers: int) -> None:
    store = DictStore()
    store.data = {k: Record(k, b"v") for k in SHAPES[shape]}

    async def work() -> list[list[bytes]]:
        bounds = await key_range_split(store, b"", workers)
        assert bounds == sorted(bounds) and len(bounds) <= workers - 1
        return [await _covered(store, Plan(batch_size=97, key_range=r)) for r in ranges_from(bounds)]

    parts = asyncio.run(work())
    seen = [k for part in parts for k in part]
    assert sorted(seen) == sorted(SHAPES[shape]) and len(seen) == len(set(seen))
    if shape == "decimal" and workers <= 3:
        assert min(len(p) for p in parts) > len(seen) / workers / 2  # roughly balanced


@pytest.mark.parametrize("workers", [2, 4])
def test_key_ranges_are_balanced_when_a_level_is_expanded_halfway(workers: int) -> None:
    """key:000000..key:099999 expands to key:000..key:009 plus key:01..key:09: counted one each,
    those split 9%/91%; weighted by the share of keys each covers, evenly."""
    store = DictStore()
    store.data = {k: Record(k, b"v") for k in (b"key:%06d" % i for i in range(100_000))}

    async def work() -> list[int]:
        bounds = await key_range_split(store, b"", workers)
        return [len(await _covered(store, Plan(batch_size=5000, key_range=r))) for r in ranges_from(bounds)]

    sizes = asyncio.run(work())
    assert len(sizes) == workers and sum(sizes) == 100_000
    assert max(sizes) <= 1.5 * 100_000 / workers, sizes


def test_key_ranges_respect_a_prefix() -> None:
    store = DictStore()
    store.data = {k: Record(k, b"v") for k in SHAPES["prefixed"]}

    async def work() -> list[bytes]:
        bounds = await key_range_split(store, b"user:", 4)
        assert all(b.startswith(b"user:") for b in bounds)
        out: list[bytes] = []
        for r in ranges_from(bounds):
            out += await _covered(store, Plan(prefix=b"user:", key_range=r))
        return out

    assert sorted(asyncio.run(work())) == sorted(k for k in SHAPES["prefixed"] if k.startswith(b"user:"))


def test_hash_slices_of_an_unordered_store_cover_every_key_exactly_once() -> None:
    store = to_async(open_url("outside://slices"))  # no ordered_scan: index cursors
    keys = [b"h%d" % i for i in range(1000)]

    async def work() -> list[bytes]:
        await store.set_many([Record(k, k) for k in keys])
        out: list[bytes] = []
        for i in range(3):
            out += await _covered(store, Plan(batch_size=64, hash_slice=(i, 3)))  # type: ignore[arg-type]
        return out

    seen = asyncio.run(work())
    assert sorted(seen) == sorted(keys) and len(seen) == len(set(seen))


def test_stores_private_to_a_process_are_refused(state_dir: Path) -> None:
    with pytest.raises(UsageError, match="other processes"):
        run_parallel("memory://w-a", "memory://w-b", Plan(workers=2))


def _local_pair(tmp: Path) -> tuple[str, str]:
    available = all_families()
    for a, b in [("sqlite", "lmdb"), ("sqlite", "sqlite"), ("lmdb", "sqlite")]:
        if a in available and b in available:
            return fresh_url(a, tmp), fresh_url(b, tmp)
    pytest.skip("needs two persistent local families (sqlite, lmdb)")


def test_workers_copy_everything_and_verify(tmp_path: Path, state_dir: Path) -> None:
    src, dst = _local_pair(tmp_path)
    write(src, [Record(b"key:%05d" % i, b"v%d" % i) for i in range(5000)] + [Record(b"\xff\x00", b"b")])
    write(dst, [Record(b"key:00001", b"stale")])
    summary = run_parallel(src, dst, Plan(workers=3, batch_size=500, verify=True))
    summary.check()
    assert summary.counts.copied == 5001 and summary.workers == 3
    assert summary.verify is not None and summary.verify.equal


@pytest.mark.slow
def test_a_killed_parallel_run_resumes(tmp_path: Path) -> None:
    src, dst = _local_pair(tmp_path)
    n = 40_000
    write(src, [Record(b"key:%06d" % i, b"%d" % i * 10) for i in range(n)])
    write(dst, [])
    cp = tmp_path / "cp.json"
    cmd = ["migrate", src, dst, "--workers", "3", "--batch-size", "200",
           "--checkpoint-every", "1", "--checkpoint", str(cp), "--resume", "--no-progress", "--json"]
    env = subprocess_env(tmp_path)
    proc = start_kvctl(env, *cmd, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith("cp.json.w") for p in tmp_path.iterdir()):
            break
        time.sleep(0.005)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the coordinator and every worker at once
    proc.communicate(timeout=60)
    done = run_kvctl(env, *cmd)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["read"] == n and summary["copied"] == n
    assert diff_urls(src, dst, ignore_expiry=False).equal
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("cp.json")]


def test_progress_totals_across_workers_use_checkpointed_counts(tmp_path: Path, state_dir: Path) -> None:
    src, dst = _local_pair(tmp_path)
    write(src, [Record(b"k%04d" % i, b"v") for i in range(300)])
    write(dst, [])
    events: list[int] = []

    from kvctl.engines.reporting import Progress, Reporter

    class Collect(Reporter):
        def progress(self, event: Progress) -> None:
            events.append(event.counts.read)

    summary = run_parallel(src, dst, Plan(workers=2, batch_size=50), Collect())
    assert summary.counts.read == 300 and events and events[-1] == 300
    assert Capabilities().persistent is False  # memory-like stores stay refused by default


# -- signals, failures and dead processes: real processes, every wait bounded --------------------
def _worker_pids(coordinator: int) -> list[int]:
    """The coordinator's worker processes (Linux /proc), not the resource tracker."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == coordinator and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return pids


def _start_parallel(cmd: list[str], env: dict[str, str], cp: Path, workers: int) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group and return once every worker has saved a checkpoint."""
    proc = start_kvctl(env, *cmd, start_new_session=True)
    deadline = time.monotonic() + 60
    seen: set[str] = set()  # a worker that finished has removed its own by now
    while len(seen) < workers:
        seen.update(p.name for p in cp.parent.iterdir() if p.name.startswith(cp.name + ".w"))
        if proc.poll() is not None or time.monotonic() > deadline:
            _, err = proc.communicate(timeout=60)
            raise AssertionError(f"no worker checkpoints (exit {proc.returncode}): {err.decode()}")
        time.sleep(0.005)
    return proc


def _finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str]:
    """Wait for the command and every worker (they share its stderr); kill the group if they hang."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("hung: killed after a generous timeout") from None
    return proc.returncode, err.decode()


def _one_line_each(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert all(line.startswith("kvctl: ") for line in stderr.splitlines() if line), stderr


N_PARALLEL = 100_000  # about a second per worker: both are still copying when the test acts


def _key(i: int) -> bytes:
    """Keys whose first byte is spread evenly, so that a key-range split gives workers equal shares."""
    return b"%x:%06d" % (i % 16, i)


def _parallel_case(tmp_path: Path, n: int = N_PARALLEL) -> tuple[str, str, Path, list[str], dict[str, str]]:
    src, dst = _local_pair(tmp_path)
    write(src, [Record(_key(i), b"%d" % i * 10) for i in range(n)])
    write(dst, [])
    cp = tmp_path / "cp.json"
    cmd = ["migrate", src, dst, "--workers", "2", "--batch-size", "500",
           "--checkpoint-every", "1", "--checkpoint", str(cp), "--on-conflict", "fail", "--no-progress", "--json"]
    return src, dst, cp, cmd, subprocess_env(tmp_path)


def _resume_converges(src: str, dst: str, cp: Path, cmd: list[str], env: dict[str, str],
                      n: int = N_PARALLEL) -> None:
    proc = start_kvctl(env, *cmd, "--resume", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("--resume hung") from None
    assert proc.returncode == 0, err.decode()
    _one_line_each(err.decode())
    summary = json.loads(out)
    assert summary["resumed"] and summary["read"] == n and summary["copied"] == n, summary
    assert diff_urls(src, dst, ignore_expiry=False).equal
    assert not [p for p in cp.parent.iterdir() if p.name.startswith(cp.name)]


def test_ctrl_c_stops_every_worker_in_one_line_and_resume_finishes(tmp_path: Path) -> None:
    src, dst, cp, cmd, env = _parallel_case(tmp_path)
    proc = _start_parallel(cmd, env, cp, 2)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the coordinator and every worker
    code, err = _finish(proc)
    assert code == 130, err
    _one_line_each(err)
    assert "progress saved" in err
    _resume_converges(src, dst, cp, cmd, env)


def test_a_second_ctrl_c_stops_at_once_and_resume_finishes(tmp_path: Path) -> None:
    src, dst, cp, cmd, env = _parallel_case(tmp_path)
    proc = _start_parallel(cmd, env, cp, 2)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.02)  # not an assertion: only so that the two are not merged into one pending signal
    os.killpg(proc.pid, signal.SIGINT)
    code, err = _finish(proc)
    # if the second one lands as the interpreter exits, it ends with SIGINT: a shell shows 130 too
    assert code in (130, -signal.SIGINT), err
    _one_line_each(err)
    _resume_converges(src, dst, cp, cmd, env)


def test_a_worker_that_fails_stops_the_others_in_one_line(tmp_path: Path) -> None:
    _, dst, _, cmd, env = _parallel_case(tmp_path)
    write(dst, [Record(_key(i), b"someone else's") for i in (5_000, 5_011)])  # one in each half
    proc = start_kvctl(env, *cmd, start_new_session=True)
    code, err = _finish(proc)
    assert code == 6, err
    _one_line_each(err)
    assert err.count("already exists") == 1 and err.count("--resume") == 1, err  # one hint, not two
    proc = start_kvctl(env, *cmd, "--resume", start_new_session=True)
    code, err = _finish(proc)  # a real conflict stays one, resumed or not
    assert code == 6 and "already exists" in err, err
    _one_line_each(err)


def test_a_killed_worker_is_reported_in_one_line_and_resume_finishes(tmp_path: Path) -> None:
    src, dst, cp, cmd, env = _parallel_case(tmp_path)
    proc = _start_parallel(cmd, env, cp, 2)
    pids = _worker_pids(proc.pid)
    assert pids
    os.kill(pids[0], signal.SIGKILL)  # e.g. the kernel's OOM killer
    code, err = _finish(proc)
    assert code == 70, err
    _one_line_each(err)
    assert "killed by SIGKILL" in err
    _resume_converges(src, dst, cp, cmd, env)


def test_workers_stop_by_themselves_when_the_coordinator_dies(tmp_path: Path) -> None:
    src, dst, cp, cmd, env = _parallel_case(tmp_path)
    proc = _start_parallel(cmd, env, cp, 2)
    proc.kill()  # the coordinator alone: its workers are orphaned
    _finish(proc)  # returns once the workers, which share its stderr, have exited too: never a hang
    _resume_converges(src, dst, cp, cmd, env)

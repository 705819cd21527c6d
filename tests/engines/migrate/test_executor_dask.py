"""`migrate --executor dask://...`: slices as Dask tasks on a real local cluster of worker
processes, over real stores; a killed worker, a failing slice, a killed driver, Ctrl-C and a
stale attempt all end with every key copied once the run (or its --resume) completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kvctl.engines.distributed import migrate as dask_engine
from kvctl.engines.distributed.executor import ExecutorSpec, parse_executor
from kvctl.engines.migrate import Plan
from kvctl.errors import UsageError
from kvctl.store import Record
from kvctl.testing.cli import run_kvctl, start_kvctl
from tests.conftest import service_url
from tests.engines.support import dask_cluster, diff_urls, state_dir, subprocess_env, write

distributed = pytest.importorskip("distributed")  # the test extra installs it: CI runs these

__all__ = ["dask_cluster", "state_dir"]

N = 20_000
SLICES = 8


@pytest.fixture(scope="module")
def cluster(dask_cluster: Any) -> Any:
    return dask_cluster


def _address(client: Any) -> str:
    return "dask://" + client.scheduler.address.removeprefix("tcp://")


def _key(i: int) -> bytes:
    return b"%x:%06d" % (i % 16, i)  # first bytes spread evenly: the key-range split is balanced


def _pair(tmp_path: Path, n: int = N, delay_ms: int = 0, fail_at: bytes | None = None) -> tuple[str, str, str]:
    """(a SQLite source, the source seen through a per-batch delay, an empty SQLite destination)."""
    src, dst = f"sqlite://{tmp_path / 'src.db'}", f"sqlite://{tmp_path / 'dst.db'}"
    write(src, [Record(_key(i), b"value-%d" % i) for i in range(n)])
    write(dst, [])
    slow = f"slow://?delay_ms={delay_ms}&of={src}" + ("" if fail_at is None else f"&fail_at={fail_at.hex()}")
    return src, slow, dst


def _cmd(src: str, dst: str, client: Any, cp: Path, *extra: str) -> list[str]:
    """The arguments of a ``kvctl migrate`` on the cluster."""
    return ["migrate", src, dst, "--executor", _address(client), "--shared-fs",
            "--slices", str(SLICES), "--batch-size", "100", "--checkpoint-every", "1", "--checkpoint", str(cp),
            "--no-progress", "--json", *extra]


def _start_slow_run(tmp_path: Path, cluster: Any) -> tuple[str, str, Path, dict[str, str], list[str],
                                                           subprocess.Popen[bytes]]:
    """A migrate on the cluster from a slow source, started in its own session (to be killed or
    interrupted): its source, destination, checkpoint, environment, arguments and process."""
    src, slow, dst = _pair(tmp_path, delay_ms=40)
    cp = tmp_path / "cp.json"
    env = subprocess_env(tmp_path)
    cmd = _cmd(slow, dst, cluster, cp)
    return src, dst, cp, env, cmd, start_kvctl(env, *cmd, start_new_session=True)


def _wait_for_cursors(cp: Path, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> dict[str, Any]:
    """The driver's checkpoint once it mirrors a slice checkpoint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"ended early: {proc.communicate()[1].decode()}")
        try:
            doc = json.loads(cp.read_bytes())
        except (OSError, ValueError):
            doc = {}
        if doc.get("extra", {}).get("cursors"):
            return doc
        time.sleep(0.02)
    raise AssertionError("no slice checkpoint mirrored in time")


def _one_line_each(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert all(line.startswith("kvctl: ") for line in stderr.splitlines() if line), stderr


# -- parsing and refusals (no cluster) ---------------------------------------------------------
def test_executor_values() -> None:
    assert parse_executor("local") == ExecutorSpec("local")
    assert parse_executor("dask://local") == ExecutorSpec("dask")
    assert parse_executor("dask://sched:8786").address == "tcp://sched:8786"
    assert parse_executor("dask+tls://sched:8786").address == "tls://sched:8786"
    for bad in ("dask://", "dask://host", "ray://h:1", "tcp://h:1"):
        with pytest.raises(UsageError):
            parse_executor(bad)


def test_a_url_with_a_password_never_reaches_the_workers(tmp_path: Path) -> None:
    env = subprocess_env(tmp_path)
    done = run_kvctl(env, "migrate", "redis://u:hunter2@127.0.0.1:1/0", f"sqlite://{tmp_path / 'd.db'}",
                     "--executor", "dask://127.0.0.1:1")
    err = done.stderr
    assert done.returncode == 2 and "hunter2" not in err and "name a profile" in err, err
    _one_line_each(err)


def test_a_host_local_store_is_refused_on_remote_workers(tmp_path: Path, cluster: Any) -> None:
    src, _, dst = _pair(tmp_path, n=10)
    cmd = _cmd(src, dst, cluster, tmp_path / "cp.json")
    cmd.remove("--shared-fs")
    done = run_kvctl(subprocess_env(tmp_path), *cmd)
    err = done.stderr
    assert done.returncode == 2 and "--shared-fs" in err and "sqlite" in err, err
    _one_line_each(err)
    assert not (tmp_path / "cp.json").exists()


# -- runs --------------------------------------------------------------------------------------
def test_migrate_on_the_cluster_copies_every_key(tmp_path: Path, cluster: Any) -> None:
    src, _, dst = _pair(tmp_path)
    cp = tmp_path / "cp.json"
    done = run_kvctl(subprocess_env(tmp_path), *_cmd(src, dst, cluster, cp))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["copied"] == N and summary["read"] == N and summary["processed"] == N
    assert summary["workers"] == 2
    assert diff_urls(src, dst, ignore_expiry=False).equal
    assert not cp.exists()


def test_a_redis_cluster_source_over_slot_ranges(tmp_path: Path, cluster: Any) -> None:
    base = service_url("KVCTL_TEST_REDIS_CLUSTER_URL")
    src = f"{base}&namespace=dask{os.getpid()}{time.monotonic_ns()}:"
    dst = f"sqlite://{tmp_path / 'dst.db'}"
    write(src, [Record(b"r%05d" % i, b"v%d" % i, None) for i in range(3000)])
    try:
        done = run_kvctl(subprocess_env(tmp_path), *_cmd(src, dst, cluster, tmp_path / "cp.json"))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["copied"] == 3000
        assert diff_urls(src, dst, ignore_expiry=False).equal
    finally:
        write(src, [])  # opened clean: the namespace's keys are removed


def test_a_redis_cluster_from_dask_local_in_32_slot_ranges_ends_verified(tmp_path: Path) -> None:
    base = service_url("KVCTL_TEST_REDIS_CLUSTER_URL")
    src = f"{base}&namespace=dl{os.getpid()}{time.monotonic_ns()}:"
    dst = f"sqlite://{tmp_path / 'dst.db'}"
    write(src, [Record(b"r%05d" % i, b"v%d" % i, None) for i in range(3000)]
          + [Record(b"{tag%d}:%d" % (i % 7, i), b"t%d" % i, None) for i in range(700)])
    try:
        done = run_kvctl(subprocess_env(tmp_path), "migrate", src, dst, "--executor", "dask://local",
                         "--workers", "2", "--slices", "32", "--verify", "--no-progress", "--json")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["copied"] == summary["read"] == 3700 and summary["verify"]["equal"], summary
    finally:
        write(src, [])


def test_a_redis_cluster_and_a_shard_are_split_by_their_parts(tmp_path: Path, cluster: Any) -> None:
    """Split by capability: a Redis Cluster into as many slot ranges as slices, each within one
    master; a shard into its children, each read once by one slice however many slices were
    asked for."""
    from urllib.parse import quote

    env = subprocess_env(tmp_path)
    base = service_url("KVCTL_TEST_REDIS_CLUSTER_URL")
    redis_plan, shard_plan = tmp_path / "redis.json", tmp_path / "shard.json"
    dst = f"sqlite://{tmp_path / 'dst.db'}"
    made = run_kvctl(env, "migrate", f"{base}&namespace=p{os.getpid()}:", dst, "--plan-out", str(redis_plan),
                     "--slices", "16")
    assert made.returncode == 0, made.stderr
    parts = [s["partition"] for s in json.loads(redis_plan.read_text())["slices"]]
    masters = {p.partition("/")[0] for p in parts}
    assert len(parts) == len(set(parts)) == 16 and len(masters) >= 2, parts  # not 16 scans of all

    children = [f"sqlite://{tmp_path / f'c{i}.db'}" for i in range(3)]
    shard = "shard://?" + "&".join(f"child={quote(c, safe='')}&weight=1" for c in children)
    write(shard, [Record(_key(i), b"v%d" % i) for i in range(3000)])
    assert run_kvctl(env, "migrate", shard, dst, "--plan-out", str(shard_plan), "--slices", "16").returncode == 0
    assert json.loads(shard_plan.read_text())["slices"] == [{"partition": p} for p in ("0", "1", "2")]
    done = run_kvctl(env, *_cmd(shard, dst, cluster, tmp_path / "cp.json"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["copied"] == 3000
    assert diff_urls(shard, dst, ignore_expiry=False).equal


def test_one_progress_bar_merges_the_slices_with_a_total(tmp_path: Path, cluster: Any) -> None:
    from kvctl.engines.reporting import Progress, Reporter

    class Seen(Reporter):
        def __init__(self) -> None:
            self.events: list[Progress] = []

        def progress(self, event: Progress) -> None:
            self.events.append(event)

    _, slow, dst = _pair(tmp_path, n=4000, delay_ms=20)
    seen = Seen()
    plan = Plan(batch_size=100, estimate_total=True, checkpoint_path=tmp_path / "cp.json")
    spec = ExecutorSpec("dask", cluster.scheduler.address)
    summary = dask_engine.run(slow, dst, slow, dst, plan, spec, slices=SLICES, shared_fs=True, reporter=seen)
    assert summary.counts.copied == 4000
    copy = [e for e in seen.events if e.phase == "copy"]
    # the source's count arrives as the total (the bar's % and ETA); the merged count only grows
    assert any(e.total == 4000 for e in copy), [e.total for e in copy]
    reads = [e.counts.read for e in copy]
    assert reads == sorted(reads) and 0 < reads[-1] <= 4000 and len(set(reads)) > 1


def test_a_killed_worker_s_slice_resumes_mid_way(tmp_path: Path, cluster: Any, state_dir: Path) -> None:
    src, slow, dst = _pair(tmp_path, delay_ms=25)
    cp = tmp_path / "cp.json"
    plan = Plan(batch_size=100, checkpoint_every=1, checkpoint_interval=0.05, checkpoint_path=cp)
    spec = parse_executor(_address(cluster))
    out: dict[str, Any] = {}

    def drive() -> None:
        try:
            out["summary"] = dask_engine.run(slow, dst, slow, dst, plan, spec, slices=SLICES, shared_fs=True)
        except BaseException as exc:  # re-raised by the test below
            out["error"] = exc

    driver = threading.Thread(target=drive)
    driver.start()
    doc = _wait_for_cursors(cp)
    busy = [i for i, c in doc["extra"]["cursors"].items() if c["counts"].get("read", 0) > 0]
    assert busy
    processing = cluster.processing()
    victim = next(w for w, keys in processing.items() if keys)
    pid = cluster.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    driver.join(timeout=120)
    assert "error" not in out, out.get("error")
    summary = out["summary"]
    assert summary.counts.copied == N and summary.counts.read == N
    # the retried slice started from its checkpoint, not from its first key
    assert summary.processed_this_run < N
    assert diff_urls(src, dst, ignore_expiry=False).equal


def test_a_slice_that_always_fails_is_listed_and_the_others_finish(tmp_path: Path, cluster: Any) -> None:
    _, slow, dst = _pair(tmp_path, n=4000, fail_at=_key(1234))
    cp = tmp_path / "cp.json"
    env = subprocess_env(tmp_path)
    done = run_kvctl(env, *_cmd(slow, dst, cluster, cp))
    err = done.stderr
    assert done.returncode == 74, err  # the slice's own error, as a local run would exit
    # the failing key's page is read by its slice, and by the slice before when its last page
    # runs past its range's end: every failed slice is listed, the others finish
    listed = [line for line in err.splitlines() if " failed: slow: failing on purpose" in line]
    assert 1 <= len(listed) <= 2 and f"{len(listed)} of 8 slices failed" in err and "--resume" in err, err
    _one_line_each(err)
    saved = json.loads(cp.read_bytes())["extra"]
    assert len(saved["finished"]) == SLICES - len(listed)
    # --resume reruns the unfinished slices only (which fail again the same way)
    again = run_kvctl(env, *_cmd(slow, dst, cluster, cp), "--resume")
    err = again.stderr
    slices = f"{len(listed)} unfinished slice{'' if len(listed) == 1 else 's'}"
    assert again.returncode == 74 and f"resuming {slices}" in err, err


def test_a_killed_driver_resumes_from_the_mirrored_checkpoints(tmp_path: Path, cluster: Any) -> None:
    src, dst, cp, env, cmd, proc = _start_slow_run(tmp_path, cluster)
    doc = _wait_for_cursors(cp, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    mirrored = doc["extra"]["cursors"]
    done = run_kvctl(env, *cmd, "--resume")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed"] and summary["copied"] == N and summary["read"] == N
    assert summary["processed"] < N  # the mirrored cursors were used
    assert mirrored and diff_urls(src, dst, ignore_expiry=False).equal


def test_ctrl_c_stops_every_slice_then_resume_finishes(tmp_path: Path, cluster: Any) -> None:
    src, dst, cp, env, cmd, proc = _start_slow_run(tmp_path, cluster)
    _wait_for_cursors(cp, proc)
    asked = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err_b = proc.communicate(timeout=60)
    took = time.monotonic() - asked
    err = err_b.decode()
    assert proc.returncode == 130, err
    assert "progress saved: rerun with --resume" in err and took < 2, (took, err)
    _one_line_each(err)
    time.sleep(0.5)  # nothing is still writing: every slice stopped
    frozen = diff_urls(src, dst, ignore_expiry=False)
    time.sleep(1.0)
    assert diff_urls(src, dst, ignore_expiry=False).to_dict()["same"] == frozen.to_dict()["same"]
    done = run_kvctl(env, *cmd, "--resume")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["copied"] == N
    assert diff_urls(src, dst, ignore_expiry=False).equal


def test_a_stale_attempt_stops_at_its_next_checkpoint(tmp_path: Path, cluster: Any) -> None:
    _, slow, dst = _pair(tmp_path, n=4000, delay_ms=40)
    run_id = f"stale{time.monotonic_ns()}"
    plan = Plan(batch_size=100, checkpoint_every=1, checkpoint_interval=0.05)
    distributed.Variable(f"kvctl-{run_id}-0", client=cluster).set({"owner": None, "cp": None})
    distributed.Event(f"kvctl-stop-{run_id}", client=cluster).clear()
    fut = cluster.submit(dask_engine.run_slice, slow, dst, plan, {"range": [None, None]}, 0, run_id, pure=False)
    var = distributed.Variable(f"kvctl-{run_id}-0", client=cluster)
    deadline = time.monotonic() + 30
    while var.get()["owner"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # a newer attempt claims the slice (as a retry on another worker would)
    var.set({"owner": "newer-attempt", "cp": var.get()["cp"]})
    res = fut.result(timeout=60)
    assert res["outcome"] == "stale"
    assert var.get()["owner"] == "newer-attempt"  # the stale attempt wrote nothing after that


# -- diff --------------------------------------------------------------------------------------
def _differences(dst: str) -> None:
    """``dst``: the source's keys but two, one value changed, one key added."""
    from kvctl.adapt import to_sync
    from kvctl.registry import open_url

    write(dst, [Record(_key(i), b"value-%d" % i) for i in range(N) if i not in (7, 4000)])
    store = to_sync(open_url(dst))
    try:
        store.set_many([Record(_key(100), b"changed"), Record(b"zz-extra", b"x")])
    finally:
        store.close()


@pytest.mark.parametrize("pair", ["ordered", "hash"])
def test_diff_on_the_cluster_finds_what_a_local_diff_finds(tmp_path: Path, cluster: Any, pair: str) -> None:
    src, _, dst = _pair(tmp_path, n=N)
    if pair == "hash":  # Redis scans in no order: hash slices, each looked up both ways
        dst = f"{service_url('KVCTL_TEST_REDIS_URL')}?namespace=dd{os.getpid()}{time.monotonic_ns()}:"
    _differences(dst)
    env = subprocess_env(tmp_path)
    try:
        base = ["diff", src, dst, "--json", "--sample", "5"]
        local = run_kvctl(env, *base)
        on_cluster = run_kvctl(env, *base, "--executor", _address(cluster), "--shared-fs", "--slices", "8")
    finally:
        write(dst, [])
    assert local.returncode == on_cluster.returncode == 1, on_cluster.stderr
    got, want = json.loads(on_cluster.stdout), json.loads(local.stdout)
    for doc in (got, want):
        doc.pop("seconds")
        doc["samples"] = {k: sorted(json.dumps(x) for x in v) for k, v in doc["samples"].items()}
    assert got == want
    assert got["missing"] == 2 and got["extra"] == 1 and got["differing"] == 1

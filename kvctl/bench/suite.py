"""Run a bench: probe the backends, plan the jobs, run each job process, gather one :class:`Run`.

Each job (the harness, then one backend x one workload) runs in its own process
(``python -P -m kvctl.bench.runner``), which is pyperf's manager and spawns pyperf's workers: a
crash, a hung server or a failed worker costs that job's rows only.  Jobs run one after the
other: two benchmarks sharing two cores would measure each other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kvctl.bench import backends as backends_mod
from kvctl.bench.backends import Backend
from kvctl.bench.job import BenchSpec, Job, python_args
from kvctl.bench.params import FORMAT_VERSION, Params
from kvctl.bench.results import EMPTY, REFERENCE, Run, machine_info
from kvctl.bench.workloads import Workload
from kvctl.errors import one_line
from kvctl.url import redact

USER_STORE_PREFIX = "kvctl-bench:"  # keys a run writes in a store it did not create (removed after)
JOB_TIMEOUT_S = 1800

Progress = Callable[[str], None]
JobsDone = Callable[[int, int], None]  # (jobs finished, jobs in all)


@dataclass
class Spec:
    urls: list[str]
    workloads: list[Workload]
    params: Params
    keep: bool = False                              # keep bench keys in the stores given
    embedded: bool = False                          # also every embedded backend, besides the URLs
    argv: list[str] = field(default_factory=list)   # the command, for the record


def _bench_metadata(backend: Backend, params: Params) -> dict[str, Any]:
    return {
        "kvctl_format": FORMAT_VERSION, "kvctl_backend": backend.label, "kvctl_family": backend.family,
        "kvctl_url": backend.redacted, "kvctl_durability": one_line(backend.durability) or "-",
        "kvctl_drivers": backend.drivers or "none", "kvctl_network": int(backend.network),
        "kvctl_async": int(backend.is_async), "kvctl_value_size": params.value_size,
        "kvctl_keys": params.keys, "kvctl_seed": params.seed, "kvctl_clients": 1,
        "kvctl_cpu_pinning": params.affinity or "none",
    }


def harness_job(params: Params, any_async: bool, out: str) -> Job:
    specs = [BenchSpec(EMPTY, "gridkv", "get", store="null"),
             BenchSpec(REFERENCE, "gridkv", "mixed", store="dict")]
    if any_async:
        specs.insert(1, BenchSpec(EMPTY + "-async", "gridkv", "get", store="null-async"))
    meta = {"kvctl_format": FORMAT_VERSION, "kvctl_backend": "harness", "kvctl_value_size": params.value_size,
            "kvctl_keys": params.keys}
    for s in specs:
        s.metadata = {"kvctl_workload": "harness", "kvctl_bench": s.name.partition(".")[2],
                      "kvctl_harness": f"{s.store} store, GridKV {s.bench} plan"}
    return Job(label="harness", url="", params=params, benches=specs, out=out, kind="harness", metadata=meta)


def plan_jobs(backends: list[Backend], workloads: list[Workload], params: Params, workdir: Path
              ) -> tuple[list[Job], list[dict[str, str]]]:
    jobs: list[Job] = []
    skipped: list[dict[str, str]] = []
    for backend in backends:
        for workload in workloads:
            if backend.status != "ok":
                for b in workload.benches:
                    skipped.append({"name": f"{workload.name}.{b.name}@{backend.label}", "workload": workload.name,
                                    "bench": b.name, "backend": backend.label, "status": backend.status,
                                    "reason": backend.reason})
                continue
            runnable, skips = workload.split(backend.capabilities, backend.family)
            for b, reason in skips:
                skipped.append({"name": f"{workload.name}.{b.name}@{backend.label}", "workload": workload.name,
                                "bench": b.name, "backend": backend.label, "status": "skipped", "reason": reason})
            if not runnable:
                continue
            job_params = replace(params, prefix="" if backend.fresh_dir is not None else
                                 (params.prefix or USER_STORE_PREFIX))
            n = len(jobs)
            jobs.append(Job(
                label=backend.label, url=backend.job_url(workload.name), params=job_params,
                benches=[BenchSpec(f"{workload.name}.{b.name}@{backend.label}", workload.name, b.name)
                         for b in runnable],
                out=str(workdir / f"job{n}.out.json"), network=backend.network, fresh=backend.fresh_dir is not None,
                alloc_url=backend.job_url(f"{workload.name}-alloc") if backend.fresh_dir else None,
                instr_url=backend.job_url(f"{workload.name}-instr") if backend.fresh_dir else None,
                metadata=_bench_metadata(backend, job_params),
            ))
    return jobs, skipped


def run_job(job: Job, path: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]], str]:
    """Run one job process; (pyperf suite JSON list, errors, captured stderr tail)."""
    job.save(str(path))
    try:
        proc = _run_group([sys.executable, *python_args(), "--kvctl-job", str(path)], JOB_TIMEOUT_S)
        stderr = proc.stderr
        failed = proc.returncode != 0
    except subprocess.TimeoutExpired as exc:
        stderr = f"job timed out after {JOB_TIMEOUT_S} s: {exc}"
        failed = True
    try:
        with open(job.out) as fh:
            out = json.load(fh)
    except (OSError, ValueError):
        out = None
    if out is None:
        reason = _last_line(stderr) or "the job process failed"
        return [], [{"name": s.name, "workload": s.workload, "bench": s.bench, "reason": reason}
                    for s in job.benches], stderr
    suites = [out["suite"]] if out.get("suite") else []
    errors = list(out.get("errors", []))
    if failed and not errors:
        errors = [{"name": "", "workload": "", "bench": "", "reason": _last_line(stderr)}]
    return suites, errors, stderr


def _run_group(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a job process in a process group of its own, and end the whole group however this
    ends (done, timed out, Ctrl-C or SIGTERM here).  The job starts pyperf's workers and valgrind;
    killing only the job process, as subprocess.run does, would leave them running."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            with contextlib.suppress(OSError):  # the group is already empty
                os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _run_jobs(jobs: list[Job], scratch: Path, benchmarks: list[Any], errors: list[dict[str, str]],
              say: Progress, on_job: JobsDone | None = None) -> None:
    import pyperf

    for i, job in enumerate(jobs, 1):
        if on_job is not None:
            on_job(i - 1, len(jobs))
        t0 = time.monotonic()
        what = "harness" if job.kind == "harness" else f"{job.benches[0].workload} on {job.label}"
        say(f"[{i}/{len(jobs)}] {what}: {', '.join(s.bench for s in job.benches)}")
        suites, errs, stderr = run_job(job, scratch / f"job{i}.json")
        for suite_json in suites:
            benchmarks.extend(pyperf.BenchmarkSuite._json_load(job.out, suite_json))
        for e in errs:
            e["reason"] = redact(str(e.get("reason", "")))
            e.setdefault("backend", job.label)
            e.setdefault("status", "error")
            errors.append(e)
            say(f"  {e['name']}: {e['reason']}")
        if os.environ.get("KVCTL_BENCH_DEBUG") and stderr.strip():
            sys.stderr.write(stderr)
        say(f"  done in {time.monotonic() - t0:.1f} s")
    if on_job is not None:
        on_job(len(jobs), len(jobs))


def execute(spec: Spec, progress: Progress | None = None,
            on_job: JobsDone | None = None) -> tuple[Run, list[Backend]]:
    """Run every job; the keys written in the stores given are still there (see :func:`cleanup`),
    so the caller can save the results first.  ``on_job(done, total)`` is told as jobs finish."""
    import pyperf

    say = progress or (lambda _msg: None)
    started = time.monotonic()
    scratch = backends_mod.scratch_dir()
    benchmarks: list[Any] = []
    errors: list[dict[str, str]] = []
    try:
        say("probing backends ...")
        found = backends_mod.resolve(spec.urls, scratch, embedded=spec.embedded)
        for b in found:
            b.reason = redact(b.reason)
            if b.status != "ok":
                say(f"  {b.label}: {b.status}: {b.reason}")
        jobs, skipped = plan_jobs(found, spec.workloads, spec.params, scratch)
        jobs.insert(0, harness_job(spec.params, any(b.is_async for b in found if b.status == "ok"),
                                   str(scratch / "harness.out.json")))
        try:
            _run_jobs(jobs, scratch, benchmarks, errors, say, on_job)
        except KeyboardInterrupt:
            if not spec.keep and any(b.fresh_dir is None and b.status == "ok" for b in found):
                say(f"interrupted: keys under {spec.params.prefix or USER_STORE_PREFIX!r} may be left "
                    "in the stores given")
            raise
    finally:
        backends_mod.remove_scratch(scratch)
    info = {
        "format": FORMAT_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["kvctl", "bench", *spec.argv]) if spec.argv else "kvctl bench",
        "duration_s": round(time.monotonic() - started, 1),
        "params": spec.params.to_json(),
        "workloads": [w.name for w in spec.workloads],
        "machine": machine_info(spec.params.affinity),
        "backends": [b.to_json() for b in found],
        "skipped": [s for s in skipped if s.get("status") == "skipped"],
        "errors": [s for s in skipped if s.get("status") != "skipped"] + errors,
        "warnings": [],
    }
    if any(w.alloc for w in spec.workloads):
        from kvctl.bench import instr

        info["instructions"] = instr.tool()  # what counted them, or why nothing did (the gate says so)
    suite = pyperf.BenchmarkSuite(benchmarks) if benchmarks else None
    return Run(suite, info), found


def cleanup(spec: Spec, found: list[Backend], progress: Progress | None = None) -> list[str]:
    """Remove the keys the run wrote in the stores given (not in its own scratch stores)."""
    if spec.keep:
        return []
    problems = backends_mod.cleanup(found, spec.params.prefix or USER_STORE_PREFIX)
    for p in problems:
        (progress or (lambda _msg: None))(f"warning: {p}")
    return problems


def run(spec: Spec, progress: Progress | None = None) -> Run:
    """Execute and clean up; problems cleaning up are recorded as warnings of the run."""
    result, found = execute(spec, progress)
    result.info["warnings"] = cleanup(spec, found, progress)
    return result

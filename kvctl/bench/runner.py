"""The job process and its pyperf workers: ``python -P -m kvctl.bench.runner --kvctl-job JOB.json``.

Run by the parent (``kvctl bench``) once per job, this module is pyperf's *manager*: it builds
one ``pyperf.Runner`` with an explicit argument list (never the CLI's own argv) and
``program_args`` pointing back here, so pyperf spawns this same module as its *workers* (with
``--worker`` and the job file).  Workers open the store lazily, inside the worker, on the first
call of a bench's time function (a store the run generated: one of the worker's own, see
:func:`worker_url`), then time plans with ``bench_time_func``; async stores run on one
persistent loop (see :mod:`kvctl.bench.target`).

After pyperf has finished, the manager runs the passes pyperf cannot do: per-op latency
percentiles, load passes with N clients, and the memray allocation counts; it attaches them to
each benchmark as ``kvctl_*`` metadata and writes a pyperf-compatible suite for the parent.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import traceback
from typing import Any

from kvctl.bench.job import BenchSpec, Job, python_args
from kvctl.bench.workloads import Bench, Ctx, get, make_value
from kvctl.errors import KvctlError, one_line

COST_ENV = "KVCTL_BENCH_COST"  # a file: every process appends where its CPU went, one JSON line a phase
CHUNK_OPS = 200_000  # a time function builds its plan in pieces of at most this many ops
PASS_BUDGET_S = 2.0  # latency and allocation passes shrink their op count to about this long
QUICK_BUDGET_S = 0.75


def cost(**record: Any) -> None:
    """Append one phase's CPU seconds to the file named by ``KVCTL_BENCH_COST`` (when set)."""
    path = os.environ.get(COST_ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), **record}) + "\n")


def cpu_s(who: int = 0) -> float:
    """CPU seconds (user + system) of this process (``who`` 0) or of its waited-for children (-1)."""
    import resource

    use = resource.getrusage(resource.RUSAGE_CHILDREN if who else resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _harness_store(kind: str) -> Any:
    from kvctl.bench import kernels

    return {"null": kernels.NullStore, "null-async": kernels.AsyncNullStore, "dict": kernels.DictStore}[kind]()


def open_ctx(job: Job, store_kind: str | None, url: str | None = None) -> Ctx:
    """A context on the job's store (opened here, in this process) or on a harness store."""
    from kvctl.bench.target import Target

    url = url or job.url
    target = Target(_harness_store(store_kind)) if store_kind else Target.open(url)
    return Ctx(target=target, params=job.params, url=url, value=make_value(job.params),
               prefix=job.params.prefix.encode())


def worker_url(job: Job) -> str:
    """The store a pyperf worker times.  A store the run generated (``Job.fresh``: an embedded
    backend on a fresh store in the run's scratch directory) gets one of the worker's own beside
    it, so every process measures a store in the same state: one store shared by the job's
    workers holds what each wrote before, which the next one's open reads back (an append-only
    log replays it all).  A store given by URL is the job's."""
    if not job.fresh or job.kind != "store":
        return job.url
    return f"{job.url}-w{os.getpid()}"


def remove_worker_store(job: Job, url: str) -> None:
    """Delete a worker's own store (:func:`worker_url`): its files, only inside the run's
    scratch directory."""
    if url == job.url:
        return
    import shutil
    from pathlib import Path

    from kvctl.url import StoreURL

    try:
        path = Path(StoreURL.parse(url).local_path())
    except KvctlError:
        return  # not a path (an in-process store): nothing on disk
    scratch = Path(job.out).resolve().parent
    if scratch not in path.resolve().parents:
        return
    for p in path.parent.glob(path.name + "*"):
        if p.name == path.name or p.name[len(path.name)] in "-.":  # x-w12 and x-w12-wal, not x-w123
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


class TimeFunc:
    """pyperf's time function for one bench: set up on first call, then time plans of ``loops``."""

    def __init__(self, job: Job, spec: BenchSpec, index: int) -> None:
        self.job, self.spec, self.index = job, spec, index
        self.bench: Bench = get(spec.workload).bench(spec.bench)
        self.ctx: Ctx | None = None
        self.calls: list[tuple[int, float]] = []  # (loops, CPU seconds) of each call, for COST_ENV

    def close(self) -> None:
        """Close the store (and delete it when it was this worker's own)."""
        if self.ctx is not None:
            _close(self.ctx)
            remove_worker_store(self.job, self.ctx.url)
            self.ctx = None

    def __call__(self, loops: int) -> float:
        t0 = cpu_s()
        try:
            return self._time(loops)
        finally:
            self.calls.append((loops, cpu_s() - t0))

    def _time(self, loops: int) -> float:
        try:
            if self.ctx is None:
                t0 = cpu_s()
                self.ctx = open_ctx(self.job, self.spec.store, None if self.spec.store else worker_url(self.job))
                if self.bench.setup is not None:
                    self.bench.setup(self.ctx)
                self.calls.append((0, cpu_s() - t0))  # loops 0: the set-up
            ctx = self.ctx
            bench = self.bench
            if bench.sampled and loops > bench.sample:
                # the value is the mean of a sample of steps, scaled to the loops pyperf asked for
                plan = bench.plan(ctx, bench.sample)
                elapsed = ctx.target.time_plan(plan, ctx.value)
                if bench.after is not None:
                    bench.after(ctx, plan)
                return elapsed * loops / bench.sample
            total = 0.0
            for start in range(0, loops, CHUNK_OPS):
                plan = bench.plan(ctx, min(CHUNK_OPS, loops - start))
                total += ctx.target.time_plan(plan, ctx.value)
                if bench.after is not None:
                    bench.after(ctx, plan)
            return total
        except Exception as exc:
            # the manager only learns "worker failed": leave it the one-line reason
            with open(self.job.error_path(self.index), "w") as fh:
                fh.write(describe(exc))
            raise


def describe(exc: BaseException) -> str:
    """A failure on one line: a kvctl error's message, or any other exception with its type."""
    return one_line(exc if isinstance(exc, KvctlError) else f"{type(exc).__name__}: {exc}", limit=500)


def _metadata(job: Job, spec: BenchSpec, bench: Bench) -> dict[str, Any]:
    meta = dict(job.metadata)
    meta.update({"kvctl_workload": spec.workload, "kvctl_bench": spec.bench, "kvctl_unit": bench.unit})
    meta.update(spec.metadata)
    return {k: v for k, v in meta.items() if v not in (None, "")}


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        job_path = argv[argv.index("--kvctl-job") + 1]
    except (ValueError, IndexError):
        sys.stderr.write("usage: python -m kvctl.bench.runner --kvctl-job JOB.json\n")
        return 2
    job = Job.load(job_path)
    worker = "--worker" in argv
    if job.kind == "harness":
        _write(job, harness(job), [])
        cost(bench="harness", phase="job", self=cpu_s(), children=cpu_s(-1), wall=time.monotonic() - started)
        return 0

    import pyperf

    runner = pyperf.Runner(program_args=(*python_args(), "--kvctl-job", job_path))
    runner.argparser.add_argument("--kvctl-job")
    # the manager's argument list is explicit; workers get pyperf's own worker options
    inherit = [f"--inherit-environ={COST_ENV}"] if os.environ.get(COST_ENV) else []
    runner.parse_args(argv if worker else [*job.params.pyperf_args(), *inherit, "--quiet", "--kvctl-job", job_path])

    done: list[tuple[BenchSpec, Bench, Any]] = []
    errors: list[dict[str, str]] = []
    for index, spec in enumerate(job.benches):
        bench = get(spec.workload).bench(spec.bench)
        func = TimeFunc(job, spec, index)
        children, t_start = cpu_s(-1), time.monotonic()
        try:
            result = runner.bench_time_func(spec.name, func, inner_loops=bench.inner,
                                            metadata=_metadata(job, spec, bench))
        except (Exception, SystemExit) as exc:
            if worker:
                raise
            # pyperf counts worker tasks only on success: keep the next bench's task id right
            runner._worker_task += 1
            errors.append({"name": spec.name, "workload": spec.workload, "bench": spec.bench,
                           "reason": _worker_reason(job, index, exc)})
            continue
        finally:
            func.close()  # the store this process opened for the bench, if it opened one
            if func.calls:  # a worker's own phases (pyperf ran this bench in this process)
                cost(bench=spec.name, phase="worker", calibrate=any("calibrate" in a for a in argv),
                     before=cpu_s() - sum(c for loops, c in func.calls if loops), calls=func.calls)
            elif not worker:
                cost(bench=spec.name, phase="pyperf", children=cpu_s(-1) - children, wall=time.monotonic() - t_start)
        if not worker and result is not None:
            done.append((spec, bench, result))
    if worker:
        return 0
    errors += _extra_passes(job, job_path, done)
    _write(job, [b for _, _, b in done], errors)
    cost(bench=job.benches[0].name, phase="job", self=cpu_s(), children=cpu_s(-1), wall=time.monotonic() - started)
    return 0


def harness(job: Job) -> list[Any]:
    """The harness's own figures, timed in this process (no workers: nothing here needs isolating).

    Each bench's plan runs on a harness store (empty or bare dict) with pyperf's recipe: loops
    doubled until a value lasts ``min_time``, one warm-up value, then ``processes x values``
    values; stored as pyperf benchmarks so every tool reads them like the others.
    """
    import pyperf

    params = job.params
    out = []
    for spec in job.benches:
        bench = get(spec.workload).bench(spec.bench)
        func = TimeFunc(job, spec, 0)
        loops = 1
        while True:
            raw = func(loops)
            if raw >= params.min_time or loops >= 1 << 26:
                break
            loops *= 2
        warmups = [(loops, func(loops) / loops) for _ in range(max(1, params.warmups))]
        values = [func(loops) / loops for _ in range(params.processes * params.values)]
        meta = {**_metadata(job, spec, bench), "name": spec.name, "loops": loops, "kvctl_in_process": 1}
        out.append(pyperf.Benchmark([pyperf.Run(values, warmups=warmups, metadata=meta)]))
        if func.ctx is not None:
            func.ctx.target.close()
    return out


def _worker_reason(job: Job, index: int, exc: BaseException) -> str:
    path = job.error_path(index)
    try:
        with open(path) as fh:
            return fh.read().strip() or describe(exc)
    except OSError:
        return describe(exc)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def _extra_passes(job: Job, job_path: str, done: list[tuple[BenchSpec, Bench, Any]]) -> list[dict[str, str]]:
    """Latency percentiles, load passes and allocations, in this (manager) process."""
    if job.kind != "store" or not done:
        return []
    workload = get(done[0][0].workload)
    params = job.params
    want_latency = job.network or workload.percentiles
    want_load = bool(params.clients) and (not params.load_workloads or workload.name in params.load_workloads)
    want_alloc = workload.alloc
    if not (want_latency or want_load or want_alloc):
        return []
    errors: list[dict[str, str]] = []
    ctx = actx = empty = floor = None
    separate = bool(job.alloc_url) and job.alloc_url != job.url
    try:
        if want_latency or want_load or (want_alloc and not separate):
            ctx = open_ctx(job, None)
        if want_alloc:
            from kvctl.bench.alloc import ID_BASE

            # one connection per store: a backend locking its files allows no second one
            actx = open_ctx(job, None, url=job.alloc_url) if separate else ctx
            assert actx is not None
            empty = open_ctx(job, "null-async" if actx.target.is_async else "null")
            actx.next_id = empty.next_id = ID_BASE
    except Exception as exc:
        _close(ctx, actx, empty)
        return [{"name": spec.name, "workload": spec.workload, "bench": spec.bench,
                 "reason": f"latency/allocation passes: {describe(exc)}"} for spec, _, _ in done]
    budget = QUICK_BUDGET_S if params.quick else PASS_BUDGET_S
    set_up: set[Any] = set()
    try:
        for spec, bench, result in done:
            meta: dict[str, Any] = {}
            seen_notes = {id(c): len(c.notes) for c in _distinct(ctx, actx)}  # this bench's notes only
            # seconds per plan step (pyperf's values are per inner op: a batch is `inner` ops)
            step_s = result.mean() * max(1, bench.inner) if result.get_nvalue() else None

            def failed(what: str, exc: Exception, spec: BenchSpec = spec) -> None:
                if os.environ.get("KVCTL_BENCH_DEBUG"):
                    traceback.print_exc()
                errors.append({"name": spec.name, "workload": spec.workload, "bench": spec.bench,
                               "reason": f"{what} failed: {describe(exc)}", "partial": "1"})

            t0, w0 = cpu_s(), time.monotonic()
            if ctx is not None:
                try:
                    if bench.setup is not None and bench.setup not in set_up:
                        bench.setup(ctx)
                        set_up.add(bench.setup)
                    if want_latency:
                        if floor is None:
                            floor = open_ctx(job, "null-async" if ctx.target.is_async else "null")
                        meta.update(_latency_meta(ctx, bench, params, step_s, budget, floor))
                except Exception as exc:
                    failed("the latency pass", exc)
                if want_load:
                    try:
                        curve, failure = _load_curve(job, job_path, ctx, spec, bench, step_s)
                        if curve:
                            meta["kvctl_load"] = json.dumps(curve, separators=(",", ":"))
                        if failure is not None:
                            failed("the load pass", failure)
                    except Exception as exc:
                        failed("the load pass", exc)
            t1, w1 = cpu_s(), time.monotonic()
            if actx is not None and empty is not None:
                try:
                    meta.update(_alloc_meta(actx, empty, bench, params.alloc_ops, budget))
                except Exception as exc:
                    failed("the allocation pass", exc)
            cost(bench=spec.name, phase="passes", latency_load=t1 - t0, alloc=cpu_s() - t1,
                 latency_wall=w1 - w0, alloc_wall=time.monotonic() - w1)
            notes = [n for c in _distinct(ctx, actx) for n in c.notes[seen_notes.get(id(c), 0):]]
            if notes:
                meta["kvctl_note"] = "; ".join(dict.fromkeys(notes))
            if meta:
                result.update_metadata(meta)
    finally:
        _close(ctx, actx, empty, floor)
    if want_alloc:
        # after every store of this process is closed: the counting process opens its own
        children, w0 = cpu_s(-1), time.monotonic()
        errors += _instructions(job_path, params.instr_ops, done)
        cost(bench=done[0][0].name, phase="instr", benches=len(done), children=cpu_s(-1) - children,
             wall=time.monotonic() - w0)
    return errors


def _latency_meta(ctx: Any, bench: Bench, params: Any, step_s: float | None, budget: float,
                  floor: Any) -> dict[str, Any]:
    """The latency pass: percentiles of single ops (beside the clock's own cost, ``floor``)."""
    from kvctl.bench.latency import budgeted, latency_pass

    count = budgeted(params.latency_count(), bool(params.ops), step_s, budget)
    pct = latency_pass(ctx, bench, count, floor)
    meta: dict[str, Any] = {f"kvctl_{k}_us": round(v, 3) for k, v in pct.items() if k != "count"}
    meta["kvctl_latency_ops"] = int(pct.get("count", 0))
    meta["kvctl_latency_per"] = bench.latency_per
    return meta


def _alloc_meta(actx: Any, empty: Any, bench: Bench, alloc_ops: int, budget: float) -> dict[str, Any]:
    """The allocation pass: allocations and bytes per op, net of the empty store's."""
    from kvctl.bench.alloc import cpu_step, measure, ops_for

    if bench.setup is not None:
        bench.setup(actx)
        bench.setup(empty)
    n = ops_for(alloc_ops, cpu_step(actx, bench, alloc_ops), budget)
    allocs = measure(actx, bench, n, empty)
    return {"kvctl_allocs_per_op": allocs.allocs_per_op, "kvctl_bytes_per_op": allocs.bytes_per_op,
            "kvctl_alloc_ops": n}


def _instructions(job_path: str, n: int, done: list[tuple[BenchSpec, Bench, Any]]) -> list[dict[str, str]]:
    """Instructions per op under valgrind (see :mod:`kvctl.bench.instr`), as metadata."""
    from kvctl.bench import instr

    try:
        counts, ops, problems = instr.measure_job(job_path, [spec.name for spec, _, _ in done], n)
    except Exception as exc:
        counts, ops, problems = {}, {}, {spec.name: describe(exc) for spec, _, _ in done}
    errors = []
    for spec, _, result in done:
        if spec.name in counts:
            result.update_metadata({"kvctl_instr_per_op": counts[spec.name], "kvctl_instr_ops": ops.get(spec.name, n)})
        elif spec.name in problems:
            errors.append({"name": spec.name, "workload": spec.workload, "bench": spec.bench,
                           "reason": f"the instruction count failed: {problems[spec.name]}", "partial": "1"})
    return errors


def _distinct(*ctxs: Ctx | None) -> list[Ctx]:
    """The contexts, each once (the same one may serve two passes)."""
    out: list[Ctx] = []
    for c in ctxs:
        if c is not None and all(c is not o for o in out):
            out.append(c)
    return out


def _close(*ctxs: Ctx | None) -> None:
    for c in _distinct(*ctxs):
        if c is not None:
            try:
                c.close()
                c.target.close()
            except Exception:
                pass


def _load_curve(job: Job, job_path: str, ctx: Ctx, spec: BenchSpec, bench: Bench, mean_s: float | None
                ) -> tuple[list[dict[str, Any]], Exception | None]:
    """The curve's points, up to the first client count that fails (and that failure)."""
    from kvctl.bench import load
    from kvctl.bench.target import Target

    params = job.params
    curve = []
    if not job.network:
        # the client processes need the store to themselves (some backends lock their files)
        ctx.target.close()
    failure: Exception | None = None
    try:
        for clients in params.clients:
            try:
                if params.executor:
                    from kvctl.bench.cluster_load import cluster_pass

                    point = cluster_pass(job, spec.workload, bench, clients, params.ops, params.duration, mean_s,
                                         params.executor, host_local=bool(ctx.capabilities.host_local)
                                         and not params.executor_here)
                elif job.network:
                    point = load.network_pass(ctx, bench, clients, params.ops, params.duration, mean_s)
                else:
                    point = load.process_pass(job_path, spec.workload, bench, clients, params.ops,
                                              params.duration, mean_s)
            except Exception as exc:
                failure = exc
                break
            point["ops_per_s"] *= bench.inner
            curve.append({k: (round(v, 3) if isinstance(v, float) else v) for k, v in point.items()})
    finally:
        if not job.network:
            ctx.target = Target.open(ctx.url)
    return curve, failure


def _write(job: Job, benchmarks: list[Any], errors: list[dict[str, str]]) -> None:
    suite_json = None
    if benchmarks:
        import pyperf

        buffer = io.StringIO()
        pyperf.BenchmarkSuite(benchmarks).dump(buffer)
        suite_json = json.loads(buffer.getvalue())
    tmp = job.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"suite": suite_json, "errors": errors}, fh)
    os.replace(tmp, job.out)


if __name__ == "__main__":
    sys.exit(main())

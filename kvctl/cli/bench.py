"""`kvctl bench`: measure backends on the seed workloads, report, and gate against a baseline.

Everything heavy (pyperf, memray, the plugins) is imported inside the command, so `kvctl --help`
stays fast.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kvctl.cli.usage import examples

if TYPE_CHECKING:
    from kvctl.bench.gate import Result as GateResult
    from kvctl.bench.params import Choices
    from kvctl.bench.results import Run

HELP = """Benchmark stores with pyperf on the workloads of the seed documents.

With no URL, every registered embedded backend is measured on a fresh store in a temporary
directory; give URLs (optionally NAME=URL) to measure servers: their rows are removed after
(keys under `kvctl-bench:`).  Workloads: gridkv (+ allocations), session, ruv-swarm, gorkflow,
ycsb; --quick runs the GridKV tables with short pyperf settings.

Results print as rich tables; -o FILE saves them (.json: a pyperf suite that `python -m pyperf
stats/compare_to` read, .md, .csv, .html, .mmd).  --baseline FILE compares with a saved run and
exits with status 1 on a regression: instructions per op (valgrind) beyond --instr-tolerance,
allocations beyond --tolerance; times (ratios to the run's own reference, significant and beyond
--min-effect) only with --fail-on time.  It also fails on a baseline row missing from the run
(unless --allow-missing), on a benchmark that errors, and on parameters that differ from the
baseline's.  A run in which a benchmark could not be measured (a server unreachable, a worker
that died) exits with status 8 after saving and printing what it has; the rows say why.
"""


UrlsArg = Annotated[list[str] | None, typer.Argument(
    help="Store URLs, optionally NAME=URL; none: every embedded backend.", show_default=False)]
WorkloadOpt = Annotated[list[str] | None, typer.Option(
    "--workload", help="gridkv, session, ruv-swarm, gorkflow, ycsb or all (repeat or comma-separate).",
    show_default=False)]
QuickOpt = Annotated[bool, typer.Option("--quick", help="A short run of the GridKV tables (CI, smoke).")]
ValueSizeOpt = Annotated[int | None, typer.Option("--value-size", min=0, help="Bytes per value (default 100).",
                                               show_default=False)]
KeysOpt = Annotated[int | None, typer.Option("--keys", min=1, help="Pre-filled keys / YCSB records (default 1000).",
                                         show_default=False)]
OpsOpt = Annotated[int | None, typer.Option("--ops", min=1, help="Ops per latency pass and per client in load "
                                        "passes (default: by duration).", show_default=False)]
DurationOpt = Annotated[str | None, typer.Option("--duration", help="Length of each load pass (default 2s).",
                                             show_default=False)]
ClientsOpt = Annotated[str | None, typer.Option("--clients", help="Concurrent clients for load passes: N or a "
                                            "curve like 1,2,4,8 (tasks for servers, processes for embedded).",
                                            show_default=False)]
DistributionOpt = Annotated[str | None, typer.Option("--distribution", help="YCSB request distribution for every "
                                                 "core workload: zipfian, uniform, latest.",
                                                 show_default=False)]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed of every random choice (default 42).",
                                         show_default=False)]
ProcessesOpt = Annotated[int | None, typer.Option("--processes", min=1, help="pyperf worker processes per bench.",
                                              show_default=False)]
ValuesOpt = Annotated[int | None, typer.Option("--values", min=1, help="pyperf values per worker.",
                                           show_default=False)]
MinTimeOpt = Annotated[float | None, typer.Option("--min-time", min=0.001, help="pyperf seconds per value.",
                                               show_default=False)]
PinOpt = Annotated[str | None, typer.Option("--pin", help="Pin pyperf workers to these CPUs (e.g. 1 or 0-1).",
                                        show_default=False)]
OutputOpt = Annotated[list[Path] | None, typer.Option(
    "--output", "-o", help="Save the run: .json (pyperf), .md, .csv, .html, .mmd, .txt; repeatable.",
    show_default=False)]
FormatOpt = Annotated[str | None, typer.Option(
    "--format", "-f", help="markdown, csv, json, mermaid or html: for stdout, or for -o FILE.",
    show_default=False)]
BaselineOpt = Annotated[Path | None, typer.Option("--baseline", help="Compare with this saved run; exit 1 on a "
                                              "regression.", show_default=False)]
FailOnOpt = Annotated[str | None, typer.Option("--fail-on", help="What fails the gate: a list of instructions, "
                                            "allocs, time; or all, none (default instructions,allocs).",
                                            show_default=False)]
ToleranceOpt = Annotated[str | None, typer.Option("--tolerance", help="Allowed rise of allocs/op and bytes/op "
                                              "(default 2%).", show_default=False)]
InstrToleranceOpt = Annotated[str | None, typer.Option("--instr-tolerance", help="Allowed rise of "
                                                    "instructions/op (default 1%).", show_default=False)]
AllowMissingOpt = Annotated[bool, typer.Option("--allow-missing", help="A baseline benchmark missing from the "
                                            "run warns instead of failing the gate.")]
MinEffectOpt = Annotated[str | None, typer.Option("--min-effect", help="Smallest time change that can fail "
                                               "(default 10%).", show_default=False)]
SuiteOpt = Annotated[Path | None, typer.Option("--suite", help="A TOML file of these options (the command "
                                           "line wins).", show_default=False)]
FromOpt = Annotated[Path | None, typer.Option("--from", help="Report on (or gate) a saved run instead of "
                                           "running.", show_default=False)]
EmbeddedOpt = Annotated[bool, typer.Option("--embedded", help="Also every embedded backend (the default when "
                                       "no URL is given).")]
LoadWorkloadsOpt = Annotated[str | None, typer.Option("--load-workloads", help="Only these workloads get the "
                                                   "--clients load passes (default: all).",
                                                   show_default=False)]
ExecutorOpt = Annotated[str, typer.Option(
    "--executor", envvar="KVCTL_EXECUTOR", help=(
        "Where the load passes' clients run (--clients): local (here), dask://local (a Dask cluster "
        "started here), dask://HOST:PORT or dask+tls://HOST:PORT (a Dask scheduler's workers, each "
        "opening the store; latencies of every op are merged).  Single-client passes run here."))]
KeepOpt = Annotated[bool, typer.Option("--keep", help="Keep the keys written into the stores given.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="The same as --format json.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines; with -o, no tables either.")
                 ]


def bench(
    urls: UrlsArg = None,
    workload: WorkloadOpt = None,
    quick: QuickOpt = False,
    value_size: ValueSizeOpt = None,
    keys: KeysOpt = None,
    ops: OpsOpt = None,
    duration: DurationOpt = None,
    clients: ClientsOpt = None,
    distribution: DistributionOpt = None,
    seed: SeedOpt = None,
    processes: ProcessesOpt = None,
    values: ValuesOpt = None,
    min_time: MinTimeOpt = None,
    pin: PinOpt = None,
    output: OutputOpt = None,
    fmt: FormatOpt = None,
    baseline: BaselineOpt = None,
    fail_on: FailOnOpt = None,
    tolerance: ToleranceOpt = None,
    instr_tolerance: InstrToleranceOpt = None,
    allow_missing: AllowMissingOpt = False,
    min_effect: MinEffectOpt = None,
    suite: SuiteOpt = None,
    from_: FromOpt = None,
    embedded: EmbeddedOpt = False,
    load_workloads: LoadWorkloadsOpt = None,
    keep: KeepOpt = False,
    executor: ExecutorOpt = "local",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Benchmark stores (pyperf), report, and gate against a baseline."""
    from kvctl.bench import gate as gate_mod
    from kvctl.bench import report
    from kvctl.bench.params import Choices, read_suite
    from kvctl.bench.results import Run
    from kvctl.errors import UsageError

    choices = Choices(read_suite(suite) if suite else {})
    if as_json:
        if fmt not in (None, "json"):
            raise UsageError(f"give --json or --format {fmt}, not both")
        fmt = "json"
    if fmt is not None:
        report.check_format(fmt)
    options = choices.gate(fail_on=fail_on, tolerance=tolerance, instr_tolerance=instr_tolerance,
                           min_effect=min_effect, allow_missing=allow_missing)
    base_run = Run.load(str(baseline)) if baseline else None  # a bad baseline fails before a long run
    if from_ is not None:
        run, cleanup = Run.load(str(from_)), None
    else:
        given = {"value_size": value_size, "keys": keys, "ops": ops, "seed": seed, "processes": processes,
                 "values": values, "min_time": min_time, "distribution": distribution, "duration": duration,
                 "clients": clients, "load_workloads": load_workloads, "pin": pin}
        run, cleanup = _execute(choices, urls, workload, given, quick=quick, embedded=embedded, keep=keep,
                                quiet=quiet, executor=executor)
    gate_result = gate_mod.compare(run, base_run, options) if base_run is not None else None
    extra = [gate_result.table()] if gate_result is not None else []
    _save(run, output or [], fmt, extra, quiet)
    if cleanup is not None:
        cleanup()  # the results are saved first: a slow or failing cleanup must not lose them
    _show(run, fmt, extra, gate_result, shown=not (quiet and output), to_stdout=fmt is not None and not output)
    if gate_result is not None:
        _gate(gate_result)
    if from_ is None:
        _raise_if_failed(run.info.get("errors", []))


def _execute(choices: Choices, urls: list[str] | None, workload: list[str] | None, given: dict[str, Any], *,
             quick: bool, embedded: bool, keep: bool, quiet: bool, executor: str = "local",
             ) -> tuple[Run, Callable[[], None]]:
    """Run the benchmarks; the run, and how to remove what they wrote."""
    import contextlib
    import dataclasses
    import os

    from kvctl.bench import workloads
    from kvctl.bench.suite import Spec, cleanup, execute
    from kvctl.cli.context import STATE, scrub
    from kvctl.cli.output import warn
    from kvctl.cli.progress import ProgressBar, show_progress
    from kvctl.engines.distributed.cluster import connect
    from kvctl.engines.distributed.executor import parse_executor
    from kvctl.engines.reporting import Counts
    from kvctl.engines.reporting import Progress as ReportedProgress
    from kvctl.errors import UsageError

    is_quick = choices.flag(quick, "quick")
    chosen = workloads.resolve(list(workload or choices.suite.get("workloads", [])), quick=is_quick)
    params = choices.params(given, quick=is_quick)
    targets = list(urls or choices.suite.get("urls", []))
    STATE.seen_urls.extend(targets)  # so any message scrubs their secrets
    where = parse_executor(executor)
    if where.kind != "local" and not params.clients:
        raise UsageError("--executor runs the load passes' clients on the workers: give --clients too")
    started = time.monotonic()
    with (contextlib.nullcontext() if where.kind == "local" else
          connect(where, min(max(params.clients or [1]), os.cpu_count() or 1)) as cluster,
          ProgressBar(show_progress(quiet), unit="jobs") as bar):
        if cluster is not None:
            params = dataclasses.replace(params, executor=cluster.scheduler.address,
                                         executor_here=where.address is None)
        spec = Spec(urls=targets, workloads=chosen, params=params, keep=keep,
                    embedded=choices.flag(embedded, "embedded"), argv=_argv_for_record())

        def jobs_done(done: int, total: int) -> None:
            bar.progress(ReportedProgress("bench", Counts(read=done), total, time.monotonic() - started))

        run, found = execute(spec, None if quiet else (lambda message: bar.say(scrub(message))), jobs_done)

    def clean() -> None:
        for problem in cleanup(spec, found):
            warn(problem)

    return run, clean


def _save(run: Run, outputs: list[Path], fmt: str | None, extra: list[Any], quiet: bool) -> None:
    """Write the run to every -o FILE, in the format its name (or --format, for one file) says."""
    from kvctl.bench import report
    from kvctl.cli.output import info

    for path in outputs:
        kind = report.format_for(str(path), fmt if len(outputs) == 1 else None)
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "json":
            run.save(str(path))  # .json.gz: compressed, as pyperf reads too
        elif kind == "mermaid":
            files = report.mermaid_files(run, path)  # a .mmd file holds one diagram
            for chart_path, text in files:
                chart_path.write_text(text)
            if not quiet:
                info(f"wrote {', '.join(str(p) for p, _ in files) or 'no chart'} (mermaid, one diagram per file)")
            continue
        else:
            path.write_text(report.render(run, kind, extra if kind in ("markdown", "html", "rich") else None))
        if not quiet:
            info(f"wrote {path} ({kind})")


def _show(run: Run, fmt: str | None, extra: list[Any], gate_result: GateResult | None, *, shown: bool,
          to_stdout: bool) -> None:
    """The run on stdout: in --format, else as rich tables (unless --quiet with -o)."""
    from kvctl.bench import report
    from kvctl.cli.output import console

    if to_stdout:
        assert fmt is not None
        sys.stdout.write(report.render(run, fmt, extra if fmt in ("markdown", "html") else None))
        if gate_result is not None and fmt not in ("markdown", "html"):
            report.rich_print([gate_result.table()], console(stderr=True))
    elif shown:
        report.rich_print(report.tables(run) + extra, console(width=None if sys.stdout.isatty() else 160))


def _gate(gate_result: GateResult) -> None:
    """The gate's warnings; exit 1 when it failed."""
    from kvctl.cli.context import scrub
    from kvctl.cli.output import warn

    for w in gate_result.warnings:
        warn(w)
    if gate_result.failed:
        sys.stderr.write(f"kvctl: bench gate failed: {scrub(gate_result.failure_summary())}\n")
        raise typer.Exit(1)


def _raise_if_failed(errors: list[dict[str, Any]]) -> None:
    """A run with failed benchmarks must not look like success to a script that only saves it.
    A benchmark measured whose extra pass failed (latency, load, allocations: "partial") has its
    row, with the failure noted: that alone is not a failed run."""
    from kvctl.errors import IncompleteError

    errors = [e for e in errors if not e.get("partial")]
    if not errors:
        return
    names = list(dict.fromkeys(e.get("name") or e.get("backend") or "?" for e in errors))
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise IncompleteError(f"{len(names)} benchmark(s) failed: {shown}; first reason: "
                          f"{errors[0].get('reason') or 'unknown'}")


def _argv_for_record() -> list[str]:
    """The command line as run, secrets redacted, for the saved run's record."""
    from kvctl.url import redact

    args = sys.argv[1:]
    if "bench" in args:
        args = args[args.index("bench") + 1:]
    return [redact(a) for a in args]


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("bench", help=HELP, epilog=examples(
        "kvctl bench --quick                      # every embedded backend, short",
        "kvctl bench redis://localhost:6379/0 --workload ycsb --clients 1,4,16",
        "kvctl bench --quick -o run.json --baseline main.json",
    ))(bench)

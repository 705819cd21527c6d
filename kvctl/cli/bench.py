"""`kvctl bench`: measure backends on the seed workloads, report, and gate against a baseline.

Everything heavy (pyperf, memray, the plugins) is imported inside the command, so `kvctl --help`
stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from kvctl.cli.usage import examples

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


def _percent(text: str, name: str) -> float:
    from kvctl.errors import UsageError

    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(f"{name} {text!r} is not a fraction (use e.g. 2% or 0.02)") from None
    if not 0 <= value < 10:
        raise UsageError(f"{name} {text!r} is out of range")
    return value


def _clients(text: str) -> list[int]:
    from kvctl.errors import UsageError

    try:
        values = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise UsageError(f"--clients {text!r}: expected a number or a list like 1,2,4,8") from None
    if not values or any(v < 1 or v > 1024 for v in values):
        raise UsageError(f"--clients {text!r}: each count must be between 1 and 1024")
    return [] if values == [1] else values


def _suite_file(path: Path) -> dict[str, Any]:
    import tomllib

    from kvctl.errors import UsageError

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"cannot read suite file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"suite file {path} is not valid TOML: {exc}") from None
    suite = data.get("suite", data)
    known = {"urls", "workloads", "quick", "value_size", "keys", "ops", "duration", "clients", "distribution",
             "seed", "processes", "values", "min_time", "pin", "fail_on", "tolerance", "min_effect",
             "description", "alloc_ops", "instr_ops", "instr_tolerance", "allow_missing", "embedded",
             "load_workloads"}
    unknown = sorted(set(suite) - known)
    if unknown:
        raise UsageError(f"suite file {path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return dict(suite)


def bench(
    urls: Annotated[list[str] | None, typer.Argument(
        help="Store URLs, optionally NAME=URL; none: every embedded backend.", show_default=False)] = None,
    workload: Annotated[list[str] | None, typer.Option(
        "--workload", help="gridkv, session, ruv-swarm, gorkflow, ycsb or all (repeat or comma-separate).",
        show_default=False)] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A short run of the GridKV tables (CI, smoke).")] = False,
    value_size: Annotated[int | None, typer.Option("--value-size", min=0, help="Bytes per value (default 100).",
                                                   show_default=False)] = None,
    keys: Annotated[int | None, typer.Option("--keys", min=1, help="Pre-filled keys / YCSB records (default 1000).",
                                             show_default=False)] = None,
    ops: Annotated[int | None, typer.Option("--ops", min=1, help="Ops per latency pass and per client in load "
                                            "passes (default: by duration).", show_default=False)] = None,
    duration: Annotated[str | None, typer.Option("--duration", help="Length of each load pass (default 2s).",
                                                 show_default=False)] = None,
    clients: Annotated[str | None, typer.Option("--clients", help="Concurrent clients for load passes: N or a "
                                                "curve like 1,2,4,8 (tasks for servers, processes for embedded).",
                                                show_default=False)] = None,
    distribution: Annotated[str | None, typer.Option("--distribution", help="YCSB request distribution for every "
                                                     "core workload: zipfian, uniform, latest.",
                                                     show_default=False)] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of every random choice (default 42).",
                                             show_default=False)] = None,
    processes: Annotated[int | None, typer.Option("--processes", min=1, help="pyperf worker processes per bench.",
                                                  show_default=False)] = None,
    values: Annotated[int | None, typer.Option("--values", min=1, help="pyperf values per worker.",
                                               show_default=False)] = None,
    min_time: Annotated[float | None, typer.Option("--min-time", min=0.001, help="pyperf seconds per value.",
                                                   show_default=False)] = None,
    pin: Annotated[str | None, typer.Option("--pin", help="Pin pyperf workers to these CPUs (e.g. 1 or 0-1).",
                                            show_default=False)] = None,
    output: Annotated[list[Path] | None, typer.Option(
        "--output", "-o", help="Save the run: .json (pyperf), .md, .csv, .html, .mmd, .txt; repeatable.",
        show_default=False)] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", "-f", help="markdown, csv, json, mermaid or html: for stdout, or for -o FILE.",
        show_default=False)] = None,
    baseline: Annotated[Path | None, typer.Option("--baseline", help="Compare with this saved run; exit 1 on a "
                                                  "regression.", show_default=False)] = None,
    fail_on: Annotated[str | None, typer.Option("--fail-on", help="What fails the gate: a list of instructions, "
                                                "allocs, time; or all, none (default instructions,allocs).",
                                                show_default=False)] = None,
    tolerance: Annotated[str | None, typer.Option("--tolerance", help="Allowed rise of allocs/op and bytes/op "
                                                  "(default 2%).", show_default=False)] = None,
    instr_tolerance: Annotated[str | None, typer.Option("--instr-tolerance", help="Allowed rise of "
                                                        "instructions/op (default 2%).", show_default=False)] = None,
    allow_missing: Annotated[bool, typer.Option("--allow-missing", help="A baseline benchmark missing from the "
                                                "run warns instead of failing the gate.")] = False,
    min_effect: Annotated[str | None, typer.Option("--min-effect", help="Smallest time change that can fail "
                                                   "(default 10%).", show_default=False)] = None,
    suite: Annotated[Path | None, typer.Option("--suite", help="A TOML file of these options (the command "
                                               "line wins).", show_default=False)] = None,
    from_: Annotated[Path | None, typer.Option("--from", help="Report on (or gate) a saved run instead of "
                                               "running.", show_default=False)] = None,
    embedded: Annotated[bool, typer.Option("--embedded", help="Also every embedded backend (the default when "
                                           "no URL is given).")] = False,
    load_workloads: Annotated[str | None, typer.Option("--load-workloads", help="Only these workloads get the "
                                                       "--clients load passes (default: all).",
                                                       show_default=False)] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the keys written into the stores given.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The same as --format json.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines; with -o, no tables either.")
                     ] = False,
) -> None:
    """Benchmark stores (pyperf), report, and gate against a baseline."""
    from kvctl.bench import gate as gate_mod
    from kvctl.bench import report, workloads
    from kvctl.bench.params import Params
    from kvctl.bench.results import Run
    from kvctl.cli.context import STATE, scrub
    from kvctl.cli.output import console, info, warn
    from kvctl.errors import UsageError
    from kvctl.url import parse_duration_ms

    conf = _suite_file(suite) if suite else {}

    def pick(value: Any, name: str, default: Any = None) -> Any:
        return value if value is not None else conf.get(name, default)

    if as_json:
        if fmt not in (None, "json"):
            raise UsageError(f"give --json or --format {fmt}, not both")
        fmt = "json"
    if fmt is not None:
        report.check_format(fmt)
    fail = str(pick(fail_on, "fail_on", gate_mod.DEFAULT_FAIL_ON))
    gate_mod.parse_fail_on(fail)  # a bad value fails before a long run
    options = gate_mod.Options(tolerance=_percent(str(pick(tolerance, "tolerance", "2%")), "--tolerance"),
                               instr_tolerance=_percent(str(pick(instr_tolerance, "instr_tolerance", "2%")),
                                                        "--instr-tolerance"),
                               min_effect=_percent(str(pick(min_effect, "min_effect", "10%")), "--min-effect"),
                               fail_on=fail, allow_missing=bool(pick(allow_missing or None, "allow_missing", False)))
    base_run = Run.load(str(baseline)) if baseline else None  # a bad baseline fails before a long run

    if from_ is not None:
        run = Run.load(str(from_))
    else:
        is_quick = bool(pick(quick or None, "quick", False))
        chosen = workloads.resolve(list(workload or conf.get("workloads", [])), quick=is_quick)
        overrides: dict[str, Any] = {}
        for name, value in (("value_size", value_size), ("keys", keys), ("ops", ops), ("seed", seed),
                            ("processes", processes), ("values", values), ("min_time", min_time),
                            ("distribution", distribution), ("alloc_ops", None), ("instr_ops", None)):
            v = pick(value, name)
            if v is not None:
                overrides[name] = v
        dur = pick(duration, "duration")
        if dur is not None:
            overrides["duration"] = parse_duration_ms(str(dur)) / 1000.0
        cl = pick(clients, "clients")
        if cl is not None:
            overrides["clients"] = _clients(",".join(map(str, cl)) if isinstance(cl, list) else str(cl))
        lw = pick(load_workloads, "load_workloads")
        if lw is not None:
            names = lw if isinstance(lw, list) else str(lw).split(",")
            overrides["load_workloads"] = [workloads.get(n.strip().lower()).name for n in names if n.strip()]
        affinity = pick(pin, "pin")
        if affinity is not None:
            overrides["affinity"] = str(affinity)
        if overrides.get("distribution") is not None:
            from kvctl.bench.ycsb import DISTRIBUTIONS

            if overrides["distribution"] not in DISTRIBUTIONS:
                raise UsageError(f"--distribution {overrides['distribution']!r}: use one of {', '.join(DISTRIBUTIONS)}")
        params = Params.quick_defaults(**overrides) if is_quick else Params(**overrides)
        targets = list(urls or conf.get("urls", []))
        from kvctl.bench.suite import Spec, cleanup, execute

        STATE.seen_urls.extend(targets)  # so any message scrubs their secrets
        progress = None if quiet else (lambda message: info(scrub(message)))
        spec = Spec(urls=targets, workloads=chosen, params=params, keep=keep,
                    embedded=bool(pick(embedded or None, "embedded", False)), argv=_argv_for_record())
        run, found = execute(spec, progress)

    gate_result = gate_mod.compare(run, base_run, options) if base_run is not None else None
    extra = [gate_result.table()] if gate_result is not None else []

    for path in output or []:
        kind = report.format_for(str(path), fmt if len(output or []) == 1 else None)
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
    if from_ is None:
        # the results are saved first: a slow or failing cleanup must not lose them
        for problem in cleanup(spec, found):
            warn(problem)
    if fmt is not None and not output:
        sys.stdout.write(report.render(run, fmt, extra if fmt in ("markdown", "html") else None))
        if gate_result is not None and fmt not in ("markdown", "html"):
            report.rich_print([gate_result.table()], console(stderr=True))
    elif not (quiet and output):
        report.rich_print(report.tables(run) + extra, console(width=None if sys.stdout.isatty() else 160))
    if gate_result is not None:
        for w in gate_result.warnings:
            warn(w)
        if gate_result.failed:
            sys.stderr.write(f"kvctl: bench gate failed: {scrub(gate_result.failure_summary())}\n")
            raise typer.Exit(1)
    if from_ is None:
        _raise_if_failed(run.info.get("errors", []))


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

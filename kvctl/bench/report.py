"""Turn a :class:`~kvctl.bench.results.Run` into tables and charts, then into text.

Building and rendering are separate: :func:`tables` and :func:`charts` make format-free
:class:`Table` and :class:`Chart` objects (each table carries the parameters line printed beside
it); the renderers write them as rich tables, Markdown, CSV, Mermaid ``xychart-beta`` charts (the
form of the chart in Session's document) or one self-contained HTML page with inline-SVG bars.
``json`` is the saved run itself (pyperf-compatible).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from kvctl.bench import seeds, workloads, ycsb
from kvctl.bench.instr import OP_BUDGET
from kvctl.bench.report_html import to_html
from kvctl.bench.report_md import _mermaid_chart, markdown, mermaid, to_csv
from kvctl.bench.report_types import Chart, Curve, Table
from kvctl.bench.results import EMPTY, REFERENCE, Row, Run, fmt_float
from kvctl.errors import UsageError

FORMATS = ("rich", "markdown", "csv", "json", "mermaid", "html")
_EXTENSIONS = {".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".json": "json", ".mmd": "mermaid",
               ".mermaid": "mermaid", ".html": "html", ".htm": "html", ".txt": "rich"}
_PCT = ("p50", "p95", "p99", "p99.9")


def format_for(path: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    import os

    base = path[:-3] if path.lower().endswith(".gz") else path
    ext = os.path.splitext(base)[1].lower()
    return _EXTENSIONS.get(ext, "json")


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise UsageError(f"unknown format {name!r} (known: {', '.join(FORMATS)})")
    return name


# -- building ---------------------------------------------------------------------------------------

def _scale(unit: str) -> tuple[float, str]:
    return (1e3, "ms") if unit == "ms" else (1e6, "µs")


def _mean_sd(row: Row, factor: float) -> str:
    mean, sd = row.mean, row.stdev
    if mean is None:
        return "-"
    text = fmt_float(mean * factor)
    return f"{text} ± {fmt_float(sd * factor, 2)}" if sd is not None else text


def _ops(row: Row) -> str:
    ops = row.ops_per_s
    if ops is None:
        return "-"
    return f"{ops:,.0f}" if ops >= 100 else f"{ops:.3g}"


def _pct_cells(row: Row, factor_from_us: float) -> list[str]:
    pct = row.percentiles()
    return [fmt_float(pct[k] * factor_from_us) if k in pct else "-" for k in _PCT]


def _unit_word(row: Row) -> str:
    return {"op": "op", "record": "record", "txn": "txn", "pair": "pair"}.get(row.unit, row.unit)


def _run_params(run: Run) -> str:
    p = run.info.get("params", {})
    m = run.machine()
    parts = []
    if p:
        parts.append(f"values {p.get('value_size')} B, {p.get('keys')} pre-filled keys, seed {p.get('seed')}")
        parts.append(f"pyperf {p.get('processes')} processes x {p.get('values')} values "
                     f"(min {p.get('min_time')} s each)")
    parts.append(f"Python {m.get('python', '?')} on {m.get('cpu_model', '?')} x{m.get('cpu_count', '?')} "
                 f"({m.get('arch', '?')}), CPU pinning {m.get('cpu_pinning', 'none')}")
    return "; ".join(parts)


def _backend_rows(run: Run) -> dict[str, dict[str, Any]]:
    return {b.get("label", ""): b for b in run.info.get("backends", [])}


def overview(run: Run) -> list[Table]:
    info = run.info
    m = run.machine()
    rows = [["command", info.get("command", "-")], ["created", info.get("created", "-")],
            ["machine", f"{m.get('cpu_model', '?')} x{m.get('cpu_count', '?')}, {m.get('platform', '?')}"],
            ["python", f"{m.get('python', '?')} ({m.get('implementation', '?')})"],
            ["CPU pinning", str(m.get("cpu_pinning", "none"))],
            ["load average at start", str(m.get("load_avg_1min", "-"))],
            ["run took", f"{info.get('duration_s', '-')} s"]]
    empty = run.row(EMPTY)
    if empty is not None and empty.mean is not None:
        rows.append(["harness cost per op (empty op)", f"{empty.mean * 1e6:.3f} µs"])
    empty_async = run.row(EMPTY + "-async")
    if empty_async is not None and empty_async.mean is not None:
        rows.append(["harness cost per op, async (empty await)", f"{empty_async.mean * 1e6:.3f} µs"])
    ref = run.row(REFERENCE)
    if ref is not None and ref.mean is not None:
        rows.append(["reference (bare dict, GridKV Mixed plan)", f"{ref.mean * 1e6:.3f} µs/op"])
    tables = [Table("Run", ["", ""], rows, key="run")]
    backends = info.get("backends", [])
    if backends:
        brow = [[b.get("label", ""), b.get("url", ""), "embedded" if b.get("embedded") else "network",
                 b.get("durability", "") or "-", b.get("drivers", "") or "-",
                 b.get("status", "") + (f": {b.get('reason')}" if b.get("reason") else "")] for b in backends]
        tables.append(Table("Backends", ["backend", "URL", "kind", "durability", "drivers", "status"], brow,
                            key="backends"))
    return tables


def instability(run: Run) -> dict[str, list[str]]:
    """pyperf's own "the benchmark result may be unstable" warnings, by benchmark name (what
    ``python -m pyperf check`` prints), so the tables never show a shaky ``mean ± sd`` bare.
    pyperf's "not enough samples" is left out: it says what the table's "N processes x M
    values" already says, on nearly every row of a short run."""
    try:
        from pyperf._cli import format_checks
    except ImportError:  # pyperf's layout changed: the tables go without these notes
        return {}
    out = {}
    for bench in run.benchmarks():
        lines = [ln[2:] for ln in format_checks(bench) if ln.startswith("* ") and "Not enough samples" not in ln]
        if lines:
            out[bench.get_name()] = lines
    return out


def workload_tables(run: Run) -> list[Table]:
    rows = [r for r in run.rows() if r.workload in workloads.WORKLOADS]
    unstable = instability(run)
    params = _run_params(run)
    distribution = run.info.get("params", {}).get("distribution")
    tables: list[Table] = []
    for w in workloads.WORKLOADS.values():
        wrows = [r for r in rows if r.workload == w.name]
        if not wrows:
            continue
        factor, unit = _scale(w.time_unit)
        has_pct = any(r.percentiles() for r in wrows)
        cols = ["backend", "bench"]
        if w.name == "ycsb":
            cols.append("distribution")
        if w.throughput:
            cols.append("ops/s")
        cols.append(f"mean {unit} ± sd")
        if has_pct:
            cols += [f"{k} {unit}" for k in _PCT]
        cols.append("per")
        body: list[list[str]] = []
        order = {b.name: i for i, b in enumerate(w.benches)}
        notes: list[str] = []
        for r in sorted(wrows, key=lambda r: (r.backend, order.get(r.bench, 99))):
            cells = [r.backend, r.bench]
            if w.name == "ycsb":
                core = ycsb.WORKLOADS.get(r.bench)
                cells.append(distribution or (core.distribution if core else "-"))
            if not r.ok:
                width = len(cols) - len(cells)
                cells += [f"{r.status}: {r.reason}"] + [""] * (width - 1)
                body.append(cells)
                continue
            if w.throughput:
                cells.append(_ops(r))
            cells.append(_mean_sd(r, factor))
            if has_pct:
                cells += _pct_cells(r, factor / 1e6)
            cells.append(_unit_word(r))
            body.append(cells)
            note = r.get("note")
            if note:
                notes.append(f"{r.backend}: {note}")
            if r.name in unstable:
                cells[cols.index(f"mean {unit} ± sd")] += " (unstable)"
                notes.append(f"pyperf: {r.name} may be unstable: {'; '.join(unstable[r.name])}")
            clock = r.get("clock_p50_us")
            if clock is not None and r.percentiles():
                notes.append(f"{r.backend}: the clock's own cost (an empty op timed the same way) p50 "
                             f"{clock:.3f} µs, p99 {r.get('clock_p99_us') or clock:.3f} µs, resolution "
                             f"{r.get('clock_res_us') or 0:.3f} µs: percentiles near it are mostly the clock")
            per = r.get("latency_per")
            if per and per != "op" and r.percentiles():
                notes.append(f"{r.bench}: percentiles per {per}")
        pct_note = ("percentiles: every op timed on its own (network backends, and latency tables); "
                    "the mean ± sd is pyperf's over batch means")
        desc = f"{w.source}. {w.description}. {params}"
        notes = list(dict.fromkeys(notes))
        tables.append(Table(w.title, cols, body, params=desc, notes=([pct_note] if has_pct else []) + notes,
                            key=w.name))
        if w.alloc:
            counted = _counts_table(run, w, sorted(wrows, key=lambda r: (r.backend, order.get(r.bench, 99))),
                                    factor, unit)
            if counted is not None:
                tables.append(counted)
    return tables


def _counts_table(run: Run, w: workloads.Workload, rows: list[Row], factor: float, unit: str) -> Table | None:
    """Time, instructions and allocations per op side by side: the figures the gate compares."""
    counted = [r.get("instr_ops") for r in rows if r.ok and r.get("instr_ops")]
    ni = max(set(counted), key=counted.count) if counted else None  # the run's N; a costly bench's is less

    def instructions(r: Row) -> str:
        cell = fmt_float(r.get("instr_per_op"), 4)
        return cell if r.get("instr_ops") in (None, ni) else f"{cell} (N {r.get('instr_ops')})"

    body = [[r.backend, r.bench, _mean_sd(r, factor), instructions(r),
             fmt_float(r.get("allocs_per_op"), 4), fmt_float(r.get("bytes_per_op"), 4)]
            for r in rows if r.ok and (r.get("allocs_per_op") is not None or r.get("instr_per_op") is not None)]
    if not body:
        return None
    n = next((r.get("alloc_ops") for r in rows if r.get("alloc_ops")), "?")
    counter = run.info.get("instructions") or {}
    if ni is not None:
        fewer = "" if set(counted) == {ni} else (
            f"; a bench beyond {OP_BUDGET:,} instructions/op is counted over fewer ops (its N beside it)")
        instr = (f"instructions: {counter.get('tool', 'valgrind callgrind')}, N = {ni} and {2 * ni} ops "
                 "(PYTHONHASHSEED=0, MALLOC_MMAP_THRESHOLD_=4096, GC paused), difference / N, "
                 f"minus the same plan on the empty store{fewer}")
    else:
        instr = f"instructions: not counted ({counter.get('missing', 'no count in this run')})"
    return Table(
        f"{w.title}: time, instructions and allocations per op",
        ["backend", "bench", f"mean {unit} ± sd", "instructions/op", "allocs/op", "bytes/op"], body,
        params=f"{instr}; allocations: memray, cumulative, N = {n} and "
               f"{2 * n if isinstance(n, int) else '2N'} ops, difference / N, minus the same plan on the "
               "empty store; allocation records counted (Python allocators and malloc), GC paused",
        key=f"{w.name}-alloc")


def load_table(run: Run) -> list[Table]:
    body = []
    for r in run.rows():
        for point in r.load_curve() if r.ok else []:
            body.append([r.backend, f"{r.workload} {r.bench}", str(point.get("clients")),
                         f"{point.get('ops_per_s', 0):,.0f}", fmt_float(point.get("p50")),
                         fmt_float(point.get("p99")), fmt_float(point.get("p99.9"))])
    if not body:
        return []
    p = run.info.get("params", {})
    shape = f"{p.get('ops')} ops per client" if p.get("ops") else f"{p.get('duration')} s per point"
    return [Table("Throughput versus clients", ["backend", "bench", "clients", "ops/s", "p50 µs", "p99 µs",
                                                 "p99.9 µs"], body,
                  params=f"network backends: asyncio tasks sharing one store; embedded backends: one process "
                         f"per client; {shape}", key="load")]


def _seed_kvctl_figure(fig: seeds.SeedFigure, rows: list[Row]) -> str:
    parts = []
    for bench in fig.benches:
        r = next((x for x in rows if x.bench == bench), None)
        if r is None or not r.ok:
            continue
        label = f"{bench} " if len(fig.benches) > 1 else ""
        if fig.measure == "alloc":
            b, a = r.get("bytes_per_op"), r.get("allocs_per_op")
            if a is not None:
                parts.append(f"{label}{fmt_float(b, 4)} B/op, {fmt_float(a, 4)} allocs/op")
        elif fig.measure == "ops":
            parts.append(f"{label}{_ops(r)} {r.unit}s/s ({fmt_float(r.mean * 1e3 if r.mean else None)} ms)")
        else:
            mean = r.mean or 0.0
            text = f"{fmt_float(mean * 1e6)} µs" if mean < 1e-3 else f"{fmt_float(mean * 1e3)} ms"
            pct = r.percentiles()
            if "p99" in pct:
                text += f" (p99 {fmt_float(pct['p99'])} µs)"
            parts.append(f"{label}{text}")
    return "; ".join(parts)


def seed_table(run: Run) -> list[Table]:
    rows = run.rows()
    families = {b.get("label"): b.get("family") for b in run.info.get("backends", [])}
    ran = {r.workload for r in rows if r.ok}
    body: list[list[str]] = []
    missing: list[str] = []
    footnotes: dict[str, int] = {}

    def mark(text: str) -> str:
        footnotes.setdefault(text, len(footnotes) + 1)
        return f"[{footnotes[text]}]"

    for fig in seeds.FIGURES:
        if fig.workload not in ran:
            continue
        published = f"{fig.figure} on {fig.hardware}" if fig.hardware != seeds.NOT_STATED else fig.figure
        matched = False
        for backend in sorted({r.backend for r in rows if r.workload == fig.workload}):
            if families.get(backend) not in fig.families:
                continue
            mine = [r for r in rows if r.workload == fig.workload and r.backend == backend]
            text = _seed_kvctl_figure(fig, mine)
            if text:
                matched = True
                kind = seeds.PROJECTS.get(fig.seed)
                body.append([f"{fig.seed} ({kind})" if kind else fig.seed, f"{fig.table}: {fig.row}", published,
                             backend, text, mark(fig.caveat)])
        if not matched:
            wanted = " or ".join(fig.families) if fig.families else "no kvctl equivalent"
            missing.append(f"{fig.seed} {fig.table}: {fig.row} ({wanted})")
    if not body:
        return []
    m = run.machine()
    notes = [f"[{n}] {text}" for text, n in footnotes.items()]
    if missing:
        notes.append("no backend of this run to set beside: " + "; ".join(missing))
    return [Table("Seed figures beside kvctl's", ["seed", "figure", "published", "kvctl backend",
                                                  "kvctl, this machine", "caveat"], body,
                  params=f"kvctl figures measured in this run on {m.get('cpu_model', '?')} x{m.get('cpu_count', '?')}, "
                         f"Python {m.get('python', '?')}; seed figures as published, with their hardware where "
                         "the seed states it: the seeds are other projects' libraries (Go, Crystal, Rust), so "
                         "their figures measure their own code, not kvctl's", notes=notes, key="seeds")]


def problem_table(run: Run) -> list[Table]:
    body = [[e.get("backend", ""), e.get("name", ""), e.get("status", "error"), e.get("reason", "")]
            for e in run.info.get("errors", [])]
    body += [["", "", "warning", w] for w in run.info.get("warnings", [])]
    if not body:
        return []
    return [Table("Problems", ["backend", "bench", "status", "reason"], body, key="problems")]


def tables(run: Run) -> list[Table]:
    return overview(run) + workload_tables(run) + load_table(run) + seed_table(run) + problem_table(run)


def charts(run: Run) -> list[Chart]:
    out = []
    rows = [r for r in run.rows() if r.ok]
    for w in workloads.WORKLOADS.values():
        factor, unit = _scale(w.time_unit)
        for b in w.benches:
            mine = sorted((r for r in rows if r.workload == w.name and r.bench == b.name), key=lambda r: r.backend)
            if not mine:
                continue
            out.append(Chart(f"{w.title} {b.title}: {unit} per {mine[0].unit} (lower is better)", unit,
                             [r.backend for r in mine], [(r.mean or 0.0) * factor for r in mine],
                             key=f"{w.name}.{b.name}"))
    return out


def curves(run: Run) -> list[Curve]:
    by_bench: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for r in run.rows():
        points = [(int(p.get("clients", 0)), float(p.get("ops_per_s", 0.0))) for p in r.load_curve()] if r.ok else []
        if points:
            by_bench.setdefault(f"{r.workload} {r.bench}", {})[r.backend] = sorted(points)
    return [Curve(f"{name}: ops/s versus clients", series) for name, series in sorted(by_bench.items())]


# -- rendering --------------------------------------------------------------------------------------

def render(run: Run, fmt: str, extra: list[Table] | None = None) -> str:
    fmt = check_format(fmt)
    all_tables = tables(run) + (extra or [])
    if fmt == "json":
        return run.dumps()
    if fmt == "markdown":
        return markdown(all_tables, charts(run))
    if fmt == "csv":
        return to_csv(run)
    if fmt == "mermaid":
        return mermaid(charts(run))
    if fmt == "html":
        return to_html(all_tables, charts(run), curves(run))
    return plain(all_tables)


def rich_print(tables_: list[Table], console: Any) -> None:
    from rich import box
    from rich.table import Table as RichTable

    for t in tables_:
        rt = RichTable(title=t.title, title_justify="left", box=box.SIMPLE_HEAD,
                       show_header=any(t.columns), caption=_caption(t), caption_justify="left")
        for i, col in enumerate(t.columns):
            widest = max([len(col)] + [len(row[i]) for row in t.rows if i < len(row)])
            # the first columns name the row: keep them whole; long texts fold
            key = i == 0 or (i == 1 and len(t.columns) > 2)
            rt.add_column(col, no_wrap=key, overflow="fold", min_width=min(widest, 42) if key else None)
        for row in t.rows:
            rt.add_row(*row)
        console.print(rt)


def _caption(t: Table) -> str | None:
    lines = ([t.params] if t.params else []) + t.notes
    return "\n".join(lines) if lines else None


def plain(tables_: list[Table]) -> str:
    """The rich rendering captured as text (for -o FILE.txt and tests)."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=160, color_system=None, highlight=False)
    rich_print(tables_, console)
    return console.file.getvalue()  # type: ignore[attr-defined]


def mermaid_files(run: Run, path: Path) -> list[tuple[Path, str]]:
    """One raw Mermaid diagram per file (a .mmd file holds one diagram): ``path`` itself for a
    single chart, else ``STEM-WORKLOAD-BENCH.mmd`` beside it for each."""
    all_charts = charts(run)
    if len(all_charts) == 1:
        return [(path, _mermaid_chart(all_charts[0]) + "\n")]
    return [(path.with_name(f"{path.stem}-{c.key.replace('.', '-')}{path.suffix}"), _mermaid_chart(c) + "\n")
            for c in all_charts]

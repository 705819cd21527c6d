"""Text renderings of a report: Markdown (with Mermaid charts), raw Mermaid diagrams, and CSV."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

from kvctl.bench.report_types import Chart, Table
from kvctl.bench.results import Run


def _md_cell(text: str) -> str:
    # "<" and "&" would start HTML in a renderer that passes it through: `key-<i>` italicises the page
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(tables_: list[Table], charts_: list[Chart]) -> str:
    out = ["# kvctl bench results", ""]
    by_key: dict[str, list[Chart]] = {}
    for c in charts_:
        by_key.setdefault(c.key.partition(".")[0], []).append(c)
    for t in tables_:
        out += [f"## {_md_cell(t.title)}", ""]
        if t.params:
            out += [f"*{_md_cell(t.params)}*", ""]
        if any(t.columns):
            out.append("| " + " | ".join(_md_cell(c) for c in t.columns) + " |")
        else:
            out.append("| | |")
        out.append("|" + "---|" * len(t.columns))
        for row in t.rows:
            out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
        out.append("")
        for n in t.notes:
            out += [f"- {_md_cell(n)}"]
        if t.notes:
            out.append("")
        if t.key in by_key:
            out += ["<details><summary>charts</summary>", ""]
            for c in by_key.pop(t.key):
                out += ["```mermaid", _mermaid_chart(c), "```", ""]
            out += ["</details>", ""]
    return "\n".join(out).rstrip() + "\n"


def _mermaid_label(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def _plain_number(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits, never in exponent notation (xychart-beta reads
    no ``6.835e-05``)."""
    text = format(Decimal(f"{value:.{digits}g}"), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _mermaid_chart(c: Chart) -> str:
    top = max(c.values) * 1.15 if c.values and max(c.values) > 0 else 1.0
    return "\n".join([
        "xychart-beta",
        f"    title {_mermaid_label(c.title)}",
        "    x-axis [" + ", ".join(_mermaid_label(lbl) for lbl in c.labels) + "]",
        f"    y-axis {_mermaid_label(c.unit)} 0 --> {_plain_number(top, 3)}",
        "    bar [" + ", ".join(_plain_number(v, 4) for v in c.values) + "]",
    ])


def mermaid(charts_: list[Chart]) -> str:
    """Every chart as a raw diagram, one after the other (stdout); files get one each."""
    return "\n\n".join(f"%% {c.key}\n{_mermaid_chart(c)}" for c in charts_) + "\n"


CSV_COLUMNS = ["name", "workload", "bench", "backend", "status", "reason", "unit", "mean_s", "stdev_s", "ops_per_s",
               "p50_us", "p95_us", "p99_us", "p99.9_us", "max_us", "instr_per_op", "allocs_per_op", "bytes_per_op",
               "values", "durability", "drivers", "value_size", "keys", "network", "clients_curve"]


def to_csv(run: Run) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in run.rows():
        pct = r.percentiles()
        writer.writerow([
            r.name, r.workload, r.bench, r.backend, r.status, r.reason, r.unit if r.ok else "",
            _num(r.mean), _num(r.stdev), _num(r.ops_per_s),
            *[_num(pct.get(k)) for k in ("p50", "p95", "p99", "p99.9", "max")],
            _num(r.get("instr_per_op")), _num(r.get("allocs_per_op")), _num(r.get("bytes_per_op")), len(r.values),
            r.get("durability") or "", r.get("drivers") or "", r.get("value_size") or "", r.get("keys") or "",
            r.get("network") if r.get("network") is not None else "", r.meta.get("kvctl_load", ""),
        ])
    return buffer.getvalue()


def _num(v: Any) -> str:
    return "" if v is None else repr(float(v))

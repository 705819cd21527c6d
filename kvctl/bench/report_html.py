"""The HTML rendering of a report: one self-contained page, tables with inline-SVG charts."""

from __future__ import annotations

import html
import math
from decimal import Decimal

from kvctl.bench.report_types import Chart, Curve, Table

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#1d2330}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #dde;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:13px}th,td{padding:.25rem .6rem;border-bottom:1px solid #eef;
text-align:left;vertical-align:top}th{background:#f4f5fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
p.params{color:#556;font-size:12.5px;max-width:1100px}ul.notes{color:#556;font-size:12.5px}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.chart{border:1px solid #e6e8f0;border-radius:6px;padding:.5rem}
svg text{font:12px system-ui,sans-serif;fill:#1d2330}
"""


PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
           "#ccb974", "#64b5cd", "#2a9d8f", "#6d597a", "#e76f51", "#264653")
LOG_SCALE_SPREAD = 20  # bars go on a log scale when the largest value is this many times the smallest
CHAR_W = 7.2           # px per character of the 12 px labels, generous, so no label is cut


def colours(charts_: list[Chart], curves_: list[Curve]) -> dict[str, str]:
    """One colour per backend, the same in every chart of the page."""
    names = sorted({label for c in charts_ for label in c.labels} | {n for c in curves_ for n in c.series})
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _value_text(value: float, unit: str) -> str:
    """``value`` in ``unit``, in µs below 0.001 ms and in ms from 1,000 µs, never in exponent form."""
    if unit == "ms" and 0 < value < 0.001:
        value, unit = value * 1000, "µs"
    elif unit in ("µs", "us") and value >= 1000:
        value, unit = value / 1000, "ms"
    text = f"{value:,.0f}" if value >= 100 else format(Decimal(f"{value:.3g}"), "f")
    return f"{text} {unit}".strip()


def _svg_bars(c: Chart, colour: dict[str, str] | None = None) -> str:
    """A horizontal bar chart: one bar per backend, value printed at the end of the bar.

    When the values span more than LOG_SCALE_SPREAD times, the bars are on a log scale (with
    decade ticks), so a 1 us backend stays visible beside a 1 ms one; the SVG is as wide as its
    longest labels.
    """
    bar_h, gap, bar_w = 18, 6, 300
    values = [max(v, 0.0) for v in c.values]
    label_w = 12 + CHAR_W * max((len(label) for label in c.labels), default=4)
    pad = 10 + CHAR_W * max((len(_value_text(v, c.unit)) for v in values), default=4)
    positive = [v for v in values if v > 0]
    top = max(positive, default=1.0)
    log = bool(positive) and top / min(positive) > LOG_SCALE_SPREAD
    if log:
        lo = 10.0 ** math.floor(math.log10(min(positive)))
        hi = 10.0 ** math.ceil(math.log10(top))

        def length(v: float) -> float:
            return bar_w * (math.log10(v / lo) / math.log10(hi / lo)) if v > 0 else 0.0
    else:
        def length(v: float) -> float:
            return bar_w * v / top
    height = len(c.labels) * (bar_h + gap) + (52 if log else 34)
    width = label_w + bar_w + pad
    title = c.title + (" (log scale)" if log else "")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}">',
             f'<text x="0" y="14" font-weight="600">{html.escape(title)}</text>']
    if log:  # decade lines first: the bars are drawn over them
        axis_y = 26 + len(c.labels) * (bar_h + gap)
        decade = lo
        while decade <= hi * 1.001:
            x = label_w + length(decade)
            parts.append(f'<line x1="{x:.1f}" y1="24" x2="{x:.1f}" y2="{axis_y}" stroke="#dde" stroke-width="1"/>')
            parts.append(f'<text x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle" fill="#667">'
                         f'{html.escape(_value_text(decade, ""))}</text>')
            decade *= 10
    for i, (label, value) in enumerate(zip(c.labels, values, strict=True)):
        y = 26 + i * (bar_h + gap)
        w = max(1.0, length(value))
        fill = (colour or {}).get(label, PALETTE[i % len(PALETTE)])
        parts.append(f'<text x="{label_w - 6:.1f}" y="{y + 13}" text-anchor="end">{html.escape(label)}</text>')
        tip = f"{html.escape(label)}: {value:.4g} {html.escape(c.unit)}"
        parts.append(f'<rect x="{label_w:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="2" '
                     f'fill="{fill}"><title>{tip}</title></rect>')
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 13}">{html.escape(_value_text(value, c.unit))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_curve(c: Curve, colour: dict[str, str] | None = None) -> str:
    """Lines of ops/s against client counts (log2 x axis), one colour per backend, with a legend."""
    width, height, left, bottom, top_pad, legend_w = 520, 260, 70, 30, 26, 130
    plot_w, plot_h = width - left - legend_w - 10, height - bottom - top_pad
    xs = sorted({x for pts in c.series.values() for x, _ in pts})
    ymax = max((y for pts in c.series.values() for _, y in pts), default=1.0) or 1.0
    lo, hi = math.log2(min(xs)), math.log2(max(xs))

    def px(x: int) -> float:
        return left + (0.5 if hi == lo else (math.log2(x) - lo) / (hi - lo)) * plot_w

    def py(y: float) -> float:
        return top_pad + plot_h - y / ymax * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(c.title)}">',
             f'<text x="0" y="14" font-weight="600">{html.escape(c.title)}</text>',
             f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" stroke="#889"/>',
             f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" stroke="#889"/>',
             f'<text x="{left - 4}" y="{top_pad + 10}" text-anchor="end">{ymax:,.0f}</text>',
             f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end">0</text>']
    for x in xs:
        parts.append(f'<text x="{px(x):.1f}" y="{height - 10}" text-anchor="middle">{x}</text>')
    for i, (name, pts) in enumerate(sorted(c.series.items())):
        stroke = (colour or {}).get(name, PALETTE[i % len(PALETTE)])
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{stroke}" stroke-width="2"/>')
        parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{stroke}"><title>{html.escape(name)}: '
                  f'{x} clients, {y:,.0f} ops/s</title></circle>' for x, y in pts]
        ly = top_pad + 14 * i
        parts.append(f'<rect x="{width - legend_w}" y="{ly}" width="10" height="10" fill="{stroke}"/>')
        parts.append(f'<text x="{width - legend_w + 14}" y="{ly + 9}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _is_num(text: str) -> bool:
    t = text.replace(",", "").replace("±", "").replace(" ", "").replace(".", "", 1)
    return bool(t) and (t.isdigit() or t.replace(".", "").replace("e-", "").replace("e+", "").isdigit())


def to_html(tables_: list[Table], charts_: list[Chart], curves_: list[Curve] | None = None) -> str:
    by_key: dict[str, list[str]] = {}
    colour = colours(charts_, curves_ or [])
    for c in charts_:
        by_key.setdefault(c.key.partition(".")[0], []).append(_svg_bars(c, colour))
    for curve in curves_ or []:
        by_key.setdefault("load", []).append(_svg_curve(curve, colour))
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>kvctl bench results</title>", f"<style>{_CSS}</style></head><body>",
           "<h1>kvctl bench results</h1>"]
    for t in tables_:
        out.append(f"<h2>{html.escape(t.title)}</h2>")
        if t.key in by_key:
            out.append('<div class="charts">')
            out += [f'<div class="chart">{svg}</div>' for svg in by_key.pop(t.key)]
            out.append("</div>")
        if t.params:
            out.append(f'<p class="params">{html.escape(t.params)}</p>')
        out.append("<table>")
        if any(t.columns):
            out.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in t.columns) + "</tr>")
        for row in t.rows:
            out.append("<tr>" + "".join(
                f'<td class="num">{html.escape(c)}</td>' if _is_num(c) else f"<td>{html.escape(c)}</td>"
                for c in row) + "</tr>")
        out.append("</table>")
        if t.notes:
            out.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in t.notes) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"

"""The HTML rendering of a report: one self-contained page, tables with inline-SVG charts."""

from __future__ import annotations

import html

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


def _svg_bars(c: Chart) -> str:
    """A horizontal bar chart: one bar per backend, value printed at the end of the bar."""
    bar_h, gap, label_w, bar_w, pad = 18, 6, 130, 300, 70
    height = len(c.labels) * (bar_h + gap) + 34
    width = label_w + bar_w + pad
    top = max(c.values) if c.values and max(c.values) > 0 else 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(c.title)}">',
             f'<text x="0" y="14" font-weight="600">{html.escape(c.title)}</text>']
    palette = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
    for i, (label, value) in enumerate(zip(c.labels, c.values, strict=True)):
        y = 26 + i * (bar_h + gap)
        w = max(1.0, bar_w * value / top)
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{html.escape(label)}</text>')
        tip = f"{html.escape(label)}: {value:.4g} {html.escape(c.unit)}"
        parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="2" '
                     f'fill="{palette[i % len(palette)]}"><title>{tip}</title></rect>')
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 13}">{value:.3g} {html.escape(c.unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_curve(c: Curve) -> str:
    """Lines of ops/s against client counts (log2 x axis), one colour per backend, with a legend."""
    width, height, left, bottom, top_pad, legend_w = 520, 260, 70, 30, 26, 130
    plot_w, plot_h = width - left - legend_w - 10, height - bottom - top_pad
    xs = sorted({x for pts in c.series.values() for x, _ in pts})
    ymax = max((y for pts in c.series.values() for _, y in pts), default=1.0) or 1.0
    import math

    lo, hi = math.log2(min(xs)), math.log2(max(xs))

    def px(x: int) -> float:
        return left + (0.5 if hi == lo else (math.log2(x) - lo) / (hi - lo)) * plot_w

    def py(y: float) -> float:
        return top_pad + plot_h - y / ymax * plot_h

    palette = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
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
        colour = palette[i % len(palette)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"><title>{html.escape(name)}: '
                  f'{x} clients, {y:,.0f} ops/s</title></circle>' for x, y in pts]
        ly = top_pad + 14 * i
        parts.append(f'<rect x="{width - legend_w}" y="{ly}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{width - legend_w + 14}" y="{ly + 9}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _is_num(text: str) -> bool:
    t = text.replace(",", "").replace("±", "").replace(" ", "").replace(".", "", 1)
    return bool(t) and (t.isdigit() or t.replace(".", "").replace("e-", "").replace("e+", "").isdigit())


def to_html(tables_: list[Table], charts_: list[Chart], curves_: list[Curve] | None = None) -> str:
    by_key: dict[str, list[str]] = {}
    for c in charts_:
        by_key.setdefault(c.key.partition(".")[0], []).append(_svg_bars(c))
    for curve in curves_ or []:
        by_key.setdefault("load", []).append(_svg_curve(curve))
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

# kvctl.bench.report split (s4-gate): what moved where.  report.py re-imports Table, Chart,
# Curve, markdown, mermaid, to_csv, to_html and _mermaid_chart, so `report.X` keeps working for
# those; these rewrite direct references to the names that did not stay re-exported.
# Apply: sed -i -f renames-s4-gate.sed $(git ls-files '*.py')
s/\breport\._plain_number\b/report_md._plain_number/g
s/\breport\._md_cell\b/report_md._md_cell/g
s/\breport\._mermaid_label\b/report_md._mermaid_label/g
s/\breport\.CSV_COLUMNS\b/report_md.CSV_COLUMNS/g
s/\breport\._svg_bars\b/report_html._svg_bars/g
s/\breport\._svg_curve\b/report_html._svg_curve/g
s/\breport\._is_num\b/report_html._is_num/g
s/\breport\._CSS\b/report_html._CSS/g
s/from kvctl\.bench\.report import \(Table\|Chart\|Curve\)\b/from kvctl.bench.report_types import \1/g

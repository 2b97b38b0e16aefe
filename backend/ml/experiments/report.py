"""The HTML comparison report: one self-contained file (inline CSS, JS and SVG; no network).

>>> write_report(ExperimentManager("experiments/runs"), ["a_1", "b_2"],
...              Path("experiments/comparison.html"))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
from pathlib import Path

from ..fileio import atomic_write_text
from .comparison import format_value, rank_runs
from .rundir import RunInfo

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22")
TABLE_COLUMNS = (  # (metric, header)
    ("test/accuracy", "test accuracy"), ("test/f1_macro", "test F1 macro"),
    ("test/f1_weighted", "test F1 weighted"), ("test/f1_biased", "test F1 Biased"),
    ("eval/f1_macro", "eval F1 macro"), ("eval/loss", "eval loss"))
CURVES = (("train/loss", "Training loss"), ("eval/loss", "Validation loss"),
          ("eval/f1_macro", "Validation F1 macro"))
BEST_METRIC = "eval/f1_macro"  # picking on the test split would overfit it


def write_report(manager, runs: list[RunInfo], output: Path) -> Path:
    """Compare ``runs`` and write the report atomically to ``output``; returns the path."""
    output = Path(output)
    comparison = manager.compare_runs(runs) if runs else None
    atomic_write_text(output, render_report(runs, comparison, output.parent,
                                            manager.runs_dir))
    return output


def render_report(runs: list[RunInfo], comparison: dict | None, report_dir: Path,
                  runs_dir: Path) -> str:
    """The report's HTML text; links to run directories are relative to ``report_dir``."""
    colors = {run.run_id: PALETTE[index % len(PALETTE)] for index, run in enumerate(runs)}
    ranked = rank_runs(runs, BEST_METRIC) or rank_runs(runs, "test/f1_macro")
    best_metric = BEST_METRIC if rank_runs(runs, BEST_METRIC) else "test/f1_macro"
    best = ranked[0].run_id if ranked else None
    sections = [
        _section("Runs", _runs_table(runs, comparison, best, best_metric, report_dir, colors)),
    ]
    if comparison:
        sections += [
            _section("Config differences", _config_differences(runs, comparison)),
            _section("Learning curves", _learning_curves(runs, colors)),
            _section("Confusion matrices (test)", _confusion_matrices(runs, comparison)),
            _section("Per-class metrics (test)", _per_class(runs, comparison)),
            _section("F1 per slice (test)", _slices(runs, comparison)),
            _section("Significance between the top runs", _significance(comparison)),
        ]
    problems = _problems(runs, comparison)
    if problems:
        sections.append(_section("Runs with problems", problems))
    generated = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    body = "\n".join(sections) if runs else f"<p>No runs found in {_e(str(runs_dir))}.</p>"
    return _PAGE.format(title="Run comparison", css=_CSS, script=_SCRIPT,
                        subtitle=_e(f"{len(runs)} run(s) from {runs_dir} · generated {generated}"),
                        body=body)


# ---- sections --------------------------------------------------------------------------

def _runs_table(runs, comparison, best, best_metric, report_dir, colors) -> str:
    intervals = (comparison or {}).get("confidence_intervals", {})
    headers = ["", "run", "status", "tags"] + [header for _, header in TABLE_COLUMNS]
    headers.append("train seconds")
    head = "".join(
        f'<th data-type="{"text" if index < 4 else "number"}" title="click to sort">'
        f'{_e(name)}<span class="arrow"></span></th>' for index, name in enumerate(headers))
    rows = []
    for run in runs:
        is_best = run.run_id == best
        link = os.path.relpath(run.path, report_dir).replace(os.sep, "/") + "/"
        kind = f' <span class="pill">CV {len(run.folds) or run.cross_validation.get("num_folds", "")}' \
               f' folds</span>' if run.is_cross_validation else ""
        cells = [
            _td("★" if is_best else "", "1" if is_best else "0",
                title=f"best by {best_metric}" if is_best else ""),
            _td(f'<span class="swatch" style="background:{colors[run.run_id]}"></span>'
                f'<a href="{_e(link)}">{_e(run.run_id)}</a>{kind}', run.run_id, raw=True),
            _td(f'<span class="status {run.status}">{_e(run.display_status)}</span>', run.status,
                raw=True, title=run.reason or ""),
            _td(", ".join(run.tags), ", ".join(run.tags)),
        ]
        for metric, _ in TABLE_COLUMNS:
            value, std = run.metric(metric), run.metric_std(metric)
            text = format_value(value, std)
            interval = intervals.get(run.run_id, {}).get(metric.split("/")[-1])
            if metric.startswith("test/") and interval and interval.get("low") is not None:
                text = (f'{_e(text)}<div class="ci">[{interval["low"]:.3f}, '
                        f'{interval["high"]:.3f}]</div>')
            else:
                text = _e(text)
            cells.append(_td(text, "" if value is None else repr(value), raw=True))
        seconds = (run.results.get("timing") or {}).get("total_seconds") \
            if isinstance(run.results.get("timing"), dict) else None
        cells.append(_td(format_value(seconds, digits=1) if seconds is not None else "-",
                         "" if seconds is None else repr(float(seconds))))
        rows.append(f'<tr data-run-id="{_e(run.run_id)}" class="{"best" if is_best else ""}">'
                    f'{"".join(cells)}</tr>')
    note = (f'<p class="note">★ best run by {_e(best_metric)} (validation; choosing on the test '
            f'split would overfit it). Test metrics show the bootstrap 95% confidence interval '
            f'below the value; cross-validation runs show mean±std over folds. Click a header to '
            f'sort.</p>')
    return (f'{note}<table id="runs-table" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _config_differences(runs, comparison) -> str:
    differences = comparison.get("config_differences", {})
    if not differences:
        return '<p class="note">The runs share every config field (apart from their names).</p>'
    head = "<th>field</th>" + "".join(f"<th>{_e(run.run_id)}</th>" for run in runs)
    rows = []
    for field, values in differences.items():
        cells = "".join(f"<td>{_e(_short(values[run.run_id]))}</td>" if run.run_id in values
                        else '<td class="muted">no config</td>' for run in runs)
        rows.append(f"<tr><td><code>{_e(field)}</code></td>{cells}</tr>")
    return (f'<table id="config-diff"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _learning_curves(runs, colors) -> str:
    logs = {run.run_id: run.learning_curves() for run in runs}
    charts = []
    for key, title in CURVES:
        series = []
        for run in runs:
            points = [(record.get("step"), record.get(key)) for record in logs[run.run_id]]
            points = [(float(x), float(y)) for x, y in points if _number(x) and _number(y)]
            if points:
                series.append((run.run_id, colors[run.run_id], points))
        if series:
            charts.append(svg_line_chart(title, series, "step", key))
    if not charts:
        return ('<p class="note">No metrics.jsonl log points (cross-validation parents keep '
                'their curves in each fold directory).</p>')
    return f'<div class="charts">{"".join(charts)}</div>'


def _confusion_matrices(runs, comparison) -> str:
    blocks = []
    for run in runs:
        matrix = comparison["confusion_matrices"].get(run.run_id)
        names = comparison["label_names"].get(run.run_id) or []
        if not matrix or len(names) != len(matrix):
            continue
        head = "<th>true \\ predicted</th>" + "".join(f"<th>{_e(name)}</th>" for name in names)
        rows = []
        for name, row in zip(names, matrix):
            total = sum(row) or 1
            cells = []
            for column, count in enumerate(row):
                share = count / total
                hue = "46,125,50" if column == names.index(name) else "198,40,40"
                cells.append(f'<td class="cm" style="background:rgba({hue},{0.08 + 0.8 * share:.2f})"'
                             f' title="{share:.0%} of {_e(name)}">{count}</td>')
            rows.append(f"<tr><th>{_e(name)}</th>{''.join(cells)}</tr>")
        blocks.append(f'<figure class="matrix"><figcaption>{_e(run.run_id)}</figcaption>'
                      f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
                      f'</table></figure>')
    if not blocks:
        return '<p class="note">No confusion matrices in the runs\' results.</p>'
    return f'<div class="charts">{"".join(blocks)}</div>'


def _per_class(runs, comparison) -> str:
    labels = []
    for run in runs:
        for name in comparison["per_class"].get(run.run_id) or {}:
            if name not in labels:
                labels.append(name)
    if not labels:
        return '<p class="note">No per-class metrics in the runs\' results.</p>'
    head = "<th>run</th>" + "".join(f'<th colspan="3">{_e(label)}</th>' for label in labels)
    sub = "<th></th>" + "<th>precision</th><th>recall</th><th>F1</th>" * len(labels)
    rows = []
    for run in runs:
        per_class = comparison["per_class"].get(run.run_id) or {}
        if not per_class:
            continue
        cells = []
        for label in labels:
            scores = per_class.get(label) or {}
            for key in ("precision", "recall"):
                cells.append(f"<td>{format_value(scores.get(key), digits=3)}</td>")
            cells.append(_bar_cell(scores.get("f1"), f"support {scores.get('support', '?')}"))
        rows.append(f"<tr><td>{_e(run.run_id)}</td>{''.join(cells)}</tr>")
    return (f'<table id="per-class"><thead><tr>{head}</tr><tr>{sub}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _slices(runs, comparison) -> str:
    slices = comparison.get("slices", {})
    if not any(slices.values()):
        return ('<p class="note">The test predictions carry no outlet / topic / type metadata '
                '(the demo dataset has none; BABE does).</p>')
    runs = [run for run in runs if slices.get(run.run_id)]  # runs with sliceable predictions
    parts = []
    leaning_values = sorted({value for run_slices in slices.values()
                             for value in run_slices.get("type", {})})
    if leaning_values:
        head = "<th>run</th>" + "".join(f"<th>{_e(value)}</th>" for value in leaning_values) \
            + "<th>largest gap</th>"
        rows = []
        for run in runs:
            by_type = slices.get(run.run_id, {}).get("type", {})
            if not by_type:
                continue
            cells = [_bar_cell(by_type.get(value, {}).get("f1_macro"),
                               f"n={by_type.get(value, {}).get('n', 0)}")
                     for value in leaning_values]
            scores = {value: by_type[value]["f1_macro"] for value in leaning_values
                      if value in by_type}
            gap = ""
            if len(scores) > 1:
                high = max(scores, key=scores.get)
                low = min(scores, key=scores.get)
                gap = f"{scores[high] - scores[low]:.3f} ({_e(high)} &gt; {_e(low)})"
            rows.append(f"<tr><td>{_e(run.run_id)}</td>{''.join(cells)}<td>{gap}</td></tr>")
        parts.append(f'<h3>By political leaning of the outlet (<code>type</code>)</h3>'
                     f'<table id="slices-type"><thead><tr>{head}</tr></thead>'
                     f'<tbody>{"".join(rows)}</tbody></table>')
    for column, title in (("outlet", "By outlet"), ("topic", "By topic")):
        values = sorted({value for run_slices in slices.values()
                         for value in run_slices.get(column, {})})
        if not values:
            continue
        head = f"<th>{column}</th>" + "".join(f"<th>{_e(run.run_id)}</th>" for run in runs)
        rows = []
        for value in values:
            cells = []
            for run in runs:
                entry = slices.get(run.run_id, {}).get(column, {}).get(value, {})
                cells.append(_bar_cell(entry.get("f1_macro"), f"n={entry.get('n', 0)}"))
            rows.append(f"<tr><td>{_e(value)}</td>{''.join(cells)}</tr>")
        parts.append(f'<h3>{title}</h3><table id="slices-{column}" class="sortable">'
                     f'<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    parts.insert(0, '<p class="note">Macro F1 over the classes present in each slice, with the '
                    'number of test sentences; small slices are noisy.</p>')
    return "".join(parts)


def _significance(comparison) -> str:
    entries = comparison.get("significance", [])
    if not entries:
        return '<p class="note">Fewer than two runs with validation or test metrics.</p>'
    rows = []
    for entry in entries:
        pair = f"{_e(entry['run_a'])} vs {_e(entry['run_b'])}"
        if "error" in entry:
            rows.append(f'<tr><td>{pair}</td><td colspan="4" class="muted">'
                        f'{_e(entry["error"])}</td></tr>')
            continue
        boot, mcnemar = entry["bootstrap"], entry["mcnemar"]
        verdict = ("<strong>significant</strong> (p &lt; 0.05)" if entry["significant"]
                   else "not significant: the difference may be noise")
        rows.append(
            f"<tr><td>{pair}</td><td>{boot['difference']:+.4f} "
            f"<span class=\"ci\">[{boot['low']:+.4f}, {boot['high']:+.4f}]</span></td>"
            f"<td>{boot['p_value']:.4f}</td><td>{mcnemar['p_value']:.4f} "
            f"<span class=\"ci\">({mcnemar['only_a_correct']} vs {mcnemar['only_b_correct']} "
            f"sentences)</span></td><td>{verdict}</td></tr>")
    head = ("<th>runs (best first)</th><th>Δ test F1 macro [95% CI]</th>"
            "<th>paired bootstrap p</th><th>McNemar p (accuracy)</th><th>verdict</th>")
    return (f'<p class="note">Paired tests on the same test sentences between each pair of the '
            f'four best runs (by {BEST_METRIC}).</p><table id="significance"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _problems(runs, comparison) -> str:
    items = [f"<li><strong>{_e(run.run_id)}</strong> ({_e(run.display_status)}): "
             f"{_e(run.reason)}</li>"
             for run in runs if run.status != "completed" and run.reason]
    for run_id, reason in ((comparison or {}).get("problems") or {}).items():
        items.append(f"<li><strong>{_e(run_id)}</strong>: no confidence intervals or slices: "
                     f"{_e(reason)}</li>")
    return f"<ul>{''.join(items)}</ul>" if items else ""


# ---- small renderers -------------------------------------------------------------------

def svg_line_chart(title: str, series, x_label: str, y_label: str,
                   width: int = 420, height: int = 260) -> str:
    """Inline SVG line chart; ``series`` is ``[(name, color, [(x, y), ...]), ...]``."""
    legend_rows = min(len(series), 8)
    left, right, top, bottom = 52, 12, 28, 40 + 14 * legend_rows  # legend under the axis
    height += 14 * legend_rows
    xs = [x for _, _, points in series for x, _ in points]
    ys = [y for _, _, points in series for _, y in points]
    x_min, x_max = min(xs), max(xs)
    y_min, y_max = min(ys), max(ys)
    if x_max == x_min:
        x_min, x_max = x_min - 1, x_max + 1
    if y_max == y_min:
        y_min, y_max = y_min - 0.5, y_max + 0.5
    pad = (y_max - y_min) * 0.05
    y_min, y_max = y_min - pad, y_max + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x):
        return left + (x - x_min) / (x_max - x_min) * plot_w

    def sy(y):
        return top + (1 - (y - y_min) / (y_max - y_min)) * plot_h

    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{_e(title)}">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" class="title">{_e(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>']
    for tick in _ticks(y_min, y_max):
        y = sy(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'class="grid"/><text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{tick:.3g}</text>')
    for tick in _ticks(x_min, x_max):
        x = sx(tick)
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                     f'{tick:.4g}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 28}" text-anchor="middle">'
                 f'{_e(x_label)}</text>')
    for name, color, points in series:
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(points))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" '
                     f'points="{path}"><title>{_e(name)}</title></polyline>')
        if len(points) <= 30:
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>'
                      for x, y in points]
    for index, (name, color, _) in enumerate(series[:legend_rows]):
        y = top + plot_h + 44 + index * 14
        parts.append(f'<rect x="{left}" y="{y - 6}" width="12" height="3" fill="{color}"/>'
                     f'<text x="{left + 16}" y="{y - 2}" class="legend">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    span = high - low
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(factor * magnitude for factor in (1, 2, 2.5, 5, 10)
                if factor * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + 1e-12 and len(ticks) < 12:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _bar_cell(value, title: str = "") -> str:
    if value is None:
        return f'<td class="muted" data-value="" title="{_e(title)}">-</td>'
    width = max(0.0, min(1.0, float(value))) * 100
    return (f'<td class="bar" data-value="{float(value)!r}" title="{_e(title)}">'
            f'<span style="width:{width:.0f}%"></span><em>{value:.3f}</em>'
            f'<small>{_e(title)}</small></td>')


def _td(content: str, sort_value: str, raw: bool = False, title: str = "") -> str:
    shown = content if raw else _e(content)
    title_attribute = f' title="{_e(title)}"' if title else ""
    return f'<td data-value="{_e(sort_value)}"{title_attribute}>{shown}</td>'


def _section(title: str, content: str) -> str:
    anchor = title.lower().split(" (")[0].replace(" ", "-")
    return f'<section id="{_e(anchor)}"><h2>{_e(title)}</h2>{content}</section>'


def _short(value) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2330}
h1{margin:0 0 4px}h2{margin-top:32px;border-bottom:1px solid #dde;padding-bottom:4px}
.subtitle,.note,.muted{color:#5b6478}.note{font-size:13px}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d8dce6;padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:#f1f3f8}
table.sortable thead th{cursor:pointer;user-select:none}
table.sortable thead th:hover{background:#e3e8f3}
th[aria-sort=ascending] .arrow::after{content:" \\25B2"}
th[aria-sort=descending] .arrow::after{content:" \\25BC"}
tr.best{background:#fff8dc;font-weight:600}
.ci{font-size:11px;color:#5b6478;font-weight:400}
.pill{font-size:11px;background:#e8eefc;border-radius:8px;padding:0 6px;margin-left:4px}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.status{font-size:12px;border-radius:8px;padding:1px 6px;background:#eee}
.status.completed{background:#dff3e2}
.status.failed,.status.corrupt,.status.crashed{background:#fbdede}
.status.running,.status.interrupted,.status.incomplete{background:#fdf0d3}
.charts{display:flex;flex-wrap:wrap;gap:16px}
svg.chart{background:#fff;border:1px solid #e1e4ec}
svg.chart text{font-size:10px;fill:#444}svg.chart .title{font-size:12px;font-weight:600}
svg.chart .frame{fill:none;stroke:#ccd}svg.chart .grid{stroke:#eef}
figure.matrix{margin:0}figure.matrix figcaption{font-weight:600;margin-bottom:4px}
td.cm{text-align:right;min-width:48px}
td.bar{position:relative;min-width:90px}
td.bar span{position:absolute;left:0;top:0;bottom:0;background:#dbe6fb;z-index:0}
td.bar em,td.bar small{position:relative;z-index:1;font-style:normal}
td.bar small{color:#5b6478;margin-left:6px;font-size:11px}
"""

_SCRIPT = """
(function () {
  function key(cell, numeric) {
    var raw = cell.getAttribute('data-value');
    if (raw === null) raw = cell.textContent.trim();
    if (!numeric) return raw.toLowerCase();
    var value = parseFloat(raw);
    return isNaN(value) ? null : value;
  }
  function sortBy(table, header, index) {
    var declared = header.getAttribute('data-type');
    var numeric = declared ? declared === 'number' :
      Array.prototype.every.call(table.tBodies[0].rows, function (row) {
        var cell = row.cells[index];
        if (!cell) return true;
        var raw = cell.getAttribute('data-value');
        if (raw === null) raw = cell.textContent.trim();
        return raw === '' || !isNaN(parseFloat(raw));
      });
    var ascending = header.getAttribute('aria-sort') !== 'ascending';
    Array.prototype.forEach.call(header.parentNode.cells, function (th) {
      th.removeAttribute('aria-sort');
    });
    header.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[index], numeric), y = key(b.cells[index], numeric);
      if (x === null || x === '') return (y === null || y === '') ? 0 : 1;  // missing last
      if (y === null || y === '') return -1;
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var headerRow = table.tHead.rows[table.tHead.rows.length - 1];
    Array.prototype.forEach.call(headerRow.cells, function (header, index) {
      header.addEventListener('click', function () { sortBy(table, header, index); });
    });
  });
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>{css}</style>
</head>
<body>
<h1>{title}</h1>
<p class="subtitle">{subtitle}</p>
{body}
<script>{script}</script>
</body>
</html>
"""

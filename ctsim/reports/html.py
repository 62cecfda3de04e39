"""``report.html``: one self-contained page of a comparison, readable offline.

The plots are embedded as ``data:`` URIs and the table sorts itself when a heading is clicked (a few
lines of inline script; the heading's ``aria-sort`` says how it is sorted). Nothing is fetched: no
fonts, scripts or styles from elsewhere.
"""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from ctsim.reports.comparison import COLUMNS, Comparison, cells

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1400px; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[aria-sort="ascending"]::after { content: " ▲"; }
th[aria-sort="descending"]::after { content: " ▼"; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5rem 0; }
img { max-width: 100%; border: 1px solid #eee; }
dt { font-weight: 600; }
.left-out { color: #a00; }
code { background: #f6f6f6; padding: 0 0.2rem; }
"""

SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.querySelectorAll("thead th");
  heads.forEach(function (th, column) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var numeric = th.dataset.type === "number";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        if (x === "" && y === "") return 0;
        if (x === "") return 1;  // missing values last, either way
        if (y === "") return -1;
        var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""

CAPTIONS = {
    "accuracy_triggers": "Composite accuracy against triggers, mean over seeds with 95% intervals; the black "
    "step line is the hindsight-optimal frontier (the best accuracy reachable with at most k triggers).",
    "pareto": "Accuracy against cost; the dashed line joins the Pareto front (no pipeline is both cheaper "
    "and more accurate than one on it).",
    "composite": "Composite accuracy over time (rolling mean), each pipeline's triggers marked below, the "
    "dataset's abrupt change points dashed.",
    "matrices": "Accuracy matrices: generation (rows) × evaluation slice (columns), the first seed of "
    "each pipeline.",
    "cl_metrics": "Forgetting, backward and forward transfer per pipeline: means over seeds, with seaborn's "
    "bootstrap 95% intervals.",
}


def image(path: Path) -> str:
    """A PNG file as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def report(comparison: Comparison, table: pl.DataFrame, figures: dict[str, Path]) -> str:
    """The page: the table (sortable), the plots (embedded), the definitions, what was left out, the runs."""
    e = html.escape
    head = "".join(
        f'<th data-type="{"text" if key == "pipeline" else "number"}" title="{e(desc)}">{e(name)}</th>'
        for key, (name, _, desc) in COLUMNS.items()
    )
    body = []
    for row in table.iter_rows(named=True):
        shown = cells(row)
        tds = []
        for key in COLUMNS:
            raw = row["ci_low"] if key == "ci" else row[key]
            value = "" if raw is None or (isinstance(raw, float) and math.isnan(raw)) else str(raw)
            tds.append(f'<td data-value="{e(value)}">{e(shown[key])}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    plots = "".join(
        f'<figure><img alt="{e(name)}" src="{image(path)}"><figcaption>{e(CAPTIONS.get(name, name))}'
        "</figcaption></figure>"
        for name, path in figures.items()
    )
    terms = "".join(f"<dt>{e(name)}</dt><dd>{e(desc)}</dd>" for name, _, desc in COLUMNS.values())
    notes = "".join(f"<li>{e(n)}</li>" for n in comparison.notes)
    if comparison.candidates:
        notes += f"<li>Regret against the candidates of <code>{e(comparison.candidates)}</code>.</li>"
    left = "".join(
        f'<li class="left-out"><code>{e(folder)}</code>: {e(why)}</li>' for folder, why in comparison.left_out
    )
    runs = "".join(
        f"<li><code>{e(str(r.path))}</code>: {e(' '.join(r.overrides) or '(no overrides)')}</li>"
        for r in comparison.runs
    )
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ctsim comparison</title>
<style>{STYLE}</style>
</head>
<body>
<h1>ctsim comparison</h1>
<p>{len(comparison.runs)} run(s), {table.height} pipeline(s) · dataset {e(comparison.runs[0].dataset)} ·
price {comparison.price_per_hour:g} $ per device-hour · made {made}. Click a heading to sort.</p>
<div class="wide">
<table id="summary" class="sortable">
<thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
</div>
<ul>{notes}</ul>
{f'<h2>Left out</h2><ul id="left-out">{left}</ul>' if left else ""}
<h2>Plots</h2>
{plots}
<h2>Columns</h2>
<dl>{terms}</dl>
<h2>Runs</h2>
<ul>{runs}</ul>
<script>{SCRIPT}</script>
</body>
</html>
"""

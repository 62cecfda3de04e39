"""``report.html``: one self-contained page of a comparison, readable offline.

The table comes sorted by significance group, then accuracy (:mod:`ctsim.reports.significance`): the rows
of group 1 (the best and every pipeline a paired test cannot tell from it) are shaded, and a paragraph
under the table says which pipelines those are and how they were tested. Coverage warnings (a pipeline
whose accuracy covers fewer slices than the others) follow it, after a note naming the 95% intervals that
tell nothing (2 seeds, or reaching past [0, 1]; shown cut to it).

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

from ctsim.reports.comparison import (
    COLUMNS,
    Comparison,
    cells,
    chance_notes,
    coverage_notes,
    headings,
    interval_notes,
    shown_interval,
    significance_note,
    tie_notes,
)

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
.coverage, .caution { color: #a60; }
tr.best-group td { background: #eef6ee; }
tr.best-group td:nth-child(2) { font-weight: 600; }
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
    "accuracy_triggers": "Composite accuracy against triggers, mean over seeds with 95% intervals; the solid "
    "black step line is the exact hindsight-optimal frontier (the best accuracy reachable with at most k "
    "triggers).",
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
    shown_as = headings(comparison)
    text_columns = ("pipeline", "test")
    head = "".join(
        f'<th data-type="{"text" if key in text_columns else "number"}" title="{e(desc)}">{e(name)}</th>'
        for key, (name, desc) in shown_as.items()
    )
    body = []
    for row in table.iter_rows(named=True):
        shown = cells(row)
        tds = []
        for key in COLUMNS:
            if key == "ci":  # sorts by the lower bound shown
                raw = None if row["ci_low"] is None else shown_interval(row["ci_low"], row["ci_high"])[0]
            else:
                raw = row[key]
            value = "" if raw is None or (isinstance(raw, float) and math.isnan(raw)) else str(raw)
            tds.append(f'<td data-value="{e(value)}">{e(shown[key])}</td>')
        shade = ' class="best-group"' if row["group"] == 1 else ""
        body.append(f"<tr{shade}>" + "".join(tds) + "</tr>")
    from ctsim.reports.plots import plot_labels

    captions = dict(CAPTIONS)
    if comparison.oracle == "approximate":
        captions["accuracy_triggers"] = (
            "Composite accuracy against triggers, mean over seeds with 95% intervals; the dotted black step "
            "line is the approximate frontier (the best accuracy its candidates reach with at most k "
            "triggers; real pipelines can lie above it, see the notes)."
        )
    elif comparison.oracle is None:
        captions["accuracy_triggers"] = (
            "Composite accuracy against triggers, mean over seeds with 95% intervals."
        )
    plots = "".join(
        f'<figure><img alt="{e(name)}" src="{image(path)}"><figcaption>{e(captions.get(name, name))}'
        "</figcaption></figure>"
        for name, path in figures.items()
    )
    shortened = plot_labels(table)
    if shortened:
        legend = "".join(f"<tr><td>{e(short)}</td><td>{e(full)}</td></tr>" for short, full in shortened)
        plots = (
            '<p>Long pipeline names are shortened in the plots:</p><table id="plot-labels">'
            f"<thead><tr><th>in the plots</th><th>pipeline</th></tr></thead><tbody>{legend}</tbody></table>"
        ) + plots
    terms = "".join(f"<dt>{e(name)}</dt><dd>{e(desc)}</dd>" for name, desc in shown_as.values())
    coverage = "".join(f'<li class="coverage">{e(n)}</li>' for n in coverage_notes(table))
    cautions = [*chance_notes(table), *tie_notes(table), *interval_notes(table)]
    intervals = "".join(f'<li class="caution">{e(n)}</li>' for n in cautions)
    notes = "".join(f"<li>{e(n)}</li>" for n in comparison.notes)
    if comparison.candidates:
        notes += (
            f"<li>Regret against the {e(str(comparison.oracle))} frontier of the candidates of "
            f"<code>{e(comparison.candidates)}</code>.</li>"
        )
    left = "".join(
        f'<li class="left-out"><code>{e(folder)}</code>: {e(why)}</li>' for folder, why in comparison.left_out
    )
    runs = "".join(f"<li><code>{e(path)}</code>: {e(said)}</li>" for path, said in comparison.run_lines())
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
<p id="significance">{e(significance_note(table, comparison.alpha))}</p>
{f'<ul id="intervals">{intervals}</ul>' if intervals else ""}
{f'<ul id="coverage">{coverage}</ul>' if coverage else ""}
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

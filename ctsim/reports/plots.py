"""Plots of a run, drawn from its tables (so they can be redrawn from any run directory).

* ``matrix_<pipeline>_seed<seed>.png``: the accuracy matrix, generation × evaluation slice, with the
  active model's cell of every slice outlined (as in Modyn's Yearbook figures);
* ``composite.png``: composite accuracy over time per pipeline (mean over seeds, band: min-max),
  with each pipeline's triggers in a strip below and the dataset's abrupt change points as dashed
  lines;
* ``cost_accuracy.png``: mean composite accuracy against training FLOPs, one point per pipeline and seed.

A comparison of runs (:func:`draw_comparison`, for :mod:`ctsim.reports.compare`) adds
``accuracy_triggers.png`` (with the oracle's frontier, labelled exact or approximate), ``pareto.png``
(accuracy against cost), ``matrices.png`` (small multiples, one colour bar) and ``cl_metrics.png``
(forgetting, BWT, FWT).

**Conventions** (:class:`Style`): every pipeline keeps one colour in every plot of a run or a
comparison (a palette keyed by the sorted pipeline names, so the same names get the same colours
wherever they are drawn). Legends sit below the axes and files are saved with a tight bounding box, so
no legend or label is cut off. A pipeline name longer than :data:`LABEL_WIDTH` characters is shortened
in the plots to a letter and its distinguishing settings (``B  every=5 lr=0.01``); the comparison's
``compare.md`` and ``report.html`` list each letter with the full name (:meth:`Style.legend_table`).
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: files only, never a window

import matplotlib.pyplot as plt
import polars as pl
import seaborn as sns
from matplotlib.patches import Rectangle
from matplotlib.ticker import EngFormatter, FuncFormatter, LogFormatter

from ctsim.datasets.base import ChangePoint

if TYPE_CHECKING:
    from ctsim.reports.comparison import Comparison

LABEL_WIDTH = 30  # characters a pipeline's name may take in a legend before the names are shortened
SHORT_WIDTH = 44  # ... and the most a shortened label takes
MARKERS = "osD^vP<>"


@dataclass(frozen=True)
class Style:
    """Each pipeline's colour and its label in the plots (see the module docstring).

    >>> s = Style.of(["never", "trigger=time trigger.every=5 selection=window selection.size=3"])
    >>> s.label["never"], s.label["trigger=time trigger.every=5 selection=window selection.size=3"]
    ('A  never', 'B  time every=5 window size=3')
    >>> s.key["never"]
    'A'
    >>> Style.of(["b", "a"]).colour["a"] == Style.of(["a", "c", "b"]).colour["a"]  # keyed by name
    True
    """

    colour: dict[str, tuple[float, float, float]]
    label: dict[str, str]
    marker: dict[str, str]
    key: dict[str, str]  # the label's letter where names are shortened, else the name

    @classmethod
    def of(cls, names: Sequence[str], width: int = LABEL_WIDTH) -> Style:
        ordered = sorted(set(names))
        count = len(ordered)
        colours = sns.color_palette("tab10" if count <= 10 else "tab20" if count <= 20 else "husl", count)
        label = short_labels(ordered, width)
        return cls(
            colour={n: tuple(c) for n, c in zip(ordered, colours)},
            label=label,
            marker={n: MARKERS[i // 20 % len(MARKERS)] for i, n in enumerate(ordered)},
            key={n: n if label[n] == n else label[n].split()[0] for n in ordered},
        )

    def legend_table(self) -> list[tuple[str, str]]:
        """(label in the plots, full name) of every pipeline whose label is not its name."""
        return [(short, full) for full, short in self.label.items() if short != full]


def short_labels(names: Sequence[str], width: int = LABEL_WIDTH, most: int = SHORT_WIDTH) -> dict[str, str]:
    """Each name as the plots show it: itself when every name fits in ``width`` characters; else a
    letter (A, B, …, in sorted order) and the name's settings with each override's key shortened to
    its last part (``trigger.every=5`` → ``every=5``, ``trigger=time`` → ``time``), cut at ``most``."""
    ordered = sorted(set(names))
    if all(len(n) <= width for n in ordered):
        return {n: n for n in ordered}
    out = {}
    for i, name in enumerate(ordered):
        key = _letters(i)
        text = " ".join(_compact(part) for part in name.split())
        room = most - len(key) - 2
        out[name] = f"{key}  {text if len(text) <= room else text[: room - 1] + '…'}"
    return out


def _letters(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else _letters(i // 26 - 1) + chr(ord("A") + i % 26)


def _compact(part: str) -> str:
    """``group.sub.key=value`` → ``key=value``; ``group=value`` → ``value``; anything else as it is."""
    match = re.fullmatch(r"[+~]*([\w.]+)=(.*)", part)
    if not match:
        return part
    key, value = match.groups()
    return value if "." not in key else f"{key.rsplit('.', 1)[-1]}={value}"


def _ticks(labels: Sequence[str], most: int = 12) -> tuple[list[int], list[str]]:
    step = max(1, -(-len(labels) // most))
    idx = list(range(0, len(labels), step))
    return idx, [labels[i] for i in idx]


def _legend_beside(ax: plt.Axes, style: Style, title: str | None = "pipeline") -> None:
    """The legend right of the axes: other lines (a frontier) first, then the pipelines by label (A, B,
    … where shortened). Never over the data; :func:`_save`'s tight bounding box keeps it whole and the
    axes their size."""
    handles, labels = ax.get_legend_handles_labels()
    ours = set(style.label.values())
    order = sorted(range(len(labels)), key=lambda i: (labels[i] in ours, labels[i]))
    ax.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize="small",
        title=title,
        frameon=False,
    )


def accuracy_matrix(
    evals: pl.DataFrame,
    generations: pl.DataFrame,
    pipeline: str,
    seed: int,
    path: Path,
    style: Style | None = None,
) -> Path:
    """Heatmap of one pipeline's accuracy matrix, active cells outlined."""
    style = style or Style.of([pipeline])
    ev = evals.filter(
        (pl.col("pipeline") == pipeline) & (pl.col("seed") == seed) & (pl.col("metric") == "accuracy")
    )
    gens = generations.filter((pl.col("pipeline") == pipeline) & (pl.col("seed") == seed)).sort("generation")
    wide = ev.pivot(on="slice", index="generation", values="value", sort_columns=True).sort("generation")
    slice_labels = (
        ev.filter(pl.col("generation") == ev["generation"].min()).sort("slice")["slice_label"].to_list()
    )
    matrix = wide.drop("generation").to_numpy()
    rows = [f"g{g} · {label}" for g, label in zip(gens["generation"], gens["trigger_label"])]
    height = min(14.0, 3.0 + 0.14 * len(rows))
    fig, ax = plt.subplots(figsize=(11, height))
    sns.heatmap(matrix, ax=ax, vmin=0.0, vmax=1.0, cmap="viridis", cbar_kws={"label": "accuracy"})
    active = ev.filter(pl.col("active")).select("generation", "slice").rows()
    for g, s in active:
        ax.add_patch(Rectangle((s, g), 1, 1, fill=False, edgecolor="white", linewidth=1.0))
    xi, xl = _ticks(slice_labels)
    ax.set_xticks([i + 0.5 for i in xi], xl, rotation=0)
    yi, yl = _ticks(rows, most=20)
    ax.set_yticks([i + 0.5 for i in yi], yl, rotation=0)
    ax.set_xlabel("evaluation slice")
    ax.set_ylabel("generation · slice its training data ended")
    ax.set_title(f"{style.label[pipeline]} (seed {seed}): accuracy matrix, active model outlined")
    return _save(fig, path)


def composite_over_time(
    evals: pl.DataFrame,
    generations: pl.DataFrame,
    change_points: Sequence[ChangePoint],
    path: Path,
    window: int = 5,
    style: Style | None = None,
) -> Path:
    """Composite (active-model) accuracy per slice and pipeline; each pipeline's triggers (its first
    seed) in a strip below, one row per pipeline.

    Small slices have few test samples, so the curve is a rolling mean over ``window`` slices,
    weighted by test-set size.
    """
    comp = (
        evals.filter(pl.col("active") & (pl.col("metric") == "accuracy"))
        .drop_nulls("value")
        .sort("pipeline", "seed", "slice")
        .with_columns(
            (
                (pl.col("value") * pl.col("n")).rolling_sum(window, min_samples=1)
                / pl.col("n").rolling_sum(window, min_samples=1)
            )
            .over("pipeline", "seed")
            .alias("value")
        )
    )
    labels = evals.select("slice", "slice_label").unique().sort("slice")["slice_label"].to_list()
    style = style or Style.of(generations["pipeline"].unique().to_list())
    pipelines = sorted(generations["pipeline"].unique().to_list(), key=style.label.get)
    comp = comp.with_columns(pl.col("pipeline").replace_strict(style.label, default=pl.col("pipeline")))
    fig, (ax, strip) = plt.subplots(
        2,
        1,
        figsize=(11, 5.5 + 0.22 * len(pipelines)),
        sharex=True,
        gridspec_kw={"height_ratios": [5, max(0.6, 0.22 * len(pipelines))], "hspace": 0.08},
    )
    sns.lineplot(
        data=comp.to_dict(as_series=False),
        x="slice",
        y="value",
        hue="pipeline",
        hue_order=[style.label[p] for p in pipelines],
        palette={style.label[p]: style.colour[p] for p in pipelines},
        errorbar=("pi", 100),
        ax=ax,
    )
    for rank, name in enumerate(pipelines):
        first_seed = generations.filter(pl.col("pipeline") == name)["seed"].min()
        fired = generations.filter((pl.col("pipeline") == name) & (pl.col("seed") == first_seed))
        slices = fired["trigger_slice"].to_list()
        strip.plot(slices, [rank] * len(slices), "|", color=style.colour[name], markersize=9, mew=1.5)
    for cp in change_points:
        if cp.kind == "abrupt":
            for axis in (ax, strip):
                axis.axvline(cp.slice - 0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(0.0, 1.0)
    strip.set_ylim(len(pipelines) - 0.5, -0.5)
    strip.set_yticks(range(len(pipelines)), [style.label[p] for p in pipelines], fontsize="x-small")
    for tick, name in zip(strip.get_yticklabels(), pipelines):
        tick.set_color(style.colour[name])
    xi, xl = _ticks(labels)
    strip.set_xticks(xi, xl)
    strip.set_xlabel("slice (strip: each pipeline's triggers, first seed; dashed: abrupt change points)")
    ax.set_xlabel("")
    ax.set_ylabel(f"composite accuracy\n(active model; rolling mean of {window} slices)")
    ax.set_title("Composite accuracy over time (band: min–max over seeds)")
    ax.grid(alpha=0.3)
    _legend_beside(ax, style)
    return _save(fig, path)


def cost_accuracy(cost: pl.DataFrame, path: Path, style: Style | None = None) -> Path:
    """Mean composite accuracy against training and selection FLOPs (scoring passes of downsamplers),
    one point per pipeline and seed."""
    names = cost["pipeline"].unique(maintain_order=True).to_list()
    style = style or Style.of(names)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    cost = cost.with_columns((pl.col("train_flops") + pl.col("selection_flops")).alias("flops"))
    for name in names:
        own = cost.filter(pl.col("pipeline") == name)
        ax.scatter(
            own["flops"], own["composite_accuracy"], s=50, color=style.colour[name], label=style.label[name]
        )
    if cost.height and cost["flops"].min() > 0:
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(EngFormatter(unit="FLOP"))
    ax.set_xlabel("training + selection FLOPs (log)")
    ax.set_ylabel("mean composite accuracy")
    ax.set_title("Accuracy against training cost (one point per pipeline and seed)")
    ax.grid(alpha=0.3)
    _legend_beside(ax, style)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write ``fig`` with a tight bounding box (legends below or beside the axes are kept whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")  # renamed into place: never half a picture
    try:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip("."), bbox_inches="tight", pad_inches=0.15)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return path


def draw_all(
    tables: dict[str, pl.DataFrame], change_points: Sequence[ChangePoint], out_dir: Path
) -> list[Path]:
    """Every plot of a run: one matrix per pipeline (its first seed), the composite and cost plots."""
    evals, gens, cost = tables["evals"], tables["generations"], tables["cost"]
    paths = []
    if evals.is_empty():
        return paths
    style = Style.of(cost["pipeline"].unique().to_list())
    for name in cost["pipeline"].unique(maintain_order=True):
        seed = cost.filter(pl.col("pipeline") == name)["seed"].min()
        if gens.filter((pl.col("pipeline") == name) & (pl.col("seed") == seed)).height:
            path = out_dir / f"matrix_{name}_seed{seed}.png"
            paths.append(accuracy_matrix(evals, gens, name, seed, path, style))
    paths.append(composite_over_time(evals, gens, change_points, out_dir / "composite.png", style=style))
    paths.append(cost_accuracy(cost.drop_nulls("composite_accuracy"), out_dir / "cost_accuracy.png", style))
    return paths


# -- comparing runs (ctsim.reports.compare) ----------------------------------------------------------


def draw_comparison(comparison: Comparison, table: pl.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Every plot of a comparison, by name: accuracy against triggers (with the oracle frontier), the
    Pareto front of accuracy against cost, composite accuracy over time, the accuracy matrices, and the
    continual-learning metrics. One :class:`Style` for all of them."""
    t = comparison.tables
    style = Style.of(table["pipeline"].to_list())
    paths = {
        "accuracy_triggers": accuracy_triggers(
            table, comparison.frontier, out_dir / "accuracy_triggers.png", style
        ),
        "pareto": pareto(table, comparison.price_per_hour, out_dir / "pareto.png", style),
    }
    if not t["evals"].is_empty():
        changes = [ChangePoint(**cp) for cp in comparison.change_points]
        paths["composite"] = composite_over_time(
            t["evals"], t["generations"], changes, out_dir / "composite.png", style=style
        )
        paths["matrices"] = matrices(t["evals"], out_dir / "matrices.png", style=style)
    metrics = t.get("metrics")
    if metrics is not None and not metrics.is_empty():
        paths["cl_metrics"] = cl_metrics(metrics, out_dir / "cl_metrics.png", style)
    return paths


def seed_table(cost: pl.DataFrame) -> pl.DataFrame:
    """A run's ``cost`` table as the comparison's points (for :func:`accuracy_triggers`): per pipeline,
    the mean accuracy and triggers over seeds, and the 95% t interval of that mean (none for one seed)."""
    from scipy import stats

    table = cost.group_by("pipeline", maintain_order=True).agg(
        pl.col("triggers").mean(),
        pl.col("composite_accuracy").mean().alias("accuracy"),
        pl.col("composite_accuracy").std().alias("sd"),
        pl.col("composite_accuracy").count().alias("n"),
    )
    half = [
        None if n < 2 or sd is None else float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        for sd, n in zip(table["sd"], table["n"])
    ]
    return table.with_columns(pl.Series("half", half, pl.Float64)).select(
        "pipeline",
        "triggers",
        "accuracy",
        (pl.col("accuracy") - pl.col("half")).alias("ci_low"),
        (pl.col("accuracy") + pl.col("half")).alias("ci_high"),
    )


def _interval(table: pl.DataFrame) -> list[list[float]]:
    """Error bars (below, above) of each row's accuracy from its 95% interval as the reports show it,
    cut to [0, 1] (:func:`~ctsim.reports.comparison.shown_interval`; 0 where there is none)."""
    from ctsim.reports.comparison import shown_interval

    bars = []
    for r in table.iter_rows(named=True):
        if r["ci_low"] is None:
            bars.append((0.0, 0.0))
        else:
            low, high = shown_interval(r["ci_low"], r["ci_high"])
            bars.append((r["accuracy"] - low, high - r["accuracy"]))
    return [[b[0] for b in bars], [b[1] for b in bars]]


def _points(ax: plt.Axes, table: pl.DataFrame, x: str, style: Style) -> None:
    """One point per pipeline (mean over seeds) with its 95% interval, in the pipeline's colour."""
    below, above = _interval(table)
    for i, row in enumerate(table.iter_rows(named=True)):
        if row[x] is None or row["accuracy"] is None:
            continue
        name = row["pipeline"]
        ax.errorbar(
            row[x],
            row["accuracy"],
            yerr=[[below[i]], [above[i]]],
            fmt=style.marker[name],
            color=style.colour[name],
            label=style.label[name],
            capsize=3,
            markersize=7,
        )


def accuracy_triggers(
    table: pl.DataFrame, front: pl.DataFrame | None, path: Path, style: Style | None = None
) -> Path:
    """Composite accuracy against the number of triggers (Modyn's scatter), 95% intervals, and the
    oracle's frontier as a step line where there is one: solid and "exact", or dotted and
    "approximate" (its ``oracle`` column, :mod:`ctsim.reports.oracle`)."""
    from ctsim.reports.comparison import frontier_label

    style = style or Style.of(table["pipeline"].to_list())
    fig, ax = plt.subplots(figsize=(9, 5.5))
    if front is not None and not front.is_empty():
        exact = bool((front["oracle"] == "exact").all())
        source = front["candidates"][0]
        mean = front.group_by("k").agg(pl.col("accuracy").mean()).sort("k")
        ax.step(
            mean["k"],
            mean["accuracy"],
            where="post",
            color="black",
            linestyle="-" if exact else ":",
            label=frontier_label(exact, style.key.get(source, source)),
        )
    _points(ax, table, "triggers", style)
    ax.set_xscale("log")
    # plain numbers on major and minor ticks (4, 6, 10, not 4×10⁰); minor ones only where few decades show
    ax.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    ax.set_xlabel("triggers (model generations; log scale)")
    ax.set_ylabel("composite accuracy\n(mean over seeds, 95% CI)")
    ax.set_title("Accuracy against triggers")
    ax.grid(alpha=0.3)
    _legend_beside(ax, style)
    return _save(fig, path)


def pareto_front(cost: Sequence[float], accuracy: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (cheaper or as cheap, and more accurate or as
    accurate, one of them strictly), by increasing cost.

    >>> pareto_front([1.0, 2.0, 3.0, 2.5], [0.5, 0.7, 0.6, 0.8])
    [0, 1, 3]
    """
    order = sorted(range(len(cost)), key=lambda i: (cost[i], -accuracy[i]))
    front, best = [], -math.inf
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return front


def money(value: float, _: object = None) -> str:
    """A dollar amount as a tick reads it: cents below a dollar.

    >>> money(0.018), money(0.00042), money(3.5), money(1200.0)
    ('1.8¢', '0.042¢', '$3.5', '$1,200')
    """
    if value == 0:
        return "0"
    if abs(value) < 1:
        return f"{100 * value:.2g}¢"
    return f"${value:,.2g}" if abs(value) < 10 else f"${value:,.0f}"


def pareto(table: pl.DataFrame, price_per_hour: float, path: Path, style: Style | None = None) -> Path:
    """Accuracy against cost, the Pareto front joined: no pipeline is both cheaper and more accurate
    than one on the front."""
    style = style or Style.of(table["pipeline"].to_list())
    x = "cost_usd" if price_per_hour > 0 else "device_s"
    known = table.drop_nulls([x, "accuracy"])
    fig, ax = plt.subplots(figsize=(9, 5.5))
    _points(ax, table, x, style)
    front = pareto_front(known[x].to_list(), known["accuracy"].to_list())
    if front:
        ax.step(
            [known[x][i] for i in front],
            [known["accuracy"][i] for i in front],
            where="post",
            color="black",
            linestyle="--",
            label="Pareto front",
        )
        ax.scatter(
            [known[x][i] for i in front],
            [known["accuracy"][i] for i in front],
            s=160,
            facecolors="none",
            edgecolors="black",
            zorder=3,
        )
    if known.height and known[x].min() > 0 and known[x].max() / known[x].min() > 20:
        ax.set_xscale("log")
    if x == "cost_usd":
        ax.xaxis.set_major_formatter(FuncFormatter(money))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        unit = f"estimated cost (¢: US cents) at {price_per_hour:g} \\$ per device-hour"
    else:
        ax.xaxis.set_major_formatter(EngFormatter(unit="s"))
        unit = "device-seconds"
    ax.set_xlabel(f"{unit} (trigger, selection and training)")
    ax.set_ylabel("composite accuracy\n(mean over seeds, 95% CI)")
    ax.set_title("Accuracy against cost: the Pareto front")
    ax.grid(alpha=0.3)
    _legend_beside(ax, style)
    return _save(fig, path)


def matrices(evals: pl.DataFrame, path: Path, columns: int = 4, style: Style | None = None) -> Path:
    """Small multiples: each pipeline's accuracy matrix (its first seed), generations × slices, with one
    colour bar for all."""
    acc = evals.filter(pl.col("metric") == "accuracy")
    style = style or Style.of(acc["pipeline"].unique().to_list())
    names = sorted(acc["pipeline"].unique().to_list(), key=style.label.get)
    cols = min(columns, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols + 1.2, 3.8 * rows), squeeze=False)
    fig.subplots_adjust(hspace=0.45, wspace=0.25)
    image = None
    for ax, name in zip(axes.flat, names):
        mine = acc.filter(pl.col("pipeline") == name)
        seed = mine["seed"].min()
        wide = (
            mine.filter(pl.col("seed") == seed)
            .pivot(on="slice", index="generation", values="value", sort_columns=True)
            .sort("generation")
        )
        sns.heatmap(wide.drop("generation").to_numpy(), ax=ax, vmin=0.0, vmax=1.0, cmap="viridis", cbar=False)
        image = ax.collections[0]
        title = textwrap.fill(f"{style.label[name]} (seed {seed})", 34)  # a panel's width
        ax.set_title(title, fontsize=8, color=style.colour[name])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("evaluation slice", fontsize=7)
        ax.set_ylabel("generation", fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="accuracy", shrink=0.9)
    fig.suptitle("Accuracy matrices (generation × evaluation slice)")
    return _save(fig, path)


def cl_metrics(metrics: pl.DataFrame, path: Path, style: Style | None = None) -> Path:
    """Forgetting, BWT and FWT, one panel each: a bar per pipeline in its colour (mean over seeds), lines
    its 95% interval (seaborn's bootstrap)."""
    names = metrics["pipeline"].unique(maintain_order=True).to_list()
    style = style or Style.of(names)
    shown = [c for c in ("forgetting", "bwt", "fwt") if c in metrics.columns]
    titles = {"forgetting": "forgetting", "bwt": "backward transfer (BWT)", "fwt": "forward transfer (FWT)"}
    data = metrics.with_columns(pl.col("pipeline").replace_strict(style.label, default=pl.col("pipeline")))
    order = [style.label[n] for n in sorted(names, key=style.label.get)]
    fig, axes = plt.subplots(
        1, len(shown), figsize=(3.4 * len(shown) + 2.5, 1.5 + 0.4 * len(names)), sharey=True, squeeze=False
    )
    for ax, column in zip(axes[0], shown):
        values = data.select("pipeline", column).drop_nulls(column)
        if values.height:
            sns.barplot(
                data=values.to_dict(as_series=False),
                y="pipeline",
                x=column,
                hue="pipeline",
                order=order,
                hue_order=order,
                palette={style.label[n]: style.colour[n] for n in names},
                errorbar=("ci", 95),
                legend=False,
                ax=ax,
            )
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(titles[column], fontsize="medium")
        ax.set_xlabel("accuracy (fraction)")
        ax.set_ylabel("")
        ax.grid(axis="x", alpha=0.3)
    for tick in axes[0][0].get_yticklabels():
        full = next((n for n in names if style.label[n] == tick.get_text()), None)
        if full is not None:
            tick.set_color(style.colour[full])
    fig.suptitle(
        "Continual-learning metrics per pipeline (mean over seeds, 95% CI; empty: too few generations)",
        y=1.06,
    )
    return _save(fig, path)


def plot_labels(table: pl.DataFrame) -> list[tuple[str, str]]:
    """(label in the plots, full name) of the pipelines the plots shorten (:class:`Style`)."""
    return Style.of(table["pipeline"].to_list()).legend_table()

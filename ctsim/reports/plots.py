"""Plots of a run, drawn from its tables (so they can be redrawn from any run directory).

* ``matrix_<pipeline>_seed<seed>.png``: the accuracy matrix, generation × evaluation slice, with the
  active model's cell of every slice outlined (as in Modyn's Yearbook figures);
* ``composite.png``: composite accuracy over time per pipeline (mean over seeds, band: min-max),
  with each pipeline's triggers marked below and the dataset's abrupt change points as dashed lines;
* ``cost_accuracy.png``: mean composite accuracy against training FLOPs, one point per pipeline and seed.

A comparison of runs (:func:`draw_comparison`, for :mod:`ctsim.reports.compare`) adds
``accuracy_triggers.png`` (with the hindsight-optimal frontier), ``pareto.png`` (accuracy against
cost), ``matrices.png`` (small multiples) and ``cl_metrics.png`` (forgetting, BWT, FWT).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: files only, never a window

import matplotlib.pyplot as plt
import polars as pl
import seaborn as sns
from matplotlib.patches import Rectangle

from ctsim.datasets.base import ChangePoint

if TYPE_CHECKING:
    from ctsim.reports.comparison import Comparison


def _ticks(labels: Sequence[str], most: int = 12) -> tuple[list[int], list[str]]:
    step = max(1, -(-len(labels) // most))
    idx = list(range(0, len(labels), step))
    return idx, [labels[i] for i in idx]


def accuracy_matrix(
    evals: pl.DataFrame, generations: pl.DataFrame, pipeline: str, seed: int, path: Path
) -> Path:
    """Heatmap of one pipeline's accuracy matrix, active cells outlined."""
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
    height = min(14.0, 2.0 + 0.12 * len(rows))
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
    ax.set_title(f"{pipeline} (seed {seed}): accuracy matrix, active model outlined")
    return _save(fig, path)


def composite_over_time(
    evals: pl.DataFrame,
    generations: pl.DataFrame,
    change_points: Sequence[ChangePoint],
    path: Path,
    window: int = 5,
) -> Path:
    """Composite (active-model) accuracy per slice and pipeline, triggers marked below.

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
    pipelines = generations["pipeline"].unique(maintain_order=True).to_list()
    palette = dict(zip(pipelines, sns.color_palette("tab10", len(pipelines))))
    fig, ax = plt.subplots(figsize=(11, 5 + 0.15 * len(pipelines)))
    sns.lineplot(
        data=comp.to_dict(as_series=False),
        x="slice",
        y="value",
        hue="pipeline",
        palette=palette,
        errorbar=("pi", 100),
        ax=ax,
    )
    for rank, name in enumerate(pipelines):
        first_seed = generations.filter(pl.col("pipeline") == name)["seed"].min()
        fired = generations.filter((pl.col("pipeline") == name) & (pl.col("seed") == first_seed))[
            "trigger_slice"
        ]
        y = -0.04 - 0.035 * rank
        ax.plot(fired.to_list(), [y] * len(fired), "|", color=palette[name], markersize=7)
    for cp in change_points:
        if cp.kind == "abrupt":
            ax.axvline(cp.slice - 0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(-0.06 - 0.035 * len(pipelines), 1.0)
    xi, xl = _ticks(labels)
    ax.set_xticks(xi, xl)
    ax.set_xlabel("slice (| marks: triggers; dashed: abrupt change points of the dataset)")
    ax.set_ylabel(f"composite accuracy (active model; rolling mean of {window} slices)")
    ax.set_title("Composite accuracy over time")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="pipeline")
    return _save(fig, path)


def cost_accuracy(cost: pl.DataFrame, path: Path) -> Path:
    """Mean composite accuracy against training and selection FLOPs (scoring passes of downsamplers),
    one point per pipeline and seed."""
    fig, ax = plt.subplots(figsize=(8.5, 5))
    cost = cost.with_columns((pl.col("train_flops") + pl.col("selection_flops")).alias("flops"))
    sns.scatterplot(
        data=cost.to_dict(as_series=False),
        x="flops",
        y="composite_accuracy",
        hue="pipeline",
        s=60,
        ax=ax,
    )
    ax.set_xscale("log")
    ax.set_xlabel("training + selection FLOPs (log)")
    ax.set_ylabel("mean composite accuracy")
    ax.set_title("Accuracy against training cost")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="pipeline")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")  # renamed into place: never half a picture
    try:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip("."))
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
    for name in cost["pipeline"].unique(maintain_order=True):
        seed = cost.filter(pl.col("pipeline") == name)["seed"].min()
        if gens.filter((pl.col("pipeline") == name) & (pl.col("seed") == seed)).height:
            paths.append(accuracy_matrix(evals, gens, name, seed, out_dir / f"matrix_{name}_seed{seed}.png"))
    paths.append(composite_over_time(evals, gens, change_points, out_dir / "composite.png"))
    paths.append(cost_accuracy(cost.drop_nulls("composite_accuracy"), out_dir / "cost_accuracy.png"))
    return paths


# -- comparing runs (ctsim.reports.compare) ----------------------------------------------------------


def draw_comparison(comparison: Comparison, table: pl.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Every plot of a comparison, by name: accuracy against triggers (with the oracle frontier), the
    Pareto front of accuracy against cost, composite accuracy over time, the accuracy matrices, and the
    continual-learning metrics."""
    t = comparison.tables
    paths = {
        "accuracy_triggers": accuracy_triggers(table, comparison.frontier, out_dir / "accuracy_triggers.png"),
        "pareto": pareto(table, comparison.price_per_hour, out_dir / "pareto.png"),
    }
    if not t["evals"].is_empty():
        changes = [ChangePoint(**cp) for cp in comparison.change_points]
        paths["composite"] = composite_over_time(
            t["evals"], t["generations"], changes, out_dir / "composite.png"
        )
        paths["matrices"] = matrices(t["evals"], out_dir / "matrices.png")
    metrics = t.get("metrics")
    if metrics is not None and not metrics.is_empty():
        paths["cl_metrics"] = cl_metrics(metrics, out_dir / "cl_metrics.png")
    return paths


def _interval(table: pl.DataFrame) -> list[list[float]]:
    """Error bars (below, above) of each row's accuracy from its 95% interval (0 where there is none)."""
    rows = table.iter_rows(named=True)
    pairs = [
        (0.0, 0.0) if r["ci_low"] is None else (r["accuracy"] - r["ci_low"], r["ci_high"] - r["accuracy"])
        for r in rows
    ]
    return [[p[0] for p in pairs], [p[1] for p in pairs]]


MARKERS = "osD^vP"


def _points(ax: plt.Axes, table: pl.DataFrame, x: str) -> None:
    """One point per pipeline (mean over seeds) with its 95% interval, labelled; colours from a palette of
    ten and markers cycling, so that many pipelines stay apart."""
    palette = sns.color_palette("tab10", 10)
    below, above = _interval(table)
    for i, row in enumerate(table.iter_rows(named=True)):
        if row[x] is None or row["accuracy"] is None:
            continue
        ax.errorbar(
            row[x],
            row["accuracy"],
            yerr=[[below[i]], [above[i]]],
            fmt=MARKERS[i // 10 % len(MARKERS)],
            color=palette[i % 10],
            label=row["pipeline"],
            capsize=3,
        )


def accuracy_triggers(table: pl.DataFrame, front: pl.DataFrame | None, path: Path) -> Path:
    """Composite accuracy against the number of triggers (Modyn's scatter), 95% intervals, and the
    hindsight-optimal frontier as a step line where there is one."""
    fig, ax = plt.subplots(figsize=(9, 5.5))
    if front is not None and not front.is_empty():
        mean = front.group_by("k").agg(pl.col("accuracy").mean()).sort("k")
        ax.step(mean["k"], mean["accuracy"], where="post", color="black", label="hindsight-optimal frontier")
    _points(ax, table, "triggers")
    ax.set_xscale("log")
    ax.set_xlabel("triggers (model generations; log scale)")
    ax.set_ylabel("composite accuracy (mean over seeds, 95% CI)")
    ax.set_title("Accuracy against triggers")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
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


def pareto(table: pl.DataFrame, price_per_hour: float, path: Path) -> Path:
    """Accuracy against cost, the Pareto front joined: no pipeline is both cheaper and more accurate
    than one on the front."""
    x = "cost_usd" if price_per_hour > 0 else "device_s"
    known = table.drop_nulls([x, "accuracy"])
    fig, ax = plt.subplots(figsize=(9, 5.5))
    _points(ax, table, x)
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
    if known.height and known[x].min() > 0:
        ax.set_xscale("log")
    unit = (
        f"estimated cost in \\$ at {price_per_hour:g} \\$ per device-hour"
        if x == "cost_usd"
        else "device-seconds"
    )
    ax.set_xlabel(f"{unit} (trigger, selection and training)")
    ax.set_ylabel("composite accuracy (mean over seeds, 95% CI)")
    ax.set_title("Accuracy against cost: the Pareto front")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return _save(fig, path)


def matrices(evals: pl.DataFrame, path: Path, columns: int = 4) -> Path:
    """Small multiples: each pipeline's accuracy matrix (its first seed), generations × slices."""
    acc = evals.filter(pl.col("metric") == "accuracy")
    names = acc["pipeline"].unique(maintain_order=True).to_list()
    cols = min(columns, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        mine = acc.filter(pl.col("pipeline") == name)
        seed = mine["seed"].min()
        wide = (
            mine.filter(pl.col("seed") == seed)
            .pivot(on="slice", index="generation", values="value", sort_columns=True)
            .sort("generation")
        )
        sns.heatmap(wide.drop("generation").to_numpy(), ax=ax, vmin=0.0, vmax=1.0, cmap="viridis", cbar=False)
        ax.set_title(f"{name} (seed {seed})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("slice", fontsize=7)
        ax.set_ylabel("generation", fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.suptitle("Accuracy matrices (generation × evaluation slice; colour 0 to 1)")
    return _save(fig, path)


def cl_metrics(metrics: pl.DataFrame, path: Path) -> Path:
    """Forgetting, BWT and FWT per pipeline: bars are means over seeds, lines their 95% intervals."""
    long = metrics.unpivot(
        index=["pipeline", "seed"], on=[c for c in ("forgetting", "bwt", "fwt") if c in metrics.columns]
    ).drop_nulls("value")
    fig, ax = plt.subplots(figsize=(10, 4 + 0.12 * metrics["pipeline"].n_unique()))
    if long.height:
        sns.barplot(
            data=long.to_dict(as_series=False),
            y="pipeline",
            x="value",
            hue="variable",
            errorbar=("ci", 95),
            ax=ax,
        )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("accuracy points (fraction)")
    ax.set_ylabel("")
    ax.set_title("Forgetting, backward (BWT) and forward transfer (FWT)")
    ax.legend(title="")
    return _save(fig, path)

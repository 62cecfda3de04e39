"""Plots of a run, drawn from its tables (so they can be redrawn from any run directory).

* ``matrix_<pipeline>_seed<seed>.png``: the accuracy matrix, generation × evaluation slice, with the
  active model's cell of every slice outlined (as in Modyn's Yearbook figures);
* ``composite.png``: composite accuracy over time per pipeline (mean over seeds, band: min-max),
  with each pipeline's triggers marked below and the dataset's abrupt change points as dashed lines;
* ``cost_accuracy.png``: mean composite accuracy against training FLOPs, one point per pipeline and seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: files only, never a window

import matplotlib.pyplot as plt
import polars as pl
import seaborn as sns
from matplotlib.patches import Rectangle

from ctsim.datasets.base import ChangePoint


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

"""The human-readable side of a run: ``summary.md`` and the one-screen summary printed at the end."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl
import yaml

from ctsim.datasets.base import ChangePoint
from ctsim.measure.quality import quality_markdown
from ctsim.reports.comparison import coverage_notes


def pipeline_summary(cost: pl.DataFrame) -> pl.DataFrame:
    """One row per pipeline: means over its seeds (and the spread of composite accuracy)."""
    return cost.group_by("pipeline", maintain_order=True).agg(
        pl.len().alias("seeds"),
        pl.col("triggers").mean(),
        pl.col("composite_accuracy").mean().alias("accuracy"),
        pl.col("composite_accuracy").std().alias("accuracy_sd"),
        pl.col("composite_accuracy_weighted").mean().alias("accuracy_weighted"),
        pl.col("composite_macro_f1").mean().alias("macro_f1"),
        pl.col("covered_slices").mean(),
        pl.col("samples_trained").mean(),
        pl.col("optimizer_steps").mean(),
        (pl.col("train_flops").mean() / 1e12).alias("train_tflops"),
        (pl.col("selection_flops").mean() / 1e12).alias("selection_tflops"),
        pl.col("selection_s").mean(),
        pl.col("train_s").mean(),
        pl.col("eval_s").mean(),
        pl.col("total_s").mean(),
        pl.col("nonfinite_generations").sum(),
        pl.col("skipped").sum(),
    )


METRIC_COLUMNS = ("bwt", "fwt", "forgetting", "eval_fix_id", "eval_fix_ood", "eval_fix_worst", "eval_stream")
# fractions, always shown with their digits: an accuracy of 1.0 is 1.000, not a count
SCORES = {"accuracy", "accuracy_sd", "accuracy_weighted", "macro_f1", *METRIC_COLUMNS}


def _fmt(value: object, digits: int = 3, score: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1 and not score:
            return f"{int(value):,}"
        return f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def console_summary(
    name: str, header: str, cost: pl.DataFrame, out_dir: Path, files: Sequence[Path], wall_seconds: float
) -> str:
    """The one-screen summary: pipelines, triggers, composite accuracy, samples trained, time, files."""
    table = pipeline_summary(cost)
    cols = [
        ("pipeline", 18),
        ("seeds", 5),
        ("triggers", 8),
        ("accuracy", 9),
        ("± sd", 6),
        ("samples", 11),
        ("train s", 8),
        ("total s", 8),
    ]
    lines = [
        f"ctsim · {name} · {header}",
        "",
        "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(cols)),
    ]
    for row in table.iter_rows(named=True):
        values = [
            row["pipeline"],
            row["seeds"],
            f"{row['triggers']:.1f}".rstrip("0").rstrip("."),
            "non-finite"
            if row["accuracy"] is None and row["nonfinite_generations"]
            else _fmt(row["accuracy"], score=True),
            _fmt(row["accuracy_sd"], score=True),
            _fmt(round(row["samples_trained"])),
            _fmt(row["train_s"], 1),
            _fmt(row["total_s"], 1),
        ]
        lines.append(
            "  ".join(
                f"{v!s:<{w}}" if i == 0 else f"{v!s:>{w}}" for i, (v, (_, w)) in enumerate(zip(values, cols))
            )
        )
        if row["nonfinite_generations"]:
            lines.append(
                f"  ! {row['pipeline']}: {row['nonfinite_generations']} generation(s) went non-finite "
                "and were frozen at their last finite state (generations.parquet: status)"
            )
    lines += short_coverage(table)
    lines += [
        "",
        "accuracy: mean composite accuracy (active model per slice), mean over seeds",
        f"wall time {wall_seconds:.1f} s · results in {out_dir}/",
        "  " + ", ".join(sorted(str(f.relative_to(out_dir)) for f in files if f.parent == out_dir)),
    ]
    plots = sum(1 for f in files if f.parent.name == "plots")
    if plots:  # output.plots=false writes no plots/ folder: name none
        lines.append(f"  plots/: {plots} png")
    return "\n".join(lines)


def short_coverage(table: pl.DataFrame) -> list[str]:
    """The console's one line for every pipeline whose accuracy covers fewer slices than another's
    (``summary.md`` lists each: :func:`~ctsim.reports.comparison.coverage_notes`)."""
    most = table["covered_slices"].max()
    short = table.filter(pl.col("covered_slices") < most).sort("covered_slices")
    if short.is_empty():
        return []
    first = short.row(0, named=True)
    who = "1 pipeline's" if short.height == 1 else f"{short.height} pipelines'"
    return [
        f"  ! {who} accuracy covers fewer slices than the others' (fewest: {first['pipeline']}, "
        f"{_fmt(first['covered_slices'], 1)} of {_fmt(most, 1)}; no active model before a first "
        "generation): compare with care, summary.md lists each"
    ]


def metrics_markdown(metrics: pl.DataFrame) -> list[str]:
    """The "Continual-learning metrics" section: the ``metrics`` table's mean over seeds per pipeline."""
    table = metrics.group_by("pipeline", maintain_order=True).agg(
        pl.len().alias("seeds"), *(pl.col(c).mean() for c in METRIC_COLUMNS)
    )
    split, k = metrics["eval_fix_split"].max(), metrics["eval_stream_k"].max()
    cols = ("pipeline", "seeds", *METRIC_COLUMNS)
    lines = ["## Continual-learning metrics (mean over seeds)", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += [
        "| " + " | ".join(_fmt(row[c], score=c in SCORES) for c in cols) + " |"
        for row in table.iter_rows(named=True)
    ]
    return [
        *lines,
        "",
        "Tasks are generations, each one's own slice the one its training data ended in "
        "(metrics.parquet, ctsim.measure.metrics): bwt, backward transfer (the last generation on each "
        "earlier one's slice, minus that one's own); fwt, forward transfer (each generation's predecessor on "
        "its slice, minus chance, 1 / classes); forgetting, the best earlier accuracy on those slices minus "
        f"the last generation's; eval_fix (Wild-Time), the model as of slice {_fmt(split)} on the slices up "
        f"to it (id), after it (ood, their mean; worst, their lowest); eval_stream, each generation on the "
        f"next {_fmt(k)} slices.",
        "",
    ]


def markdown_summary(
    name: str,
    header: str,
    command: str,
    variants: Sequence[tuple[str, list[str]]],
    settings: dict[str, dict],
    cost: pl.DataFrame,
    quality: pl.DataFrame,
    change_points: Sequence[ChangePoint],
    slice_labels: Sequence[str],
    files: Sequence[Path],
    out_dir: Path,
    metrics: pl.DataFrame | None = None,
    evals: pl.DataFrame | None = None,
) -> str:
    """``summary.md``. With ``evals`` and several pipelines, the results table gains each pipeline's
    significance group (:mod:`ctsim.reports.significance`) and a paragraph on what it means."""
    table = pipeline_summary(cost)
    grouped = evals is not None and table["accuracy"].drop_nulls().len() > 1
    if grouped:
        from ctsim.reports.significance import groups

        found = groups(evals, dict(zip(table["pipeline"], table["accuracy"])))
        table = table.join(found.select("pipeline", "group", "test"), on="pipeline", how="left")
    lines = [f"# ctsim run: {name}", "", f"- {header}", f"- command: `{command}`", "", "## Pipelines", ""]
    lines += ["| pipeline | overrides |", "|---|---|"]
    lines += [f"| {v} | {' '.join(o) or '(the run config)'} |" for v, o in variants]
    lines += [
        "",
        "What each pipeline runs: the run's pipeline settings, then each variant's changes to them.",
        "",
    ]
    lines += ["```yaml", yaml.safe_dump({"run": settings["run"]}, sort_keys=False).rstrip()]
    if any(settings["variants"].values()):
        lines.append(yaml.safe_dump({"variants": settings["variants"]}, sort_keys=False).rstrip())
    lines.append("```")
    cols = [
        "pipeline",
        "seeds",
        "triggers",
        "accuracy",
        *(["group"] if grouped else []),
        "accuracy_sd",
        "accuracy_weighted",
        "macro_f1",
        "covered_slices",
        "samples_trained",
        "optimizer_steps",
        "train_tflops",
        "selection_tflops",
        "selection_s",
        "train_s",
        "eval_s",
        "total_s",
        "nonfinite_generations",
    ]
    lines += [
        "",
        "## Results (mean over seeds)",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for row in table.iter_rows(named=True):
        cells = (_fmt(row[c], 4 if c.endswith("tflops") else 3, c in SCORES) for c in cols)
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "accuracy: mean over slices of the active model's accuracy (composite accuracy); "
        "accuracy_weighted weights slices by test-set size; covered_slices, the slices with an active model.",
        "",
    ]
    if grouped:
        from ctsim.reports.comparison import significance_note

        lines += [significance_note(table).replace("Rows are sorted by group, then by accuracy; w", "W"), ""]
    notes = [f"**{n}**" for n in coverage_notes(table)]
    lines += [*notes, ""] if notes else []
    diverged = cost.filter(pl.col("nonfinite_generations") > 0)
    for row in diverged.iter_rows(named=True):
        lines.append(
            f"**Non-finite:** {row['pipeline']} (seed {row['seed']}): {row['nonfinite_generations']} "
            "generation(s) went non-finite in training and were frozen at their last finite state "
            "(generations.parquet: `status = 'nonfinite'`)"
            + (
                "; all of them did, so it has no accuracy."
                if row["nonfinite_generations"] == row["triggers"]
                else "."
            )
        )
    if diverged.height:
        lines.append("")
    for row in table.filter(pl.col("skipped") > 0).iter_rows(named=True):
        lines += [
            f"**Skipped:** {row['pipeline']}: {row['skipped']} trigger(s) trained nothing, as the selection "
            "was empty; the active model stayed (skipped.parquet).",
            "",
        ]
    if metrics is not None and metrics.height:
        lines += metrics_markdown(metrics)
    if change_points:
        lines += ["## Designed drift (dataset ground truth)", ""]
        for cp in change_points:
            span = slice_labels[cp.slice] + (
                f"–{slice_labels[cp.end_slice]}" if cp.end_slice is not None else ""
            )
            lines.append(f"- {span} ({cp.kind}): {cp.what}")
        lines.append("")
    lines += ["## Trigger quality", ""]
    if any(cp.kind == "abrupt" for cp in change_points):
        lines.append(
            "Against the abrupt change points above (gradual ones are background drift): a change is "
            "detected by the first trigger within 5 slices of it; other triggers outside those spans, "
            "after the initial model, are false alarms (ctsim.measure.quality)."
        )
    else:
        lines.append("The dataset names no abrupt change point: only incorporation latency is scored.")
    lines += ["", quality_markdown(quality), ""]
    checkpoints = [f for f in files if "checkpoints" in f.parts]
    listed = sorted(f for f in files if f not in checkpoints)
    lines += ["## Files", ""] + [f"- `{f.relative_to(out_dir)}`" for f in listed]
    if checkpoints:
        lines.append(
            f"- `checkpoints/<pipeline>/seed<seed>/gen<generation>.pt`: {len(checkpoints)} state dicts "
            "(paths in generations.parquet)"
        )
    return "\n".join(lines) + "\n"

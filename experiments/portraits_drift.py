"""Case study: Modyn's drift-trigger sweep on the portraits, with the hindsight-optimal frontier.

    python experiments/portraits_drift.py                 # full size (meant for a GPU)
    python experiments/portraits_drift.py                 # size 0.1, 2 epochs, lr 0.01: minutes on 2 cores
    python experiments/portraits_drift.py --full          # full size (meant for a GPU)
    python experiments/portraits_drift.py --run-dir DIR   # report on a run already made

Runs ``python -m ctsim experiment=portraits_drift`` (19 trigger policies × 3 seeds), then
``python -m ctsim oracle RUN_DIR`` (candidates: the yearly pipelines), and writes
``results/reference/portraits_drift/report[_reduced].md``: per policy the triggers, composite accuracy,
regret against the frontier at its trigger count, detection delay and false alarms at the designed
change point (hair length, 1970), incorporation latency and training FLOPs; whether the best drift
trigger comes within 1 point of yearly's accuracy with at most a fifth of its triggers; and the
frontier plot.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
from study import REPO, heading, run_experiment, size_flags, write_comparison

from ctsim.registry import load

OUT = REPO / "results" / "reference" / "portraits_drift"
REDUCED = ["dataset.size=0.1", "train.epochs=2", "optimizer.lr=0.01"]
DRIFT = ("mmd", "ks", "label")  # variant name prefixes of the drift triggers


def run(overrides: list[str], tag: str) -> tuple[Path, float]:
    return run_experiment("portraits_drift", overrides, tag)


def oracle(run_dir: Path) -> Path:
    out = run_dir / "oracle"
    if not (out / "regret.parquet").exists():
        subprocess.run(
            [sys.executable, "-m", "ctsim", "oracle", str(run_dir), "--candidates", "yearly"],
            cwd=REPO,
            check=True,
        )
    return out


def policy_table(run_dir: Path, oracle_dir: Path) -> pl.DataFrame:
    tables = load(run_dir)
    cost = tables["cost"].collect()
    quality = tables["quality"].collect()
    regret = pl.read_parquet(oracle_dir / "regret.parquet").select(
        "pipeline", "seed", "frontier_accuracy", "regret"
    )
    rows = cost.join(quality, on=["pipeline", "seed"], suffix="_q").join(
        regret, on=["pipeline", "seed"], how="left"
    )
    order = cost["pipeline"].unique(maintain_order=True).to_list()
    return (
        rows.group_by("pipeline")
        .agg(
            pl.len().alias("seeds"),
            pl.col("triggers").mean(),
            pl.col("composite_accuracy").mean().alias("accuracy"),
            pl.col("composite_accuracy").std().alias("accuracy_sd"),
            pl.col("frontier_accuracy").mean().alias("frontier"),
            pl.col("regret").mean(),
            pl.col("mean_delay_slices").mean().alias("delay"),
            pl.col("misses").sum().alias("misses"),
            pl.col("false_alarms_per_50").mean().alias("false_alarms_per_50"),
            pl.col("incorporation_latency").mean().alias("latency_years"),
            (pl.col("train_flops").mean() / 1e12).alias("train_tflops"),
            pl.col("total_s").mean(),
        )
        .with_columns(
            pl.col("pipeline")
            .replace_strict({p: i for i, p in enumerate(order)}, return_dtype=pl.Int64)
            .alias("_order")
        )
        .sort("_order")
        .drop("_order")
    )


def verdict(table: pl.DataFrame) -> list[str]:
    yearly = table.filter(pl.col("pipeline") == "yearly").row(0, named=True)
    drift = table.filter(pl.any_horizontal(pl.col("pipeline").str.starts_with(p) for p in DRIFT))
    best = drift.sort("accuracy", descending=True).row(0, named=True)
    budget = yearly["triggers"] / 5
    within = drift.filter((pl.col("accuracy") >= yearly["accuracy"] - 0.01) & (pl.col("triggers") <= budget))
    lines = [
        f"- yearly: {yearly['triggers']:.1f} triggers, composite accuracy {yearly['accuracy']:.3f}.",
        f"- best drift trigger: {best['pipeline']} with {best['triggers']:.1f} triggers, "
        f"accuracy {best['accuracy']:.3f} "
        f"({100 * (best['accuracy'] - yearly['accuracy']):+.1f} points).",
    ]
    if within.height:
        pick = within.sort("accuracy", descending=True).row(0, named=True)
        lines.append(
            f"- **Target met:** {pick['pipeline']} comes within 1 point of yearly "
            f"({pick['accuracy']:.3f}) with "
            f"{pick['triggers']:.1f} triggers, at most a fifth of yearly's ({budget:.1f})."
        )
    else:
        lines.append(
            "- **Target not met:** no drift trigger is within 1 point of yearly with at most "
            f"{budget:.1f} triggers."
        )
    return lines


def report(run_dir: Path, wall: float | None, reduced: bool) -> Path:
    oracle_dir = oracle(run_dir)
    table = policy_table(run_dir, oracle_dir)
    frontier = pl.read_parquet(oracle_dir / "frontier.parquet")
    mean_frontier = frontier.group_by("k").agg(pl.col("accuracy").mean()).sort("k")
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = "_reduced" if reduced else ""
    plot = OUT / f"frontier{suffix}.png"
    if (oracle_dir / "frontier.png").exists():
        shutil.copyfile(oracle_dir / "frontier.png", plot)
    command = "python experiments/portraits_drift.py" + ("" if reduced else " --full")
    title = "portraits_drift" + (" (reduced: " + ", ".join(REDUCED) + ")" if reduced else "")
    lines = [
        *heading(title, command, run_dir, wall),
        "Means over 3 seeds. accuracy: composite accuracy; frontier: the hindsight-optimal accuracy with "
        "at most the pipeline's trigger count (candidates: the yearly pipeline of the same seed; "
        "fine-tuning makes it an approximation, so regret can be negative); delay and misses at the "
        "abrupt change (1970), false alarms per 50 stable slices (ctsim.measure.quality); "
        "latency: mean years from a sample's arrival to the first model trained on it.",
        "",
    ]
    cols = table.columns
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.iter_rows(named=True):
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    lines += ["", "## Against yearly", "", *verdict(table), "", "## Frontier (mean over seeds)", ""]
    shown = mean_frontier.filter(pl.col("k").is_in([1, 2, 3, 5, 8, 10, 15, 20, 30, 40, 60, 84]))
    lines += ["| k | " + " | ".join(str(k) for k in shown["k"]) + " |", "|---|" + "---|" * shown.height]
    lines += ["| accuracy | " + " | ".join(f"{a:.3f}" for a in shown["accuracy"]) + " |", ""]
    if plot.exists():
        lines += [f"![frontier]({plot.name})", ""]
    path = OUT / f"report{suffix}.md"
    path.write_text("\n".join(lines))
    write_comparison(run_dir, "portraits_drift", reduced, command)
    print(path.read_text())
    return path


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size_flags(parser, "dataset.size=0.1, train.epochs=2, lr 0.01")
    parser.add_argument("--run-dir", type=Path, help="report on this finished run instead of running one")
    parser.add_argument("--wall", type=float, help="with --run-dir: the run's wall time to report (seconds)")
    args = parser.parse_args()
    args.reduced = not args.full
    if args.run_dir:
        report(args.run_dir.resolve(), args.wall, args.reduced)
        return
    run_dir, wall = run(REDUCED if args.reduced else [], "reduced" if args.reduced else "full")
    report(run_dir, wall, args.reduced)


if __name__ == "__main__":
    main()

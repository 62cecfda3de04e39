"""Case study: Modyn's drift-trigger sweep on the portraits, with the hindsight-optimal frontier.

    python experiments/portraits_drift.py                       # the quick form: minutes on 2 cores
    python experiments/portraits_drift.py --full --into DIR     # full size, Modyn's setup: hours on 2 cores
    python -m ctsim resume DIR                                  # continue a full run that was stopped
    python experiments/portraits_drift.py --full --run-dir DIR  # report on a run already made
    python experiments/portraits_drift.py --jobs 1              # one run (default: one per core, no GPU)

Runs ``python -m ctsim experiment=portraits_drift_quick`` (``--full``: ``experiment=portraits_drift``:
19 trigger policies and the oracle's candidates × 3 seeds), then the oracle of ``ctsim.oracle`` over
its tables (candidates: ``scratch_yearly``, trained from scratch on all data every year, which makes
the frontier exact; where a run lacks them, as the quick form does, the yearly pipelines' fine-tuned
models, which make it approximate), and writes
``results/reference/portraits_drift/report[_quick].md``: per policy the triggers, composite accuracy,
regret against the frontier at its trigger count, detection delay and false alarms at the designed
change point (hair length, 1970), incorporation latency and training FLOPs; whether the best drift
trigger comes within 1 point of yearly's accuracy with at most a fifth of its triggers; and the
comparison's plot of accuracy against triggers, with the frontier (``comparison[_quick]/``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl
from study import (
    REPO,
    Timing,
    experiment_name,
    heading,
    jobs_of,
    quick_knobs,
    run_study,
    size_flags,
    write_comparison,
)

from ctsim.registry import load
from ctsim.reports import oracle, significance

OUT = REPO / "results" / "reference" / "portraits_drift"
DRIFT = ("mmd", "ks", "label")  # variant name prefixes of the drift triggers
EXACT, APPROXIMATE = "scratch_yearly", "yearly"  # the oracle's candidates, in order of preference


def tables(run_dirs: list[Path]) -> dict[str, pl.DataFrame]:
    """The cost, quality, evals and generations tables of one run, or of several (e.g. groups of
    variants run side by side), together."""
    loaded = [load(d) for d in run_dirs]
    return {
        name: pl.concat([t[name].collect() for t in loaded], how="diagonal_relaxed")
        for name in ("cost", "quality", "evals", "generations")
    }


def candidates(cost: pl.DataFrame) -> str:
    """``scratch_yearly`` where the run has it (an exact frontier), else ``yearly`` (an approximate one)."""
    return EXACT if EXACT in cost["pipeline"].to_list() else APPROXIMATE


def policy_table(t: dict[str, pl.DataFrame], regret: pl.DataFrame) -> pl.DataFrame:
    cost = t["cost"]
    rows = cost.join(t["quality"], on=["pipeline", "seed"], suffix="_q").join(
        regret.select("pipeline", "seed", "frontier_accuracy", "regret"), on=["pipeline", "seed"], how="left"
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


def grouped(table: pl.DataFrame, evals: pl.DataFrame) -> pl.DataFrame:
    """The policy table sorted by accuracy, with each policy's significance group
    (:mod:`ctsim.reports.significance`: 1 cannot be told from the best, 2 from the best of the rest, …)
    and the test behind it, so that no reader ranks noise."""
    found = significance.groups(evals, dict(zip(table["pipeline"], table["accuracy"])))
    table = table.join(found.select("pipeline", "group", "test"), on="pipeline", how="left")
    cols = table.columns
    at = cols.index("accuracy") + 1
    order = [*cols[:at], "group", *[c for c in cols[at:] if c not in ("group", "test")], "test"]
    return table.select(order).sort("accuracy", descending=True, nulls_last=True)


# What Modyn publishes on drift triggers for Yearbook, and how its sweep differs from this one (read in
# eth-easl/modyn, benchmark/sigmod/triggering/run_yb_triggering.py and
# analytics/plotting/sigmod/yb_scatter_triggering.ipynb, commit c961257).
MODYN = [
    "Modyn's SIGMOD paper shows its Yearbook drift triggers as a scatter plot of mean accuracy (the "
    "currently active model on each year's test data) against the number of triggers, beside time "
    "triggers; the values are plotted, not stated, so there are no published numbers to set beside "
    "these. Its sweep differs from this one: MMD from alibi-detect on the model's embeddings with "
    "static thresholds 0.05, 0.07 and 0.09 (this study: 0.005, 0.01 and 0.03; 0.005 and 0.01 are "
    "among the thresholds of Modyn's arXiv sweep), checked every 100, 250 or 500 samples, between "
    "a reference and a current window of equal "
    "length in time (1, 2 or 5 years, overlapping; this study: the active model's training set against "
    "the samples since the last check); a warm-up of 3,500 samples served by a time trigger every 3 "
    "years; dynamic quantile and rolling-average thresholds over the last 15 or 30 distances; one seed "
    "(42); real Yearbook photos, where this study has the synthetic portraits. What can be compared is "
    "the shape of the finding: how close the best drift trigger comes to yearly, and with how many "
    "triggers.",
]


def verdict(table: pl.DataFrame) -> list[str]:
    yearly = table.filter(pl.col("pipeline") == "yearly").row(0, named=True)
    drift = table.filter(pl.any_horizontal(pl.col("pipeline").str.starts_with(p) for p in DRIFT))
    best = drift.sort("accuracy", descending=True).row(0, named=True)
    budget = yearly["triggers"] / 5
    within = drift.filter((pl.col("accuracy") >= yearly["accuracy"] - 0.01) & (pl.col("triggers") <= budget))
    lines = [
        f"- yearly: {yearly['triggers']:.1f} triggers, composite accuracy {yearly['accuracy']:.3f}.",
        f"- best drift trigger: {best['pipeline']} with {best['triggers']:.1f} triggers, "
        f"accuracy {best['accuracy']:.3f} ({100 * (best['accuracy'] - yearly['accuracy']):+.1f} points); "
        + _against(best, yearly, "yearly"),
    ]
    never = table.filter(pl.col("pipeline") == "never")
    if never.height and never["group"][0] is not None and never["group"][0] == yearly["group"]:
        lines.append(
            f"- **No answer:** yearly ({yearly['accuracy']:.3f}) cannot be told from never "
            f"({never['accuracy'][0]:.3f}; the same significance group): the models did not learn what "
            "the drift changes, so this run says nothing about the policies. Whether a target is met "
            "is not judged."
        )
        return lines
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


def _against(row: dict, other: dict, name: str) -> str:
    """Whether the data can tell ``row`` from ``other`` (their significance groups)."""
    if row.get("group") is None or other.get("group") is None:
        return "no significance test."
    if row["group"] == other["group"]:
        return f"the data cannot tell it from {name} (the same significance group)."
    side = "above" if row["accuracy"] > other["accuracy"] else "below"
    return f"significantly {side} {name} (another significance group)."


def report(run_dirs: list[Path], timing: Timing | None, quick: bool) -> Path:
    t = tables(run_dirs)
    chosen = candidates(t["cost"])
    # the oracle of ctsim.oracle, over the tables of all the runs given
    frontier = oracle.frontier(t["evals"], t["generations"], chosen)
    regret = oracle.regrets(t["cost"], t["evals"], t["generations"], chosen, partial=True)
    missing = oracle.seeds_without(t["cost"], t["generations"], chosen)
    table = grouped(policy_table(t, regret), t["evals"])
    mean_frontier = frontier.group_by("k").agg(pl.col("accuracy").mean()).sort("k")
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    command = "python experiments/portraits_drift.py" + ("" if quick else " --full")
    title = "portraits_drift" + (f" (quick form: {quick_knobs('portraits_drift')})" if quick else "")
    seeds = t["cost"]["seed"].n_unique()
    exact = (
        "candidates: scratch_yearly of the same seed, trained from scratch on all data every year, so the "
        "frontier is exact for such models; a fine-tuned pipeline can still beat it, as fine-tuning is "
        "not among the candidates"
        if chosen == EXACT
        else "candidates: the yearly pipeline of the same seed; fine-tuning makes the frontier "
        "**approximate**, so regret can be negative"
    )
    lines = [
        *heading(title, command, run_dirs, timing),
        f"Means over {seeds} seed(s). accuracy: composite accuracy; frontier: the hindsight-optimal accuracy "
        f"with at most the pipeline's trigger count ({exact}"
        + (f"; seed(s) {missing} have no {chosen} run, so no frontier or regret" if missing else "")
        + "); delay and misses at the "
        "abrupt change (1970), false alarms per 50 stable slices (ctsim.measure.quality); "
        "latency: mean years from a sample's arrival to the first model trained on it. Sorted by accuracy; "
        "group: policies the data cannot tell apart share a group (1: not distinguishable from the best; "
        "paired tests against each group's best, Holm-corrected at 0.05, over seeds where 3 or more are "
        "shared, else over evaluation slices; test: which, and over how many pairs; "
        "ctsim.reports.significance). Rank only across groups.",
        "",
    ]
    cols = table.columns
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.iter_rows(named=True):
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    lines += [
        "",
        "## Against yearly",
        "",
        *verdict(table),
        "",
        *([] if quick else ["## Against Modyn", "", *MODYN, ""]),
        f"## Frontier, {'exact' if chosen == EXACT else 'approximate'} (mean over seeds)",
        "",
    ]
    shown = mean_frontier.filter(pl.col("k").is_in([1, 2, 3, 5, 8, 10, 15, 20, 30, 40, 60, 84]))
    lines += ["| k | " + " | ".join(str(k) for k in shown["k"]) + " |", "|---|" + "---|" * shown.height]
    lines += ["| accuracy | " + " | ".join(f"{a:.3f}" for a in shown["accuracy"]) + " |", ""]
    plots = write_comparison(run_dirs, "portraits_drift", quick, command, candidates=chosen) / "plots"
    lines += [
        f"![accuracy against triggers, with the frontier]({plots.relative_to(OUT)}/accuracy_triggers.png)"
    ]
    path = OUT / f"report{suffix}.md"
    path.write_text("\n".join(lines) + "\n")
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
    size_flags(parser, quick_knobs("portraits_drift"), jobs=True)
    parser.add_argument(
        "--run-dir", type=Path, nargs="+", help="report on these finished runs instead of running one"
    )
    parser.add_argument("--wall", type=float, help="with --run-dir: the run's wall time to report (seconds)")
    parser.add_argument("--cpu", type=float, help="with --run-dir: the run's CPU time to report (seconds)")
    args = parser.parse_args()
    quick = not args.full
    if args.run_dir:
        timing = Timing(args.wall, args.cpu, len(args.run_dir)) if args.wall else None
        report([d.resolve() for d in args.run_dir], timing, quick)
        return
    experiment = experiment_name("portraits_drift", args.full)
    run_dirs, timing = run_study(experiment, [], "quick" if quick else "full", args.into, jobs_of(args))
    report(run_dirs, timing, quick)


if __name__ == "__main__":
    main()
